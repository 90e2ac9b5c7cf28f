package peer

import (
	"context"
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

	"github.com/pzone/pzone/zone/policy"
	"github.com/pzone/pzone/zone/services"
	"github.com/pzone/pzone/zone/session"
	"github.com/pzone/pzone/zone/stores"

	"github.com/pzone/pzone/pairing"
	zsync "github.com/pzone/pzone/sync"
	"github.com/pzone/pzone/transport"
	"github.com/pzone/pzone/zone/api"
	"github.com/pzone/pzone/zone/appid"
	"github.com/pzone/pzone/zone/envelope"
	"github.com/pzone/pzone/zone/localapi"
	"github.com/pzone/pzone/zone/metrics"
	"github.com/pzone/pzone/zone/wire"
)

// Reconnect backoff, with why.
const (
	// DefaultBackoffMin: a hub restart takes about a second; the first
	// retry should not wait much longer than that.
	DefaultBackoffMin = 500 * time.Millisecond
	// DefaultBackoffMax caps the wait so a device is back within half a
	// minute of its hub; with jitter, 10,000 devices spread their
	// reconnects over that window rather than arriving at once.
	DefaultBackoffMax = 30 * time.Second
)

// Config configures Run.
type Config struct {
	DataDir    string
	Mode       transport.Mode
	BackoffMin time.Duration
	BackoffMax time.Duration
	Logger     *slog.Logger
	Now        func() time.Time
	// ExitWhenSynced makes Run return nil once the device holds the
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
	// RequireAppAuth refuses local API requests that present no app
	// credential (pzp run --require-app-auth); without it they are app
	// anonymous.
	RequireAppAuth bool
	// Metrics, if set, is host:port to serve Prometheus metrics on
	// (/metrics, zone/metrics).
	Metrics string

	// started, if set, is handed the running peer (tests reach into it).
	started func(*Peer)
}

func (c *Config) setDefaults() {
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

// Validate checks the configuration. DataDir is Run's concern: a
// store-less peer (New) has none.
func (c *Config) Validate() error {
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

// MinSleepAfter is the shortest idle time before sleep a device may ask
// for: shorter would close sessions between two calls of one exchange.
const MinSleepAfter = 10 * time.Millisecond

// wakeAttempts is how many connection attempts a woken device makes
// before it goes back to sleep when the hub cannot be reached.
const wakeAttempts = 3

// Peer is a running device.
type Peer struct {
	cfg   Config
	log   *slog.Logger
	store *peerStore
	state *zsync.Store // the device's copy of the zone state
	// services are the ones applications serve on this device.
	services *services.Host
	calls    policy.ViewCache // policy and token rules, for calls
	apps     *appid.Registry  // the apps registered on this device (apps.go)
	id       atomic.Pointer[Identity]
	// zoneSeq is the sequence number of the zone record last followed
	// (followHubAddrs).
	zoneSeq atomic.Uint64

	synced     chan struct{} // closed once in sync, with ExitWhenSynced
	syncedOnce sync.Once

	mu      sync.Mutex
	st      api.PeerStatus
	changes localapi.Notifier

	unpairReq chan *unpairCall
	conn      atomic.Pointer[transport.Conn] // the live session's connection

	router     *router       // calls to and from apps (services.go)
	sleep      *sleeper      // nil: the device never sleeps
	direct     *directNet    // nil: no direct connections
	inflight   atomic.Int64  // calls and messages in progress, either way
	hubStreams atomic.Int32  // byte streams open to the hub (wire.StreamsPerSession)
	lastActive atomic.Int64  // unix ns of the last activity
	renewTried atomic.Int64  // unix ns of the last renewal attempt
	hubVersion atomic.Uint32 // the session version the hub's Welcome said
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

// Run keeps a session with the hub until ctx ends (nil) or the hub
// ends it for good (*EndError).
func Run(ctx context.Context, cfg Config) error {
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
	if err := stores.KeepEnvelopes(p.router.envelopes, store.db, cfg.Now); err != nil {
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
	var metricsLn *metrics.Listener
	if cfg.Metrics != "" {
		if metricsLn, err = metrics.Listen(cfg.Metrics); err != nil {
			closeDirect()
			p.state.Close()
			store.Close()
			return err
		}
	}
	sock := api.SocketPath(cfg.DataDir, api.PeerSocketName)
	ln, err := localapi.ListenPrepared(sock, p.apps.IssueCLI)
	if err != nil {
		if metricsLn != nil {
			metricsLn.Close()
		}
		closeDirect()
		p.state.Close()
		store.Close()
		return err
	}
	defer os.Remove(sock)
	defer p.apps.RemoveCLI()
	apiCtx, apiStop := context.WithCancel(context.Background())
	apiDone := make(chan error, 1)
	go func() { apiDone <- localapi.Serve(apiCtx, ln, p.authenticate(p.apiHandler())) }()
	metricsDone := make(chan struct{})
	if metricsLn != nil {
		reg := metrics.NewRegistry()
		p.registerMetrics(reg)
		go func() {
			defer close(metricsDone)
			if err := metricsLn.Serve(apiCtx, reg, p.log); err != nil {
				p.log.Error("metrics listener stopped; the device goes on without it", "err", err)
			}
		}()
		p.log.Info("metrics listener", "url", "http://"+metricsLn.Addr().String()+"/metrics")
	} else {
		close(metricsDone)
	}

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
	<-metricsDone
	return err
}

func newPeer(cfg Config, store *peerStore) (*Peer, error) {
	id, err := store.Identity()
	if err != nil {
		return nil, err
	}
	return newPeerWith(cfg, id, store), nil
}

// New returns a peer runtime for id with no store and no local API:
// renewed certificates live only in memory. It is for tools that run many
// devices in one process (the benchmark); pzp run uses Run.
func New(cfg Config, id *Identity) (*Peer, error) {
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
	key, err := stores.MarshalKey(res.Key)
	if err != nil {
		return nil, err
	}
	id := &Identity{Zone: res.Zone, ZoneID: res.ZoneID, Device: res.Device, KeyDER: key, CertDER: res.Cert.Raw,
		CADER: res.CA.Raw, HubAddrs: res.HubAddrs}
	return id, id.parse()
}

func newPeerWith(cfg Config, id *Identity, store *peerStore) *Peer {
	p := &Peer{cfg: cfg, log: cfg.Logger, store: store, unpairReq: make(chan *unpairCall), synced: make(chan struct{}), services: services.NewHost()}
	p.router = &router{p: p, envelopes: envelope.NewChecker()}
	p.apps = appid.Open(cfg.DataDir)
	p.router.envelopes.Notify = p.changes.Bump
	p.id.Store(id)
	p.st = api.PeerStatus{Running: true, State: "connecting", Zone: id.Zone, ZoneID: id.ZoneID, Device: id.Device,
		Hub: id.HubAddrs[0], Software: wire.SoftwareVersion} // HubAddrs: from the identity, in status
	return p
}

func (p *Peer) setStatus(f func(*api.PeerStatus)) {
	p.mu.Lock()
	f(&p.st)
	p.mu.Unlock()
	p.changes.Bump()
}

func (p *Peer) status(ver uint64) api.PeerStatus {
	p.mu.Lock()
	st := p.st
	p.mu.Unlock()
	id := p.id.Load()
	st.Version, st.CertExpires, st.CertRenews = ver, id.Cert.NotAfter, session.RenewAt(id.Cert)
	st.HubAddrs = id.HubAddrs
	if p.state != nil {
		ss := p.state.State()
		st.Sync = &ss
	}
	t := p.Traffic()
	st.BytesSent, st.BytesReceived = t.BytesSent, t.BytesReceived
	st.Wake = p.sleep.wakeStatus()
	st.Envelopes = p.router.envelopes.Counts()
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
	bo := session.Backoff{Min: p.cfg.BackoffMin, Max: p.cfg.BackoffMax}
	var pinged chan struct{} // nil: never sleeps
	if sl := p.sleep; sl != nil {
		pinged = sl.pinged
		wctx, stop := context.WithCancel(context.Background())
		done := make(chan struct{})
		go func() { defer close(done); p.sleep.listenWake(wctx) }()
		defer func() { stop(); sl.ep.Close(); <-done }()
	}
	failedAfterWake := 0
	for {
		sess, err := p.connect(ctx)
		if err != nil {
			p.sleep.woke()
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
				bo.Reset()
			}
		}
		var end *wire.EndError
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
			p.sleep.sleepUntilWoken(ctx)
			failedAfterWake = 1
			bo.Reset()
			continue
		case failedAfterWake > 0 && failedAfterWake < wakeAttempts:
			failedAfterWake++
		case failedAfterWake >= wakeAttempts:
			// Woken, but the hub cannot be reached: sleep again rather
			// than drain the battery retrying; a ping, a local need or
			// the check-in brings it back.
			p.log.Warn("hub unreachable after waking; going back to sleep", "attempts", wakeAttempts, "err", err)
			p.setStatus(func(s *api.PeerStatus) { s.LastError = err.Error() })
			p.sleep.sleepUntilWoken(ctx)
			failedAfterWake = 1
			bo.Reset()
			continue
		case errors.Is(err, errSynced):
			p.setStatus(func(s *api.PeerStatus) { s.State, s.Running = "stopped", false })
			return nil, nil
		}
		wait := bo.Next()
		var rw *retryWithin
		if errors.As(err, &rw) {
			// The hub said how to spread out; the backoff starts afresh
			// in case it is not back by then.
			wait = rand.N(rw.Window + 1)
			bo.Reset()
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

func (p *Peer) apiHandler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /v1/status", func(w http.ResponseWriter, r *http.Request) {
		localapi.WriteJSON(w, http.StatusOK, p.status(localapi.LongPoll(r, &p.changes)))
	})
	mux.HandleFunc("POST /v1/unpair", cliOnly(func(w http.ResponseWriter, r *http.Request) {
		call := &unpairCall{told: make(chan error, 1), done: make(chan error, 1)}
		p.sleep.need() // a sleeping device wakes to tell its hub
		select {
		case p.unpairReq <- call:
		case <-r.Context().Done():
			return
		}
		told := <-call.told
		if err := <-call.done; err != nil {
			localapi.WriteErr(w, http.StatusInternalServerError, fmt.Errorf("delete credentials: %w", err))
			return
		}
		res := api.UnpairResult{Device: p.id.Load().Device, HubTold: told == nil}
		if told != nil {
			res.HubError = told.Error()
		}
		localapi.WriteJSON(w, http.StatusOK, res)
	}))
	localapi.DataRoutes(mux, func() *zsync.Store { return p.state }, p.id.Load().Device)
	p.router.routes(mux)
	mux.HandleFunc("/", localapi.NotFound)
	return mux
}

// UnpairOffline unpairs a device whose daemon is not running: it tells the
// hub if it can within timeout, then deletes the credentials either way.
func UnpairOffline(ctx context.Context, dir string, mode transport.Mode, timeout time.Duration) (*api.UnpairResult, error) {
	store, err := openPeerStore(dir, false)
	if err != nil {
		return nil, err
	}
	cfg := Config{DataDir: dir, Mode: mode}
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
	var end *wire.EndError
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

// ReadStatus reports a device's status: from its running daemon if
// there is one, else from its store.
func ReadStatus(ctx context.Context, dir string) (*api.PeerStatus, error) {
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
		HubAddrs: id.HubAddrs, CertExpires: id.Cert.NotAfter, CertRenews: session.RenewAt(id.Cert), Software: wire.SoftwareVersion, Sync: sync}, nil
}

// Session is one admitted session opened by DialSession: no heartbeats, no
// renewal, no reconnect. It is for tools that measure session setup.
type Session struct {
	ps *peerSession
}

// DialSession opens a session for id and returns once the hub has
// admitted it (registered it and sent Welcome).
func DialSession(ctx context.Context, id *Identity, mode transport.Mode) (*Session, error) {
	cfg := Config{Mode: mode}
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
