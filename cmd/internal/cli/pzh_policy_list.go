package cli

import (
	"fmt"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/pzone/pzone/zone/api"
	"github.com/pzone/pzone/zone/policy"
)

type hubPolicyListOptions struct {
	json bool
}

func newHubPolicyListCmd(g *globals) *cobra.Command {
	o := &hubPolicyListOptions{}
	cmd := &cobra.Command{
		Use:   "list",
		Short: "List the rules, most specific first",
		Long: `list prints the zone's policy rules in the order they take precedence: the
most specific first (then by ID). Of two rules equally specific that match
a call, the deny rule decides.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			var rules []policy.Rule
			err := withHub(g, func(c *api.Client) error {
				var err error
				rules, err = policyRules(cmd.Context(), c, cmd.ErrOrStderr())
				return err
			})
			if err != nil {
				return err
			}
			out := cmd.OutOrStdout()
			if o.json {
				if rules == nil {
					rules = []policy.Rule{}
				}
				return printJSON(out, rules)
			}
			if len(rules) == 0 {
				fmt.Fprintln(out, "no rules: a zone's own devices may use each other's services, other zones nothing; add one with: pzh policy add --allow|--deny --from WHO --to TARGET")
				return nil
			}
			tw := tabwriter.NewWriter(out, 0, 4, 2, ' ', 0)
			fmt.Fprintln(tw, "ID\tEFFECT\tFROM\tTO\tMETHOD\tCREATED")
			for _, r := range rules {
				created := "-"
				if !r.Created.IsZero() {
					created = r.Created.Local().Format(time.DateTime)
				}
				fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\n", r.ID, r.Effect, r.From, r.To, r.Method, created)
			}
			return tw.Flush()
		},
	}
	cmd.Flags().BoolVar(&o.json, "json", false, "print a JSON array of rules (fields in docs/PROTOCOL.md)")
	return cmd
}
