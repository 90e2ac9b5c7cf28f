package peer

import (
	"context"
	"errors"
	"net"
	"net/http"
	"sync/atomic"
	"testing"
	"time"

	"github.com/pzone/pzone/zone/hub"
	"github.com/pzone/pzone/zone/session"

	"github.com/pzone/pzone/pairing"
	"github.com/pzone/pzone/transport"
	"github.com/pzone/pzone/zone/api"
	"github.com/pzone/pzone/zone/wire"
)

// testClock is a wall clock with an adjustable offset, shared by a hub and
// its peers, so certificate lifetimes can pass without waiting.
type testClock struct{ off atomic.Int64 }

func (c *testClock) Now() time.Time          { return time.Now().Add(time.Duration(c.off.Load())) }
func (c *testClock) Advance(d time.Duration) { c.off.Add(int64(d)) }
func (c *testClock) Set(d time.Duration)     { c.off.Store(int64(d)) }
func testCtx(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	t.Cleanup(cancel)
	return ctx
}

type testHub struct {
	dir  string
	addr net.Addr
	stop func() error
}

// startHub creates a zone in a fresh directory and runs its hub until the
// test ends (or stop is called), failing the test if it exits with an error.
func startHub(t *testing.T, clock *testClock, tweak func(*hub.Config)) *testHub {
	t.Helper()
	return startHubNamed(t, clock, "alice", tweak)
}

// startHubNamed is startHub for a zone called name.
func startHubNamed(t *testing.T, clock *testClock, name string, tweak func(*hub.Config)) *testHub {
	t.Helper()
	dir := t.TempDir()
	// The port is fixed once the hub listens; invites carry the public
	// address, so bind first on a free port and use that.
	ln, err := transport.ListenBoth("127.0.0.1:0", transport.Config{TLS: dummyTLS(t)})
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	if _, err := hub.InitZone(dir, name, []string{addr}, clock.Now()); err != nil {
		t.Fatal(err)
	}
	return restartHub(t, clock, dir, tweak)
}

// restartHub runs the hub of an existing zone directory until the test
// ends (or stop is called).
func restartHub(t *testing.T, clock *testClock, dir string, tweak func(*hub.Config)) *testHub {
	t.Helper()
	info, err := hub.ReadZone(dir)
	if err != nil {
		t.Fatal(err)
	}
	addr := info.PublicAddrs[0]
	ready := make(chan net.Addr, 1)
	cfg := hub.Config{DataDir: dir, Listen: addr, Now: clock.Now, Ready: func(a net.Addr) { ready <- a }, Logger: testLogger(t, "hub")}
	if tweak != nil {
		tweak(&cfg)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- hub.Run(ctx, cfg) }()
	h := &testHub{dir: dir}
	stopped := false
	h.stop = func() error {
		if stopped {
			return nil
		}
		stopped = true
		cancel()
		return <-done
	}
	t.Cleanup(func() {
		if err := h.stop(); err != nil {
			t.Errorf("hub exited with error: %v", err)
		}
	})
	select {
	case h.addr = <-ready:
	case err := <-done:
		t.Fatalf("hub did not start: %v", err)
	}
	return h
}

func (h *testHub) client() *api.Client {
	return api.NewClient(api.SocketPath(h.dir, api.HubSocketName))
}

// pair invites device with the given certificate lifetime and pairs a new
// peer directory with it, at the clock's current time.
func (h *testHub) pair(t *testing.T, clock *testClock, device string, life time.Duration) string {
	t.Helper()
	var inv api.InviteView
	if err := h.client().Do(testCtx(t), http.MethodPost, "/v1/invites", api.InviteRequest{Device: device, CertLifetime: life.String()}, &inv); err != nil {
		t.Fatal(err)
	}
	tok, err := pairing.ParseToken(inv.Token)
	if err != nil {
		t.Fatal(err)
	}
	res, err := pairing.Pair(testCtx(t), tok, transport.ModeAuto)
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	if err := SavePairing(dir, res, clock.Now()); err != nil {
		t.Fatal(err)
	}
	return dir
}

type testPeer struct {
	dir    string
	cancel context.CancelFunc
	exited chan struct{}
	err    error
}

// wait returns Run's result once it has returned.
func (p *testPeer) wait() error {
	<-p.exited
	return p.err
}

// stop cancels the peer and returns Run's result.
func (p *testPeer) stop() error {
	p.cancel()
	return p.wait()
}

func startPeer(t *testing.T, dir string, clock *testClock) *testPeer {
	t.Helper()
	return startPeerWith(t, dir, clock, nil)
}

// startPeerWith is startPeer with a change to the configuration.
func startPeerWith(t *testing.T, dir string, clock *testClock, tweak func(*Config)) *testPeer {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	p := &testPeer{dir: dir, cancel: cancel, exited: make(chan struct{})}
	cfg := Config{DataDir: dir, Now: clock.Now, BackoffMin: 50 * time.Millisecond, BackoffMax: 200 * time.Millisecond, Logger: testLogger(t, "peer")}
	if tweak != nil {
		tweak(&cfg)
	}
	go func() {
		defer close(p.exited)
		p.err = Run(ctx, cfg)
	}()
	t.Cleanup(func() { p.stop() })
	return p
}

// waitPeer long-polls the peer's status until cond holds.
func waitPeer(t *testing.T, dir string, cond func(*api.PeerStatus) bool) *api.PeerStatus {
	t.Helper()
	ctx := testCtx(t)
	c := peerClient(dir)
	var ver uint64
	path := "/v1/status"
	for {
		var st api.PeerStatus
		err := c.Do(ctx, http.MethodGet, path, nil, &st)
		switch {
		case errors.Is(err, api.ErrNotRunning):
			// The daemon is still creating its socket.
			select {
			case <-ctx.Done():
				t.Fatal("peer never started")
			case <-time.After(5 * time.Millisecond):
			}
			continue
		case err != nil:
			t.Fatal(err)
		}
		if cond(&st) {
			return &st
		}
		if ctx.Err() != nil {
			t.Fatalf("peer status never matched; last: %+v", st)
		}
		ver = st.Version
		path = "/v1/status?wait=" + itoa(ver) + "&timeout=10s"
	}
}

func itoa(v uint64) string { return fmtUint(v) }

func dummyTLS(t *testing.T) *tlsConfig { return newDummyTLS(t) }

func deviceRecord(t *testing.T, h *testHub, name string) api.DeviceView {
	t.Helper()
	var v api.DevicesView
	if err := h.client().Do(testCtx(t), http.MethodGet, "/v1/devices", nil, &v); err != nil {
		t.Fatal(err)
	}
	for _, d := range v.Devices {
		if d.Name == name {
			return d
		}
	}
	t.Fatalf("no device %q", name)
	return api.DeviceView{}
}

func peerCert(t *testing.T, dir string) *Identity {
	t.Helper()
	s, err := openPeerStore(dir, true)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	id, err := s.Identity()
	if err != nil {
		t.Fatal(err)
	}
	return id
}

func TestRenewalAtConnectWhenDue(t *testing.T) {
	clock := &testClock{}
	h := startHub(t, clock, nil)
	dir := h.pair(t, clock, "phone", time.Hour)
	before := peerCert(t, dir)

	clock.Advance(50 * time.Minute) // past 2/3 of the hour
	p := startPeer(t, dir, clock)
	st := waitPeer(t, dir, func(s *api.PeerStatus) bool { return s.State == "online" && s.CertExpires.After(before.Cert.NotAfter) })
	if err := p.stop(); err != nil {
		t.Fatal(err)
	}
	after := peerCert(t, dir)
	if after.Key.Equal(before.Key) {
		t.Error("renewal kept the old key; it should make a fresh one")
	}
	if !after.Cert.NotAfter.Equal(st.CertExpires) {
		t.Errorf("stored certificate expires %v, status says %v", after.Cert.NotAfter, st.CertExpires)
	}
	if d := deviceRecord(t, h, "phone"); !d.CertExpires.Equal(after.Cert.NotAfter) {
		t.Errorf("hub records expiry %v, device holds %v", d.CertExpires, after.Cert.NotAfter)
	}
}

func TestRenewalTimerDuringSession(t *testing.T) {
	clock := &testClock{}
	h := startHub(t, clock, nil)
	dir := h.pair(t, clock, "phone", pairing.MinCertLifetime)
	before := peerCert(t, dir)
	// Start just short of the 2/3 mark, so the session comes up first and
	// the renewal timer fires during it (after ~200 ms of real time).
	due := session.RenewAt(before.Cert).Sub(clock.Now())
	clock.Advance(due - 200*time.Millisecond)
	startPeer(t, dir, clock)
	waitPeer(t, dir, func(s *api.PeerStatus) bool { return s.State == "online" })
	waitPeer(t, dir, func(s *api.PeerStatus) bool { return s.CertExpires.After(before.Cert.NotAfter) && s.State == "online" })
}

func TestExpiredWithinGraceRenews(t *testing.T) {
	clock := &testClock{}
	h := startHub(t, clock, nil)
	dir := h.pair(t, clock, "phone", time.Hour)
	before := peerCert(t, dir)

	clock.Advance(30 * 24 * time.Hour) // a month in a drawer
	p := startPeer(t, dir, clock)
	st := waitPeer(t, dir, func(s *api.PeerStatus) bool { return s.State == "online" })
	if !st.CertExpires.After(clock.Now()) {
		t.Fatalf("online with a certificate that expired %v", st.CertExpires)
	}
	if d := deviceRecord(t, h, "phone"); d.State != "online" {
		t.Fatalf("hub shows %s", d.State)
	}
	if err := p.stop(); err != nil {
		t.Fatal(err)
	}
	if peerCert(t, dir).Cert.SerialNumber.Cmp(before.Cert.SerialNumber) == 0 {
		t.Fatal("certificate not replaced")
	}
}

func TestExpiredPastGraceIsTold(t *testing.T) {
	clock := &testClock{}
	h := startHub(t, clock, func(c *hub.Config) { c.RenewGrace = time.Hour })
	dir := h.pair(t, clock, "phone", time.Hour)
	clock.Advance(3 * time.Hour)
	err := startPeer(t, dir, clock).wait()
	var end *wire.EndError
	if !errors.As(err, &end) || end.Reason != wire.ReasonExpired {
		t.Fatalf("want an EndError with reason expired, got %v", err)
	}
}

// An authenticated device that breaks the session protocol loses its
// session; the hub keeps serving everyone else.
func TestControlStreamAbuse(t *testing.T) {
	clock := &testClock{}
	h := startHub(t, clock, nil)
	dir := h.pair(t, clock, "phone", time.Hour)
	other := h.pair(t, clock, "laptop", time.Hour)
	store, err := openPeerStore(dir, false)
	if err != nil {
		t.Fatal(err)
	}
	p, err := newPeer(Config{DataDir: dir, Mode: transport.ModeAuto, Now: clock.Now}, store)
	if err != nil {
		t.Fatal(err)
	}
	cases := []struct {
		name  string
		bytes []byte
		only  transport.Mode // if set, the case breaks the protocol only over this transport
	}{
		{"oversized frame", []byte{0xff, 0xff, 0xff, 0xff, 0x0f}, ""},
		{"not CBOR", []byte{0x03, 0xff, 0xfe, 0xfd}, ""},
		{"wrong stream kind first", mustFrame(t, &wire.StreamHeader{Kind: wire.StreamRenew}), ""},
		{"header then junk", append(mustFrame(t, &wire.StreamHeader{Kind: wire.StreamControl}), 0x02, 0xff, 0xff), ""},
		{"ping before hello", append(mustFrame(t, &wire.StreamHeader{Kind: wire.StreamControl}), mustFrame(t, &wire.Control{Type: wire.MsgPing})...), ""},
		{"wake with a short key", helloThen(t, &wire.Control{Type: wire.MsgWake, WakePort: 9, WakeID: make([]byte, 16), WakeKey: make([]byte, 8)}), ""},
		{"wake by an unknown method", helloThen(t, &wire.Control{Type: wire.MsgWake, WakeMethod: "pigeon", WakeEndpoint: "x", WakeID: make([]byte, 16), WakeKey: make([]byte, 32)}), ""},
		// Over QUIC the hub pings the session's own address and needs no port.
		{"wake over tcp without a port", helloThen(t, &wire.Control{Type: wire.MsgWake, WakeID: make([]byte, 16), WakeKey: make([]byte, 32)}), transport.ModeTCP},
	}
	for _, mode := range []transport.Mode{transport.ModeQUIC, transport.ModeTCP} {
		for _, tc := range cases {
			if tc.only != "" && tc.only != mode {
				continue
			}
			t.Run(string(mode)+"/"+tc.name, func(t *testing.T) {
				ctx := testCtx(t)
				conn, err := transport.Dial(ctx, h.addr.String(), mode, transport.Config{TLS: p.sessionTLS()})
				if err != nil {
					t.Fatal(err)
				}
				defer conn.CloseWithError(0, "")
				st, err := conn.OpenStream(ctx)
				if err != nil {
					t.Fatal(err)
				}
				st.Write(tc.bytes)
				select {
				case <-conn.Done():
				case <-ctx.Done():
					t.Fatal("hub kept a connection that broke the protocol")
				}
			})
		}
	}
	store.Close()
	// A well-behaved device is unaffected.
	startPeer(t, other, clock)
	waitPeer(t, other, func(s *api.PeerStatus) bool { return s.State == "online" })
	if d := deviceRecord(t, h, "phone"); d.State != "offline" {
		t.Errorf("abusive device shows %s", d.State)
	}
}

// helloThen is a control stream's header and Hello followed by c.
func helloThen(t *testing.T, c *wire.Control) []byte {
	b := append(mustFrame(t, &wire.StreamHeader{Kind: wire.StreamControl}), mustFrame(t, &wire.Control{Type: wire.MsgHello, Version: wire.SessionVersion})...)
	return append(b, mustFrame(t, c)...)
}

func mustFrame(t *testing.T, v any) []byte {
	t.Helper()
	var b frameBuf
	if err := transport.WriteFrame(&b, v); err != nil {
		t.Fatal(err)
	}
	return b
}

type frameBuf []byte

func (b *frameBuf) Write(p []byte) (int, error) { *b = append(*b, p...); return len(p), nil }

// A device honours the window a shutting-down hub announces, within bounds.
func TestRetryWithinWindow(t *testing.T) {
	var rw *retryWithin
	if err := closeErr(&wire.Control{Type: wire.MsgClose, Reason: wire.ReasonShutdown, RetryWindowMs: 2500}); !errors.As(err, &rw) || rw.Window != 2500*time.Millisecond {
		t.Errorf("shutdown with a window: %v", err)
	}
	if err := closeErr(&wire.Control{Type: wire.MsgClose, Reason: wire.ReasonShutdown, RetryWindowMs: 1 << 40}); !errors.As(err, &rw) || rw.Window != wire.MaxRetryWindow {
		t.Errorf("a hub cannot ask for more than %v: %v", wire.MaxRetryWindow, err)
	}
	if err := closeErr(&wire.Control{Type: wire.MsgClose, Reason: wire.ReasonShutdown}); errors.As(err, &rw) {
		t.Errorf("shutdown without a window is plain backoff: %v", err)
	}
}

// A device whose certificate expired (within the grace period) can still
// tell the hub it leaves.
func TestUnpairFromRenewOnlySession(t *testing.T) {
	clock := &testClock{}
	h := startHub(t, clock, nil)
	dir := h.pair(t, clock, "phone", time.Hour)
	clock.Advance(2 * time.Hour)
	res, err := UnpairOffline(testCtx(t), dir, transport.ModeAuto, 10*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	if !res.HubTold {
		t.Fatalf("hub not told: %s", res.HubError)
	}
	if d := deviceRecord(t, h, "phone"); d.State != "revoked" {
		t.Fatalf("hub shows %s", d.State)
	}
}
