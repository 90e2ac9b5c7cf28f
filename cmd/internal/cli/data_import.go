package cli

import (
	"errors"
	"fmt"
	"io"
	"os"

	"github.com/spf13/cobra"

	zsync "github.com/pzone/pzone/sync"
	"github.com/pzone/pzone/zone/api"
)

func newDataImportCmd(o *dataOptions) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "import FILE|-",
		Short: "Write many records at once, from NDJSON",
		Long: `import reads records, one JSON object a line, from FILE or standard input:
  {"key":"APP/KEY","text":"a value"}
  {"key":"APP/KEY","value":"<base64>"}
  {"key":"APP/KEY","deleted":true}
A line may name its "bucket", else it goes to --bucket. The lines that
'data watch --json' prints are accepted as they are, so the state of one
zone can be copied into another. Records are written a thousand at a time,
each thousand at once or not at all. A bad line stops the import; the lines
before it stay written.`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if _, err := o.prefix(nil); err != nil { // checks --bucket
				return err
			}
			var in io.Reader = cmd.InOrStdin()
			name := "-"
			if args[0] != "-" {
				f, err := os.Open(args[0])
				if err != nil {
					return fmt.Errorf("read the records: %w", err)
				}
				defer f.Close()
				in, name = f, args[0]
			}
			var n, line int
			err := o.client(func(c *api.Client) error {
				var err error
				n, line, err = c.DataImportInto(cmd.Context(), o.bucket, in)
				return err
			})
			if err != nil {
				return importStopped(err, n, line, name, o)
			}
			out := cmd.OutOrStdout()
			if o.json {
				return printJSON(out, api.ImportResult{Applied: n})
			}
			_, err = fmt.Fprintf(out, "imported %d records\n", n)
			return err
		},
	}
	o.register(cmd, `print {"applied": N}`)
	return cmd
}

// importStopped explains an import the daemon refused part way: what was
// written, and how to go on from the line at fault.
func importStopped(err error, n, line int, name string, o *dataOptions) error {
	var ae *api.APIError
	if !errors.As(err, &ae) {
		return err
	}
	if line == 0 {
		return fmt.Errorf("%w (%d records were written before it stopped)", err, n)
	}
	resume := "correct or remove that line, then import from it on"
	if name != "-" {
		flags := ""
		if dir, derr := o.g.dataDir(); derr == nil {
			flags = " --data " + dir
		}
		if o.bucket != zsync.BucketAppData {
			flags += " --bucket " + o.bucket
		}
		resume = fmt.Sprintf("correct or remove that line, then resume with: tail -n +%d %s | %s data import%s -", line, name, o.daemon.prog, flags)
	}
	return fmt.Errorf("%w; the lines before it were imported (%d records written), none after; %s", err, n, resume)
}
