package cli

import (
	"fmt"
	"net/http"
	"text/tabwriter"

	"github.com/pzone/pzone/zone/api"
	"github.com/spf13/cobra"
)

func newHubFriendsCmd(g *globals) *cobra.Command {
	var asJSON bool
	cmd := &cobra.Command{
		Use:   "friends",
		Short: "List friend zones and the state of their links",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			var v api.FriendsView
			if err := hubDo(cmd.Context(), g, http.MethodGet, "/v1/friends", nil, &v); err != nil {
				return err
			}
			out := cmd.OutOrStdout()
			if asJSON {
				return printJSON(out, v.Friends)
			}
			if len(v.Friends) == 0 {
				fmt.Fprintln(out, "no friends; make one with: pzh friend invite (and pzh friend accept on the other hub)")
				return nil
			}
			tw := tabwriter.NewWriter(out, 0, 4, 2, ' ', 0)
			fmt.Fprintln(tw, "NAME\tZONE\tZONE ID\tLINK\tTRANSPORT\tREMOTE\tSINCE\tRTT\tCALLS\tQUEUE\tLAST ERROR")
			for _, f := range v.Friends {
				fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%d\t%d\t%s\n", f.Petname, f.Zone, f.ZoneID, f.State, dash(f.Transport), dash(f.RemoteAddr),
					timeOrDash(f.Since), rttOrDash(f.RTTMs), f.Calls, f.Queue, dash(f.LastError))
			}
			return tw.Flush()
		},
	}
	cmd.Flags().BoolVar(&asJSON, "json", false, "print as JSON (a list of friends; fields in docs/PROTOCOL.md)")
	return cmd
}
