package cli

import (
	"fmt"
	"net"
	"net/http"

	"github.com/spf13/cobra"

	"github.com/pzone/pzone/zone/api"
)

// newHubAddrCmd is pzh addr: the zone's public addresses.
func newHubAddrCmd(g *globals) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "addr",
		Short: "List, add and remove the hub's public addresses (to move the hub)",
		Long: `addr changes where devices and friends dial the hub. The addresses go to
every device with the zone state; a device tries them in order and keeps
them across restarts. To move the hub: add the new address, wait until the
devices have it (pzh devices shows them online; pzp status lists the
addresses), move or restart the hub there, then remove the old address.
New invites carry the addresses of the moment.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error { return cmd.Help() },
	}
	var asJSON bool
	list := &cobra.Command{
		Use:   "list",
		Short: "Print the public addresses, in the order devices try them",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			var v api.AddrsView
			if err := hubDo(cmd.Context(), g, http.MethodGet, "/v1/addrs", nil, &v); err != nil {
				return err
			}
			return printAddrs(cmd, v, asJSON)
		},
	}
	list.Flags().BoolVar(&asJSON, "json", false, "print as JSON")
	change := func(use, short, path string) *cobra.Command {
		return &cobra.Command{
			Use:   use + " HOST:PORT",
			Short: short,
			Args:  cobra.ExactArgs(1),
			RunE: func(cmd *cobra.Command, args []string) error {
				if path == "/v1/addrs" {
					// The hub checks it in full; this catches the usual slip.
					if host, _, err := net.SplitHostPort(args[0]); err != nil || host == "" {
						return usagef("address %q: want HOST:PORT, e.g. hub.example.net:7443", args[0])
					}
				}
				var v api.AddrsView
				if err := hubDo(cmd.Context(), g, http.MethodPost, path, api.AddrRequest{Addr: args[0]}, &v); err != nil {
					return err
				}
				return printAddrs(cmd, v, false)
			},
		}
	}
	cmd.AddCommand(list,
		change("add", "Add a public address (devices try it after the ones before it)", "/v1/addrs"),
		change("rm", "Remove a public address", "/v1/addrs/remove"))
	return cmd
}

func printAddrs(cmd *cobra.Command, v api.AddrsView, asJSON bool) error {
	out := cmd.OutOrStdout()
	if asJSON {
		return printJSON(out, v)
	}
	for _, a := range v.Addrs {
		fmt.Fprintln(out, a)
	}
	return nil
}
