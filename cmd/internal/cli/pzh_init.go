package cli

import (
	"fmt"
	"time"

	"github.com/spf13/cobra"

	"github.com/pzone/pzone/zone/hub"
)

type hubInitOptions struct {
	zone  string
	addrs []string
	json  bool
}

func newHubInitCmd(g *globals) *cobra.Command {
	o := &hubInitOptions{}
	cmd := &cobra.Command{
		Use:   "init --zone NAME --public-addr HOST:PORT",
		Short: "Create a zone: its CA, the hub's certificate and store",
		Long: `init creates a new zone in the data directory: the zone CA (Ed25519), the
hub's certificate, and the hub's store. It prints the zone ID, the
fingerprint devices pin when they pair. --public-addr is where devices will
reach the hub (repeat it for several). init never overwrites a zone.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if o.zone == "" {
				return usagef("--zone is required: name the zone, e.g. --zone alice")
			}
			if len(o.addrs) == 0 {
				return usagef("--public-addr is required: where devices will reach the hub, e.g. --public-addr hub.example.net:7443")
			}
			dir, err := g.dataDir()
			if err != nil {
				return err
			}
			info, err := hub.InitZone(dir, o.zone, o.addrs, time.Now())
			if err != nil {
				return err
			}
			out := cmd.OutOrStdout()
			if o.json {
				return printJSON(out, info)
			}
			fmt.Fprintf(out, "zone %q created in %s\n", info.Name, dir)
			fmt.Fprintf(out, "zone ID: %s\n", info.ID)
			fmt.Fprintf(out, "public address: %v\n", info.PublicAddrs)
			fmt.Fprintf(out, "next: pzh serve --data %s\n", dir)
			return nil
		},
	}
	cmd.Flags().StringVar(&o.zone, "zone", "", "zone name: 1-63 lower-case letters, digits and '-'")
	cmd.Flags().StringArrayVar(&o.addrs, "public-addr", nil, "HOST:PORT devices reach the hub at (repeatable)")
	cmd.Flags().BoolVar(&o.json, "json", false, "print the result as JSON")
	return cmd
}
