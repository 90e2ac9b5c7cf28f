package cli

import (
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"time"

	"github.com/spf13/cobra"

	"github.com/pzone/pzone/zone/backup"
	"github.com/pzone/pzone/zone/stores"
)

func newHubBackupCmd(g *globals) *cobra.Command {
	return &cobra.Command{
		Use:   "backup FILE",
		Short: "Write a backup of the running hub's stores to FILE (mode 0600; - for stdout)",
		Long: `backup takes a consistent snapshot of every store of the running hub (pzh.db,
sync.db, mailbox.db) while it goes on serving, and writes them to FILE in one
file with a format version and checksums. The file is checked whole before it
replaces FILE, so FILE is either the new backup or what it was.

The backup holds the zone CA's private key: whoever has it can be the hub.
Keep it where only you can read it (FILE is made mode 0600).

Put it back with pzh restore FILE --data DIR, into an empty directory.`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, dir, err := hubClient(g)
			if err != nil {
				return err
			}
			path := args[0]
			if path == "-" {
				if isTerminal(cmd.OutOrStdout()) {
					return errors.New("the backup is binary and holds the zone CA key: redirect stdout to a file or a program (pzh backup - > FILE), or give a FILE")
				}
				_, err := c.Download(cmd.Context(), "/v1/backup", cmd.OutOrStdout())
				return notRunningHint(err, "the hub", "pzh serve --data "+dir)
			}
			tmp, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+".*.part") // mode 0600
			if err != nil {
				return fmt.Errorf("backup: %w", err)
			}
			done := false
			defer func() {
				if !done {
					tmp.Close()
					os.Remove(tmp.Name())
				}
			}()
			n, err := c.Download(cmd.Context(), "/v1/backup", tmp)
			if err != nil {
				return notRunningHint(err, "the hub", "pzh serve --data "+dir)
			}
			if _, err := tmp.Seek(0, io.SeekStart); err != nil {
				return fmt.Errorf("backup: %w", err)
			}
			hdr, err := backup.Read(tmp, func(string, int64) (io.Writer, error) { return io.Discard, nil })
			if err != nil {
				return fmt.Errorf("the backup the hub sent does not check out (%w); %s was left as it was: see the hub's log, and try again", err, path)
			}
			if err := tmp.Sync(); err != nil {
				return fmt.Errorf("backup: %w", err)
			}
			if err := tmp.Close(); err != nil {
				return fmt.Errorf("backup: %w", err)
			}
			if err := os.Rename(tmp.Name(), path); err != nil {
				return fmt.Errorf("backup: %w", err)
			}
			done = true
			if err := stores.SyncDir(filepath.Dir(path)); err != nil {
				return fmt.Errorf("backup: %w", err)
			}
			fmt.Fprintf(cmd.ErrOrStderr(), "backup of zone %q (%s) at %s: %s, %d bytes (%v)\nit holds the zone CA key: keep it private\n",
				hdr.Zone, hdr.ZoneID, hdr.Created.Local().Format(time.DateTime), path, n, hdr.Files)
			return nil
		},
	}
}
