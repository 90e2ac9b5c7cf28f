package cli

import (
	"fmt"
	"net/http"
	"text/tabwriter"
	"time"

	"github.com/pzone/pzone/zone/api"
	"github.com/spf13/cobra"
)

func newHubFriendInvitesCmd(g *globals) *cobra.Command {
	var asJSON bool
	cmd := &cobra.Command{
		Use:   "invites",
		Short: "List friend invites: id, state, expiry, the friend that redeemed it",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			var list []api.FriendInviteView
			if err := hubDo(cmd.Context(), g, http.MethodGet, "/v1/friends/invites", nil, &list); err != nil {
				return err
			}
			out := cmd.OutOrStdout()
			if asJSON {
				return printJSON(out, list)
			}
			if len(list) == 0 {
				fmt.Fprintln(out, "no friend invites; create one with: pzh friend invite")
				return nil
			}
			tw := tabwriter.NewWriter(out, 0, 4, 2, ' ', 0)
			fmt.Fprintln(tw, "ID\tSTATE\tCREATED\tEXPIRES\tFRIEND")
			for _, v := range list {
				state := v.State
				if v.CodeNumber != 0 {
					state += fmt.Sprintf(" (code %d, %d wrong)", v.CodeNumber, v.WrongCodes)
				}
				fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\n", v.ID, state, v.Created.Local().Format(time.DateTime), v.Expires.Local().Format(time.DateTime), dash(v.Friend))
			}
			return tw.Flush()
		},
	}
	cmd.Flags().BoolVar(&asJSON, "json", false, "print as JSON")
	return cmd
}
