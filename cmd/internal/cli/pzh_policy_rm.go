package cli

import (
	"errors"
	"fmt"
	"net/http"

	"github.com/spf13/cobra"

	zsync "github.com/pzone/pzone/sync"
	"github.com/pzone/pzone/zone/api"
	"github.com/pzone/pzone/zone/policy"
)

func newHubPolicyRmCmd(g *globals) *cobra.Command {
	return &cobra.Command{
		Use:   "rm ID",
		Short: "Remove a rule",
		Long:  `rm removes the rule ID (as 'pzh policy list' shows it) from every device.`,
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			id := args[0]
			if err := policy.CheckRuleID(id); err != nil {
				return usageError{err}
			}
			err := withHub(g, func(c *api.Client) error {
				_, err := c.DataDelete(cmd.Context(), zsync.BucketPolicy, id)
				return err
			})
			var ae *api.APIError
			if errors.As(err, &ae) && ae.Status == http.StatusNotFound {
				return fmt.Errorf("no rule with ID %q; list the rules with: pzh policy list", id)
			}
			if err != nil {
				return err
			}
			_, err = fmt.Fprintf(cmd.OutOrStdout(), "rule %s removed\n", id)
			return err
		},
	}
}
