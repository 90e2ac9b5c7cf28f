package cli

import (
	"fmt"
	"net/http"
	"strings"

	"github.com/spf13/cobra"

	"github.com/pzone/pzone/certs"
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
			req, err := o.request()
			if err != nil {
				return err
			}
			var d policy.Decision
			err = withHub(g, func(c *api.Client) error {
				var st api.HubStatus
				if err := c.Do(cmd.Context(), http.MethodGet, "/v1/status", nil, &st); err != nil {
					return err
				}
				sameZone(&req, st.Zone, st.ZoneID)
				rules, err := policyRules(cmd.Context(), c, cmd.ErrOrStderr())
				d = policy.Decide(rules, req)
				return err
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

// request turns the flags into the call they name: no wildcards, a device
// on both sides.
func (o *hubPolicyCheckOptions) request() (policy.Request, error) {
	if o.from == "" || o.to == "" {
		return policy.Request{}, usagef("--from ZONE/DEVICE[/APP] and --to DEVICE/SERVICE are required")
	}
	r, err := policy.ParseRule(o.from, o.to, o.method, policy.EffectAllow)
	if err != nil {
		return policy.Request{}, usageError{err}
	}
	from := strings.Split(r.From, "/")
	if len(from) < 2 {
		return policy.Request{}, usagef("--from %q: name one caller, ZONE/DEVICE or ZONE/DEVICE/APP", o.from)
	}
	dev, svc, _ := strings.Cut(r.To, "/")
	if r.To == "*" || svc == "*" {
		return policy.Request{}, usagef("--to %q: name one service, DEVICE/SERVICE", o.to)
	}
	if o.method == "*" {
		return policy.Request{}, usagef("--method: name one method, or leave it out")
	}
	req := policy.Request{FromDevice: from[1], ToDevice: dev, ToService: svc, Method: o.method}
	if len(from) == 3 {
		req.FromApp = from[2]
	}
	if id, err := certs.ParseZoneID(from[0]); err == nil {
		req.FromZoneID = string(id)
	} else {
		req.FromZone = from[0]
	}
	return req, nil
}

// sameZone completes req for a caller of this zone, named by its name or
// ID: both are known, and the default is the zone's.
func sameZone(req *policy.Request, name string, id certs.ZoneID) {
	byID := req.FromZoneID != "" && certs.ZoneID(req.FromZoneID).Compact() == id.Compact()
	if req.FromZone == name || byID {
		req.FromZone, req.FromZoneID, req.SameZone = name, string(id), true
	}
}
