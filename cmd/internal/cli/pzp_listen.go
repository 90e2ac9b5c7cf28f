package cli

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"sync"

	"github.com/spf13/cobra"

	"github.com/pzone/pzone/zone/api"
	"github.com/pzone/pzone/zone/wire"
)

func newPeerListenCmd(g *globals) *cobra.Command {
	var description string
	var asJSON bool
	var count int
	cmd := &cobra.Command{
		Use:   "listen SERVICE",
		Short: "Serve SERVICE and print each message it receives, until interrupted",
		Long: `listen registers SERVICE on this device and prints each message sent to it on
its own line: the message (JSON), or with --json the whole event (sender,
time, body). Calls to it are answered with an error: it only takes messages.`,
		Args: func(cmd *cobra.Command, args []string) error {
			if len(args) != 1 {
				return usagef("listen takes SERVICE")
			}
			if err := wire.ValidateServiceName(args[0]); err != nil {
				return usageError{err}
			}
			return nil
		},
		RunE: func(cmd *cobra.Command, args []string) error {
			c, hint, err := peerClient(g)
			if err != nil {
				return err
			}
			if count < 0 {
				return usagef("--count must not be negative")
			}
			out := cmd.OutOrStdout()
			ctx, stop := context.WithCancel(cmd.Context())
			defer stop()
			var mu sync.Mutex // events are handled concurrently
			printed := 0
			print := func(ev api.Event) {
				mu.Lock()
				defer mu.Unlock()
				if count > 0 && printed >= count {
					return
				}
				printed++
				if printed == count {
					defer stop()
				}
				if asJSON {
					b, _ := json.Marshal(ev)
					fmt.Fprintln(out, string(b))
				} else {
					fmt.Fprintln(out, string(ev.Body))
				}
				if f, ok := out.(interface{ Sync() error }); ok {
					f.Sync()
				}
			}
			info := api.ServiceInfo{Name: args[0], Description: description}
			err = c.Serve(ctx, info, func(_ context.Context, ev api.Event) (any, error) {
				if ev.Type != "message" {
					return nil, fmt.Errorf("%s only takes messages (pzp send)", args[0])
				}
				print(ev)
				return nil, nil
			}, func() { fmt.Fprintf(cmd.ErrOrStderr(), "listening on %s\n", args[0]) })
			if errors.Is(err, context.Canceled) || errors.Is(err, io.EOF) {
				return nil
			}
			return hint(err)
		},
	}
	cmd.Flags().StringVar(&description, "description", "", "what the service is, for pzp services")
	cmd.Flags().BoolVar(&asJSON, "json", false, "print each event as JSON")
	cmd.Flags().IntVar(&count, "count", 0, "exit after this many messages (0: run until interrupted)")
	return cmd
}

func newPeerServeCmd(g *globals) *cobra.Command {
	var tokenRequired bool
	cmd := &cobra.Command{
		Use:   "serve echo",
		Short: "Run a built-in service: echo (method echo returns its argument)",
		Args: func(cmd *cobra.Command, args []string) error {
			if len(args) != 1 || args[0] != "echo" {
				return usagef("the built-in services are: echo")
			}
			return nil
		},
		RunE: func(cmd *cobra.Command, args []string) error {
			c, hint, err := peerClient(g)
			if err != nil {
				return err
			}
			info := api.ServiceInfo{Name: "echo", Description: "returns its argument", Methods: []string{"echo"}, TokenRequired: tokenRequired}
			err = c.Serve(cmd.Context(), info, func(_ context.Context, ev api.Event) (any, error) {
				if ev.Type == "call" && ev.Method != "echo" {
					return nil, fmt.Errorf("echo has one method, echo, not %q", ev.Method)
				}
				return ev.Body, nil
			}, func() { fmt.Fprintln(cmd.ErrOrStderr(), "serving echo") })
			if errors.Is(err, context.Canceled) {
				return nil
			}
			return hint(err)
		},
	}
	cmd.Flags().BoolVar(&tokenRequired, "token-required", false, "take calls only with a service token (pzh tokens)")
	return cmd
}
