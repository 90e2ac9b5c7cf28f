package cli

import (
	"github.com/spf13/cobra"

	"github.com/pzone/pzone/zone"
)

func newDataSetCmd(o *dataOptions) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "set APP/KEY [VALUE | @PATH | -]",
		Short: "Write a value",
		Long: `set writes VALUE under APP/KEY. @PATH reads the value from a file; - or no
VALUE reads it from standard input, which is also how to store a value that
starts with @. It prints nothing unless --json.`,
		Args: cobra.RangeArgs(1, 2),
		RunE: func(cmd *cobra.Command, args []string) error {
			key, err := o.key(args[0])
			if err != nil {
				return err
			}
			value, err := readValue(args[1:], cmd.InOrStdin())
			if err != nil {
				return err
			}
			return o.client(func(c *zone.Client) error {
				v, err := c.DataPut(cmd.Context(), o.bucket, key, value)
				if err != nil || !o.json {
					return err
				}
				return printJSON(cmd.OutOrStdout(), v)
			})
		},
	}
	o.register(cmd, "print the written record as JSON")
	return cmd
}
