package cli

import (
	"fmt"
	"os"
	"strings"
	"text/tabwriter"

	"github.com/spf13/cobra"

	"github.com/pzone/pzone/zone/api"
	"github.com/pzone/pzone/zone/appid"
)

// peerClient returns a client for the running pzp of g's data directory,
// and how to start it if it is not running.
func peerClient(g *globals) (*api.Client, func(error) error, error) {
	dir, err := g.dataDir()
	if err != nil {
		return nil, nil, err
	}
	hint := func(err error) error { return notRunningHint(err, "pzp run", "pzp run --data "+dir) }
	return deviceClient(dir), hint, nil
}

// deviceClient is a client of the pzp running in dir. The CLI is app pzp,
// with the credential that daemon wrote; PZP_APP_CREDENTIAL makes it
// another app (one that pzp app add registered).
func deviceClient(dir string) *api.Client {
	sock := api.SocketPath(dir, api.PeerSocketName)
	if cred := os.Getenv("PZP_APP_CREDENTIAL"); cred != "" {
		return api.NewClient(sock, api.WithCredential(cred))
	}
	return api.NewClient(sock, api.WithCredentialFile(appid.CLIPath(dir)))
}

func newPeerServicesCmd(g *globals) *cobra.Command {
	var asJSON bool
	var app, zoneName string
	cmd := &cobra.Command{
		Use:   "services [--zone FRIEND]",
		Short: "List the services in the zone (or a friend zone) this device (or --app) may call",
		Long: `services lists the services this device (or --app) may call under its
zone's policy. With --zone FRIEND it asks, through the hub, for the services
of a friend zone: only those the friend's policy grants this device, and this
zone's policy lets it call out to.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			c, hint, err := peerClient(g)
			if err != nil {
				return err
			}
			views, err := c.ServicesIn(cmd.Context(), zoneName, app)
			if err != nil {
				return hint(err)
			}
			out := cmd.OutOrStdout()
			if asJSON {
				if views == nil {
					views = []api.ServiceView{}
				}
				return printJSON(out, views)
			}
			if len(views) == 0 {
				if zoneName != "" {
					fmt.Fprintf(out, "no services in zone %q that this device may call\n", zoneName)
				} else {
					fmt.Fprintln(out, "no services in the zone yet")
				}
				return nil
			}
			tw := tabwriter.NewWriter(out, 0, 4, 2, ' ', 0)
			fmt.Fprintln(tw, "ADDRESS\tAPP\tMETHODS\tRUNNING\tDESCRIPTION")
			for _, v := range views {
				running := "-"
				if v.Running != nil {
					running = map[bool]string{true: "yes", false: "no"}[*v.Running]
				}
				methods := dash(strings.Join(v.Methods, ","))
				if v.Streams {
					methods = "(stream)" // pzp connect, pzp forward
				}
				fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\n", v.Addr, v.App, methods, running, dash(v.Description))
			}
			return tw.Flush()
		},
	}
	cmd.Flags().BoolVar(&asJSON, "json", false, "print as JSON")
	cmd.Flags().StringVar(&app, "app", "", "list what this application may call (policy rules can name apps)")
	cmd.Flags().StringVar(&zoneName, "zone", "", "list a friend zone's services (its name as pzh friends shows it)")
	return cmd
}
