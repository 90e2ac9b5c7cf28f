package cli

import (
	"fmt"
	"net"
	"net/http"
	"strings"

	"github.com/spf13/cobra"

	"github.com/pzone/pzone/certs"
	"github.com/pzone/pzone/pairing"
	"github.com/pzone/pzone/zone/api"
)

func newHubFriendAcceptCmd(g *globals) *cobra.Command {
	var as, code string
	var asJSON bool
	cmd := &cobra.Command{
		Use:   "accept TOKEN|- --as NAME  |  accept --code CODE HOST:PORT --as NAME",
		Short: "Become friends with the zone whose hub printed TOKEN (- reads it from stdin), or a short code",
		Long: `accept redeems a friend token another zone's hub printed: this hub connects
to it, checks that it is the zone the token names, proves the token's
secret, and both record each other's zone CA. NAME is what this zone calls
the friend: in addresses (NAME/DEVICE/SERVICE) and policy rules.

With --code, give the short code the other hub printed (pzh friend invite
--code) and that hub's address instead: the two hubs run an exchange over
the code that proves to each that the other holds it, and only then tell
each other their zone CAs. A wrong code counts against the invite; 3 burn it.`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if as == "" {
				return usagef("--as is required: name the friend zone, e.g. --as bob")
			}
			if err := certs.ValidateName("zone", as); err != nil {
				return usageError{fmt.Errorf("--as: %w", err)}
			}
			req := api.FriendAcceptRequest{As: as}
			if code != "" {
				if _, err := pairing.ParseCode(code); err != nil {
					return usageError{fmt.Errorf("--code: %w", err)}
				}
				if _, _, err := net.SplitHostPort(args[0]); err != nil {
					return usagef("with --code, give the friend's hub as HOST:PORT (its pzh friend invite --code printed it), not %q", args[0])
				}
				req.Code, req.Addr = code, args[0]
			} else {
				raw, err := tokenArg(cmd, args[0])
				if err != nil {
					return err
				}
				if _, err := pairing.ParseFriendToken(raw); err != nil {
					return usageError{err}
				}
				req.Token = raw
			}
			var v api.FriendView
			if err := hubDo(cmd.Context(), g, http.MethodPost, "/v1/friends", req, &v); err != nil {
				return err
			}
			if asJSON {
				return printJSON(cmd.OutOrStdout(), v)
			}
			fmt.Fprintf(cmd.OutOrStdout(), "friends with zone %q (%s) as %q\n", v.Zone, v.ZoneID, v.Petname)
			if len(v.Rules) > 0 {
				fmt.Fprintf(cmd.ErrOrStderr(), "note: policy rules name %q and now apply to this friend: %s (pzh policy list)\n", v.Petname, strings.Join(v.Rules, ", "))
			}
			return nil
		},
	}
	cmd.Flags().StringVar(&as, "as", "", "the name this zone gives the friend (1-63 lower-case letters, digits and '-')")
	cmd.Flags().StringVar(&code, "code", "", "the short code the friend's hub printed (pzh friend invite --code); the argument is then its HOST:PORT")
	cmd.Flags().BoolVar(&asJSON, "json", false, "print the friend as JSON")
	return cmd
}
