package cli

import (
	"fmt"
	"net/http"
	"text/tabwriter"
	"time"

	"github.com/pzone/pzone/zone/api"
	"github.com/spf13/cobra"
)

func newHubInvitesCmd(g *globals) *cobra.Command {
	var asJSON bool
	cmd := &cobra.Command{
		Use:   "invites",
		Short: "List invites: id, device, state, uses left, expiry",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			var list []api.InviteView
			if err := hubDo(cmd.Context(), g, http.MethodGet, "/v1/invites", nil, &list); err != nil {
				return err
			}
			out := cmd.OutOrStdout()
			if asJSON {
				return printJSON(out, list)
			}
			if len(list) == 0 {
				fmt.Fprintln(out, "no invites; create one with: pzh invite --device NAME")
				return nil
			}
			tw := tabwriter.NewWriter(out, 0, 4, 2, ' ', 0)
			fmt.Fprintln(tw, "ID\tDEVICE\tSTATE\tUSES LEFT\tEXPIRES\tPAIRED")
			for _, v := range list {
				state := v.State
				if v.CodeNumber != 0 {
					// A code invite: its number, and wrong codes tried.
					state += fmt.Sprintf(" (code %d, %d wrong)", v.CodeNumber, v.WrongCodes)
				}
				fmt.Fprintf(tw, "%s\t%s\t%s\t%d/%d\t%s\t%v\n", v.ID, v.Device, state, v.UsesLeft, v.Uses, v.Expires.Local().Format(time.DateTime), v.Devices)
			}
			return tw.Flush()
		},
	}
	cmd.Flags().BoolVar(&asJSON, "json", false, "print as JSON")
	return cmd
}
