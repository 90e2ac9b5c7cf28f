package cli

import (
	"fmt"
	"net/http"
	"net/url"
	"strings"

	"github.com/pzone/pzone/zone/api"
	"github.com/spf13/cobra"
)

func newHubFriendRemoveCmd(g *globals) *cobra.Command {
	return &cobra.Command{
		Use:   "remove NAME",
		Short: "End a friendship: cut the link, and accept nothing from that zone any more",
		Long: `remove forgets a friend zone: its CA is withdrawn from every device, so
nothing signed in that zone is accepted any more, the link between the
hubs closes, and calls in flight over it end. If the friend's hub is linked
it is told, and forgets this zone too.`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			var r api.RemoveFriendResult
			if err := hubDo(cmd.Context(), g, http.MethodDelete, "/v1/friends/"+url.PathEscape(args[0]), nil, &r); err != nil {
				return err
			}
			told := "; its hub was not linked, so it was not told"
			if r.Told {
				told = "; its hub was told"
			}
			fmt.Fprintf(cmd.OutOrStdout(), "friend %q removed%s\n", r.Petname, told)
			if r.Dropped > 0 {
				fmt.Fprintf(cmd.OutOrStdout(), "%d messages from or for it that waited at the hub were dropped\n", r.Dropped)
			}
			if len(r.Rules) > 0 {
				fmt.Fprintf(cmd.ErrOrStderr(), "policy rules still name %q: %s; remove them (pzh policy rm ID) before giving another friend that name\n", r.Petname, strings.Join(r.Rules, ", "))
			}
			return nil
		},
	}
}
