package cli

import (
	"github.com/pzone/pzone/zone/api"
	"github.com/spf13/cobra"
)

func newHubDataCmd(g *globals) *cobra.Command {
	return newDataCmd(g, dataDaemon{prog: "pzh", socket: api.HubSocketName, what: "the hub", start: "pzh serve"},
		`data reads and writes the hub's copy of the zone's data, through the
running hub. The hub orders every change and passes it on to the devices; it
may also write the buckets devices may not (user, certs, policy, friends,
tokens).`)
}
