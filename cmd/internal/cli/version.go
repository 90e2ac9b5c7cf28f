package cli

import (
	"fmt"
	"runtime"
	"runtime/debug"

	"github.com/spf13/cobra"

	"github.com/pzone/pzone/zone/wire"
)

// versionText says which build this is, from the build information the Go
// toolchain records: the module's version (a tag, a pseudo-version, or
// "(devel)" for a build in a work tree), the VCS revision and time (and
// whether the tree had changes), the Go version, and the protocol.
func versionText() string {
	mod, rev, when, dirty := "(unknown)", "", "", false
	if bi, ok := debug.ReadBuildInfo(); ok {
		mod = bi.Main.Version
		for _, s := range bi.Settings {
			switch s.Key {
			case "vcs.revision":
				rev = s.Value
			case "vcs.time":
				when = s.Value
			case "vcs.modified":
				dirty = s.Value == "true"
			}
		}
	}
	v := mod
	if rev != "" {
		if len(rev) > 12 {
			rev = rev[:12]
		}
		v += ", revision " + rev
		if dirty {
			v += " with local changes"
		}
		if when != "" {
			v += " of " + when
		}
	}
	return fmt.Sprintf("%s (%s, %s/%s, protocol %s)", v, runtime.Version(), runtime.GOOS, runtime.GOARCH, wire.SoftwareVersion)
}

// setVersion gives root --version, and makes cobra's completion command
// (which it adds itself) refuse a shell it does not know, with exit 2,
// rather than print its help and succeed.
func setVersion(root *cobra.Command) {
	root.Version = versionText()
	root.SetVersionTemplate("{{.Name}} {{.Version}}\n")
	root.InitDefaultCompletionCmd()
	for _, c := range root.Commands() {
		if c.Name() != "completion" {
			continue
		}
		c.Args = cobra.ArbitraryArgs
		c.RunE = func(cmd *cobra.Command, args []string) error {
			if len(args) > 0 {
				return usagef("invalid argument %q for %q: name a shell, bash, zsh, fish or powershell", args[0], cmd.CommandPath())
			}
			return cmd.Help()
		}
	}
}
