package cli

import (
	"github.com/spf13/cobra"

	"github.com/pzone/pzone/transport"
	"github.com/pzone/pzone/wakeup"
	"github.com/pzone/pzone/zone/peer"
)

// defaultDirectListen takes any free port on every interface: devices
// find each other's ports in the zone state, so none needs to be fixed
// (set one to open it in a firewall).
const defaultDirectListen = ":0"

func newPeerRunCmd(g *globals) *cobra.Command {
	var mode string
	direct := true
	cfg := peer.Config{}
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
and counted in pzp status.

Devices of the zone also connect to each other directly when they can
(same LAN): pzp run listens on --direct-listen (QUIC and TCP on one port;
the default :0 takes any free port on every interface) and publishes those
addresses in the zone state. A call from an application here to a service
on another device that publishes some takes a direct connection, made with
both devices' zone certificates and checked against the zone's revocations,
and goes through the hub when none can be had within half a second, or when
it breaks before the answer began. Calls with a service token, and messages
for later, always go through the hub. --direct=false turns it off; a device
that sleeps (--sleep-after) has none unless --direct-listen is given, which
is an error then. pzp status shows the path to each device.

The device never gives up its copy of the zone state for a hub whose zone
state changed (another epoch) unless the zone CA signed the change, which a
hub does only when its operator started the state over on purpose (pzh serve
--reset-zone-state). Otherwise it keeps its copy, does not sync, and pzp
status says why. A missing or damaged sync.db here stops pzp run with an
error that names the file; --reset-zone-state fetches it again from the hub.`,
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
			switch {
			case !direct:
				cfg.DirectListen = ""
			case cfg.SleepAfter > 0 && !cmd.Flags().Changed("direct-listen"):
				cfg.DirectListen = "" // a sleeping device holds no connections
			case cfg.SleepAfter > 0:
				return usagef("--direct-listen and --sleep-after do not go together: a sleeping device holds no direct connections")
			}
			return peer.Run(cmd.Context(), cfg)
		},
	}
	f := cmd.Flags()
	f.StringVar(&mode, "transport", "auto", "auto, quic or tcp")
	f.DurationVar(&cfg.BackoffMin, "backoff-min", peer.DefaultBackoffMin, "first reconnect delay")
	f.DurationVar(&cfg.BackoffMax, "backoff-max", peer.DefaultBackoffMax, "longest reconnect delay")
	f.DurationVar(&cfg.SleepAfter, "sleep-after", 0, "sleep after this long idle, until woken (0: stay connected)")
	f.StringVar(&cfg.WakeListen, "wake-listen", ":0", "UDP address for wake pings (with --sleep-after); QUIC sessions are dialled from it too")
	f.DurationVar(&cfg.WakeWindow, "wake-window", wakeup.DefaultWindow, "accept wake pings stamped at most this far from the hub's clock")
	f.DurationVar(&cfg.CheckIn, "check-in", 0, "while asleep, reconnect this often anyway (0: only when woken)")
	f.BoolVar(&cfg.RequireAppAuth, "require-app-auth", false, "refuse local API requests from apps without a credential (pzp app add); without it they are app anonymous")
	f.StringVar(&cfg.Metrics, "metrics", "", "HOST:PORT to serve Prometheus metrics on, at /metrics (off without it; no authentication: counts and states only)")
	f.BoolVar(&cfg.ResetZoneState, "reset-zone-state", false, "start this device's copy of the zone state (sync.db) over: it is fetched again from the hub; edits not yet pushed are lost")
	f.BoolVar(&direct, "direct", true, "connect directly to other devices of the zone when they can be reached (false: every call through the hub)")
	f.StringVar(&cfg.DirectListen, "direct-listen", defaultDirectListen, "address (QUIC and TCP) for direct connections from other devices; port 0: any free one")
	addConfigFlag(cmd, "PZP")
	return cmd
}
