// Command pzh is the pzone hub. See README.md.
package main

import (
	"os"

	"github.com/pzone/pzone/cmd/internal/cli"
)

func main() { os.Exit(cli.Run(cli.HubCommand())) }
