package cli

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	zsync "github.com/pzone/pzone/sync"
	"github.com/pzone/pzone/zone/api"
	"github.com/pzone/pzone/zone/hub"
	"github.com/pzone/pzone/zone/stores"
)

// compactOptions are the flags of pzh compact and pzp compact.
type compactOptions struct {
	g     *globals
	prog  string   // pzh or pzp
	files []string // the stores of its data directory
	// running says how to stop the daemon holding dir's stores.
	running func(ctx context.Context, dir string) string
	json    bool
}

const compactLong = `compact returns to the disk the space that deleted data leaves in the data
directory's store files (%s). A store file never shrinks by
itself: what a deletion frees inside it is reused for later writes. compact
copies the live data of each file into a new file beside it, makes that
durable, and renames it over the original, so a failure at any point leaves
the original as it was.

It works on the files directly, so the daemon must be stopped first;
compact refuses while it runs.`

func newHubCompactCmd(g *globals) *cobra.Command {
	o := &compactOptions{g: g, prog: "pzh", files: hub.StoreFiles(), running: func(ctx context.Context, dir string) string {
		var st api.HubStatus
		ctx, cancel := context.WithTimeout(ctx, 2*time.Second)
		defer cancel()
		if err := api.NewClient(api.SocketPath(dir, api.HubSocketName)).Do(ctx, http.MethodGet, "/v1/status", nil, &st); err == nil {
			return fmt.Sprintf("pzh is running (pid %d): stop it first (e.g. kill -INT %d), then run pzh compact again", st.PID, st.PID)
		}
		return "pzh is running: stop it first (e.g. Ctrl-C where pzh serve runs, or kill -INT its pid, which pzh status shows), then run pzh compact again"
	}}
	return o.command()
}

func (o *compactOptions) command() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "compact",
		Short: "Shrink the store files after deletions (the daemon must be stopped)",
		Long:  fmt.Sprintf(compactLong, strings.Join(o.files, ", ")),
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			dir, err := o.g.dataDir()
			if err != nil {
				return err
			}
			res, err := stores.CompactStores(dir, o.files)
			if errors.Is(err, stores.ErrStoreInUse) {
				return errors.New(o.running(cmd.Context(), dir))
			}
			if perr := o.print(cmd, res); perr != nil && err == nil {
				err = perr
			}
			if err != nil {
				return err
			}
			for _, r := range res {
				if !r.Absent {
					return nil
				}
			}
			return fmt.Errorf("%s holds none of %s's stores (%s): is --data right?", dir, o.prog, strings.Join(o.files, ", "))
		},
	}
	cmd.Flags().BoolVar(&o.json, "json", false, "print as JSON: file, before and after (bytes), absent")
	return cmd
}

// print shows each file's size before and after.
func (o *compactOptions) print(cmd *cobra.Command, res []stores.CompactResult) error {
	out := cmd.OutOrStdout()
	if o.json {
		if res == nil {
			res = []stores.CompactResult{}
		}
		return printJSON(out, res)
	}
	tw := tabwriter.NewWriter(out, 0, 4, 2, ' ', 0)
	for _, r := range res {
		if r.Absent {
			fmt.Fprintf(tw, "%s\tnone\n", r.File)
			continue
		}
		fmt.Fprintf(tw, "%s\t%s -> %s\n", r.File, zsync.FormatSize(r.Before), zsync.FormatSize(r.After))
	}
	return tw.Flush()
}
