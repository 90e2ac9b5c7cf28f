package cli

import (
	"context"
	"fmt"
	"time"

	"github.com/spf13/cobra"

	"github.com/pzone/pzone/zone"
)

func newPeerWaitCmd(g *globals) *cobra.Command {
	var timeout time.Duration
	cmd := &cobra.Command{
		Use:   "wait ready|online|connecting",
		Short: "Wait until pzp run answers, or its session reaches a state",
		Args: func(cmd *cobra.Command, args []string) error {
			if len(args) != 1 || (args[0] != "ready" && args[0] != "online" && args[0] != "connecting") {
				return usagef("say what to wait for: ready, online or connecting")
			}
			return nil
		},
		RunE: func(cmd *cobra.Command, args []string) error {
			dir, err := g.dataDir()
			if err != nil {
				return err
			}
			c := zone.NewClient(zone.SocketPath(dir, zone.PeerSocketName))
			ctx, cancel := context.WithTimeout(cmd.Context(), timeout)
			defer cancel()
			var st zone.PeerStatus
			if err := waitReady(ctx, c, "/v1/status", &st); err != nil {
				return fmt.Errorf("pzp in %s not running after %v: %w", dir, timeout, err)
			}
			if args[0] == "ready" {
				return nil
			}
			v, err := watch(ctx, c, "/v1/status", func(s *zone.PeerStatus) uint64 { return s.Version }, func(s *zone.PeerStatus) bool { return s.State == args[0] })
			if err != nil {
				if v == nil {
					return err
				}
				return fmt.Errorf("not %s after %v: state %s, last error: %s", args[0], timeout, v.State, dash(v.LastError))
			}
			return nil
		},
	}
	cmd.Flags().DurationVar(&timeout, "timeout", defaultWait, "give up after this long")
	return cmd
}
