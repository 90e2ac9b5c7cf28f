package cli

import (
	"github.com/spf13/cobra"
)

// PeerCommand is the pzp root command.
func PeerCommand() *cobra.Command {
	g := &globals{envVar: "PZP_DATA", sub: "peer"}
	root := &cobra.Command{
		Use:   "pzp",
		Short: "pzone peer: a device's link to its personal zone",
		Long: `pzp runs on each device of a personal zone. Pair once with 'pzp pair TOKEN'
(the token comes from 'pzh invite' on the hub), then keep the session up
with 'pzp run'. 'pzp status' shows the link; 'pzp unpair' leaves the zone.`,
	}
	g.register(root)
	root.AddCommand(newPeerPairCmd(g), newPeerRunCmd(g), newPeerStatusCmd(g), newPeerUnpairCmd(g), newPeerWaitCmd(g), newPeerDataCmd(g),
		newPeerServicesCmd(g), newPeerCallCmd(g), newPeerSendCmd(g), newPeerListenCmd(g), newPeerServeCmd(g), newPeerCompactCmd(g), newPeerAppCmd(g),
		newPeerConnectCmd(g), newPeerExposeCmd(g), newPeerForwardCmd(g))
	root.AddCommand(newConfigCmd(func() *cobra.Command {
		c, _, _ := root.Find([]string{"run"})
		return c
	}, "PZP"))
	setVersion(root)
	return root
}
