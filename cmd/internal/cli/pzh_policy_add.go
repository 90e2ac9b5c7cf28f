package cli

import (
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"time"

	"github.com/spf13/cobra"

	zsync "github.com/pzone/pzone/sync"
	"github.com/pzone/pzone/zone/api"
	"github.com/pzone/pzone/zone/policy"
)

// newRuleIDTries bounds the draws of a fresh rule ID: with 40 random bits,
// a second collision in a row means something other than chance.
const newRuleIDTries = 3

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
			r, err := policy.ParseRule(o.from, o.to, o.method, effect)
			if err != nil {
				return usageError{err}
			}
			if o.id != "" {
				if err := policy.CheckRuleID(o.id); err != nil {
					return usageError{err}
				}
			}
			r.Created = time.Now().UTC().Truncate(time.Second)
			err = withHub(g, func(c *api.Client) error {
				id, err := o.freeID(cmd, c)
				if err != nil {
					return err
				}
				r.ID = id
				value, err := json.Marshal(r)
				if err != nil {
					return err
				}
				_, err = c.DataPut(cmd.Context(), zsync.BucketPolicy, r.ID, value)
				return err
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

// freeID returns --id if no rule has it yet, else a fresh random ID no
// rule has. (Another 'pzh policy add' with the same --id at the same
// moment could still overwrite it: the data API has no create-only put.)
func (o *hubPolicyAddOptions) freeID(cmd *cobra.Command, c *api.Client) (string, error) {
	for range newRuleIDTries {
		id := o.id
		if id == "" {
			id = policy.NewRuleID()
		}
		_, err := c.DataGet(cmd.Context(), zsync.BucketPolicy, id)
		var ae *api.APIError
		switch {
		case errors.As(err, &ae) && ae.Status == http.StatusNotFound:
			return id, nil
		case err != nil:
			return "", err
		case o.id != "":
			return "", fmt.Errorf("a rule with ID %q exists already; remove it first with: pzh policy rm %s, or choose another --id", id, id)
		}
	}
	return "", fmt.Errorf("no free rule ID after %d tries; try again", newRuleIDTries)
}
