package cli

import (
	"fmt"
	"time"

	"github.com/pzone/pzone/zone/api"
	"github.com/spf13/cobra"
)

// defaultVerdictWait is how long pzp data set waits for the hub's verdict
// on its edit while the device is online. An answer takes one round trip
// to the hub, milliseconds; this is for a slow link or a hub that is busy,
// and short enough that a script never hangs on a hub that went away.
const defaultVerdictWait = 10 * time.Second

func newDataSetCmd(o *dataOptions) *cobra.Command {
	var wait time.Duration
	long := `set writes VALUE under APP/KEY. @PATH reads the value from a file; - or no
VALUE reads it from standard input, which is also how to store a value that
starts with @. It prints nothing unless --json.`
	if o.daemon.prog == "pzp" {
		long += `

While the device is online, set waits (up to --wait) for the hub to take
the edit: if the hub refuses it (for instance, over a quota), set says why
and fails, and the edit is undone on this device. Offline, or when the
hub has not answered in time, the edit stays pending and is pushed later;
pzp status shows refusals.`
	}
	cmd := &cobra.Command{
		Use:   "set APP/KEY [VALUE | @PATH | -]",
		Short: "Write a value",
		Long:  long,
		Args:  cobra.RangeArgs(1, 2),
		RunE: func(cmd *cobra.Command, args []string) error {
			key, err := o.key(args[0])
			if err != nil {
				return err
			}
			value, err := readValue(args[1:], cmd.InOrStdin())
			if err != nil {
				return err
			}
			if wait < 0 {
				return usagef("--wait %v is negative", wait)
			}
			return o.client(func(c *api.Client) error {
				var v *api.RecordView
				var err error
				if o.daemon.prog == "pzp" {
					v, err = c.DataPutVerdict(cmd.Context(), o.bucket, key, value, wait)
				} else {
					v, err = c.DataPut(cmd.Context(), o.bucket, key, value)
				}
				if err != nil {
					return err
				}
				switch {
				case v.Verdict == "superseded":
					fmt.Fprintln(cmd.ErrOrStderr(), "note: a newer edit of this key, made elsewhere, won over this one")
				case v.Verdict == "pending" && wait > 0:
					fmt.Fprintln(cmd.ErrOrStderr(), "note: the hub has not taken the edit yet (the device is offline, or the hub is slow); it stays pending and is pushed when it can be (pzp status shows refusals)")
				}
				if !o.json {
					return nil
				}
				return printJSON(cmd.OutOrStdout(), v)
			})
		},
	}
	o.register(cmd, "print the written record as JSON")
	if o.daemon.prog == "pzp" {
		cmd.Flags().DurationVar(&wait, "wait", defaultVerdictWait, "how long to wait for the hub's verdict on the edit while online (0: do not wait)")
	}
	return cmd
}
