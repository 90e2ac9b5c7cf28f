package cli

import (
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/pzone/pzone/zone/mgmt"
	"github.com/pzone/pzone/zone/web"
)

// The web subcommands manage what the hub's management listener (pzh
// serve --web) has handed out: live sessions and API tokens.

func newHubWebCmd(g *globals) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "web",
		Short: "List and end web sessions; create, list and revoke API tokens",
		Args:  cobra.NoArgs,
		RunE:  func(cmd *cobra.Command, _ []string) error { return cmd.Help() },
	}
	cmd.AddCommand(newHubWebSessionsCmd(g), newHubWebTokenCmd(g), newHubWebLoginCmd(g))
	return cmd
}

func newHubWebLoginCmd(g *globals) *cobra.Command {
	var ttl time.Duration
	cmd := &cobra.Command{
		Use:   "login OPERATOR",
		Short: "Print a one-time login link to the dashboard for an operator",
		Long: `login prints a link that logs one browser in to the dashboard as OPERATOR,
without the password or second factor (whoever runs pzh on the hub's host
could do all the session can). It works once, within --ttl, and not after
the hub restarts. The secret is in the link's fragment (after #), which the
browser never sends in a request line or a Referer.`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			var l web.LinkCreated
			if err := hubDo(cmd.Context(), g, http.MethodPost, "/v1/web/login-links", web.LinkRequest{Operator: args[0], TTL: ttl.String()}, &l); err != nil {
				return err
			}
			fmt.Fprintln(cmd.OutOrStdout(), l.URL)
			fmt.Fprintf(cmd.ErrOrStderr(), "one-time login for operator %s, until %s\n", args[0], l.Expires.Local().Format(time.TimeOnly))
			return nil
		},
	}
	cmd.Flags().DurationVar(&ttl, "ttl", mgmt.DefaultLinkTTL, "how long the link works (at most 1h)")
	return cmd
}

func newHubWebSessionsCmd(g *globals) *cobra.Command {
	var asJSON bool
	cmd := &cobra.Command{
		Use:   "sessions",
		Short: "List the live web sessions: operator, state, address, last activity",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			var list []mgmt.Session
			if err := hubDo(cmd.Context(), g, http.MethodGet, "/v1/web/sessions", nil, &list); err != nil {
				return err
			}
			out := cmd.OutOrStdout()
			if asJSON {
				return printJSON(out, list)
			}
			if len(list) == 0 {
				fmt.Fprintln(out, "no web sessions")
				return nil
			}
			tw := tabwriter.NewWriter(out, 0, 4, 2, ' ', 0)
			fmt.Fprintln(tw, "ID\tOPERATOR\tSTATE\tSCOPE\tFROM\tLAST ACTIVE\tIDLE ENDS\tPARENT\tUSER AGENT")
			for _, s := range list {
				parent := s.Parent
				if parent == "" {
					parent = "-"
				}
				fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n", s.Ref, s.Operator, s.State, s.Scope, s.IP,
					s.LastActive.Local().Format(time.DateTime), s.IdleEnds.Local().Format(time.TimeOnly), parent, shorten(s.UserAgent, 40))
			}
			return tw.Flush()
		},
	}
	cmd.Flags().BoolVar(&asJSON, "json", false, "print as JSON")
	cmd.AddCommand(&cobra.Command{
		Use:   "end ID",
		Short: "End a web session, and the sessions it made: its streams are cut at once",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if err := hubDo(cmd.Context(), g, http.MethodDelete, "/v1/web/sessions/"+args[0], nil, nil); err != nil {
				return err
			}
			fmt.Fprintf(cmd.OutOrStdout(), "web session %s ended\n", args[0])
			return nil
		},
	})
	return cmd
}

func shorten(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n-1] + "…"
}

// parseLifetime reads a duration that may also be given in days (90d).
func parseLifetime(s string) (time.Duration, error) {
	if d, ok := strings.CutSuffix(s, "d"); ok {
		n, err := strconv.Atoi(d)
		if err != nil || n < 1 {
			return 0, fmt.Errorf("%q: give a whole number of days (90d) or a duration (12h)", s)
		}
		return time.Duration(n) * 24 * time.Hour, nil
	}
	d, err := time.ParseDuration(s)
	if err != nil {
		return 0, fmt.Errorf("%q: give a whole number of days (90d) or a duration (12h)", s)
	}
	return d, nil
}

func newHubWebTokenCmd(g *globals) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "token",
		Short: "Create, list and revoke API tokens for scripts (Authorization: Bearer)",
		Args:  cobra.NoArgs,
		RunE:  func(cmd *cobra.Command, _ []string) error { return cmd.Help() },
	}
	var name, scope, ttl string
	var asJSON bool
	create := &cobra.Command{
		Use:   "create --name NAME --scope read|admin [--ttl 90d]",
		Short: "Create an API token and print it, once",
		Long: `create makes an API token for a script or another system, and prints it once:
the hub keeps only its hash. Send it as 'Authorization: Bearer TOKEN' to the
web listener's /api/v1/. A read token may look at everything and change
nothing; an admin token may do what the pzh commands do.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if name == "" {
				return usagef("--name is required: say what the token is for, e.g. --name backup")
			}
			if _, err := mgmt.ParseScope(scope); err != nil {
				return usagef("--scope: use read or admin")
			}
			d, err := parseLifetime(ttl)
			if err != nil {
				return usagef("--ttl %v", err)
			}
			var t web.TokenCreated
			if err := hubDo(cmd.Context(), g, http.MethodPost, "/v1/web/tokens", web.TokenRequest{Name: name, Scope: scope, TTL: d.String()}, &t); err != nil {
				return err
			}
			out := cmd.OutOrStdout()
			if asJSON {
				return printJSON(out, t)
			}
			fmt.Fprintln(out, t.Secret)
			fmt.Fprintf(cmd.ErrOrStderr(), "API token %s (%s, scope %s), expires %s; shown this once\n", t.Name, t.Ref, t.Scope, t.Expires.Local().Format(time.DateTime))
			return nil
		},
	}
	create.Flags().StringVar(&name, "name", "", "what the token is for: 1-63 lower-case letters, digits and '-'")
	create.Flags().StringVar(&scope, "scope", "", "read (look only) or admin (everything pzh does)")
	create.Flags().StringVar(&ttl, "ttl", "90d", "how long it is valid, in days (90d) or as a duration (12h); at most 366d")
	create.Flags().BoolVar(&asJSON, "json", false, "print the token and its record as JSON")

	var listJSON bool
	list := &cobra.Command{
		Use:   "list",
		Short: "List the API tokens: scope, expiry, last use",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			var list []mgmt.Token
			if err := hubDo(cmd.Context(), g, http.MethodGet, "/v1/web/tokens", nil, &list); err != nil {
				return err
			}
			out := cmd.OutOrStdout()
			if listJSON {
				return printJSON(out, list)
			}
			if len(list) == 0 {
				fmt.Fprintln(out, "no API tokens; create one with: pzh web token create --name NAME --scope read")
				return nil
			}
			tw := tabwriter.NewWriter(out, 0, 4, 2, ' ', 0)
			fmt.Fprintln(tw, "ID\tNAME\tSCOPE\tEXPIRES\tLAST USED\tFROM")
			for _, t := range list {
				used, from := "never", "-"
				if !t.LastUsed.IsZero() {
					used, from = t.LastUsed.Local().Format(time.DateTime), t.LastIP
				}
				exp := t.Expires.Local().Format(time.DateTime)
				if time.Now().After(t.Expires) {
					exp += " (expired)"
				}
				fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\n", t.Ref, t.Name, t.Scope, exp, used, from)
			}
			return tw.Flush()
		},
	}
	list.Flags().BoolVar(&listJSON, "json", false, "print as JSON")
	revoke := &cobra.Command{
		Use:   "revoke ID|NAME",
		Short: "Revoke an API token: it stops working at once",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			var t mgmt.Token
			if err := hubDo(cmd.Context(), g, http.MethodDelete, "/v1/web/tokens/"+args[0], nil, &t); err != nil {
				return err
			}
			fmt.Fprintf(cmd.OutOrStdout(), "API token %s (%s) revoked\n", t.Name, t.Ref)
			return nil
		},
	}
	cmd.AddCommand(create, list, revoke)
	return cmd
}
