package cli

import (
	"context"
	"fmt"
	"io"
	"net/http"

	"github.com/spf13/cobra"

	"github.com/pzone/pzone/zone/api"
	"github.com/pzone/pzone/zone/policy"
)

// The policy subcommands edit the zone's policy rules: records of bucket
// policy, key = rule ID, value = a policy.Rule in JSON, written through the
// running hub's data endpoints and synced by it to every device.

// newHubPolicyCmd is the pzh policy command group.
func newHubPolicyCmd(g *globals) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "policy",
		Short: "Add, list, remove and check the rules of who may call which service",
		Long: `policy edits the zone's policy rules. Every device holds them and checks a
call twice: the calling device before sending it, the called device before
delivering it.

A rule allows or denies calls from WHO to TARGET, optionally for one method:
  WHO     *, ZONE, ZONE/DEVICE or ZONE/DEVICE/APP (ZONE: a zone name or ID)
  TARGET  *, DEVICE/SERVICE or DEVICE/* (services of this zone)
The most specific matching rule decides: WHO first (app, then device, then
zone, then *), then TARGET (service, then DEVICE/*, then *), then the method
(one, then any). Between equally specific rules, deny wins. With no matching
rule, a zone's own devices may use each other's services and other zones
may use nothing.`,
		// Runnable only so that an unknown subcommand is a usage error
		// rather than a help page.
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error { return cmd.Help() },
	}
	cmd.AddCommand(newHubPolicyAddCmd(g), newHubPolicyListCmd(g), newHubPolicyRmCmd(g), newHubPolicyCheckCmd(g))
	return cmd
}

// withHub runs fn with a client of the running hub, and explains a hub
// that is not running.
func withHub(g *globals, fn func(*api.Client) error) error {
	c, dir, err := hubClient(g)
	if err != nil {
		return err
	}
	return notRunningHint(fn(c), "the hub", "pzh serve --data "+dir)
}

// policyRules lists the hub's policy rules, most specific first. A record
// that is not a valid rule is left out with a warning on stderr: it takes
// no part in any decision either.
func policyRules(ctx context.Context, c *api.Client, stderr io.Writer) ([]policy.Rule, error) {
	var l api.PolicyList
	if err := c.Do(ctx, http.MethodGet, "/v1/policy", nil, &l); err != nil {
		return nil, err
	}
	for _, why := range l.Skipped {
		fmt.Fprintf(stderr, "pzh: warning: ignoring %s (remove it with: pzh policy rm ID)\n", why)
	}
	return l.Rules, nil
}
