package zone

import (
	"context"
	"crypto/ed25519"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"time"

	"github.com/pzone/pzone/certs"
	"github.com/pzone/pzone/pairing"
	zsync "github.com/pzone/pzone/sync"
	"github.com/pzone/pzone/transport"
	"github.com/pzone/pzone/zone/api"
	"github.com/pzone/pzone/zone/envelope"
	"github.com/pzone/pzone/zone/wire"
)

// Reconnect backoff, with why.
const (
	// sessionHandshakeTimeout bounds a session dial. A QUIC dial to a hub
	// that is down gets no answer at all (ICMP errors do not reach
	// unconnected UDP sockets) and runs to this limit, so shorter would
	// help a device that dialled into a restart's gap. It stays at the
	// transport default: with 4 s, 10,000 devices reconnecting to an
	// overloaded hub gave up on handshakes that were merely slow and
	// retried, doubling the storm (measured by make bench).
	sessionHandshakeTimeout = transport.DefaultHandshakeTimeout
	// DefaultBackoffMin: a hub restart takes about a second; the first
	// retry should not wait much longer than that.
	DefaultBackoffMin = 500 * time.Millisecond
	// DefaultBackoffMax caps the wait so a device is back within half a
	// minute of its hub; with jitter, 10,000 devices spread their
	// reconnects over that window rather than arriving at once.
	DefaultBackoffMax = 30 * time.Second
)

// PeerConfig configures RunPeer.
type PeerConfig struct {
	DataDir    string
	Mode       transport.Mode
	BackoffMin time.Duration
	BackoffMax time.Duration
	Logger     *slog.Logger
	Now        func() time.Time
	// ExitWhenSynced makes RunPeer return nil once the device holds the
	// zone state and has pushed its edits (pzp pair's first sync).
	ExitWhenSynced bool
	// OnSync, if set, is called whenever the sync state changes.
	OnSync func(zsync.State)
	// SleepAfter, if positive, lets the device sleep: after this long
	// without activity it closes its session and waits for a wake ping on
	// the UDP socket WakeListen (default: any free port).
	SleepAfter time.Duration
	WakeListen string
	// WakeWindow is how far a ping's stamp may be from the hub's clock;
	// zero means wakeup.DefaultWindow.
	WakeWindow time.Duration
	// CheckIn, if positive, wakes a sleeping device this often anyway,
	// for hubs it cannot hear pings from (behind a NAT that has forgotten
	// it).
	CheckIn time.Duration
	// DirectListen, if set, is where the device takes direct connections
	// from other devices of its zone (QUIC and TCP on one port; port 0:
	// any free one), published in its devices record; calls to a device
	// that publishes one take a direct connection when they can (direct.go).
	// Empty: none, every call goes through the hub. Not with SleepAfter: a
	// sleeping device holds no connections.
	DirectListen string
	// ResetZoneState starts this device's copy of the zone state over
	// (pzp run --reset-zone-state): the old sync.db, if any, is moved
	// aside and the state is fetched again from the hub. Without it a
	// missing or damaged sync.db stops the device.
	ResetZoneState bool

	// started, if set, is handed the running peer (tests reach into it).
	started func(*Peer)
}

func (c *PeerConfig) setDefaults() {
	if c.Mode == "" {
		c.Mode = transport.ModeAuto
	}
	if c.BackoffMin == 0 {
		c.BackoffMin = DefaultBackoffMin
	}
	if c.BackoffMax == 0 {
		c.BackoffMax = DefaultBackoffMax
	}
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
	if c.Now == nil {
		c.Now = time.Now
	}
}

// Validate checks the configuration. DataDir is RunPeer's concern: a
// store-less peer (NewPeer) has none.
func (c *PeerConfig) Validate() error {
	if _, err := transport.ParseMode(string(c.Mode)); err != nil {
		return err
	}
	if c.BackoffMin <= 0 || c.BackoffMax < c.BackoffMin {
		return fmt.Errorf("backoff %v..%v: minimum must be positive and not above the maximum", c.BackoffMin, c.BackoffMax)
	}
	if c.SleepAfter < 0 || c.SleepAfter > 0 && c.SleepAfter < MinSleepAfter {
		return fmt.Errorf("sleep after %v: use at least %v (or 0 to stay awake)", c.SleepAfter, MinSleepAfter)
	}
	if c.WakeWindow < 0 || c.CheckIn < 0 {
		return errors.New("wake window and check-in interval must not be negative")
	}
	if c.CheckIn > 0 && c.CheckIn < MinSleepAfter {
		return fmt.Errorf("check-in every %v: use at least %v", c.CheckIn, MinSleepAfter)
	}
	if c.DirectListen != "" {
		if _, _, err := net.SplitHostPort(c.DirectListen); err != nil {
			return fmt.Errorf("direct listen address %q: %v (want HOST:PORT, e.g. :7445)", c.DirectListen, err)
		}
		if c.SleepAfter > 0 {
			return errors.New("a device that sleeps holds no direct connections: use --direct=false with --sleep-after")
		}
	}
	if c.WakeListen != "" {
		if _, _, err := net.SplitHostPort(c.WakeListen); err != nil {
			return fmt.Errorf("wake listen address %q: %v (want HOST:PORT, e.g. :7444)", c.WakeListen, err)
		}
	}
	return nil
}

// EndError is a session end after which the device must not reconnect:
// revoked, replaced by another pzp, unpaired, expired past grace.
type EndError struct {
	Reason  wire.CloseReason
	Message string
}

func (e *EndError) Error() string {
	hint := ""
	switch e.Reason {
	case wire.ReasonRevoked:
		hint = "; this device can no longer connect: pair it again with a new invite"
	case wire.ReasonReplaced:
		hint = "; another pzp with this device's credentials took over the session"
	}
	if e.Message == "" {
		return fmt.Sprintf("session ended: %s%s", e.Reason, hint)
	}
	return fmt.Sprintf("session ended: %s: %s%s", e.Reason, e.Message, hint)
}

// MinSleepAfter is the shortest idle time before sleep a device may ask
// for: shorter would close sessions between two calls of one exchange.
const MinSleepAfter = 10 * time.Millisecond

// wakeAttempts is how many connection attempts a woken device makes
// before it goes back to sleep when the hub cannot be reached.
const wakeAttempts = 3

// Peer is a running device.
type Peer struct {
	cfg   PeerConfig
	log   *slog.Logger
	store *peerStore
	state *zsync.Store // the device's copy of the zone state
	// services are the ones applications serve on this device.
	services *serviceHost
	calls    callViewCache // policy and token rules, for calls
	id       atomic.Pointer[Identity]

	synced     chan struct{} // closed once in sync, with ExitWhenSynced
	syncedOnce sync.Once

	mu      sync.Mutex
	st      api.PeerStatus
	changes notifier

	unpairReq chan *unpairCall
	conn      atomic.Pointer[transport.Conn] // the live session's connection

	delivered  recentIDs         // queued messages delivered lately
	envelopes  *envelope.Checker // signatures of calls from friend zones
	sleep      *sleeper          // nil: the device never sleeps
	direct     *directNet        // nil: no direct connections
	inflight   atomic.Int64      // calls and messages in progress, either way
	lastActive atomic.Int64      // unix ns of the last activity
	renewTried atomic.Int64      // unix ns of the last renewal attempt
	hubVersion atomic.Uint32     // the session version the hub's Welcome said
}

// Traffic is the wire byte count of the current session's connection
// (zero when there is none).
func (p *Peer) Traffic() transport.Stats {
	if c := p.conn.Load(); c != nil {
		return (*c).Stats()
	}
	return transport.Stats{}
}

type unpairCall struct {
	told chan error // the hub's answer (nil: it confirmed)
	done chan error // after local deletion
}

// RunPeer keeps a session with the hub until ctx ends (nil) or the hub
// ends it for good (*EndError).
func RunPeer(ctx context.Context, cfg PeerConfig) error {
	cfg.setDefaults()
	if err := cfg.Validate(); err != nil {
		return err
	}
	if cfg.DataDir == "" {
		return errors.New("no data directory given")
	}
	store, err := openPeerStore(cfg.DataDir, false)
	if err != nil {
		return err
	}
	p, err := newPeer(cfg, store)
	if err != nil {
		store.Close()
		return err
	}
	if err := keepEnvelopes(p.envelopes, store.db, cfg.Now); err != nil {
		store.Close()
		return fmt.Errorf("read the envelopes this device accepted: %w", err)
	}
	if cfg.DirectListen != "" {
		// Before the zone state opens, so its record names the addresses.
		p.direct = newDirectNet(p)
		if err := p.direct.listen(cfg.DirectListen); err != nil {
			store.Close()
			return err
		}
	}
	closeDirect := func() {
		if p.direct != nil {
			p.direct.ln.Close()
		}
	}
	if err := p.openState(); err != nil {
		closeDirect()
		store.Close()
		return err
	}
	if p.sleep, err = p.newSleeper(); err != nil {
		closeDirect()
		p.state.Close()
		store.Close()
		return err
	}
	sock := api.SocketPath(cfg.DataDir, api.PeerSocketName)
	ln, err := listenUnix(sock)
	if err != nil {
		closeDirect()
		p.state.Close()
		store.Close()
		return err
	}
	defer os.Remove(sock)
	apiCtx, apiStop := context.WithCancel(context.Background())
	apiDone := make(chan error, 1)
	go func() { apiDone <- serveAPI(apiCtx, ln, p.apiHandler()) }()

	id := p.id.Load()
	p.log.Info("peer starting", "zone", id.Zone, "device", id.Device, "hub", id.HubAddrs, "transport", cfg.Mode)
	if cfg.started != nil {
		cfg.started(p)
	}
	directCtx, directStop := context.WithCancel(ctx)
	directDone := make(chan struct{})
	if p.direct != nil {
		go func() { defer close(directDone); p.direct.Run(directCtx) }()
	} else {
		close(directDone)
	}
	call, err := p.loop(ctx)
	directStop()
	<-directDone // its connections closed, before the zone state is
	p.state.Close()
	store.Close()
	if call != nil {
		derr := RemovePairing(cfg.DataDir)
		call.done <- derr
		if derr == nil {
			p.log.Info("credentials deleted: device unpaired")
		}
	}
	apiStop()
	<-apiDone
	return err
}

func newPeer(cfg PeerConfig, store *peerStore) (*Peer, error) {
	id, err := store.Identity()
	if err != nil {
		return nil, err
	}
	return newPeerWith(cfg, id, store), nil
}

// NewPeer returns a peer runtime for id with no store and no local API:
// renewed certificates live only in memory. It is for tools that run many
// devices in one process (the benchmark); pzp run uses RunPeer.
func NewPeer(cfg PeerConfig, id *Identity) (*Peer, error) {
	cfg.setDefaults()
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	return newPeerWith(cfg, id, nil), nil
}

// Run keeps the session until ctx ends (nil) or the hub ends it for good.
// It may be called once.
func (p *Peer) Run(ctx context.Context) error {
	var err error
	if p.sleep, err = p.newSleeper(); err != nil {
		return err
	}
	_, err = p.loop(ctx)
	return err
}

// Status reports the peer's state, as GET /v1/status would.
func (p *Peer) Status() api.PeerStatus { return p.status(0) }

// NewIdentity builds a device identity from a pairing result.
func NewIdentity(res *pairing.Result) (*Identity, error) {
	key, err := marshalKey(res.Key)
	if err != nil {
		return nil, err
	}
	id := &Identity{Zone: res.Zone, ZoneID: res.ZoneID, Device: res.Device, KeyDER: key, CertDER: res.Cert.Raw,
		CADER: res.CA.Raw, HubAddrs: res.HubAddrs}
	return id, id.parse()
}

func newPeerWith(cfg PeerConfig, id *Identity, store *peerStore) *Peer {
	p := &Peer{cfg: cfg, log: cfg.Logger, store: store, unpairReq: make(chan *unpairCall), synced: make(chan struct{}), services: newServiceHost(),
		envelopes: envelope.NewChecker()}
	p.envelopes.Notify = p.changes.bump
	p.id.Store(id)
	p.st = api.PeerStatus{Running: true, State: "connecting", Zone: id.Zone, ZoneID: id.ZoneID, Device: id.Device,
		Hub: id.HubAddrs[0], HubAddrs: id.HubAddrs, Software: SoftwareVersion}
	return p
}

func (p *Peer) setStatus(f func(*api.PeerStatus)) {
	p.mu.Lock()
	f(&p.st)
	p.mu.Unlock()
	p.changes.bump()
}

func (p *Peer) status(ver uint64) api.PeerStatus {
	p.mu.Lock()
	st := p.st
	p.mu.Unlock()
	id := p.id.Load()
	st.Version, st.CertExpires, st.CertRenews = ver, id.Cert.NotAfter, renewAt(id.Cert)
	if p.state != nil {
		ss := p.state.State()
		st.Sync = &ss
	}
	t := p.Traffic()
	st.BytesSent, st.BytesReceived = t.BytesSent, t.BytesReceived
	st.Wake = p.wakeStatus()
	st.Envelopes = p.envelopes.Counts()
	st.Direct = p.direct.status()
	return st
}

// errReconnect ends a session that should be followed at once by a new one.
var errReconnect = errors.New("reconnect")

// errSynced ends the last session of a peer run with ExitWhenSynced.
var errSynced = errors.New("in sync")

// syncError ends a session whose sync stream failed while the session
// itself was fine.
type syncError struct{ err error }

func (e *syncError) Error() string { return "zone sync: " + e.err.Error() }
func (e *syncError) Unwrap() error { return e.err }

// loop connects, runs sessions and backs off between them. It returns an
// unpair call if the local API asked to unpair.
func (p *Peer) loop(ctx context.Context) (*unpairCall, error) {
	bo := backoff{min: p.cfg.BackoffMin, max: p.cfg.BackoffMax}
	var pinged chan struct{} // nil: never sleeps
	if sl := p.sleep; sl != nil {
		pinged = sl.pinged
		wctx, stop := context.WithCancel(context.Background())
		done := make(chan struct{})
		go func() { defer close(done); p.listenWake(wctx) }()
		defer func() { stop(); sl.ep.Close(); <-done }()
	}
	failedAfterWake := 0
	for {
		sess, err := p.connect(ctx)
		if err != nil {
			p.woke()
		}
		if err == nil {
			failedAfterWake = 0
			var call *unpairCall
			call, err = p.runSession(ctx, sess)
			if call != nil {
				return call, nil
			}
			// A session whose sync keeps failing must not bring the
			// device back at once every time.
			var se *syncError
			if !errors.As(err, &se) {
				bo.reset()
			}
		}
		var end *EndError
		switch {
		case ctx.Err() != nil:
			p.setStatus(func(s *api.PeerStatus) { s.State, s.Running = "stopped", false })
			return nil, nil
		case errors.As(err, &end):
			p.log.Error("hub ended the session for good", "reason", end.Reason, "detail", end.Message)
			p.setStatus(func(s *api.PeerStatus) { s.State, s.Running, s.LastError = "stopped", false, err.Error() })
			return nil, err
		case errors.Is(err, errReconnect):
			continue
		case errors.Is(err, errSleep):
			p.sleepUntilWoken(ctx)
			failedAfterWake = 1
			bo.reset()
			continue
		case failedAfterWake > 0 && failedAfterWake < wakeAttempts:
			failedAfterWake++
		case failedAfterWake >= wakeAttempts:
			// Woken, but the hub cannot be reached: sleep again rather
			// than drain the battery retrying; a ping, a local need or
			// the check-in brings it back.
			p.log.Warn("hub unreachable after waking; going back to sleep", "attempts", wakeAttempts, "err", err)
			p.setStatus(func(s *api.PeerStatus) { s.LastError = err.Error() })
			p.sleepUntilWoken(ctx)
			failedAfterWake = 1
			bo.reset()
			continue
		case errors.Is(err, errSynced):
			p.setStatus(func(s *api.PeerStatus) { s.State, s.Running = "stopped", false })
			return nil, nil
		}
		wait := bo.next()
		var rw *retryWithin
		if errors.As(err, &rw) {
			// The hub said how to spread out; the backoff starts afresh
			// in case it is not back by then.
			wait = rand.N(rw.Window + 1)
			bo.reset()
		}
		p.log.Warn("not connected to hub; retrying", "err", err, "retry_in", wait.Round(time.Millisecond))
		p.setStatus(func(s *api.PeerStatus) {
			s.State, s.LastError, s.Transport, s.Session, s.Since, s.RTTMs = "connecting", err.Error(), "", "", nil, nil
		})
		t := time.NewTimer(wait)
		select {
		case <-ctx.Done():
			t.Stop()
		case <-t.C:
		case <-pinged:
			// The hub is back and wants this device: retry now.
			t.Stop()
		case call := <-p.unpairReq:
			// Offline: the hub cannot be told now.
			t.Stop()
			call.told <- errors.New("hub not reachable")
			return call, nil
		}
	}
}

// backoff is capped exponential backoff with equal jitter: each wait is
// between half and all of the current step, so devices that lost the hub
// at the same moment spread out.
type backoff struct {
	min, max, cur time.Duration
}

func (b *backoff) next() time.Duration {
	if b.cur == 0 {
		b.cur = b.min
	} else if b.cur *= 2; b.cur > b.max {
		b.cur = b.max
	}
	half := b.cur / 2
	return half + rand.N(half+1)
}

func (b *backoff) reset() { b.cur = 0 }

// peerSession is an admitted session on the device side.
type peerSession struct {
	conn      transport.Conn
	ctrl      transport.Stream
	fr        *transport.FrameReader
	welcome   wire.Control
	heartbeat time.Duration
	addr      string
	wmu       sync.Mutex
}

func (ps *peerSession) send(c *wire.Control) error {
	ps.wmu.Lock()
	defer ps.wmu.Unlock()
	ps.ctrl.SetWriteDeadline(time.Now().Add(streamTimeout))
	return transport.WriteFrame(ps.ctrl, c)
}

func (p *Peer) sessionTLS() *tls.Config {
	id := p.id.Load()
	conf := pairing.PinnedHubTLS(id.ZoneID, transport.ALPNSession, nil)
	conf.GetClientCertificate = func(*tls.CertificateRequestInfo) (*tls.Certificate, error) {
		cur := p.id.Load()
		return &tls.Certificate{Certificate: [][]byte{cur.Cert.Raw}, PrivateKey: cur.Key, Leaf: cur.Cert}, nil
	}
	return conf
}

// connect dials the hub's addresses in order and says Hello.
func (p *Peer) connect(ctx context.Context) (*peerSession, error) {
	id := p.id.Load()
	var errs []error
	tc := transport.Config{TLS: p.sessionTLS(), Logger: p.log, IdleTimeout: transportIdle, HandshakeTimeout: sessionHandshakeTimeout}
	if p.sleep != nil {
		tc.Endpoint = p.sleep.ep // the hub observes the wake socket's address
	}
	for _, addr := range id.HubAddrs {
		conn, err := transport.Dial(ctx, addr, p.cfg.Mode, tc)
		if err != nil {
			if ctx.Err() != nil {
				return nil, ctx.Err()
			}
			errs = append(errs, fmt.Errorf("%s: %w", addr, err))
			continue
		}
		ps, err := p.hello(ctx, conn, addr)
		if err != nil {
			conn.CloseWithError(uint64(wire.ReasonProtocol), "hello failed")
			return nil, err
		}
		return ps, nil
	}
	err := errors.Join(errs...)
	if now := p.cfg.Now(); now.After(id.Cert.NotAfter) {
		err = fmt.Errorf("%w (note: this device's certificate expired on %s; it renews on its next session if the hub's grace period allows)", err, id.Cert.NotAfter.Format(time.RFC3339))
	}
	return nil, err
}

func (p *Peer) hello(ctx context.Context, conn transport.Conn, addr string) (*peerSession, error) {
	hctx, cancel := context.WithTimeout(ctx, helloTimeout)
	defer cancel()
	ctrl, err := conn.OpenStream(hctx)
	if err != nil {
		return nil, fmt.Errorf("open control stream: %w", err)
	}
	ps := &peerSession{conn: conn, ctrl: ctrl, fr: transport.NewFrameReader(ctrl, maxControlFrame), addr: addr}
	ctrl.SetDeadline(time.Now().Add(helloTimeout))
	if err := transport.WriteFrame(ctrl, &wire.StreamHeader{Kind: wire.StreamControl}); err != nil {
		return nil, err
	}
	if err := ps.send(&wire.Control{Type: wire.MsgHello, Version: wire.SessionVersion, Software: SoftwareVersion}); err != nil {
		return nil, err
	}
	// Over QUIC, keep talking while Welcome is awaited: if the hub that
	// took the handshake died before answering (a restart), the packets
	// reach its successor, which answers with a stateless reset, and this
	// dial fails at once instead of after helloTimeout. The hub answers
	// Welcome before it reads these pings; their Pongs (Seq 0) are ignored.
	waiting := make(chan struct{})
	defer close(waiting)
	if conn.Kind() == transport.KindQUIC {
		go func() {
			t := time.NewTicker(helloNudge)
			defer t.Stop()
			for {
				select {
				case <-waiting:
					return
				case <-t.C:
					if ps.send(&wire.Control{Type: wire.MsgPing, Pad: make([]byte, wire.PingPad)}) != nil {
						return
					}
				}
			}
		}()
	}
	var c wire.Control
	if err := ps.fr.ReadFrame(&c); err != nil {
		var ne net.Error
		if errors.As(err, &ne) && ne.Timeout() {
			return nil, fmt.Errorf("the hub took the connection but did not answer hello within %v", helloTimeout)
		}
		return nil, p.readErr(conn, err)
	}
	ctrl.SetDeadline(time.Time{})
	switch c.Type {
	case wire.MsgWelcome:
	case wire.MsgClose:
		return nil, closeErr(&c)
	default:
		return nil, fmt.Errorf("hub answered hello with message %d", c.Type)
	}
	ps.welcome = c
	ps.heartbeat = min(max(time.Duration(c.HeartbeatMs)*time.Millisecond, MinHeartbeat), MaxHeartbeat)
	return ps, nil
}

// retryWithin is a hub shutdown that asked devices to reconnect at a
// random moment within Window.
type retryWithin struct {
	Window time.Duration
	Msg    string
}

func (e *retryWithin) Error() string {
	return fmt.Sprintf("hub closed the session: shutdown: %s (reconnecting within %v)", e.Msg, e.Window)
}

// closeErr turns a hub's Close frame into the error the loop acts on.
func closeErr(c *wire.Control) error {
	if c.Reason.Final() {
		return &EndError{Reason: c.Reason, Message: c.Message}
	}
	if c.Reason == wire.ReasonRenewed {
		return errReconnect
	}
	if c.Reason == wire.ReasonShutdown && c.RetryWindowMs > 0 {
		w := min(time.Duration(c.RetryWindowMs)*time.Millisecond, maxRetryWindow)
		return &retryWithin{Window: w, Msg: c.Message}
	}
	if c.Message != "" {
		return fmt.Errorf("hub closed the session: %s: %s", c.Reason, c.Message)
	}
	return fmt.Errorf("hub closed the session: %s", c.Reason)
}

// readErr explains a failed control read, using the QUIC close code when
// the Close frame itself was lost.
func (p *Peer) readErr(conn transport.Conn, err error) error {
	select {
	case <-conn.Done():
		var rc *transport.RemoteCloseError
		if errors.As(conn.Err(), &rc) && rc.Code != 0 {
			return closeErr(&wire.Control{Type: wire.MsgClose, Reason: wire.CloseReason(rc.Code)})
		}
	default:
	}
	var ne net.Error
	if errors.As(err, &ne) && ne.Timeout() {
		return fmt.Errorf("hub stopped answering heartbeats: %w", err)
	}
	return fmt.Errorf("lost the hub: %w", err)
}

// runSession drives one admitted session: heartbeats, renewal, unpair
// requests, and reading the hub's frames.
func (p *Peer) runSession(ctx context.Context, ps *peerSession) (*unpairCall, error) {
	// A renewal still in flight must finish (it fails fast once the
	// connection below is closed) before the caller may close the store.
	renewing := false
	renewDone := make(chan error, 1)
	defer func() {
		if renewing {
			<-renewDone
		}
	}()
	// Likewise the sync stream, which writes to the zone state.
	syncing := false
	syncDone := make(chan error, 1)
	defer func() {
		if syncing {
			<-syncDone
		}
	}()
	defer ps.conn.CloseWithError(uint64(wire.ReasonShutdown), wire.ReasonShutdown.String())
	p.hubVersion.Store(uint32(ps.welcome.Version))
	p.conn.Store(&ps.conn)
	defer p.conn.Store(nil)
	p.woke() // after the connection is in place: a call waiting for it finds it
	now := p.cfg.Now()
	if ps.welcome.RenewOnly {
		p.log.Info("certificate expired; renewing before going online")
		p.setStatus(func(s *api.PeerStatus) { s.State = "renewing" })
	} else {
		p.log.Info("online", "hub", ps.addr, "via", ps.conn.Kind(), "session", ps.welcome.SessionID)
		p.setStatus(func(s *api.PeerStatus) {
			s.State, s.Hub, s.Transport, s.Session, s.Since, s.LastError, s.RTTMs = "online", ps.addr, string(ps.conn.Kind()), ps.welcome.SessionID, &now, "", nil
		})
	}

	frames := make(chan wire.Control)
	readErr := make(chan error, 1)
	dead := DeadAfter(ps.heartbeat)
	go func() {
		for {
			var c wire.Control
			if err := readControl(ps.conn, ps.ctrl, ps.fr, dead, &c); err != nil {
				readErr <- p.readErr(ps.conn, err)
				return
			}
			select {
			case frames <- c:
			case <-ps.conn.Done():
				readErr <- errors.New("session closed")
				return
			}
		}
	}()

	tick := time.NewTicker(ps.heartbeat)
	defer tick.Stop()
	renewIn := renewAt(p.id.Load().Cert).Sub(now)
	if ps.welcome.RenewOnly || renewIn < 0 {
		renewIn = 0
	}
	renew := time.NewTimer(renewIn)
	defer renew.Stop()

	var seq uint64
	var pingSent time.Time
	var rtt time.Duration
	var pad []byte
	if ps.conn.Kind() == transport.KindQUIC {
		pad = make([]byte, wire.PingPad)
	}
	ping := func() error {
		seq++
		pingSent = time.Now()
		return ps.send(&wire.Control{Type: wire.MsgPing, Seq: seq, RTTus: uint64(rtt / time.Microsecond), Pad: pad})
	}
	if err := ping(); err != nil { // measure RTT at once
		return nil, p.readErr(ps.conn, err)
	}
	if err := p.registerWake(ps); err != nil {
		return nil, p.readErr(ps.conn, err)
	}
	p.touch()
	var idle <-chan time.Time // fires when the session may have been idle long enough to sleep
	var idleTimer *time.Timer
	if p.sleep != nil && !ps.welcome.RenewOnly {
		idleTimer = time.NewTimer(p.sleep.after)
		defer idleTimer.Stop()
		idle = idleTimer.C
	}
	if p.state != nil && !ps.welcome.RenewOnly {
		syncing = true
		go func() { syncDone <- p.runSync(ctx, ps) }()
	}
	if !ps.welcome.RenewOnly {
		go p.acceptCalls(ctx, ps.conn)
	}
	var syncErr error
	var syncGrace <-chan time.Time
	hangUp := func(reason wire.CloseReason, msg string) {
		ps.send(&wire.Control{Type: wire.MsgClose, Reason: reason, Message: msg})
		ps.ctrl.Close()
		select {
		case <-ps.conn.Done():
		case <-time.After(closeLinger):
		}
	}
	for {
		select {
		case <-ctx.Done():
			hangUp(wire.ReasonShutdown, "device shutting down")
			return nil, ctx.Err()
		case <-p.synced:
			hangUp(wire.ReasonShutdown, "device shutting down")
			return nil, errSynced
		case <-idle:
			if left := p.sleep.after - p.idleFor(); left > 0 || renewing || !p.doze() {
				idleTimer.Reset(max(left, p.sleep.after/4, MinSleepAfter))
				continue
			}
			p.conn.Store(nil) // calls from now on wait for the next session
			p.sleep.drain()
			hangUp(wire.ReasonSleep, "device going to sleep")
			return nil, errSleep
		case err := <-syncDone:
			syncing = false
			if ctx.Err() != nil {
				continue
			}
			// The hub may be ending the session (it stops the sync
			// stream first): give its Close frame, which says why, a
			// moment to arrive.
			syncErr = err
			syncGrace = time.After(closeLinger)
		case <-syncGrace:
			p.log.Warn("zone sync stopped; reconnecting", "err", syncErr)
			return nil, &syncError{syncErr}
		case err := <-readErr:
			return nil, err
		case c := <-frames:
			switch c.Type {
			case wire.MsgPong:
				if c.Seq == seq {
					first := rtt == 0
					rtt = time.Since(pingSent)
					ms := float64(rtt) / float64(time.Millisecond)
					p.setStatus(func(s *api.PeerStatus) { s.RTTMs = &ms })
					if first {
						// Report the first figure now rather than a
						// heartbeat later: the hub shows it in pzh devices.
						if err := ping(); err != nil {
							return nil, p.readErr(ps.conn, err)
						}
					}
				}
			case wire.MsgClose:
				return nil, closeErr(&c)
			case wire.MsgWakeOK:
				p.wakeConfirmed(&c)
			default:
				p.log.Debug("ignoring control message", "type", c.Type)
			}
		case <-tick.C:
			if err := ping(); err != nil {
				return nil, p.readErr(ps.conn, err)
			}
		case <-renew.C:
			renewing = true
			p.renewTried.Store(time.Now().UnixNano())
			go func() { renewDone <- p.renew(ctx, ps) }()
		case err := <-renewDone:
			renewing = false
			if err != nil {
				p.log.Warn("certificate renewal failed; will retry", "err", err)
				renew.Reset(renewRetry)
				continue
			}
			if ps.welcome.RenewOnly {
				// The hub closes this session; the next uses the new certificate.
				continue
			}
			next := renewAt(p.id.Load().Cert).Sub(p.cfg.Now())
			if next < minRenewInterval {
				// A fresh certificate already due means the clocks
				// disagree; do not spin on renewals.
				next = minRenewInterval
			}
			renew.Reset(next)
		case call := <-p.unpairReq:
			call.told <- p.unpairOn(ctx, ps)
			return call, nil
		}
	}
}

// helloNudge is how often a device waiting for Welcome over QUIC sends a
// ping, so that a hub which died after the handshake is found out by its
// successor's stateless reset. Welcome normally comes within one RTT.
const helloNudge = time.Second

// renewRetry is the wait after a failed renewal attempt.
const renewRetry = time.Minute

// minRenewInterval is the least time between two renewals of one session,
// a third of the shortest certificate lifetime an invite may set.
const minRenewInterval = pairing.MinCertLifetime / 3

// renew gets a certificate for a fresh key over the session and stores
// both together before using them.
func (p *Peer) renew(ctx context.Context, ps *peerSession) error {
	key, err := certs.NewKey()
	if err != nil {
		return err
	}
	csr, err := certs.NewCSR(key)
	if err != nil {
		return err
	}
	var resp wire.RenewResponse
	if err := exchange(ctx, ps.conn, wire.StreamRenew, &wire.RenewRequest{CSR: csr}, &resp); err != nil {
		return err
	}
	if resp.Error != "" {
		return fmt.Errorf("hub refused renewal: %s", resp.Error)
	}
	id := p.id.Load()
	cert, err := checkIssued(id, key, resp.Cert, p.cfg.Now())
	if err != nil {
		return err
	}
	var nid *Identity
	if p.store != nil {
		if nid, err = p.store.SaveCert(key, cert); err != nil {
			return fmt.Errorf("save renewed certificate: %w", err)
		}
	} else {
		kder, err := marshalKey(key)
		if err != nil {
			return err
		}
		c := *id
		c.KeyDER, c.CertDER, c.Key, c.Cert = kder, cert.Raw, key, cert
		nid = &c
	}
	p.id.Store(nid)
	p.changes.bump()
	p.log.Info("certificate renewed", "expires", cert.NotAfter)
	return nil
}

func checkIssued(id *Identity, key ed25519.PrivateKey, der []byte, now time.Time) (*x509.Certificate, error) {
	v, err := certs.Verify(id.CA, [][]byte{der}, now, 0)
	if err != nil {
		return nil, fmt.Errorf("renewed certificate: %w", err)
	}
	if v.Identity.Device != id.Device {
		return nil, fmt.Errorf("renewed certificate names %q, not %q", v.Identity.Device, id.Device)
	}
	if pub, ok := v.Cert.PublicKey.(ed25519.PublicKey); !ok || !pub.Equal(key.Public()) {
		return nil, errors.New("renewed certificate is not for the new key")
	}
	return v.Cert, nil
}

// exchange runs a one-shot request/response on a new stream of kind.
func exchange(ctx context.Context, conn transport.Conn, kind wire.StreamKind, req, resp any) error {
	return exchangeLimit(ctx, conn, kind, req, resp, maxRequestFrame)
}

func (p *Peer) unpairOn(ctx context.Context, ps *peerSession) error {
	var resp wire.UnpairResponse
	if err := exchange(ctx, ps.conn, wire.StreamUnpair, &wire.UnpairRequest{}, &resp); err != nil {
		return err
	}
	if resp.Error != "" {
		return errors.New(resp.Error)
	}
	return nil
}

func (p *Peer) apiHandler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /v1/status", func(w http.ResponseWriter, r *http.Request) {
		writeJSON(w, http.StatusOK, p.status(longPoll(r, &p.changes)))
	})
	mux.HandleFunc("POST /v1/unpair", func(w http.ResponseWriter, r *http.Request) {
		call := &unpairCall{told: make(chan error, 1), done: make(chan error, 1)}
		p.need() // a sleeping device wakes to tell its hub
		select {
		case p.unpairReq <- call:
		case <-r.Context().Done():
			return
		}
		told := <-call.told
		if err := <-call.done; err != nil {
			writeErr(w, http.StatusInternalServerError, fmt.Errorf("delete credentials: %w", err))
			return
		}
		res := api.UnpairResult{Device: p.id.Load().Device, HubTold: told == nil}
		if told != nil {
			res.HubError = told.Error()
		}
		writeJSON(w, http.StatusOK, res)
	})
	dataRoutes(mux, func() *zsync.Store { return p.state }, p.id.Load().Device)
	p.serviceRoutes(mux)
	mux.HandleFunc("/", notFound)
	return mux
}

// UnpairOffline unpairs a device whose daemon is not running: it tells the
// hub if it can within timeout, then deletes the credentials either way.
func UnpairOffline(ctx context.Context, dir string, mode transport.Mode, timeout time.Duration) (*api.UnpairResult, error) {
	store, err := openPeerStore(dir, false)
	if err != nil {
		return nil, err
	}
	cfg := PeerConfig{DataDir: dir, Mode: mode}
	cfg.setDefaults()
	p, err := newPeer(cfg, store)
	if err != nil {
		store.Close()
		return nil, err
	}
	res := &api.UnpairResult{Device: p.id.Load().Device}
	tctx, cancel := context.WithTimeout(ctx, timeout)
	ps, err := p.connect(tctx)
	if err == nil {
		err = p.unpairOn(tctx, ps)
		ps.send(&wire.Control{Type: wire.MsgClose, Reason: wire.ReasonUnpaired})
		ps.conn.CloseWithError(uint64(wire.ReasonUnpaired), wire.ReasonUnpaired.String())
	}
	cancel()
	var end *EndError
	if errors.As(err, &end) && end.Reason == wire.ReasonRevoked {
		err = nil // already revoked: the hub will not accept it again either way
	}
	res.HubTold = err == nil
	if err != nil {
		res.HubError = err.Error()
	}
	store.Close()
	if err := RemovePairing(dir); err != nil {
		return nil, err
	}
	return res, nil
}

// ReadPeerStatus reports a device's status: from its running daemon if
// there is one, else from its store.
func ReadPeerStatus(ctx context.Context, dir string) (*api.PeerStatus, error) {
	var st api.PeerStatus
	err := api.NewClient(api.SocketPath(dir, api.PeerSocketName)).Do(ctx, http.MethodGet, "/v1/status", nil, &st)
	if err == nil {
		return &st, nil
	}
	if !errors.Is(err, api.ErrNotRunning) {
		return nil, err
	}
	store, err := openPeerStore(dir, true)
	if err != nil {
		return nil, err
	}
	defer store.Close()
	id, err := store.Identity()
	if err != nil {
		return nil, err
	}
	sync, err := zsync.ReadState(filepath.Join(dir, zsync.FileName))
	if err != nil {
		return nil, err
	}
	return &api.PeerStatus{State: "stopped", Zone: id.Zone, ZoneID: id.ZoneID, Device: id.Device, Hub: id.HubAddrs[0],
		HubAddrs: id.HubAddrs, CertExpires: id.Cert.NotAfter, CertRenews: renewAt(id.Cert), Software: SoftwareVersion, Sync: sync}, nil
}

// Session is one admitted session opened by DialSession: no heartbeats, no
// renewal, no reconnect. It is for tools that measure session setup.
type Session struct {
	ps *peerSession
}

// DialSession opens a session for id and returns once the hub has
// admitted it (registered it and sent Welcome).
func DialSession(ctx context.Context, id *Identity, mode transport.Mode) (*Session, error) {
	cfg := PeerConfig{Mode: mode}
	cfg.setDefaults()
	ps, err := newPeerWith(cfg, id, nil).connect(ctx)
	if err != nil {
		return nil, err
	}
	return &Session{ps: ps}, nil
}

// Conn is the session's connection.
func (s *Session) Conn() transport.Conn { return s.ps.conn }

// Close says goodbye and closes at once.
func (s *Session) Close() error {
	s.ps.send(&wire.Control{Type: wire.MsgClose, Reason: wire.ReasonShutdown})
	return s.ps.conn.CloseWithError(uint64(wire.ReasonShutdown), wire.ReasonShutdown.String())
}
