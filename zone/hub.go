package zone

import (
	"context"
	"crypto/ed25519"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"slices"
	"sort"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/sync/errgroup"

	"github.com/pzone/pzone/certs"
	"github.com/pzone/pzone/pairing"
	zsync "github.com/pzone/pzone/sync"
	"github.com/pzone/pzone/transport"
	"github.com/pzone/pzone/wakeup"
	"github.com/pzone/pzone/zone/api"
	"github.com/pzone/pzone/zone/envelope"
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

// HubConfig configures RunHub.
type HubConfig struct {
	DataDir string
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
	// Wakers add or replace ways of waking devices, by method (UDP is
	// built in).
	Wakers []wakeup.Waker
	// FriendCallHook, if set, sees each call from a friend zone before the
	// hub relays it, and takes it over by returning true. For tests that
	// need a misbehaving hub (FriendCall); pzh never sets it.
	FriendCallHook func(*FriendCall) bool
}

func (c *HubConfig) setDefaults() {
	if c.Heartbeat == 0 {
		c.Heartbeat = DefaultHeartbeat
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
		c.CallsPerTarget = DefaultCallsPerTarget
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
func (c *HubConfig) Validate() error {
	if c.DataDir == "" {
		return errors.New("no data directory given")
	}
	if c.Heartbeat < MinHeartbeat || c.Heartbeat > MaxHeartbeat {
		return fmt.Errorf("heartbeat %v out of range: use %v to %v", c.Heartbeat, MinHeartbeat, MaxHeartbeat)
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
	if c.CallsPerTarget > transport.DefaultMaxIncomingStreams {
		return fmt.Errorf("calls per target %d: at most %d, the streams a device accepts", c.CallsPerTarget, transport.DefaultMaxIncomingStreams)
	}
	if c.CallBodyWait < 0 {
		return fmt.Errorf("call body wait %v is negative", c.CallBodyWait)
	}
	if c.TombstoneRetention < 0 {
		return fmt.Errorf("tombstone retention %v is negative", c.TombstoneRetention)
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
	cfg   HubConfig
	log   *slog.Logger
	store *hubStore
	state *zsync.Store // the replicated zone state
	// bindings are the applications' uses of services the hub relays.
	bindings *bindingTable
	tokenMu  sync.Mutex // token usage records: read, add, write
	// services are the ones applications on the hub's host serve.
	services *serviceHost
	calls    callViewCache // policy and token rules, for calls
	zone     *ZoneInfo
	ca       *certs.CA
	cert     atomic.Pointer[tls.Certificate]
	limiter  *pairing.Limiter
	changes  notifier
	started  time.Time
	addr     net.Addr

	mu       sync.Mutex
	sessions map[string]*hubSession // live sessions by device
	devices  map[string]*DeviceRecord
	revoked  map[string]bool // serials
	closing  bool
	// lastSeen holds where devices were last connected from until the
	// next flush: it is not worth an fsync per session end.
	lastSeen map[string]seenRecord

	conns sync.WaitGroup // connection and stream handlers

	// Sleeping devices (wake.go): the mailbox of messages kept for later,
	// how to wake each device, and the couriers delivering queues.
	mail        *mailbox
	wakers      map[string]wakeup.Waker
	wakeMu      sync.Mutex
	wakes       map[string]*hubWake
	deliveries  map[string]chan bool // DEVICE/ID → first delivery attempt's outcome
	couriers    sync.WaitGroup
	wakeStopped bool
	stopping    chan struct{} // closed when shutdown begins: held calls give up

	// friendMu serialises changes of friendships (store, table, zone
	// state), so a removal cannot be undone by a rename racing it.
	friendMu sync.Mutex
	// Friends (friends.go, links.go), under mu: by compact zone ID, their
	// records, live links, the diallers keeping links and why a link is
	// down. linkCtx is the run's context, set once serving.
	friends    map[string]*FriendRecord
	links      map[string]*hubLink
	linkStops  map[string]context.CancelFunc
	linkStates map[string]*linkState
	linkCtx    context.Context
	outboxes   map[string]*outbox // messages kept for friends (outbox.go)
	// envelopes checks calls from friend zones to services on the hub.
	envelopes *envelope.Checker
	// callSlots bounds the calls in flight per caller and per target.
	callSlots *callSlots
}

// RunHub runs a hub until ctx ends, then closes every session with reason
// "shutdown" and the store.
func RunHub(ctx context.Context, cfg HubConfig) error {
	cfg.setDefaults()
	if err := cfg.Validate(); err != nil {
		return err
	}
	store, err := openHubStore(cfg.DataDir)
	if err != nil {
		return err
	}
	defer store.Close()
	h, err := newHub(cfg, store)
	if err != nil {
		return err
	}
	if h.state, err = openHubState(&cfg, store, h.ca); err != nil {
		return err
	}
	h.bindings.onEnd = h.tokenBindingEnded
	defer h.state.Close()
	if h.mail, err = openHubMailbox(&cfg, store); err != nil {
		return err
	}
	defer h.mail.Close()
	if err := keepEnvelopes(h.envelopes, h.mail.db, cfg.Now); err != nil {
		return fmt.Errorf("read the envelopes the hub accepted: %w", err)
	}
	if err := h.renewHubCertIfDue(); err != nil {
		return err
	}
	h.reconcileState()
	if err := h.loadFriends(); err != nil {
		return err
	}

	listen := cfg.Listen
	if listen == "" {
		_, port, _ := net.SplitHostPort(h.zone.PublicAddrs[0])
		listen = net.JoinHostPort("", port)
	}
	ln, err := transport.ListenBoth(listen, h.transportConfig(), cfg.Transports...)
	if err != nil {
		return fmt.Errorf("listen on %s: %w", listen, err)
	}
	h.addr = ln.Addr()
	wakers, closeWakers, err := newWakers(ln, cfg.Wakers)
	if err != nil {
		ln.Close()
		return err
	}
	defer closeWakers()
	h.wakers = wakers
	defer h.stopWakes() // also on the error paths below: no timer outlives the hub
	if err := h.loadWakes(); err != nil {
		ln.Close()
		return fmt.Errorf("read wake registrations: %w", err)
	}
	sock, err := listenUnix(api.SocketPath(cfg.DataDir, api.HubSocketName))
	if err != nil {
		ln.Close()
		return err
	}
	defer os.Remove(api.SocketPath(cfg.DataDir, api.HubSocketName))

	h.log.Info("hub serving", "zone", h.zone.Name, "zone_id", h.zone.ID, "listen", ln.Addr().String(), "transports", cfg.Transports)
	if cfg.Ready != nil {
		cfg.Ready(ln.Addr())
	}

	g, gctx := errgroup.WithContext(ctx)
	h.mu.Lock()
	h.linkCtx = gctx
	zones := make([]string, 0, len(h.friends))
	for z := range h.friends {
		zones = append(zones, z)
	}
	h.mu.Unlock()
	for _, z := range zones {
		h.startLink(z)
	}
	g.Go(func() error { return h.acceptLoop(gctx, ln) })
	g.Go(func() error { return serveAPI(gctx, sock, h.apiHandler()) })
	g.Go(func() error { return h.hubCertLoop(gctx) })
	g.Go(func() error { return h.seenLoop(gctx) })
	g.Go(func() error { return h.compactLoop(gctx) })
	g.Go(func() error { return h.expireLoop(gctx) })
	g.Go(func() error {
		<-gctx.Done()
		// Sessions first, so devices hear "shutdown" before the listener
		// (which owns the QUIC socket) goes away.
		h.shutdown()
		h.stopWakes()
		ln.Close()
		return nil
	})
	err = g.Wait()
	if ctx.Err() != nil && (err == nil || errors.Is(err, context.Canceled) || errors.Is(err, net.ErrClosed)) {
		err = nil
	}
	h.log.Info("hub stopped")
	return err
}

func newHub(cfg HubConfig, store *hubStore) (*Hub, error) {
	h := &Hub{cfg: cfg, log: cfg.Logger, store: store, limiter: &pairing.Limiter{Burst: cfg.PairBurst, Refill: cfg.PairRefill, MaxTracked: pairing.DefaultMaxTracked}, started: cfg.Now(),
		sessions: map[string]*hubSession{}, devices: map[string]*DeviceRecord{}, lastSeen: map[string]seenRecord{}, bindings: newBindingTable(), services: newServiceHost(),
		wakes: map[string]*hubWake{}, deliveries: map[string]chan bool{}, stopping: make(chan struct{}),
		friends: map[string]*FriendRecord{}, links: map[string]*hubLink{}, linkStops: map[string]context.CancelFunc{}, linkStates: map[string]*linkState{}, outboxes: map[string]*outbox{},
		envelopes: envelope.NewChecker(), callSlots: newCallSlots(cfg.CallsPerCaller, cfg.CallsPerTarget)}
	var err error
	if h.zone, err = store.Zone(); err != nil {
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
	devs, err := store.Devices()
	if err != nil {
		return nil, err
	}
	for _, d := range devs {
		h.devices[d.Name] = d
	}
	if h.revoked, err = store.RevokedSerials(); err != nil {
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
	if h.cfg.Now().Before(renewAt(cur)) {
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
	h.putCert(certKeyHub, cert.Raw)
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

// renewAt is 2/3 through a certificate's lifetime, counted from when it
// was issued: certs.Sign backdates NotBefore by certs.ClockSkew, and
// counting from there would put the renewal point of a short-lived
// certificate in the past.
func renewAt(c *x509.Certificate) time.Time {
	issued := c.NotBefore
	if c.NotAfter.Sub(issued) > certs.ClockSkew {
		issued = issued.Add(certs.ClockSkew)
	}
	return issued.Add(c.NotAfter.Sub(issued) * 2 / 3)
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
		NextProtos:     []string{transport.ALPNPairing},
		GetCertificate: getCert,
		ClientAuth:     tls.NoClientCert,
	}
	hubs := h.hubChainTLS(getCert)
	base := &tls.Config{
		MinVersion:     tls.VersionTLS13,
		NextProtos:     []string{transport.ALPNSession, transport.ALPNPairing, transport.ALPNFriend, transport.ALPNLink},
		GetCertificate: getCert,
		GetConfigForClient: func(hello *tls.ClientHelloInfo) (*tls.Config, error) {
			switch {
			case slices.Contains(hello.SupportedProtos, transport.ALPNSession):
				return session, nil
			case slices.Contains(hello.SupportedProtos, transport.ALPNPairing):
				return pair, nil
			case slices.Contains(hello.SupportedProtos, transport.ALPNFriend), slices.Contains(hello.SupportedProtos, transport.ALPNLink):
				return hubs, nil
			}
			return nil, fmt.Errorf("client offers no pzone protocol (ALPN %q)", hello.SupportedProtos)
		},
	}
	return transport.Config{TLS: base, Logger: h.log, IdleTimeout: transportIdle, StatelessResetKey: h.resetKey()}
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
		h.mu.Lock()
		closing := h.closing
		if !closing {
			h.conns.Add(1)
		}
		h.mu.Unlock()
		if closing {
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
	case transport.ALPNSession:
		h.serveSession(ctx, conn)
	case transport.ALPNFriend:
		h.serveFriendInvite(ctx, conn)
	case transport.ALPNLink:
		h.serveLink(ctx, conn)
	default:
		conn.CloseWithError(uint64(wire.ReasonProtocol), "no protocol negotiated")
	}
}

// shutdown closes every session with reason "shutdown", in parallel, and
// waits for all connection handlers.
func (h *Hub) shutdown() {
	h.mu.Lock()
	if !h.closing {
		close(h.stopping)
	}
	h.closing = true
	live := make([]*hubSession, 0, len(h.sessions))
	for _, s := range h.sessions {
		live = append(live, s)
	}
	h.mu.Unlock()
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
	h.stopOutboxes()
	h.shutdownLinks()
	h.conns.Wait()
	h.flushSeen()
}

// ---- pairing ----

func (h *Hub) servePairing(ctx context.Context, conn transport.Conn) {
	serveOneShot(ctx, conn, func(st transport.Stream) any {
		ip := remoteIP(conn.RemoteAddr())
		var req pairing.Request
		if err := transport.NewFrameReader(st, maxRequestFrame).ReadFrame(&req); err != nil {
			if ok, wait := h.limiter.Allow(ip, h.cfg.Now()); !ok {
				return rateLimited(ip, wait)
			}
			h.limiter.Fail(ip, h.cfg.Now())
			h.log.Info("pairing request unreadable", "remote", conn.RemoteAddr().String(), "err", err)
			return &pairing.Response{Error: &pairing.Error{Code: pairing.CodeBadRequest, Message: "malformed pairing request"}}
		}
		cs := conn.ConnectionState()
		if wait, limited := h.overLimit(ip, req.InviteID, bucketInvites, func(id string, verifier []byte) bool {
			return pairing.CheckProof(cs, id, verifier, req.Proof)
		}); limited {
			return rateLimited(ip, wait)
		}
		return h.redeem(conn, &req, ip)
	})
}

// overLimit decides a request for invite (its id as sent) from ip: if the
// source or the invite is over its limit of failures, only a valid proof
// (checked with proofOK against the stored verifier, without writing)
// goes on; the rest are told to wait, and each counts as a failure. A
// request under the limit goes on to be checked in full.
func (h *Hub) overLimit(ip netip.Addr, invite string, bucket []byte, proofOK func(id string, verifier []byte) bool) (time.Duration, bool) {
	now := h.cfg.Now()
	id, err := pairing.NormalizeInviteID(invite)
	if err != nil {
		id = ""
	}
	ok, wait := h.limiter.AllowInvite(ip, id, now)
	if ok {
		return 0, false
	}
	if id != "" {
		if v, err := h.store.inviteVerifier(bucket, id); err == nil && proofOK(id, v) {
			h.log.Info("pairing over the rate limit let through: its proof holds", "remote", ip, "invite", id)
			return 0, false
		}
	}
	h.limiter.FailInvite(ip, id, now)
	h.log.Debug("pairing rate-limited", "remote", ip, "invite", id, "retry_in", wait)
	return wait, true
}

var errBadProof = errors.New("bad proof")

// inviteRefusal is the answer to a redemption (of a device or friend
// invite, named what) that failed on the invite itself, and whether err
// is such a failure. Nothing about an invite is said before its proof
// checks out: unknown and wrong proof are both "invalid".
func inviteRefusal(err error, what, ask string) (code, msg string, ok bool) {
	switch {
	case errors.Is(err, errNotFound), errors.Is(err, errBadProof):
		return pairing.CodeInvalid, what + " not recognised: the token is wrong or for another hub", true
	case errors.Is(err, pairing.ErrInviteExpired):
		return pairing.CodeExpired, "this " + what + " has expired; " + ask, true
	case errors.Is(err, pairing.ErrInviteUsedUp):
		return pairing.CodeUsed, "this " + what + " has already been used; " + ask, true
	case errors.Is(err, pairing.ErrInviteCancelled):
		return pairing.CodeCancelled, "this " + what + " was cancelled; " + ask, true
	}
	return "", "", false
}

func rateLimited(ip netip.Addr, wait time.Duration) *pairing.Response {
	secs := uint32(wait/time.Second) + 1
	return &pairing.Response{Error: &pairing.Error{Code: pairing.CodeRateLimited, RetryAfter: secs,
		Message: fmt.Sprintf("too many failed pairing attempts from %s; try again in %d s", ip, secs)}}
}

func (h *Hub) redeem(conn transport.Conn, req *pairing.Request, ip netip.Addr) *pairing.Response {
	now := h.cfg.Now()
	remote := conn.RemoteAddr().String()
	id, idErr := pairing.NormalizeInviteID(req.InviteID)
	fail := func(code, msg string) *pairing.Response {
		h.limiter.Fail(ip, now)
		h.log.Info("pairing refused", "remote", remote, "invite", id, "code", code) // id is "" unless well-formed
		return &pairing.Response{Error: &pairing.Error{Code: code, Message: msg}}
	}
	// A wrong proof counts against the invite too (from any source).
	failProof := func(code, msg string) *pairing.Response {
		h.limiter.FailInvite(ip, id, now)
		h.log.Info("pairing refused", "remote", remote, "invite", id, "code", code)
		return &pairing.Response{Error: &pairing.Error{Code: code, Message: msg}}
	}
	if req.Version != pairing.ProtocolVersion {
		return fail(pairing.CodeVersion, fmt.Sprintf("pairing protocol version %d is not supported by this hub (it speaks %d): use matching pzp and pzh versions", req.Version, pairing.ProtocolVersion))
	}
	if idErr != nil {
		return fail(pairing.CodeInvalid, "invite not recognised: the token is wrong or for another hub")
	}
	pub, err := certs.ParseCSR(req.CSR)
	if err != nil {
		return fail(pairing.CodeBadRequest, "bad certificate request: "+err.Error())
	}
	cs := conn.ConnectionState()
	rec, cert, err := h.store.Redeem(id, now, func(inv *pairing.Invite, device string) (*x509.Certificate, error) {
		if !pairing.CheckProof(cs, id, inv.Verifier, req.Proof) {
			return nil, errBadProof
		}
		if err := inv.Usable(now); err != nil {
			return nil, err
		}
		return h.ca.Sign(pub, device, now, inv.CertLifetime)
	})
	if code, msg, ok := inviteRefusal(err, "invite", "ask the hub's owner for a new one (pzh invite)"); ok {
		if errors.Is(err, errBadProof) {
			return failProof(code, msg)
		}
		return fail(code, msg)
	}
	if err != nil {
		h.log.Error("pairing failed", "remote", remote, "err", err)
		return &pairing.Response{Error: &pairing.Error{Code: pairing.CodeInternal, Message: "the hub could not complete pairing; try again"}}
	}
	h.mu.Lock()
	h.devices[rec.Name] = rec
	h.mu.Unlock()
	h.putCert(certKeyDevice+rec.Name, cert.Raw)
	h.changes.bump()
	h.log.Info("device paired", "device", rec.Name, "remote", remote, "via", conn.Kind(), "invite", id, "cert_expires", cert.NotAfter)
	return &pairing.Response{Device: rec.Name, Zone: h.zone.Name, Cert: cert.Raw, CA: h.ca.Cert.Raw, HubAddrs: h.zone.PublicAddrs}
}

// ---- sessions ----

type hubSession struct {
	h         *Hub
	id        string
	device    string
	serial    string // of the certificate the session was admitted with
	conn      transport.Conn
	ctrl      transport.Stream
	since     time.Time
	renewOnly bool

	wmu        sync.Mutex // serialises control-stream writes
	lastActive atomic.Int64
	rttUs      atomic.Int64
	syncing    atomic.Bool // the session's one sync stream is open

	closeOnce sync.Once
	closed    chan struct{}
	reason    wire.CloseReason
	// syncCtx ends the sync stream as soon as the session is closing, so
	// a revoked device cannot push while the Close frame lingers.
	syncCtx  context.Context
	syncStop context.CancelFunc
	// gone is closed when the device ended the session itself, so a close
	// lingering for it to hang up stops waiting.
	gone chan struct{}
}

func (s *hubSession) send(c *wire.Control) error {
	s.wmu.Lock()
	defer s.wmu.Unlock()
	s.ctrl.SetWriteDeadline(time.Now().Add(streamTimeout))
	return transport.WriteFrame(s.ctrl, c)
}

// close ends the session once: it tells the device why, gives it a moment
// to read that, then closes the connection with the reason as error code.
func (s *hubSession) close(reason wire.CloseReason, msg string) {
	s.finish(reason, &wire.Control{Type: wire.MsgClose, Reason: reason, Message: msg})
}

// finish closes the session once. With a Close frame c it sends it and
// lingers for the device to hang up; with nil (the device ended the
// session itself) it closes at once.
func (s *hubSession) finish(reason wire.CloseReason, c *wire.Control) {
	s.closeOnce.Do(func() {
		s.reason = reason
		if c != nil {
			s.send(c)
			s.syncStop()
			select {
			case <-s.conn.Done():
			case <-s.gone:
			case <-time.After(closeLinger):
			}
		}
		s.syncStop()
		s.conn.CloseWithError(uint64(reason), reason.String())
		close(s.closed)
	})
}

func newSessionID() string {
	b := make([]byte, 8)
	rand.Read(b)
	return hex.EncodeToString(b)
}

// acceptHello takes the control stream a dialling node (a device, or a
// friend's hub) opens first, and reads its Hello. On failure it closes
// conn, saying why, and reports false.
func (h *Hub) acceptHello(ctx context.Context, conn transport.Conn, who string) (transport.Stream, *transport.FrameReader, bool) {
	hctx, cancel := context.WithTimeout(ctx, helloTimeout)
	ctrl, err := conn.AcceptStream(hctx)
	cancel()
	if err != nil {
		conn.CloseWithError(uint64(wire.ReasonTimeout), "no hello")
		return nil, nil, false
	}
	ctrl.SetReadDeadline(time.Now().Add(helloTimeout))
	fr := transport.NewFrameReader(ctrl, maxControlFrame)
	var hdr wire.StreamHeader
	var hello wire.Control
	if err := fr.ReadFrame(&hdr); err != nil || hdr.Kind != wire.StreamControl {
		h.protocolError(conn, who, "first stream is not a control stream", err)
		return nil, nil, false
	}
	if err := fr.ReadFrame(&hello); err != nil || hello.Type != wire.MsgHello {
		h.protocolError(conn, who, "control stream does not start with hello", err)
		return nil, nil, false
	}
	// The ALPN carries the major version; Hello.Version numbers compatible
	// revisions of it, so anything from 1 up is spoken to as version 1.
	if hello.Version < 1 {
		h.protocolError(conn, who, "hello without a version", nil)
		return nil, nil, false
	}
	return ctrl, fr, true
}

func (h *Hub) serveSession(ctx context.Context, conn transport.Conn) {
	// The TLS callback (transportConfig) verified the chain against the
	// zone CA, and the transport disables resumption, so the callback ran
	// for this very connection: only the identity and expiry are read here,
	// rather than checking the Ed25519 signature a second time (signature
	// checks are a tenth of the hub's CPU in a reconnect storm).
	leaf := conn.ConnectionState().PeerCertificates[0]
	id, err := certs.IdentityFromCert(leaf)
	if err != nil { // cannot happen: the callback checked it
		conn.CloseWithError(uint64(wire.ReasonProtocol), "certificate check failed")
		return
	}
	v := &certs.Verified{Identity: id, Cert: leaf, Expired: h.cfg.Now().After(leaf.NotAfter)}
	ctrl, fr, ok := h.acceptHello(ctx, conn, v.Identity.Device)
	if !ok {
		return
	}
	s := &hubSession{h: h, id: newSessionID(), device: v.Identity.Device, serial: serialHex(v.Cert), conn: conn, ctrl: ctrl, since: h.cfg.Now(), closed: make(chan struct{}), gone: make(chan struct{})}
	s.lastActive.Store(s.since.UnixNano())
	s.syncCtx, s.syncStop = context.WithCancel(context.Background())

	if reason, msg := h.admit(v); reason != wire.ReasonNone {
		h.log.Info("session refused", "device", s.device, "remote", conn.RemoteAddr().String(), "reason", reason, "detail", msg)
		s.close(reason, msg)
		return
	}
	s.renewOnly = v.Expired
	if !s.renewOnly {
		h.retireOlder(s.device, s.serial)
		old, refused := h.register(s)
		switch refused {
		case wire.ReasonShutdown:
			s.finish(wire.ReasonShutdown, &wire.Control{Type: wire.MsgClose, Reason: wire.ReasonShutdown, Message: "hub is shutting down", RetryWindowMs: uint64(minRetryWindow / time.Millisecond)})
			return
		case wire.ReasonRevoked:
			h.log.Info("session refused", "device", s.device, "remote", conn.RemoteAddr().String(), "reason", refused, "detail", "revoked during admission")
			s.close(wire.ReasonRevoked, fmt.Sprintf("device %q was revoked", s.device))
			return
		}
		if old != nil {
			h.log.Info("session replaced", "device", s.device, "old_remote", old.conn.RemoteAddr().String(), "new_remote", conn.RemoteAddr().String())
			go old.close(wire.ReasonReplaced, fmt.Sprintf("another pzp for device %q connected from %s", s.device, conn.RemoteAddr()))
		}
	}
	if err := s.send(&wire.Control{Type: wire.MsgWelcome, Version: wire.SessionVersion, SessionID: s.id, HeartbeatMs: uint64(h.cfg.Heartbeat / time.Millisecond), RenewOnly: s.renewOnly,
		TimeMs: h.cfg.Now().UnixMilli()}); err != nil {
		s.close(wire.ReasonProtocol, "")
		h.unregister(s)
		return
	}
	if !s.renewOnly {
		h.deviceOnline(s.device)
	}
	if s.renewOnly {
		h.log.Info("expired certificate connected for renewal", "device", s.device, "expired", v.Cert.NotAfter)
	} else {
		h.log.Info("session online", "device", s.device, "remote", conn.RemoteAddr().String(), "via", conn.Kind(), "session", s.id)
	}

	// Stream handlers count as connection handlers: shutdown waits for
	// them before it closes the stores. Added while this handler counts,
	// so never after the wait has begun.
	h.conns.Add(1)
	go func() {
		defer h.conns.Done()
		h.acceptStreams(ctx, s)
	}()
	reason, msg, byDevice := h.controlLoop(s, fr)
	if byDevice {
		close(s.gone)
		s.finish(reason, nil)
	} else {
		s.close(reason, msg)
	}
	if h.unregister(s) {
		h.log.Info("session offline", "device", s.device, "reason", s.reason, "session", s.id)
		h.seen(s.device, conn.RemoteAddr().String(), string(conn.Kind()))
		why := fmt.Sprintf("device %q went offline (%s)", s.device, s.reason)
		for _, b := range h.bindings.endDevice(s.device, why, h.cfg.Now()) {
			h.log.Info("binding ended", "binding", b.id, "reason", why)
		}
		h.deviceOffline(s.device, s.reason == wire.ReasonSleep)
	}
}

// wentAway tells a device that disappeared (closed, reset, idle, network
// gone) from one that sent something malformed.
func wentAway(conn transport.Conn, err error) bool {
	select {
	case <-conn.Done():
		return true
	default:
	}
	var rc *transport.RemoteCloseError
	return errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) || errors.Is(err, transport.ErrPeerGone) ||
		errors.Is(err, transport.ErrIdleTimeout) || errors.Is(err, transport.ErrStreamReset) ||
		errors.Is(err, net.ErrClosed) || errors.As(err, &rc)
}

func (h *Hub) protocolError(conn transport.Conn, device, what string, err error) {
	h.log.Info("session protocol error", "device", device, "remote", conn.RemoteAddr().String(), "problem", what, "err", err)
	conn.CloseWithError(uint64(wire.ReasonProtocol), what)
}

// admit decides whether an authenticated device may hold a session.
func (h *Hub) admit(v *certs.Verified) (wire.CloseReason, string) {
	serial := serialHex(v.Cert)
	h.mu.Lock()
	defer h.mu.Unlock()
	rec := h.devices[v.Identity.Device]
	switch {
	case h.revoked[serial] || rec != nil && rec.Revoked && rec.hasSerial(serial):
		when := ""
		if rec != nil && rec.Revoked {
			when = " on " + rec.RevokedAt.Format(time.RFC3339)
		}
		return wire.ReasonRevoked, fmt.Sprintf("device %q was revoked%s", v.Identity.Device, when)
	case rec == nil || !rec.hasSerial(serial):
		return wire.ReasonUnknown, fmt.Sprintf("the hub has no pairing for this certificate of device %q; pair again with a new invite", v.Identity.Device)
	case v.Expired && h.cfg.Now().Sub(v.Cert.NotAfter) > h.cfg.RenewGrace:
		return wire.ReasonExpired, fmt.Sprintf("certificate expired on %s, past the hub's %v grace period; pair again with a new invite", v.Cert.NotAfter.Format(time.RFC3339), h.cfg.RenewGrace)
	}
	return wire.ReasonNone, ""
}

// retireOlder forgets the certificates a device held before serial, once
// it has connected with serial: a renewed device has proven it saved the
// new certificate, so the old one (and its key) can no longer be used.
func (h *Hub) retireOlder(device, serial string) {
	h.mu.Lock()
	rec := h.devices[device]
	due := rec != nil && len(rec.Serials) > 1 && rec.Serials[len(rec.Serials)-1] == serial
	h.mu.Unlock()
	if !due {
		return
	}
	nrec, err := h.store.RetireOlder(device, serial)
	if err != nil {
		h.log.Warn("retire old certificates", "device", device, "err", err)
		return
	}
	h.mu.Lock()
	h.putDevice(nrec)
	h.mu.Unlock()
}

// register makes s the device's live session and returns the one it
// replaced, if any. It registers nothing, and says why, once shutdown has
// begun (shutdown has already taken its list of sessions to close) or if
// the device was revoked since admission (the revocation looked for a
// session to close before this one was in the table).
func (h *Hub) register(s *hubSession) (*hubSession, wire.CloseReason) {
	h.mu.Lock()
	if h.closing {
		h.mu.Unlock()
		return nil, wire.ReasonShutdown
	}
	if rec := h.devices[s.device]; rec == nil || rec.Revoked || h.revoked[s.serial] {
		h.mu.Unlock()
		return nil, wire.ReasonRevoked
	}
	old := h.sessions[s.device]
	h.sessions[s.device] = s
	h.mu.Unlock()
	h.changes.bump()
	return old, wire.ReasonNone
}

// unregister removes s if it is still the device's live session.
func (h *Hub) unregister(s *hubSession) bool {
	h.mu.Lock()
	cur := h.sessions[s.device] == s
	if cur {
		delete(h.sessions, s.device)
	}
	h.mu.Unlock()
	if cur {
		h.changes.bump()
	}
	return cur
}

// controlLoop answers pings until the session ends, and returns why and
// whether the device ended it (went away or said Close).
func (h *Hub) controlLoop(s *hubSession, fr *transport.FrameReader) (reason wire.CloseReason, msg string, byDevice bool) {
	dead := DeadAfter(h.cfg.Heartbeat)
	for {
		var c wire.Control
		if err := readControl(s.conn, s.ctrl, fr, dead, &c); err != nil {
			select {
			case <-s.closed:
				return s.reason, "", false
			default:
			}
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() {
				return wire.ReasonTimeout, fmt.Sprintf("no heartbeat for %v", dead), false
			}
			if wentAway(s.conn, err) {
				return wire.ReasonShutdown, "", true
			}
			return wire.ReasonProtocol, "malformed control frame: " + err.Error(), false
		}
		s.lastActive.Store(h.cfg.Now().UnixNano())
		switch c.Type {
		case wire.MsgPing:
			if err := s.send(&wire.Control{Type: wire.MsgPong, Seq: c.Seq}); err != nil {
				return wire.ReasonShutdown, "", true
			}
			if c.RTTus > 0 && s.rttUs.Swap(int64(c.RTTus)) == 0 {
				h.changes.bump() // the first RTT figure is news to watchers
			}
		case wire.MsgClose:
			h.log.Info("device closed its session", "device", s.device, "reason", c.Reason, "message", c.Message)
			return c.Reason, "", true
		case wire.MsgWake:
			if s.renewOnly {
				return wire.ReasonProtocol, "wake registration on a renewal-only session", false
			}
			if err := h.registerWake(s, &c); err != nil {
				return wire.ReasonProtocol, err.Error(), false
			}
		default:
			return wire.ReasonProtocol, fmt.Sprintf("unexpected control message %d", c.Type), false
		}
	}
}

func (h *Hub) acceptStreams(ctx context.Context, s *hubSession) {
	for {
		st, err := s.conn.AcceptStream(ctx)
		if err != nil {
			return
		}
		h.conns.Add(1)
		go func() {
			defer h.conns.Done()
			h.handleStream(s, st)
		}()
	}
}

func (h *Hub) handleStream(s *hubSession, st transport.Stream) {
	st.SetDeadline(time.Now().Add(streamTimeout))
	fr := transport.NewFrameReader(st, maxRequestFrame)
	var hdr wire.StreamHeader
	// A renew-only session (expired but genuine certificate) may renew or
	// unpair, nothing else.
	if err := fr.ReadFrame(&hdr); err != nil || (s.renewOnly && hdr.Kind != wire.StreamRenew && hdr.Kind != wire.StreamUnpair) {
		st.Reset()
		return
	}
	switch hdr.Kind {
	case wire.StreamRenew:
		h.handleRenew(s, st, fr)
	case wire.StreamUnpair:
		h.handleUnpair(s, st, fr)
	case wire.StreamSync:
		h.handleSync(s, st)
	case wire.StreamCall:
		h.handleCall(s, st, fr)
	case wire.StreamDiscover:
		h.handleDiscover(s, st, fr)
	default:
		h.log.Info("unknown stream kind", "device", s.device, "kind", hdr.Kind)
		st.Reset()
	}
}

// reply writes a one-shot answer and closes the stream. Only a failed
// write resets it: a reset after Close may discard the answer in flight.
func reply(st transport.Stream, v any) bool {
	if err := transport.WriteFrame(st, v); err != nil {
		st.Reset()
		return false
	}
	st.Close()
	return true
}

func (h *Hub) handleRenew(s *hubSession, st transport.Stream, fr *transport.FrameReader) {
	var req wire.RenewRequest
	if err := fr.ReadFrame(&req); err != nil {
		st.Reset()
		return
	}
	resp := wire.RenewResponse{}
	cert, err := h.renewDevice(s.device, s.conn.ConnectionState().PeerCertificates[0], req.CSR)
	if err != nil {
		resp.Error = err.Error()
		h.log.Warn("renewal refused", "device", s.device, "err", err)
	} else {
		resp.Cert = cert.Raw
		h.log.Info("device certificate renewed", "device", s.device, "expires", cert.NotAfter)
	}
	reply(st, &resp)
	if s.renewOnly && err == nil {
		s.close(wire.ReasonRenewed, "certificate renewed: reconnect with it")
	}
}

func (h *Hub) renewDevice(device string, current *x509.Certificate, csr []byte) (*x509.Certificate, error) {
	pub, err := certs.ParseCSR(csr)
	if err != nil {
		return nil, err
	}
	if old, ok := current.PublicKey.(ed25519.PublicKey); ok && old.Equal(pub) {
		return nil, errors.New("renewal must use a fresh key")
	}
	h.mu.Lock()
	rec := h.devices[device]
	h.mu.Unlock()
	if rec == nil || rec.Revoked {
		return nil, fmt.Errorf("device %q is not paired", device)
	}
	life := rec.CertLifetime
	if life == 0 {
		life = pairing.DefaultCertLifetime
	}
	cert, err := h.ca.Sign(pub, device, h.cfg.Now(), life)
	if err != nil {
		return nil, err
	}
	nrec, err := h.store.AddSerial(device, cert)
	if err != nil {
		return nil, err
	}
	h.mu.Lock()
	h.putDevice(nrec)
	h.mu.Unlock()
	h.putCert(certKeyDevice+device, cert.Raw)
	h.changes.bump()
	return cert, nil
}

func (h *Hub) handleUnpair(s *hubSession, st transport.Stream, fr *transport.FrameReader) {
	var req wire.UnpairRequest
	if err := fr.ReadFrame(&req); err != nil {
		st.Reset()
		return
	}
	resp := wire.UnpairResponse{}
	_, live, err := h.revokeRecord(s.device, "unpaired by the device")
	if err != nil {
		resp.Error = err.Error()
	}
	reply(st, &resp)
	if live != nil {
		// After the answer, so the device reads it before the session ends.
		live.close(wire.ReasonUnpaired, "device unpaired itself")
	}
}

// putDevice caches a record read back from the store, keeping the
// last-seen fields that are newer in memory than on disk (h.mu held).
func (h *Hub) putDevice(rec *DeviceRecord) {
	if old := h.devices[rec.Name]; old != nil && old.LastSeen.After(rec.LastSeen) {
		rec.LastSeen, rec.LastAddr, rec.LastVia = old.LastSeen, old.LastAddr, old.LastVia
	}
	h.devices[rec.Name] = rec
}

type seenRecord struct {
	at        time.Time
	addr, via string
}

// seenFlush is how often last-seen records reach the store; at most this
// much of "last seen" is lost if the hub crashes.
const seenFlush = time.Minute

// seen notes where a device was connected from when its session ended.
func (h *Hub) seen(device, addr, via string) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.lastSeen[device] = seenRecord{at: h.cfg.Now(), addr: addr, via: via}
	if d := h.devices[device]; d != nil {
		c := *d
		c.LastSeen, c.LastAddr, c.LastVia = h.cfg.Now().UTC(), addr, via
		h.devices[device] = &c
	}
}

// flushSeen writes pending last-seen records in one transaction.
func (h *Hub) flushSeen() {
	h.mu.Lock()
	pending := h.lastSeen
	h.lastSeen = map[string]seenRecord{}
	h.mu.Unlock()
	if len(pending) == 0 {
		return
	}
	err := h.store.SeenMany(func(yield func(string, time.Time, string, string) bool) {
		for d, r := range pending {
			if !yield(d, r.at, r.addr, r.via) {
				return
			}
		}
	})
	if err != nil {
		h.log.Warn("record last seen", "devices", len(pending), "err", err)
	}
}

func (h *Hub) seenLoop(ctx context.Context) error { return every(ctx, seenFlush, h.flushSeen) }

// revoke revokes a device, persists it, and cuts its live session.
func (h *Hub) revoke(device, why string, reason wire.CloseReason) (*DeviceRecord, error) {
	rec, s, err := h.revokeRecord(device, why)
	if err != nil {
		return nil, err
	}
	if s != nil {
		go s.close(reason, fmt.Sprintf("device %q was %s", device, reason))
	}
	return rec, nil
}

// revokeRecord persists a revocation and updates the handshake caches; it
// returns the device's live session, which the caller closes.
func (h *Hub) revokeRecord(device, why string) (*DeviceRecord, *hubSession, error) {
	rec, err := h.store.Revoke(device, why, h.cfg.Now())
	if err != nil {
		return nil, nil, err
	}
	h.mu.Lock()
	h.putDevice(rec)
	for _, serial := range rec.Serials {
		h.revoked[serial] = true
	}
	s := h.sessions[device]
	h.mu.Unlock()
	h.forgetDevice(device)
	h.publishRevocation(rec)
	h.changes.bump()
	h.log.Info("device revoked", "device", device, "why", why)
	return rec, s, nil
}

// ---- views for the admin API ----

func (h *Hub) devicesView(ver uint64) api.DevicesView {
	h.mu.Lock()
	out := api.DevicesView{Version: ver, Devices: []api.DeviceView{}}
	defer func() {
		for i := range out.Devices {
			v := &out.Devices[i]
			if v.State == "revoked" {
				continue
			}
			q := h.mail.Stat(v.Name)
			v.Queue, v.QueueBytes = q.n, q.bytes
			v.Wake = h.wakeView(v.Name)
			if v.State == "offline" && v.Wake != nil && v.Wake.Asleep != nil {
				v.State = "asleep"
			}
		}
	}()
	defer h.mu.Unlock()
	for _, d := range h.devices {
		v := api.DeviceView{Name: d.Name, State: "offline", CertExpires: d.CertExpires, Paired: d.Paired}
		if !d.LastSeen.IsZero() {
			t := d.LastSeen
			v.LastSeen = &t
		}
		if d.Revoked {
			v.State = "revoked"
			t := d.RevokedAt
			v.RevokedAt, v.RevokeReason = &t, d.RevokeReason
		} else if s := h.sessions[d.Name]; s != nil {
			v.State = "online"
			v.Transport = string(s.conn.Kind())
			v.RemoteAddr = s.conn.RemoteAddr().String()
			since := s.since
			la := time.Unix(0, s.lastActive.Load())
			v.Since, v.LastActivity = &since, &la
			if us := s.rttUs.Load(); us > 0 {
				ms := float64(us) / 1000
				v.RTTMs = &ms
			}
		}
		out.Devices = append(out.Devices, v)
	}
	sort.Slice(out.Devices, func(i, j int) bool { return out.Devices[i].Name < out.Devices[j].Name })
	return out
}

func (h *Hub) status(ver uint64) api.HubStatus {
	h.mu.Lock()
	defer h.mu.Unlock()
	st := api.HubStatus{Version: ver, Zone: h.zone.Name, ZoneID: h.zone.ID, PublicAddrs: h.zone.PublicAddrs, Listen: h.addr.String(),
		Started: h.started, Online: len(h.sessions), CertExpires: h.cert.Load().Leaf.NotAfter, Software: SoftwareVersion, PID: os.Getpid(),
		SyncSeq: h.state.Head(), SyncUsage: h.state.Usage()}
	for _, k := range h.cfg.Transports {
		st.Transports = append(st.Transports, string(k))
	}
	for _, d := range h.devices {
		if !d.Revoked {
			st.Devices++
		}
	}
	st.Friends = len(h.friends)
	for _, l := range h.links {
		if l.live() {
			st.Linked++
		}
	}
	return st
}

func remoteIP(a net.Addr) netip.Addr {
	if ap, err := netip.ParseAddrPort(a.String()); err == nil {
		return ap.Addr().Unmap()
	}
	return netip.Addr{}
}
