package cli

import (
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/pzone/pzone/zone/mgmt"
	"github.com/pzone/pzone/zone/web"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"

	"github.com/pzone/pzone/pairing"
	zsync "github.com/pzone/pzone/sync"
	"github.com/pzone/pzone/transport"
	"github.com/pzone/pzone/zone/hub"
	"github.com/pzone/pzone/zone/wire"
)

type hubServeOptions struct {
	listen     string
	noQUIC     bool
	noTCP      bool
	heartbeat  time.Duration
	renewGrace time.Duration
	pairBurst  int
	pairRefill time.Duration
	retention  time.Duration
	devQuota   byteSize
	zoneQuota  byteSize
	queueLimit int
	queueMiB   int
	wakeRate   int
	resetState bool
	resetMail  bool
	web        string
	metrics    string
	webCert    string
	webKey     string
	webURL     string
	webIdle    time.Duration
	webLife    time.Duration
}

// ServeExtension adds flags to pzh serve and returns what they change in
// the hub's configuration. Tests use it to build a pzh that misbehaves;
// the pzh command has none.
type ServeExtension func(flags *pflag.FlagSet) (configure func(*hub.Config) error)

func newHubServeCmd(g *globals, exts []ServeExtension) *cobra.Command {
	o := &hubServeOptions{}
	var configures []func(*hub.Config) error
	cmd := &cobra.Command{
		Use:   "serve",
		Short: "Run the hub",
		Long: `serve runs the hub: QUIC on UDP and TLS 1.3 + yamux on TCP, both on the same
port, plus the admin socket in the data directory. It runs until SIGINT or
SIGTERM, then closes every session with reason "shutdown" and exits 0.

Messages sent with a time to live (pzp send --ttl) for a device that is
asleep or offline wait in the data directory's mailbox.db, at most
--queue-limit messages and --queue-mib MiB per device; the hub wakes the
device with a UDP ping, at most --wake-rate pings per device per minute.

serve checks every store in the data directory before it starts. A store
that is missing although the hub made it, is damaged, or (sync.db) holds a
zone state this hub did not serve, stops it with an error that names the
file: restore the file from a backup, or start that store over on purpose
with --reset-zone-state (sync.db: policy rules, service tokens and app data
are lost, and devices drop their copies) or --reset-mailbox (mailbox.db:
queued messages are lost). The old file is kept beside the new one as
FILE.replaced-TIME.

The zone state, which every device keeps a copy of, holds at most
--zone-quota bytes of keys and values, and records last written by one
device at most --device-quota; the hub refuses a device's edit that would
go over either, saying so (pzp status shows it on the device). Edits that
shrink what a device holds, and deletions, are always taken.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if o.queueLimit < 1 || o.queueMiB < 1 || o.wakeRate < 1 {
				return usagef("--queue-limit, --queue-mib and --wake-rate must be at least 1")
			}
			if o.devQuota < 1 || o.zoneQuota < 1 {
				return usagef("--device-quota and --zone-quota must be at least 1 byte")
			}
			kinds, err := serveKinds(o.noQUIC, o.noTCP)
			if err != nil {
				return err
			}
			dir, err := g.dataDir()
			if err != nil {
				return err
			}
			log, err := g.logger(cmd.ErrOrStderr())
			if err != nil {
				return err
			}
			cfg := hub.Config{DataDir: dir, Listen: o.listen, Transports: kinds,
				Heartbeat: o.heartbeat, RenewGrace: o.renewGrace, Logger: log, PairBurst: o.pairBurst, PairRefill: o.pairRefill, TombstoneRetention: o.retention,
				DeviceQuota: int64(o.devQuota), ZoneQuota: int64(o.zoneQuota),
				QueueLimit: o.queueLimit, QueueBytes: int64(o.queueMiB) << 20, WakeRate: o.wakeRate,
				ResetZoneState: o.resetState, ResetMailbox: o.resetMail,
				Web: web.Config{Addr: o.web, CertFile: o.webCert, KeyFile: o.webKey, URL: o.webURL}, WebSessionIdle: o.webIdle, WebSessionLifetime: o.webLife,
				Metrics: o.metrics}
			if o.web != "" {
				cfg.WebReady = func(url string) {
					fmt.Fprintf(cmd.ErrOrStderr(), "web dashboard and API at %s/ (operators: pzh operator add NAME)\n", url)
				}
			}
			for _, configure := range configures {
				if err := configure(&cfg); err != nil {
					return err
				}
			}
			return hub.Run(cmd.Context(), cfg)
		},
	}
	f := cmd.Flags()
	f.StringVar(&o.listen, "listen", "", "HOST:PORT to listen on, UDP and TCP (default: all interfaces, the public address's port)")
	f.BoolVar(&o.noQUIC, "no-quic", false, "serve TCP only (devices fall back to it)")
	f.BoolVar(&o.noTCP, "no-tcp", false, "serve QUIC only")
	f.DurationVar(&o.heartbeat, "heartbeat", wire.DefaultHeartbeat, "how often devices must ping; a link is dead after 3 missed")
	f.DurationVar(&o.renewGrace, "renew-grace", hub.DefaultRenewGrace, "how long after its certificate expired a device may still renew")
	f.IntVar(&o.pairBurst, "pair-burst", pairing.DefaultLimitBurst, "failed pairing attempts one address may make before it is slowed down")
	f.DurationVar(&o.pairRefill, "pair-refill", pairing.DefaultLimitRefill, "after the burst, one more pairing attempt per this long")
	f.DurationVar(&o.retention, "tombstone-retention", zsync.DefaultTombstoneRetention, "how long a deletion is kept for devices that have not seen it; a device away longer resyncs fully")
	o.devQuota, o.zoneQuota = byteSize(zsync.DefaultDeviceQuota), byteSize(zsync.DefaultZoneQuota)
	f.Var(&o.devQuota, "device-quota", "zone state (keys and values) the records one device last wrote may hold, in bytes or KiB, MiB, GiB")
	f.Var(&o.zoneQuota, "zone-quota", "zone state (keys and values) the whole zone may hold, in bytes or KiB, MiB, GiB")
	f.IntVar(&o.queueLimit, "queue-limit", hub.DefaultQueueLimit, "messages the hub keeps for one device that is away")
	f.IntVar(&o.queueMiB, "queue-mib", hub.DefaultQueueBytes>>20, "MiB of messages the hub keeps for one device that is away")
	f.IntVar(&o.wakeRate, "wake-rate", hub.DefaultWakeRate, "wake pings one device may receive per minute")
	f.BoolVar(&o.resetState, "reset-zone-state", false, "start the zone state (sync.db) over, on purpose: policy rules, tokens and app data are lost, devices drop their copies")
	f.BoolVar(&o.resetMail, "reset-mailbox", false, "start mailbox.db over, on purpose: queued messages are lost")
	f.StringVar(&o.web, "web", "", "HOST:PORT to serve the web dashboard and the HTTP API on (off without it; plain HTTP only on a loopback address)")
	f.StringVar(&o.metrics, "metrics", "", "HOST:PORT to serve Prometheus metrics on, at /metrics (off without it; no authentication: counts only, no names)")
	f.StringVar(&o.webCert, "web-cert", "", "certificate (PEM) of the web listener, for HTTPS")
	f.StringVar(&o.webKey, "web-key", "", "private key (PEM) of --web-cert")
	f.StringVar(&o.webURL, "web-url", "", "the web listener's address as browsers reach it (https://HOST:PORT), for login links; default from --web's host or the certificate's name")
	f.DurationVar(&o.webIdle, "web-session-idle", mgmt.DefaultIdle, "a web session nothing used for this long ends")
	f.DurationVar(&o.webLife, "web-session-lifetime", mgmt.DefaultLifetime, "a web session ends this long after its login, used or not")
	// For tests only: a hub that alters or replays calls from friend
	// zones, to show that devices catch it. Hidden from help.
	for _, ext := range exts {
		configures = append(configures, ext(f))
	}
	addConfigFlag(cmd, "PZH")
	return cmd
}

// byteSize is a flag value of bytes, written with an optional binary unit:
// 1048576, 1024KiB, 1MiB and 1M are the same.
// serveKinds are the transports pzh serve and pzh provider serve serve,
// from their --no-quic and --no-tcp.
func serveKinds(noQUIC, noTCP bool) ([]transport.Kind, error) {
	if noQUIC && noTCP {
		return nil, usagef("--no-quic and --no-tcp together leave nothing to serve")
	}
	var kinds []transport.Kind
	if !noQUIC {
		kinds = append(kinds, transport.KindQUIC)
	}
	if !noTCP {
		kinds = append(kinds, transport.KindTCP)
	}
	return kinds, nil
}

type byteSize int64

var byteUnits = []struct {
	name  string
	shift uint
}{{"tib", 40}, {"t", 40}, {"gib", 30}, {"g", 30}, {"mib", 20}, {"m", 20}, {"kib", 10}, {"k", 10}, {"b", 0}}

func (b *byteSize) Set(s string) error {
	num, shift := strings.ToLower(strings.TrimSpace(s)), uint(0)
	for _, u := range byteUnits {
		if strings.HasSuffix(num, u.name) {
			num, shift = strings.TrimSpace(strings.TrimSuffix(num, u.name)), u.shift
			break
		}
	}
	n, err := strconv.ParseUint(num, 10, 64)
	if err != nil || n > 1<<(62-shift) {
		return fmt.Errorf("%q is not a size: write bytes, or a number with KiB, MiB, GiB or TiB", s)
	}
	*b = byteSize(n << shift)
	return nil
}

func (b *byteSize) String() string {
	n := int64(*b)
	for _, u := range []struct {
		name  string
		shift uint
	}{{"TiB", 40}, {"GiB", 30}, {"MiB", 20}, {"KiB", 10}} {
		if n != 0 && n%(1<<u.shift) == 0 {
			return strconv.FormatInt(n>>u.shift, 10) + u.name
		}
	}
	return strconv.FormatInt(n, 10)
}

func (b *byteSize) Type() string { return "size" }
