package cli

import (
	"fmt"
	"io"
	"os"
	"time"

	"github.com/spf13/cobra"

	"github.com/pzone/pzone/zone/hub"
)

func newHubRestoreCmd(g *globals) *cobra.Command {
	return &cobra.Command{
		Use:   "restore FILE",
		Short: "Put a backup (pzh backup) into a new data directory (--data DIR; - reads stdin)",
		Long: `restore checks the whole backup (its format, version and checksums, and that it
is a zone's) and only then puts its stores into the data directory, which must
hold no zone: it never overwrites one. Start the hub there with pzh serve.

The restored hub is as the zone was at the backup; what happened since:
  - edits to the zone state that devices made or received after the backup
    come back: each device pushes its own to the restored hub when it
    connects, and the revocations it saw (the hub checks their signature and
    revokes those devices again);
  - deletions made after the backup are undone, and the hub's own changes
    since (policy rules, service tokens, friends, invites, operators) are
    as they were: make them again;
  - a device paired after the backup must pair again; messages queued then
    and delivered since may be delivered again.`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			dir, err := g.dataDir()
			if err != nil {
				return err
			}
			var in io.Reader = cmd.InOrStdin()
			if args[0] != "-" {
				f, err := os.Open(args[0])
				if err != nil {
					return fmt.Errorf("restore: %w", err)
				}
				defer f.Close()
				in = f
			}
			hdr, err := hub.Restore(in, dir)
			if err != nil {
				return fmt.Errorf("%s: %w", args[0], err)
			}
			fmt.Fprintf(cmd.ErrOrStderr(), "restored zone %q (%s) as it was at %s into %s\nstart it with: pzh serve --data %s\n",
				hdr.Zone, hdr.ZoneID, hdr.Created.Local().Format(time.DateTime), dir, dir)
			return nil
		},
	}
}
