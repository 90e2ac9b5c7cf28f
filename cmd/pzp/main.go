// Command pzp is the pzone peer, run on each device. See README.md.
package main

import (
	"os"

	"github.com/pzone/pzone/cmd/internal/cli"
)

func main() { os.Exit(cli.Run(cli.PeerCommand())) }
