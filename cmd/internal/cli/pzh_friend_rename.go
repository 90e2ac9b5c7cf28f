package cli

import (
	"fmt"
	"net/http"
	"net/url"
	"strings"

	"github.com/spf13/cobra"

	"github.com/pzone/pzone/certs"
	"github.com/pzone/pzone/zone/api"
)

func newHubFriendRenameCmd(g *globals) *cobra.Command {
	return &cobra.Command{
		Use:   "rename NAME NEW",
		Short: "Give a friend zone another name in this zone",
		Long: `rename changes what this zone calls a friend. Addresses and policy rules
that use the old name stop matching it: update them (pzh policy list).`,
		Args: cobra.ExactArgs(2),
		RunE: func(cmd *cobra.Command, args []string) error {
			if err := certs.ValidateName("zone", args[1]); err != nil {
				return usageError{err}
			}
			var v api.FriendView
			if err := hubDo(cmd.Context(), g, http.MethodPost, "/v1/friends/"+url.PathEscape(args[0])+"/rename", api.RenameFriendRequest{To: args[1]}, &v); err != nil {
				return err
			}
			fmt.Fprintf(cmd.OutOrStdout(), "friend zone %q (%s) is now called %q\n", v.Zone, v.ZoneID, v.Petname)
			if len(v.RulesOld) > 0 {
				fmt.Fprintf(cmd.ErrOrStderr(), "note: policy rules name %q and no longer apply to this friend (a deny among them no longer protects anything): %s (pzh policy list)\n", args[0], strings.Join(v.RulesOld, ", "))
			}
			if len(v.Rules) > 0 {
				fmt.Fprintf(cmd.ErrOrStderr(), "note: policy rules name %q and now apply to this friend: %s (pzh policy list)\n", v.Petname, strings.Join(v.Rules, ", "))
			}
			return nil
		},
	}
}
