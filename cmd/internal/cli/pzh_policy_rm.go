package cli

import (
	"fmt"
	"net/http"

	"github.com/spf13/cobra"

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
				return c.Do(cmd.Context(), http.MethodDelete, "/v1/policy/"+id, nil, nil)
			})
			if err != nil {
				return err
			}
			_, err = fmt.Fprintf(cmd.OutOrStdout(), "rule %s removed\n", id)
			return err
		},
	}
}
