package cli

import (
	"context"

	"github.com/spf13/cobra"

	"github.com/pzone/pzone/zone/peer"
)

func newPeerCompactCmd(g *globals) *cobra.Command {
	o := &compactOptions{g: g, prog: "pzp", files: peer.StoreFiles(), running: func(context.Context, string) string {
		return "pzp is running: stop it first (e.g. Ctrl-C where pzp run runs, or kill -INT its pid), then run pzp compact again"
	}}
	return o.command()
}
