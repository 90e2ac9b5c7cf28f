package cli

import (
	"encoding/json"
	"errors"
	"fmt"

	"github.com/pzone/pzone/zone/api"
	"github.com/spf13/cobra"
)

type dataWatchOptions struct {
	*dataOptions
	count       int
	changesOnly bool
}

// errWatchDone stops a watch that printed what --count asked for.
var errWatchDone = errors.New("done")

func newDataWatchCmd(do *dataOptions) *cobra.Command {
	o := &dataWatchOptions{dataOptions: do}
	cmd := &cobra.Command{
		Use:   "watch [APP[/PREFIX]]",
		Short: "Print the current values, then every change as it happens",
		Long: `watch prints a line per record: "set KEY VALUE" for a value (rendered as
by list) and "del KEY" for a deletion. It starts with the current values
(unless --changes-only), then follows changes until interrupted, or until
it has printed --count lines. The same change may show twice around the
start. With --json each line is a record as JSON.`,
		Args: cobra.MaximumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if o.count < 0 {
				return usagef("--count %d: give a number of lines, or 0 to watch until interrupted", o.count)
			}
			prefix, err := o.prefix(args)
			if err != nil {
				return err
			}
			out := cmd.OutOrStdout()
			enc := json.NewEncoder(out) // one record per line
			n := 0
			err = o.client(func(c *api.Client) error {
				return c.DataWatch(cmd.Context(), o.bucket, prefix, o.changesOnly, func(v api.RecordView) error {
					var err error
					switch {
					case o.json:
						err = enc.Encode(v)
					case v.Deleted:
						_, err = fmt.Fprintf(out, "del %s\n", v.Key)
					default:
						_, err = fmt.Fprintf(out, "set %s %s\n", v.Key, shown(v))
					}
					if n++; err == nil && n == o.count {
						err = errWatchDone
					}
					return err
				})
			})
			if errors.Is(err, errWatchDone) || cmd.Context().Err() != nil {
				return nil // done, or interrupted: both are how a watch ends
			}
			return err
		},
	}
	o.register(cmd, "print each record as JSON on its own line")
	cmd.Flags().IntVar(&o.count, "count", 0, "exit after printing this many lines (0: never)")
	cmd.Flags().BoolVar(&o.changesOnly, "changes-only", false, "skip the current values; print only changes")
	return cmd
}
