package cli

import (
	"github.com/spf13/cobra"

	"github.com/pzone/pzone/transport"
	"github.com/pzone/pzone/wakeup"
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
another pzp takes over the session.

With --sleep-after, the device sleeps after that long without activity (no
calls or messages either way, no zone-state changes, every local edit
pushed): it closes its session, sends nothing at all, and listens on a UDP
port (--wake-listen) for the hub's wake ping, a 41-byte datagram that names
nothing and is authenticated with a secret set up over the session. It
wakes on a valid ping, when an application here calls or sends, on a local
edit, when its certificate is due for renewal, and every --check-in if set.
Forged, stale, replayed and malformed datagrams are dropped without reply
and counted in pzp status.`,
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
	f.DurationVar(&cfg.SleepAfter, "sleep-after", 0, "sleep after this long idle, until woken (0: stay connected)")
	f.StringVar(&cfg.WakeListen, "wake-listen", ":0", "UDP address for wake pings (with --sleep-after); QUIC sessions are dialled from it too")
	f.DurationVar(&cfg.WakeWindow, "wake-window", wakeup.DefaultWindow, "accept wake pings stamped at most this far from the hub's clock")
	f.DurationVar(&cfg.CheckIn, "check-in", 0, "while asleep, reconnect this often anyway (0: only when woken)")
	return cmd
}
