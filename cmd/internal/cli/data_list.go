package cli

import (
	"fmt"

	"github.com/pzone/pzone/zone/api"
	"github.com/spf13/cobra"
)

func newDataListCmd(o *dataOptions) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "list [APP[/PREFIX]]",
		Short: "List keys and values",
		Long: `list prints one line per key, in key order: the key, a tab, and the value
when it is printable text on one line, else its size as <N bytes>. APP
lists one application's keys, APP/PREFIX those starting with the prefix;
with --bucket the argument is a key prefix.`,
		Args: cobra.MaximumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			prefix, err := o.prefix(args)
			if err != nil {
				return err
			}
			out := cmd.OutOrStdout()
			arr := &jsonArray{w: out}
			err = o.client(func(c *api.Client) error {
				return c.DataList(cmd.Context(), o.bucket, prefix, func(v api.RecordView) error {
					if o.json {
						return arr.add(v)
					}
					_, err := fmt.Fprintf(out, "%s\t%s\n", v.Key, shown(v))
					return err
				})
			})
			if err != nil || !o.json {
				return err
			}
			return arr.close()
		},
	}
	o.register(cmd, "print a JSON array of records")
	return cmd
}
