// Command mangen writes the man pages of pzh and pzp, one per command,
// from their command trees (make man).
package main

import (
	"flag"
	"fmt"
	"os"

	"github.com/spf13/cobra"
	"github.com/spf13/cobra/doc"

	"github.com/pzone/pzone/cmd/internal/cli"
)

func main() {
	out := flag.String("out", "man", "directory for the pages (section 1)")
	flag.Parse()
	if err := write(*out); err != nil {
		fmt.Fprintln(os.Stderr, "mangen:", err)
		os.Exit(1)
	}
}

func write(dir string) error {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	for _, root := range []*cobra.Command{cli.HubCommand(), cli.PeerCommand()} {
		root.DisableAutoGenTag = true // pages do not change with the day they are made
		hdr := &doc.GenManHeader{Section: "1", Source: "pzone", Manual: "pzone manual"}
		if err := doc.GenManTree(root, hdr, dir); err != nil {
			return fmt.Errorf("%s: %w", root.Name(), err)
		}
	}
	return nil
}
