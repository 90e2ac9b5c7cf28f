package cli

import (
	"fmt"
	"net/http"

	"github.com/spf13/cobra"

	"github.com/pzone/pzone/zone/api"
	"github.com/pzone/pzone/zone/policy"
)

type hubPolicyCheckOptions struct {
	from, to, method string
	json             bool
}

func newHubPolicyCheckCmd(g *globals) *cobra.Command {
	o := &hubPolicyCheckOptions{}
	cmd := &cobra.Command{
		Use:   "check --from ZONE/DEVICE[/APP] --to DEVICE/SERVICE [--method M]",
		Short: "Say whether a call would be allowed, and which rule or default decides",
		Long: `check evaluates the zone's rules, as the devices do, for one call and prints
"allow: " or "deny: " and the rule or default that decides. The caller's
zone is this zone when it is its name or ID; then the default allows. It
exits 0 either way; --json prints the decision.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			// Checked here too, so that a mistake is a usage error.
			if _, err := policy.ParseRequest(o.from, o.to, o.method); err != nil {
				return usageError{err}
			}
			var d policy.Decision
			err := withHub(g, func(c *api.Client) error {
				req := api.PolicyCheckRequest{From: o.from, To: o.to, Method: o.method}
				return c.Do(cmd.Context(), http.MethodPost, "/v1/policy/check", req, &d)
			})
			if err != nil {
				return err
			}
			out := cmd.OutOrStdout()
			if o.json {
				return printJSON(out, d)
			}
			effect := policy.EffectDeny
			if d.Allow {
				effect = policy.EffectAllow
			}
			_, err = fmt.Fprintf(out, "%s: %s\n", effect, d.Reason)
			return err
		},
	}
	f := cmd.Flags()
	f.StringVar(&o.from, "from", "", "the caller: ZONE/DEVICE or ZONE/DEVICE/APP (ZONE: a zone name or ID)")
	f.StringVar(&o.to, "to", "", "the service called: DEVICE/SERVICE")
	f.StringVar(&o.method, "method", "", "the method called (default: none, so only rules for any method match)")
	f.BoolVar(&o.json, "json", false, "print the decision as JSON: allow, rule (when one decided), reason")
	return cmd
}
