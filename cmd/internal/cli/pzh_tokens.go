package cli

import (
	"fmt"
	"net/http"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/pzone/pzone/zone/api"
	"github.com/pzone/pzone/zone/token"
	"github.com/pzone/pzone/zone/wire"
)

func newHubTokensCmd(g *globals) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "tokens",
		Short: "Service tokens: templates of limits, issued tokens, revocation",
		Long: `A service that requires a token takes calls only from applications that
present one (pzp call --token). A token is issued from a template of limits
(bytes in/out/total, one binding's duration, total use, time from first use,
age, single use, devices); each binding made with it gets what is left of
them and is cut, with the reason, when it reaches one.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return usagef("say what to do: template, issue, list or revoke")
		},
	}
	cmd.AddCommand(newHubTokensTemplateCmd(g), newHubTokensIssueCmd(g), newHubTokensListCmd(g), newHubTokensRevokeCmd(g))
	return cmd
}

func newHubTokensTemplateCmd(g *globals) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "template",
		Short: "Add or list token templates",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return usagef("say what to do: template add or template list")
		},
	}
	var req api.TokenTemplateRequest
	var maxBinding, maxUsage, maxWall, maxAge time.Duration
	add := &cobra.Command{
		Use:   "add NAME",
		Short: "Add a template of limits (0 means no limit)",
		Args: func(cmd *cobra.Command, args []string) error {
			if len(args) != 1 {
				return usagef("template add takes NAME")
			}
			if err := wire.ValidateServiceName(args[0]); err != nil {
				return usageError{err}
			}
			return nil
		},
		RunE: func(cmd *cobra.Command, args []string) error {
			for _, d := range []time.Duration{maxBinding, maxUsage, maxWall, maxAge} {
				if d < 0 {
					return usagef("durations cannot be negative")
				}
			}
			req.Name = args[0]
			req.MaxBinding, req.MaxUsage, req.MaxWall, req.MaxAge = token.Duration(maxBinding), token.Duration(maxUsage), token.Duration(maxWall), token.Duration(maxAge)
			var tpl token.Template
			if err := hubDo(cmd.Context(), g, http.MethodPost, "/v1/tokens/templates", req, &tpl); err != nil {
				return err
			}
			_, err := fmt.Fprintf(cmd.OutOrStdout(), "template %s: %s\n", tpl.Name, limitsText(tpl.Limits))
			return err
		},
	}
	f := add.Flags()
	f.Int64Var(&req.MaxBytesIn, "max-bytes-in", 0, "bytes towards the service, over all bindings")
	f.Int64Var(&req.MaxBytesOut, "max-bytes-out", 0, "bytes back to the application, over all bindings")
	f.Int64Var(&req.MaxBytesTotal, "max-bytes", 0, "bytes both ways, over all bindings")
	f.DurationVar(&maxBinding, "max-binding", 0, "how long one binding may last")
	f.DurationVar(&maxUsage, "max-usage", 0, "how long all bindings together may last")
	f.DurationVar(&maxWall, "max-wall", 0, "how long after its first use the token is valid")
	f.DurationVar(&maxAge, "max-age", 0, "how long after its issue the token is valid")
	f.BoolVar(&req.SingleUse, "single-use", false, "one binding only")
	f.StringSliceVar(&req.Devices, "device", nil, "a device where the token is valid (repeat; default: all)")
	f.BoolVar(&req.Replace, "replace", false, "replace a template of that name (issued tokens keep their limits)")

	var asJSON bool
	list := &cobra.Command{
		Use:   "list",
		Short: "List the templates",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			var v struct{ Templates []token.Template }
			if err := hubDo(cmd.Context(), g, http.MethodGet, "/v1/tokens/templates", nil, &v); err != nil {
				return err
			}
			out := cmd.OutOrStdout()
			if asJSON {
				return printJSON(out, v.Templates)
			}
			if len(v.Templates) == 0 {
				fmt.Fprintln(out, "no templates; add one with: pzh tokens template add NAME --max-bytes N ...")
				return nil
			}
			tw := tabwriter.NewWriter(out, 0, 4, 2, ' ', 0)
			fmt.Fprintln(tw, "TEMPLATE\tLIMITS")
			for _, t := range v.Templates {
				fmt.Fprintf(tw, "%s\t%s\n", t.Name, limitsText(t.Limits))
			}
			return tw.Flush()
		},
	}
	list.Flags().BoolVar(&asJSON, "json", false, "print as JSON")
	cmd.AddCommand(add, list)
	return cmd
}

// limitsText describes limits in a line.
func limitsText(l token.Limits) string {
	var parts []string
	add := func(ok bool, format string, v any) {
		if ok {
			parts = append(parts, fmt.Sprintf(format, v))
		}
	}
	add(l.MaxBytesIn > 0, "bytes in %d", l.MaxBytesIn)
	add(l.MaxBytesOut > 0, "bytes out %d", l.MaxBytesOut)
	add(l.MaxBytesTotal > 0, "bytes %d", l.MaxBytesTotal)
	add(l.MaxBinding > 0, "binding %v", time.Duration(l.MaxBinding))
	add(l.MaxUsage > 0, "usage %v", time.Duration(l.MaxUsage))
	add(l.MaxWall > 0, "from first use %v", time.Duration(l.MaxWall))
	add(l.MaxAge > 0, "age %v", time.Duration(l.MaxAge))
	add(l.SingleUse, "%s", "single use")
	add(len(l.Devices) > 0, "devices %s", strings.Join(l.Devices, ","))
	if len(parts) == 0 {
		return "no limits"
	}
	return strings.Join(parts, ", ")
}

func newHubTokensIssueCmd(g *globals) *cobra.Command {
	var req api.IssueRequest
	var asJSON bool
	cmd := &cobra.Command{
		Use:   "issue TEMPLATE",
		Short: "Issue tokens from a template and print them, one a line (shown once)",
		Args: func(cmd *cobra.Command, args []string) error {
			if len(args) != 1 {
				return usagef("issue takes TEMPLATE")
			}
			if req.Count < 1 || req.Count > 1000 {
				return usagef("--count must be 1 to 1000")
			}
			return nil
		},
		RunE: func(cmd *cobra.Command, args []string) error {
			req.Template = args[0]
			var v struct{ Tokens []api.IssuedToken }
			if err := hubDo(cmd.Context(), g, http.MethodPost, "/v1/tokens", req, &v); err != nil {
				return err
			}
			out := cmd.OutOrStdout()
			if asJSON {
				return printJSON(out, v.Tokens)
			}
			for _, t := range v.Tokens {
				fmt.Fprintln(out, t.Token)
			}
			return nil
		},
	}
	cmd.Flags().StringVar(&req.Lot, "lot", "", "name the batch, to list or revoke it together")
	cmd.Flags().IntVar(&req.Count, "count", 1, "how many tokens")
	cmd.Flags().BoolVar(&asJSON, "json", false, "print as JSON")
	return cmd
}

func newHubTokensListCmd(g *globals) *cobra.Command {
	var lot string
	var asJSON bool
	cmd := &cobra.Command{
		Use:   "list",
		Short: "List issued tokens with their state and usage",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			path := "/v1/tokens"
			if lot != "" {
				path += "?lot=" + lot
			}
			var v struct{ Tokens []api.TokenView }
			if err := hubDo(cmd.Context(), g, http.MethodGet, path, nil, &v); err != nil {
				return err
			}
			out := cmd.OutOrStdout()
			if asJSON {
				return printJSON(out, v.Tokens)
			}
			if len(v.Tokens) == 0 {
				fmt.Fprintln(out, "no tokens")
				return nil
			}
			tw := tabwriter.NewWriter(out, 0, 4, 2, ' ', 0)
			fmt.Fprintln(tw, "ID\tTEMPLATE\tLOT\tSTATE\tISSUED\tBINDINGS\tBYTES IN\tBYTES OUT\tUSED")
			for _, t := range v.Tokens {
				fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%d\t%d\t%d\t%v\n", t.ID, t.Template, dash(t.Lot), t.State, t.Issued.Local().Format(time.DateTime),
					t.Usage.Bindings, t.Usage.BytesIn, t.Usage.BytesOut, time.Duration(t.Usage.Used).Round(time.Millisecond))
			}
			return tw.Flush()
		},
	}
	cmd.Flags().StringVar(&lot, "lot", "", "only the tokens of this lot")
	cmd.Flags().BoolVar(&asJSON, "json", false, "print as JSON")
	return cmd
}

func newHubTokensRevokeCmd(g *globals) *cobra.Command {
	var lot string
	cmd := &cobra.Command{
		Use:   "revoke [ID] [--lot NAME]",
		Short: "Revoke a token, or every token of a lot; their bindings end at once",
		Args: func(cmd *cobra.Command, args []string) error {
			if len(args) == 1 && lot == "" || len(args) == 0 && lot != "" {
				return nil
			}
			return usagef("revoke takes a token ID, or --lot NAME")
		},
		RunE: func(cmd *cobra.Command, args []string) error {
			req := map[string]string{"lot": lot}
			if len(args) == 1 {
				req = map[string]string{"id": strings.SplitN(args[0], ".", 2)[0]}
			}
			var v struct{ Revoked int }
			if err := hubDo(cmd.Context(), g, http.MethodPost, "/v1/tokens/revoke", req, &v); err != nil {
				return err
			}
			_, err := fmt.Fprintf(cmd.OutOrStdout(), "%d token(s) revoked\n", v.Revoked)
			return err
		},
	}
	cmd.Flags().StringVar(&lot, "lot", "", "revoke every token of this lot")
	return cmd
}
