// Package cli builds the pzh and pzp command trees. Each subcommand lives in
// its own file with an options struct, a constructor, argument validation
// and RunE; output goes through cmd.OutOrStdout so tests can capture it.
//
// It is not where the daemons live: serve and run call hub.Run and
// peer.Run, and every other subcommand talks to its daemon's socket.
package cli

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"

	"github.com/spf13/cobra"

	"github.com/pzone/pzone/zone/api"
	"github.com/pzone/pzone/zone/wire"
)

// Exit codes, documented in the README.
const (
	ExitOK    = 0
	ExitError = 1 // the command failed; stderr says why
	ExitUsage = 2 // bad flags or arguments
	ExitEnded = 3 // pzp run: the hub ended the session for good (revoked, replaced, unpaired, expired)
)

// usageError marks errors that are the caller's wording, not a failure.
type usageError struct{ error }

func usagef(format string, args ...any) error { return usageError{fmt.Errorf(format, args...)} }

// Run executes root with the process arguments and returns the exit code.
func Run(root *cobra.Command) int {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	root.SilenceErrors = true
	root.SilenceUsage = true
	root.SetFlagErrorFunc(func(c *cobra.Command, err error) error { return usageError{err} })
	err := root.ExecuteContext(ctx)
	if err == nil {
		return ExitOK
	}
	fmt.Fprintf(root.ErrOrStderr(), "%s: %v\n", root.Name(), err)
	var ue usageError
	var end *wire.EndError
	switch {
	case errors.As(err, &ue) || strings.HasPrefix(err.Error(), "unknown command") || strings.Contains(err.Error(), "arg(s)"):
		fmt.Fprintf(root.ErrOrStderr(), "Run '%s --help' for usage.\n", root.Name())
		return ExitUsage
	case errors.As(err, &end):
		return ExitEnded
	}
	return ExitError
}

// globals are the flags every subcommand shares.
type globals struct {
	data     string
	logLevel string
	envVar   string // PZH_DATA or PZP_DATA
	sub      string // hub or peer, under the XDG data directory
}

func (g *globals) register(root *cobra.Command) {
	root.PersistentFlags().StringVar(&g.data, "data", "", fmt.Sprintf("data directory (default $%s, else $XDG_DATA_HOME/pzone/%s)", g.envVar, g.sub))
	root.PersistentFlags().StringVar(&g.logLevel, "log-level", "info", "daemon log level: debug, info, warn or error (logs go to stderr)")
}

// dataDir resolves the data directory: --data, then the environment, then
// the XDG data directory.
func (g *globals) dataDir() (string, error) {
	d := g.data
	if d == "" {
		d = os.Getenv(g.envVar)
	}
	if d == "" {
		base := os.Getenv("XDG_DATA_HOME")
		if base == "" {
			home, err := os.UserHomeDir()
			if err != nil {
				return "", fmt.Errorf("no data directory: pass --data DIR or set %s", g.envVar)
			}
			base = filepath.Join(home, ".local", "share")
		}
		d = filepath.Join(base, "pzone", g.sub)
	}
	return filepath.Abs(d)
}

func (g *globals) logger(w io.Writer) (*slog.Logger, error) {
	var lvl slog.Level
	if err := lvl.UnmarshalText([]byte(g.logLevel)); err != nil {
		return nil, usagef("--log-level %q: use debug, info, warn or error", g.logLevel)
	}
	return slog.New(slog.NewTextHandler(w, &slog.HandlerOptions{Level: lvl})), nil
}

// tokenArg is a token given as an argument, or "-" for the first line
// of standard input (so it stays out of the shell history).
func tokenArg(cmd *cobra.Command, arg string) (string, error) {
	if arg != "-" {
		return arg, nil
	}
	line, err := bufio.NewReader(cmd.InOrStdin()).ReadString('\n')
	if err != nil && line == "" {
		return "", fmt.Errorf("read token from stdin: %w", err)
	}
	return line, nil
}

func printJSON(w io.Writer, v any) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(v)
}

// notRunningHint turns "daemon not running" into what to do about it.
func notRunningHint(err error, what, start string) error {
	if errors.Is(err, api.ErrNotRunning) {
		return fmt.Errorf("%s is not running (%v); start it with: %s", what, err, start)
	}
	return err
}

// addrArgs checks a command's arguments: min to max of them (usage says
// which), the one at addr a service address (DEVICE/SERVICE or
// FRIEND/DEVICE/SERVICE), then more, if set, for the rest.
func addrArgs(min, max, addr int, usage string, more func(args []string) error) cobra.PositionalArgs {
	return func(cmd *cobra.Command, args []string) error {
		if len(args) < min || len(args) > max {
			return usagef("%s", usage)
		}
		if _, err := wire.ParseAddr(args[addr]); err != nil {
			return usageError{err}
		}
		if more != nil {
			return more(args)
		}
		return nil
	}
}
