package cli

import (
	"fmt"
	"net/http"

	"github.com/spf13/cobra"

	"github.com/pzone/pzone/zone/api"
	"github.com/pzone/pzone/zone/policy"
)

type hubPolicyAddOptions struct {
	allow, deny bool
	from, to    string
	method      string
	id          string
	json        bool
}

func newHubPolicyAddCmd(g *globals) *cobra.Command {
	o := &hubPolicyAddOptions{}
	cmd := &cobra.Command{
		Use:   "add --allow|--deny --from WHO --to TARGET [--method M] [--id ID]",
		Short: "Add a rule and print its ID",
		Long: `add writes a rule to the zone's policy and prints its ID, which 'pzh policy rm'
takes. WHO is *, ZONE, ZONE/DEVICE or ZONE/DEVICE/APP; TARGET is *,
DEVICE/SERVICE or DEVICE/*. Examples:
  pzh policy add --allow --from bob --to laptop/photos --method list
  pzh policy add --deny --from alice/phone/games --to '*'`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			effect, err := o.effect()
			if err != nil {
				return err
			}
			if o.from == "" || o.to == "" {
				return usagef("--from WHO and --to TARGET are required (use '*' for anyone or anything)")
			}
			// Checked here too, so that a mistake is a usage error.
			if _, err := policy.ParseRule(o.from, o.to, o.method, effect); err != nil {
				return usageError{err}
			}
			if o.id != "" {
				if err := policy.CheckRuleID(o.id); err != nil {
					return usageError{err}
				}
			}
			var r policy.Rule
			err = withHub(g, func(c *api.Client) error {
				req := api.PolicyAddRequest{ID: o.id, Effect: effect, From: o.from, To: o.to, Method: o.method}
				return c.Do(cmd.Context(), http.MethodPost, "/v1/policy", req, &r)
			})
			if err != nil {
				return err
			}
			out := cmd.OutOrStdout()
			if o.json {
				return printJSON(out, r)
			}
			_, err = fmt.Fprintln(out, r.ID)
			return err
		},
	}
	f := cmd.Flags()
	f.BoolVar(&o.allow, "allow", false, "the rule allows the calls it matches")
	f.BoolVar(&o.deny, "deny", false, "the rule denies the calls it matches")
	f.StringVar(&o.from, "from", "", "WHO: *, ZONE, ZONE/DEVICE or ZONE/DEVICE/APP (ZONE: a zone name or ID)")
	f.StringVar(&o.to, "to", "", "TARGET: *, DEVICE/SERVICE or DEVICE/*")
	f.StringVar(&o.method, "method", "*", "the one method the rule is about; * for any")
	f.StringVar(&o.id, "id", "", "the rule's ID (default: 8 random characters); 1-64 lower-case letters, digits, '-' and '_'")
	f.BoolVar(&o.json, "json", false, "print the rule as JSON (fields in docs/PROTOCOL.md)")
	return cmd
}

func (o *hubPolicyAddOptions) effect() (string, error) {
	switch {
	case o.allow && o.deny:
		return "", usagef("--allow and --deny exclude each other: give one")
	case o.allow:
		return policy.EffectAllow, nil
	case o.deny:
		return policy.EffectDeny, nil
	}
	return "", usagef("say what the rule does: --allow or --deny")
}
