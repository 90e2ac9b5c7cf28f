package cli

import (
	"fmt"
	"net/http"
	"time"

	"github.com/spf13/cobra"

	"github.com/pzone/pzone/pairing"
	"github.com/pzone/pzone/zone/api"
)

// newHubFriendCmd is pzh friend: making, renaming and ending friendships
// with other zones' hubs. Its own action is pzh friend invite.
func newHubFriendCmd(g *globals) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "friend",
		Short: "Federate with a friend's zone: invite, accept, rename, remove",
		Long: `friend manages this zone's friendships with other zones. One hub prints a
friend token with 'pzh friend invite'; the friend's hub redeems it with
'pzh friend accept TOKEN --as NAME'. The two hubs then keep a link, over
which apps on either side may call services on the other when both zones'
policies allow it. 'pzh friends' lists friends and their links.`,
		Args: cobra.NoArgs,
	}
	cmd.AddCommand(newHubFriendInviteCmd(g), newHubFriendInvitesCmd(g), newHubFriendAcceptCmd(g), newHubFriendRemoveCmd(g), newHubFriendRenameCmd(g))
	return cmd
}

func newHubFriendInviteCmd(g *globals) *cobra.Command {
	var ttl time.Duration
	var asJSON, code bool
	cmd := &cobra.Command{
		Use:   "invite [--ttl 24h] [--code]",
		Short: "Print a one-time friend token for another zone's hub to accept",
		Long: `invite prints a friend token on one line. Give it to the owner of the other
zone, who runs 'pzh friend accept TOKEN --as NAME' on their hub. The token
holds this hub's addresses, the zone ID (which the other hub pins) and a
secret; this hub keeps only a hash of it. It works once, until --ttl.

With --code it also prints a short code on a second line, such as
3-violet-canyon-ember-river, for the other owner to read out or type with
'pzh friend accept --code CODE HOST:PORT --as NAME' instead of the token. The
code is the password of an exchange (CPace) that authenticates both hubs,
so it is safe to read aloud: each try tests one guess, and 3 wrong codes
burn the invite.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if ttl <= 0 || ttl > pairing.MaxFriendTTL {
				return usagef("--ttl %v: use more than 0 and at most %v", ttl, pairing.MaxFriendTTL)
			}
			var v api.FriendInviteView
			if err := hubDo(cmd.Context(), g, http.MethodPost, "/v1/friends/invites", api.FriendInviteRequest{TTL: ttl.String(), Code: code}, &v); err != nil {
				return err
			}
			if asJSON {
				return printJSON(cmd.OutOrStdout(), v)
			}
			fmt.Fprintln(cmd.OutOrStdout(), v.Token)
			if code {
				fmt.Fprintln(cmd.OutOrStdout(), v.Code)
				fmt.Fprintf(cmd.ErrOrStderr(), "friend invite %s: one use, expires %s; on the friend's hub run: pzh friend accept --code %s %s --as NAME\n", v.ID, v.Expires.Local().Format(time.DateTime), v.Code, publicAddr(cmd, g))
				return nil
			}
			fmt.Fprintf(cmd.ErrOrStderr(), "friend invite %s: one use, expires %s; on the friend's hub run: pzh friend accept TOKEN --as NAME\n", v.ID, v.Expires.Local().Format(time.DateTime))
			return nil
		},
	}
	cmd.Flags().DurationVar(&ttl, "ttl", pairing.DefaultFriendTTL, "how long the token stays valid")
	cmd.Flags().BoolVar(&code, "code", false, "also print a short code to read aloud (pzh friend accept --code)")
	cmd.Flags().BoolVar(&asJSON, "json", false, "print the invite as JSON (includes the token)")
	cmd.AddCommand(newHubFriendInviteCancelCmd(g))
	return cmd
}
