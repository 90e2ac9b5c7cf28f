package cli

import (
	"github.com/pzone/pzone/zone/api"
	"github.com/spf13/cobra"
)

func newDataDelCmd(o *dataOptions) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "del APP/KEY",
		Short: "Delete a key",
		Long: `del deletes APP/KEY everywhere in the zone. Deleting a key that has no value
is an error. It prints nothing unless --json.`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			key, err := o.key(args[0])
			if err != nil {
				return err
			}
			return o.client(func(c *api.Client) error {
				v, err := c.DataDelete(cmd.Context(), o.bucket, key)
				if err != nil || !o.json {
					return err
				}
				return printJSON(cmd.OutOrStdout(), v)
			})
		},
	}
	o.register(cmd, "print the deletion record as JSON")
	return cmd
}
