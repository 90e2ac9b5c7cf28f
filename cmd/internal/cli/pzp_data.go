package cli

import (
	"github.com/pzone/pzone/zone/api"
	"github.com/spf13/cobra"
)

func newPeerDataCmd(g *globals) *cobra.Command {
	return newDataCmd(g, dataDaemon{prog: "pzp", socket: api.PeerSocketName, what: "pzp run", start: "pzp run"},
		`data reads and writes this device's copy of the zone's data, through
'pzp run'. Edits made while the hub is out of reach are kept and sent when
the session comes back; changes from the zone arrive the same way.`)
}
