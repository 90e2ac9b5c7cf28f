package cli

import (
	"bytes"

	"github.com/pzone/pzone/zone/api"
	"github.com/spf13/cobra"
)

func newDataGetCmd(o *dataOptions) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "get APP/KEY",
		Short: "Print a value",
		Long: `get prints the value of APP/KEY exactly as stored, adding a newline only
when standard output is a terminal and the value does not end with one. A
key that is absent or deleted is an error.`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			key, err := o.key(args[0])
			if err != nil {
				return err
			}
			return o.client(func(c *api.Client) error {
				v, err := c.DataGet(cmd.Context(), o.bucket, key)
				if err != nil {
					return err
				}
				out := cmd.OutOrStdout()
				if o.json {
					return printJSON(out, v)
				}
				value := v.Value
				if isTerminal(out) && !bytes.HasSuffix(value, []byte("\n")) {
					value = append(value, '\n')
				}
				_, err = out.Write(value)
				return err
			})
		},
	}
	o.register(cmd, "print the record as JSON")
	return cmd
}
