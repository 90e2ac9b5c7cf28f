package hub

import (
	"context"
	"crypto/ed25519"
	"crypto/hmac"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/pzone/pzone/zone/policy"
	"github.com/pzone/pzone/zone/services"
	"github.com/pzone/pzone/zone/session"
	"github.com/pzone/pzone/zone/stores"

	"golang.org/x/sync/errgroup"

	"github.com/pzone/pzone/certs"
	"github.com/pzone/pzone/pairing"
	zsync "github.com/pzone/pzone/sync"
	"github.com/pzone/pzone/transport"
	"github.com/pzone/pzone/wakeup"
	"github.com/pzone/pzone/zone/api"
	"github.com/pzone/pzone/zone/envelope"
	"github.com/pzone/pzone/zone/localapi"
	"github.com/pzone/pzone/zone/metrics"
	"github.com/pzone/pzone/zone/mgmt"
	"github.com/pzone/pzone/zone/web"
	"github.com/pzone/pzone/zone/wire"
)

// Hub defaults, with why.
const (
	// DefaultRenewGrace is how long after expiry a device that is not
	// revoked may still connect to renew: a laptop left in a drawer for a
	// month must not be locked out of its own zone.
	DefaultRenewGrace = 180 * 24 * time.Hour
	// hubCertLifetime: the hub signs its own certificate and renews it at
	// 2/3, like devices.
	hubCertLifetime = 90 * 24 * time.Hour
	// hubCertCheck is how often the hub checks whether its own certificate
	// is due for renewal.
	hubCertCheck = time.Hour
	// tlsAnyExpiry lets the TLS layer accept expired-but-genuine device
	// certificates, so that admission (which can tell the device why) decides.
	tlsAnyExpiry = 100 * 365 * 24 * time.Hour
)

// Config configures Run.
type Config struct {
	// DataDir holds the zone's stores (unless Stores keeps them) and its
	// admin socket.
	DataDir string
	// Stores, if set, keeps the zone's stores instead of files in
	// DataDir: a provider cluster's database.
	Stores Stores
	// Listen is host:port for both UDP (QUIC) and TCP. Empty: all
	// interfaces, on the port of the zone's first public address.
	Listen string
	// Transports to serve; empty means both.
	Transports []transport.Kind
	// Heartbeat is the ping interval devices are told to use.
	Heartbeat time.Duration
	// RenewGrace is how long past expiry a device may still renew.
	RenewGrace time.Duration
	Logger     *slog.Logger
	// Now is the clock; nil means time.Now.
	Now func() time.Time
	// Ready, if set, is called once the hub listens, with its address.
	Ready func(net.Addr)
	// Serving, if set, is called with the hub just before Ready (a
	// provider keeps it, for Counts).
	Serving func(*Hub)
	// PairBurst and PairRefill tune the per-address limit on failed
	// pairing attempts; zero means pairing.DefaultLimitBurst/Refill.
	PairBurst  int
	PairRefill time.Duration
	// TombstoneRetention is how long a deletion is kept for devices that
	// have not seen it; zero means sync.DefaultTombstoneRetention.
	TombstoneRetention time.Duration
	// ResetZoneState starts the zone state (sync.db) over: the old file,
	// if any, is moved aside, and devices drop their copies for the new
	// one (pzh serve --reset-zone-state). Without it a hub whose zone
	// state is missing, damaged or another's refuses to start.
	ResetZoneState bool
	// ResetMailbox likewise starts mailbox.db over (queued messages lost).
	ResetMailbox bool
	// DeviceQuota and ZoneQuota bound the zone state's live bytes one
	// device may own and the whole zone may hold; zero means
	// sync.DefaultDeviceQuota and sync.DefaultZoneQuota.
	DeviceQuota int64
	ZoneQuota   int64
	// QueueLimit and QueueBytes bound the messages kept for one device;
	// zero means DefaultQueueLimit and DefaultQueueBytes.
	QueueLimit int
	QueueBytes int64
	// WakeRate caps the wake pings one device receives per minute; zero
	// means DefaultWakeRate.
	WakeRate int
	// CallsPerCaller bounds the calls one device, or one friend zone's
	// link, has in flight through the hub; CallsPerTarget those in flight
	// to one device (or the hub's services, or a friend zone), of which
	// one caller may hold a quarter. Zero means DefaultCallsPerCaller and
	// DefaultCallsPerTarget.
	CallsPerCaller int
	CallsPerTarget int
	// CallBodyWait is how long the hub waits for a call's request body
	// after its header, beyond the time the body's size allows at a slow
	// rate; zero means DefaultCallBodyWait.
	CallBodyWait time.Duration
	// CallSlotWait is how long a call over a caller's or a target's bound
	// of calls in flight waits for a slot before it is refused; zero
	// means 2 s (slotWait).
	CallSlotWait time.Duration
	// Wakers add or replace ways of waking devices, by method (UDP is
	// built in).
	Wakers []wakeup.Waker
	// Metrics, if set, is host:port to serve Prometheus metrics on
	// (/metrics, zone/metrics).
	Metrics string
	// Web, with Web.Addr set, serves the management listener (the
	// dashboard and /api/v1/, zone/web); WebReady, if set, is called with
	// its URL once it listens.
	Web      web.Config
	WebReady func(url string)
	// WebSessionIdle and WebSessionLifetime are the web sessions' idle
	// timeout and absolute lifetime; zero means mgmt.DefaultIdle and
	// mgmt.DefaultLifetime.
	WebSessionIdle     time.Duration
	WebSessionLifetime time.Duration
	// OperatorHash is the cost of new operator passwords' hashes; zero
	// means mgmt.DefaultHashParams.
	OperatorHash mgmt.HashParams
	// Shared, if set, is the listener of a provider, which serves many
	// zones (zone/provider): the hub takes the route named by its zone
	// (certs.ServerName) and listens on nothing itself, so Listen and
	// Transports only describe the shared listener. Codes keeps its short
	// codes' numbers apart from the other zones'.
	Shared *transport.Router
	Codes  CodeBook
	// A provider's limits of one zone (zero: none beyond the others
	// above). MaxDevices bounds the paired devices; ZoneQueueBytes the
	// bytes of messages kept for all of them together; CallsPerSecond the
	// calls, messages and streams the hub admits per second from all
	// callers, its devices and friend zones.
	MaxDevices     int
	ZoneQueueBytes int64
	CallsPerSecond int
	// FriendCallHook, if set, sees each call from a friend zone before the
	// hub relays it, and takes it over by returning true. For tests that
	// need a misbehaving hub (FriendCall); pzh never sets it.
	FriendCallHook func(*FriendCall) bool
}

func (c *Config) setDefaults() {
	if c.Heartbeat == 0 {
		c.Heartbeat = wire.DefaultHeartbeat
	}
	if c.RenewGrace == 0 {
		c.RenewGrace = DefaultRenewGrace
	}
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
	if c.Now == nil {
		c.Now = time.Now
	}
	if len(c.Transports) == 0 {
		c.Transports = []transport.Kind{transport.KindQUIC, transport.KindTCP}
	}
	if c.PairBurst == 0 {
		c.PairBurst = pairing.DefaultLimitBurst
	}
	if c.PairRefill == 0 {
		c.PairRefill = pairing.DefaultLimitRefill
	}
	if c.QueueLimit == 0 {
		c.QueueLimit = DefaultQueueLimit
	}
	if c.QueueBytes == 0 {
		c.QueueBytes = DefaultQueueBytes
	}
	if c.WakeRate == 0 {
		c.WakeRate = DefaultWakeRate
	}
	if c.CallsPerCaller == 0 {
		c.CallsPerCaller = DefaultCallsPerCaller
	}
	if c.CallsPerTarget == 0 {
		c.CallsPerTarget = wire.DefaultCallsPerTarget
	}
	if c.CallSlotWait == 0 {
		c.CallSlotWait = slotWait
	}
	if c.CallBodyWait == 0 {
		c.CallBodyWait = wire.DefaultCallBodyWait
	}
	if c.DeviceQuota == 0 {
		c.DeviceQuota = zsync.DefaultDeviceQuota
	}
	if c.ZoneQuota == 0 {
		c.ZoneQuota = zsync.DefaultZoneQuota
	}
}

// Validate checks the configuration.
func (c *Config) Validate() error {
	if c.DataDir == "" {
		return errors.New("no data directory given")
	}
	if c.Stores != nil && (c.ResetZoneState || c.ResetMailbox) {
		return fmt.Errorf("--reset-zone-state and --reset-mailbox start a file over; %s keeps this zone's stores: %w", c.Stores.Where(), errStoresNotFiles)
	}
	if c.Heartbeat < wire.MinHeartbeat || c.Heartbeat > wire.MaxHeartbeat {
		return fmt.Errorf("heartbeat %v out of range: use %v to %v", c.Heartbeat, wire.MinHeartbeat, wire.MaxHeartbeat)
	}
	if c.PairBurst < 1 || c.PairRefill < 0 {
		return fmt.Errorf("pairing limit: burst must be at least 1 and refill not negative")
	}
	if c.RenewGrace < 0 {
		return fmt.Errorf("renewal grace period %v is negative", c.RenewGrace)
	}
	if c.QueueLimit < 0 || c.QueueBytes < 0 {
		return fmt.Errorf("queue limits must not be negative")
	}
	if c.WakeRate < 0 {
		return fmt.Errorf("wake rate %d is negative", c.WakeRate)
	}
	if c.CallsPerCaller < 0 || c.CallsPerTarget < 0 {
		return fmt.Errorf("call limits must not be negative")
	}
	if most := transport.DefaultMaxIncomingStreams - wire.StreamsPerSession; c.CallsPerTarget > most {
		return fmt.Errorf("calls per target %d: at most %d, the streams a device accepts less those kept for byte streams", c.CallsPerTarget, most)
	}
	if c.CallSlotWait < 0 {
		return fmt.Errorf("call slot wait %v is negative", c.CallSlotWait)
	}
	if c.CallBodyWait < 0 {
		return fmt.Errorf("call body wait %v is negative", c.CallBodyWait)
	}
	if c.TombstoneRetention < 0 {
		return fmt.Errorf("tombstone retention %v is negative", c.TombstoneRetention)
	}
	if c.MaxDevices < 0 || c.ZoneQueueBytes < 0 || c.CallsPerSecond < 0 {
		return fmt.Errorf("zone limits must not be negative")
	}
	if c.DeviceQuota < 0 || c.ZoneQuota < 0 {
		return fmt.Errorf("zone state quotas must not be negative")
	}
	if c.DeviceQuota > c.ZoneQuota && c.ZoneQuota != 0 {
		return fmt.Errorf("device quota %s is over the zone quota %s: raise the zone quota too", zsync.FormatSize(c.DeviceQuota), zsync.FormatSize(c.ZoneQuota))
	}
	if c.Listen != "" {
		if _, _, err := net.SplitHostPort(c.Listen); err != nil {
			return fmt.Errorf("listen address %q: %v (want HOST:PORT, e.g. 0.0.0.0:7443)", c.Listen, err)
		}
	}
	return nil
}

// Hub is a running zone hub.
type Hub struct {
	cfg   Config
	log   *slog.Logger
	store *hubStore
	state *zsync.Store // the replicated zone state
	// bindings are the applications' uses of services the hub relays.
	bindings *bindingTable
	// tokens issues and checks service tokens and keeps their usage
	// (tokens.go, tokenapi.go).
	tokens *tokens
	policy *policyAPI
	// services are the ones applications on the hub's host serve.
	services *services.Host
	// mgmt holds the management plane's operators, web sessions and API
	// tokens (zone/mgmt, served by zone/web).
	mgmt *mgmt.Manager
	// webURL is the web listener's base URL, once it listens.
	webURL atomic.Pointer[string]
	// counters are the events the metrics count (metrics.go).
	counters *hubCounters
	calls    policy.ViewCache // policy and token rules, for calls
	zone     *ZoneInfo        // its PublicAddrs are read through publicAddrs
	// addrs are the zone's public addresses, changed by pzh addr.
	addrs atomic.Pointer[[]string]
	// codeBusy and friendCodeBusy hold the code numbers being tried, of
	// device and of friend invites (hubcode.go).
	codeBusy, friendCodeBusy codeClaims
	ca                       *certs.CA
	cert                     atomic.Pointer[tls.Certificate]
	limiter                  *pairing.Limiter
	changes                  localapi.Notifier
	started                  time.Time
	addr                     net.Addr
	// pairMu orders pairings while the zone has a device limit
	// (Config.MaxDevices).
	pairMu sync.Mutex

	// reg holds the devices and their sessions (registry.go).
	reg *registry

	conns sync.WaitGroup // connection and stream handlers

	// Sleeping devices (wake.go): the mailbox of messages kept for later,
	// and the waker, which wakes devices and delivers their queues.
	mail     *mailbox
	wakes    *waker
	stopping chan struct{} // closed when shutdown begins: held calls give up
	// republishing: a retry of zone records whose publication failed
	// runs (republishLater); publishFails counts the failures.
	republishing atomic.Bool
	publishFails atomic.Uint64
	// publishMu orders a republishing pass (reconcileState) with the
	// changes that update a record and publish it, so that a pass never
	// puts back what a change just replaced; bg holds the retry loop,
	// which ends before the zone state closes; stopOnce closes stopping.
	publishMu sync.Mutex
	bg        sync.WaitGroup
	stopOnce  sync.Once

	// friends are the zones this one federates with (friends.go).
	friends *friends
	// links keeps the links with friends' hubs and the messages kept for
	// them (links.go, outbox.go).
	links *links
	// router routes calls and messages (calls.go, federation.go).
	router *router
}

// Run runs a hub until ctx ends, then closes every session with reason
// "shutdown" and the store.
func Run(ctx context.Context, cfg Config) error {
	cfg.setDefaults()
	if err := cfg.Validate(); err != nil {
		return err
	}
	store, err := openHubStoreIn(&cfg)
	if err != nil {
		return err
	}
	defer store.Close()
	removeStaleCopies(cfg.DataDir)
	h, err := newHub(cfg, store)
	if err != nil {
		return err
	}
	if h.state, err = openHubState(&cfg, store, h.ca, h.vouch); err != nil {
		return err
	}
	h.bindings.onEnd = h.tokens.bindingEnded
	defer h.state.Close()
	// Before the zone state closes, whichever way Run returns: the
	// republishing loop ends.
	defer func() { h.stop(); h.bg.Wait() }()
	if h.mail, err = openHubMailbox(&cfg, store); err != nil {
		return err
	}
	defer h.mail.Close()
	if err := stores.KeepEnvelopes(h.router.envelopes, h.mail.db, cfg.Now); err != nil {
		return fmt.Errorf("read the envelopes the hub accepted: %w", err)
	}
	if err := h.renewHubCertIfDue(); err != nil {
		return err
	}
	h.reconcileState()
	if err := h.holdListedCodes(); err != nil {
		return fmt.Errorf("read the code invites: %w", err)
	}
	if err := h.friends.load(); err != nil {
		return err
	}

	ln, err := h.listen()
	if err != nil {
		return err
	}
	h.addr = ln.Addr()
	wakers, closeWakers, err := newWakers(ln, cfg.Wakers)
	if err != nil {
		ln.Close()
		return err
	}
	defer closeWakers()
	h.wakes = newWaker(hubWakeHost{h.reg, h.friends}, h.mail, wakers, &h.cfg, &h.changes, h.stopping)
	defer h.wakes.stop() // also on the error paths below: no timer outlives the hub
	if err := h.wakes.load(); err != nil {
		ln.Close()
		return fmt.Errorf("read wake registrations: %w", err)
	}
	if h.mgmt, err = mgmt.Open(store.db, mgmt.Config{Issuer: "pzone " + h.zone.Name, Idle: cfg.WebSessionIdle, Lifetime: cfg.WebSessionLifetime,
		Hash: cfg.OperatorHash, Now: cfg.Now, Logger: h.log.With("part", "web")}); err != nil {
		ln.Close()
		return err
	}
	var webLn *web.Listener
	if cfg.Web.Addr != "" {
		wc := cfg.Web
		wc.Logger = h.log.With("part", "web")
		if webLn, err = web.Listen(wc); err != nil {
			ln.Close()
			return err
		}
	}
	var metricsLn *metrics.Listener
	if cfg.Metrics != "" {
		if metricsLn, err = metrics.Listen(cfg.Metrics); err != nil {
			ln.Close()
			if webLn != nil {
				webLn.Close()
			}
			return err
		}
	}
	sock, err := localapi.Listen(api.SocketPath(cfg.DataDir, api.HubSocketName))
	if err != nil {
		ln.Close()
		if webLn != nil {
			webLn.Close()
		}
		if metricsLn != nil {
			metricsLn.Close()
		}
		return err
	}
	defer os.Remove(api.SocketPath(cfg.DataDir, api.HubSocketName))

	h.log.Info("hub serving", "zone", h.zone.Name, "zone_id", h.zone.ID, "listen", ln.Addr().String(), "transports", cfg.Transports)
	if cfg.Serving != nil {
		cfg.Serving(h)
	}
	if cfg.Ready != nil {
		cfg.Ready(ln.Addr())
	}

	g, gctx := errgroup.WithContext(ctx)
	h.links.begin(gctx, h.friends.zones())
	g.Go(func() error { return h.acceptLoop(gctx, ln) })
	if webLn != nil {
		u := webLn.PublicURL()
		if u == "" {
			u = web.Unnamed
		}
		h.webURL.Store(&u)
	}
	admin := h.apiHandler()
	g.Go(func() error { return localapi.Serve(gctx, sock, admin) })
	g.Go(func() error { return h.mgmt.Run(gctx) })
	if metricsLn != nil {
		reg := metrics.NewRegistry()
		h.registerMetrics(reg)
		// Metrics failing is no reason to stop serving the zone: said in
		// the log, as the device does.
		g.Go(func() error {
			if err := metricsLn.Serve(gctx, reg, h.log); err != nil {
				h.log.Error("metrics listener stopped; the hub goes on without it", "err", err)
			}
			return nil
		})
		h.log.Info("metrics listener", "url", "http://"+metricsLn.Addr().String()+"/metrics")
	}
	if webLn != nil {
		wh := web.NewHandler(h.mgmt, admin, h.zone.Name, h.log.With("part", "web"))
		g.Go(func() error { return webLn.Serve(gctx, wh) })
		g.Go(func() error { return wh.Run(gctx) })
		h.log.Info("web listener", "url", webLn.URL())
		if cfg.WebReady != nil {
			cfg.WebReady(webLn.URL())
		}
	}
	g.Go(func() error { return h.hubCertLoop(gctx) })
	g.Go(func() error { return h.reg.seenLoop(gctx) })
	g.Go(func() error { return h.compactLoop(gctx) })
	g.Go(func() error { return h.wakes.expireLoop(gctx) })
	g.Go(func() error {
		<-gctx.Done()
		// Sessions first, so devices hear "shutdown" before the listener
		// (which owns the QUIC socket) goes away.
		h.shutdown()
		h.wakes.stop()
		ln.Close()
		return nil
	})
	err = g.Wait()
	err = localapi.StopErr(ctx, err)
	h.log.Info("hub stopped")
	return err
}

// listen listens on the hub's own address, or takes its zone's route on
// a provider's shared listener.
func (h *Hub) listen() (transport.Listener, error) {
	if h.cfg.Shared != nil {
		name := certs.ServerName(h.zone.ID)
		rt, err := h.cfg.Shared.Route(name, h.transportConfig().TLS)
		if err != nil {
			return nil, fmt.Errorf("serve zone %q on the shared listener: %w", h.zone.Name, err)
		}
		return rt, nil
	}
	listen := h.cfg.Listen
	if listen == "" {
		_, port, _ := net.SplitHostPort(h.publicAddrs()[0])
		listen = net.JoinHostPort("", port)
	}
	ln, err := transport.ListenBoth(listen, h.transportConfig(), h.cfg.Transports...)
	if err != nil {
		return nil, fmt.Errorf("listen on %s: %w", listen, err)
	}
	return ln, nil
}

func newHub(cfg Config, store *hubStore) (*Hub, error) {
	h := &Hub{cfg: cfg, log: cfg.Logger, store: store, limiter: &pairing.Limiter{Burst: cfg.PairBurst, Refill: cfg.PairRefill, MaxTracked: pairing.DefaultMaxTracked}, started: cfg.Now(),
		bindings: newBindingTable(), services: services.NewHost(),
		stopping: make(chan struct{}), counters: newHubCounters(),
	}
	h.links = newLinks(h)
	h.friends = &friends{h: h, byZone: map[string]*FriendRecord{}}
	h.tokens = &tokens{h: h}
	h.policy = &policyAPI{h: h}
	h.router = &router{h: h, envelopes: envelope.NewChecker(), slots: newCallSlots(cfg.CallsPerCaller, cfg.CallsPerTarget, cfg.CallSlotWait),
		rate: newCallRate(cfg.CallsPerSecond, cfg.Now)}
	var err error
	if h.zone, err = store.Zone(); err == nil {
		h.addrs.Store(&h.zone.PublicAddrs)
	}
	if err != nil {
		return nil, err
	}
	if h.ca, err = store.CA(); err != nil {
		return nil, err
	}
	cert, key, err := store.HubCert()
	if err != nil {
		return nil, err
	}
	h.setHubCert(cert, key)
	if h.reg, err = newRegistry(store, &h.cfg, &h.changes); err != nil {
		return nil, err
	}
	return h, nil
}

func (h *Hub) setHubCert(cert *x509.Certificate, key ed25519.PrivateKey) {
	h.cert.Store(&tls.Certificate{Certificate: [][]byte{cert.Raw, h.ca.Cert.Raw}, PrivateKey: key, Leaf: cert})
}

// renewHubCertIfDue re-issues the hub's own certificate at 2/3 of its
// lifetime (the hub holds the CA key, so no request is needed).
func (h *Hub) renewHubCertIfDue() error {
	cur := h.cert.Load().Leaf
	if h.cfg.Now().Before(session.RenewAt(cur)) {
		return nil
	}
	key, err := certs.NewKey()
	if err != nil {
		return err
	}
	cert, err := h.ca.Sign(key.Public(), certs.HubDevice, h.cfg.Now(), hubCertLifetime)
	if err != nil {
		return fmt.Errorf("renew hub certificate: %w", err)
	}
	if err := h.store.SaveHubCert(cert, key); err != nil {
		return fmt.Errorf("save renewed hub certificate: %w", err)
	}
	h.setHubCert(cert, key)
	h.putCert(wire.CertKeyHub, cert.Raw)
	h.log.Info("hub certificate renewed", "expires", cert.NotAfter)
	return nil
}

func (h *Hub) hubCertLoop(ctx context.Context) error {
	return every(ctx, hubCertCheck, func() {
		if err := h.renewHubCertIfDue(); err != nil {
			h.log.Error("hub certificate renewal failed; will retry", "err", err)
		}
	})
}

// every runs fn every d until ctx ends.
func every(ctx context.Context, d time.Duration, fn func()) error {
	t := time.NewTicker(d)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
			fn()
		}
	}
}

// resetKey derives the QUIC stateless reset key from the CA key, so it is
// the same after a restart (that is the point) and secret like the CA key
// (forging resets would let an attacker cut sessions).
func (h *Hub) resetKey() *[32]byte {
	m := hmac.New(sha256.New, h.ca.Key.Seed())
	m.Write([]byte("pzone quic stateless reset v1"))
	var k [32]byte
	copy(k[:], m.Sum(nil))
	return &k
}

// transportConfig routes by ALPN: sessions need a zone certificate,
// pairing needs none (the device pins the hub instead).
func (h *Hub) transportConfig() transport.Config {
	getCert := func(*tls.ClientHelloInfo) (*tls.Certificate, error) { return h.cert.Load(), nil }
	session := &tls.Config{
		MinVersion:     tls.VersionTLS13,
		NextProtos:     []string{transport.ALPNSession},
		GetCertificate: getCert,
		ClientAuth:     tls.RequireAnyClientCert,
		VerifyPeerCertificate: func(raw [][]byte, _ [][]*x509.Certificate) error {
			_, err := certs.Verify(h.ca.Cert, raw, h.cfg.Now(), tlsAnyExpiry)
			return err
		},
	}
	pair := &tls.Config{
		MinVersion:     tls.VersionTLS13,
		NextProtos:     []string{transport.ALPNPairing, transport.ALPNPairCode},
		GetCertificate: getCert,
		ClientAuth:     tls.NoClientCert,
	}
	hubs := h.hubChainTLS(getCert)
	base := &tls.Config{
		MinVersion:     tls.VersionTLS13,
		NextProtos:     []string{transport.ALPNSession, transport.ALPNPairing, transport.ALPNPairCode, transport.ALPNFriend, transport.ALPNFriendCode, transport.ALPNLink},
		GetCertificate: getCert,
		GetConfigForClient: func(hello *tls.ClientHelloInfo) (*tls.Config, error) {
			switch {
			case slices.Contains(hello.SupportedProtos, transport.ALPNSession):
				return session, nil
			case slices.Contains(hello.SupportedProtos, transport.ALPNPairing), slices.Contains(hello.SupportedProtos, transport.ALPNPairCode):
				return pair, nil
			case slices.Contains(hello.SupportedProtos, transport.ALPNFriend), slices.Contains(hello.SupportedProtos, transport.ALPNFriendCode),
				slices.Contains(hello.SupportedProtos, transport.ALPNLink):
				return hubs, nil
			}
			return nil, fmt.Errorf("client offers no pzone protocol (ALPN %q)", hello.SupportedProtos)
		},
	}
	return transport.Config{TLS: base, Logger: h.log, IdleTimeout: wire.TransportIdle, StatelessResetKey: h.resetKey()}
}

func (h *Hub) acceptLoop(ctx context.Context, ln transport.Listener) error {
	for {
		conn, err := ln.Accept(ctx)
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			return fmt.Errorf("accept: %w", err)
		}
		if !h.reg.whileOpen(func() { h.conns.Add(1) }) {
			conn.CloseWithError(uint64(wire.ReasonShutdown), wire.ReasonShutdown.String())
			continue
		}
		go func() {
			defer h.conns.Done()
			h.handleConn(ctx, conn)
		}()
	}
}

func (h *Hub) handleConn(ctx context.Context, conn transport.Conn) {
	defer func() {
		if r := recover(); r != nil {
			// A bug in one connection's handling must not take down every
			// other device's session.
			h.log.Error("connection handler panicked", "remote", conn.RemoteAddr().String(), "panic", r)
			conn.CloseWithError(uint64(wire.ReasonProtocol), "internal error")
		}
	}()
	switch alpn := conn.ConnectionState().NegotiatedProtocol; alpn {
	case transport.ALPNPairing:
		h.servePairing(ctx, conn)
	case transport.ALPNPairCode:
		h.serveCodePairing(ctx, conn)
	case transport.ALPNSession:
		h.serveSession(ctx, conn)
	case transport.ALPNFriend:
		h.friends.serveInvite(ctx, conn)
	case transport.ALPNFriendCode:
		h.friends.serveCodeInvite(ctx, conn)
	case transport.ALPNLink:
		h.links.serve(ctx, conn)
	default:
		conn.CloseWithError(uint64(wire.ReasonProtocol), "no protocol negotiated")
	}
}

// shutdown closes every session with reason "shutdown", in parallel, and
// waits for all connection handlers.
func (h *Hub) shutdown() {
	live, first := h.reg.close()
	if first {
		h.stop()
	}
	// Devices spread their reconnects over a window sized to how fast this
	// hub can take them back, instead of all arriving at once.
	window := uint64(retryWindow(len(live)) / time.Millisecond)
	var wg sync.WaitGroup
	for _, s := range live {
		wg.Add(1)
		go func() {
			defer wg.Done()
			s.finish(wire.ReasonShutdown, &wire.Control{Type: wire.MsgClose, Reason: wire.ReasonShutdown, Message: "hub is shutting down", RetryWindowMs: window})
		}()
	}
	wg.Wait()
	h.links.shutdown()
	h.conns.Wait()
	h.reg.flushSeen()
}

// ---- views for the admin API ----

func (h *Hub) devicesView(ver uint64) api.DevicesView {
	out := api.DevicesView{Version: ver, Devices: h.reg.views()}
	for i := range out.Devices {
		v := &out.Devices[i]
		if v.State == "revoked" {
			continue
		}
		q := h.mail.Stat(v.Name)
		v.Queue, v.QueueBytes = q.n, q.bytes
		v.Wake = h.wakes.view(v.Name)
		if v.State == "offline" && v.Wake != nil && v.Wake.Asleep != nil {
			v.State = "asleep"
		}
	}
	return out
}

func (h *Hub) status(ver uint64) api.HubStatus {
	paired, online := h.reg.counts()
	st := api.HubStatus{Version: ver, Zone: h.zone.Name, ZoneID: h.zone.ID, PublicAddrs: h.publicAddrs(), Listen: h.addr.String(),
		Started: h.started, Online: online, Devices: paired, CertExpires: h.cert.Load().Leaf.NotAfter, Software: wire.SoftwareVersion, PID: os.Getpid(),
		SyncSeq: h.state.Head(), SyncUsage: h.state.Usage(), Friends: h.friends.count(), Linked: h.links.linked(), Calls: h.counters.routedAll.Load()}
	for _, k := range h.cfg.Transports {
		st.Transports = append(st.Transports, string(k))
	}
	for _, d := range h.reg.views() {
		if d.OtherVersion {
			st.OtherSoftware = append(st.OtherSoftware, fmt.Sprintf("%s (%s, session protocol %d)", d.Name, d.Software, d.Protocol))
		}
	}
	return st
}

// Counts are the zone's paired devices and its live sessions.
func (h *Hub) Counts() (paired, online int) { return h.reg.counts() }

func remoteIP(a net.Addr) netip.Addr {
	if ap, err := netip.ParseAddrPort(a.String()); err == nil {
		return ap.Addr().Unmap()
	}
	return netip.Addr{}
}
