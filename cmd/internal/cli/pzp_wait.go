package cli

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/spf13/cobra"

	"github.com/pzone/pzone/zone/api"
)

func newPeerWaitCmd(g *globals) *cobra.Command {
	var timeout time.Duration
	cmd := &cobra.Command{
		Use:   "wait ready|online|connecting|asleep|synced",
		Short: "Wait until pzp run answers, or its session reaches a state",
		Long: `wait blocks until pzp run answers (ready), its session is up (online) or
down (connecting), it sleeps (asleep, with pzp run --sleep-after), or it
is online, holds everything the hub has, and has no local edits waiting
for the hub (synced).`,
		Args: func(cmd *cobra.Command, args []string) error {
			if len(args) != 1 || (args[0] != "ready" && args[0] != "online" && args[0] != "connecting" && args[0] != "asleep" && args[0] != "synced") {
				return usagef("say what to wait for: ready, online, connecting, asleep or synced")
			}
			return nil
		},
		RunE: func(cmd *cobra.Command, args []string) error {
			dir, err := g.dataDir()
			if err != nil {
				return err
			}
			c := deviceClient(dir)
			ctx, cancel := context.WithTimeout(cmd.Context(), timeout)
			defer cancel()
			var st api.PeerStatus
			if err := waitReady(ctx, c, "/v1/status", &st); err != nil {
				if !errors.Is(err, api.ErrNotRunning) {
					return fmt.Errorf("pzp in %s: %w", dir, err)
				}
				return fmt.Errorf("pzp in %s not running after %v: %w", dir, timeout, err)
			}
			if args[0] == "ready" {
				return nil
			}
			v, err := watch(ctx, c, "/v1/status", func(s *api.PeerStatus) uint64 { return s.Version }, func(s *api.PeerStatus) bool {
				if args[0] == "synced" {
					return s.State == "online" && s.Sync != nil && s.Sync.Synced()
				}
				return s.State == args[0]
			})
			if err != nil {
				if v == nil {
					return err
				}
				if args[0] == "synced" && v.Sync != nil {
					return fmt.Errorf("not synced after %v: state %s, sync %s at %d of %d with %d edits pending, last error: %s", timeout, v.State, v.Sync.Phase, v.Sync.LastSeq, v.Sync.HubSeq, v.Sync.Pending, dash(v.LastError))
				}
				return fmt.Errorf("not %s after %v: state %s, last error: %s", args[0], timeout, v.State, dash(v.LastError))
			}
			return nil
		},
	}
	cmd.Flags().DurationVar(&timeout, "timeout", defaultWait, "give up after this long")
	return cmd
}
