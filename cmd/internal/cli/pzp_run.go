package cli

import (
	"github.com/spf13/cobra"

	"github.com/pzone/pzone/transport"
	"github.com/pzone/pzone/zone"
)

func newPeerRunCmd(g *globals) *cobra.Command {
	var mode string
	cfg := zone.PeerConfig{}
	cmd := &cobra.Command{
		Use:   "run",
		Short: "Keep this device's session with its hub",
		Long: `run keeps one authenticated session with the hub: QUIC, or TLS over TCP
when UDP is blocked (--transport auto tries QUIC first). It reconnects with
backoff when the hub goes away, renews the device certificate at 2/3 of its
lifetime, and stops with exit code 3 if the hub revokes the device or
another pzp takes over the session.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			m, err := transport.ParseMode(mode)
			if err != nil {
				return usageError{err}
			}
			dir, err := g.dataDir()
			if err != nil {
				return err
			}
			log, err := g.logger(cmd.ErrOrStderr())
			if err != nil {
				return err
			}
			cfg.DataDir, cfg.Mode, cfg.Logger = dir, m, log
			return zone.RunPeer(cmd.Context(), cfg)
		},
	}
	f := cmd.Flags()
	f.StringVar(&mode, "transport", "auto", "auto, quic or tcp")
	f.DurationVar(&cfg.BackoffMin, "backoff-min", zone.DefaultBackoffMin, "first reconnect delay")
	f.DurationVar(&cfg.BackoffMax, "backoff-max", zone.DefaultBackoffMax, "longest reconnect delay")
	return cmd
}
