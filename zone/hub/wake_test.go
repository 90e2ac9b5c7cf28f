package hub

import (
	"context"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/pzone/pzone/wakeup"
	"github.com/pzone/pzone/zone/localapi"
)

// fakeHost is the hub as the waker sees it: devices paired or not, and
// sessions that tests put in place.
type fakeHost struct {
	mu       sync.Mutex
	sessions map[string]*hubSession
	revoked  map[string]bool
}

func (f *fakeHost) session(d string) *hubSession {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.sessions[d]
}
func (f *fakeHost) online(d string) bool {
	s := f.session(d)
	return s != nil && s.syncCtx.Err() == nil
}
func (f *fakeHost) paired(d string) bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	return !f.revoked[d]
}
func (f *fakeHost) knownZone(string) bool { return true }

// sentPings records what the waker hands on.
type sentPings chan string

func (sentPings) Method() string { return wakeup.MethodUDP }
func (p sentPings) Wake(_ context.Context, endpoint string, _ []byte) error {
	p <- endpoint
	return nil
}

func newTestWaker(t *testing.T, rate int) (*waker, *fakeHost, sentPings) {
	t.Helper()
	m, err := openMailbox(filepath.Join(t.TempDir(), MailboxDBName), true, 10, 1<<20)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { m.Close() })
	id, key := make([]byte, wakeup.IDSize), make([]byte, wakeup.KeySize)
	if err := m.SaveWake("phone", &wakeRecord{Method: wakeup.MethodUDP, Endpoint: "192.0.2.1:9", ID: id, Key: key}); err != nil {
		t.Fatal(err)
	}
	host := &fakeHost{sessions: map[string]*hubSession{}, revoked: map[string]bool{}}
	pings := make(sentPings, 16)
	cfg := Config{WakeRate: rate}
	cfg.setDefaults()
	wk := newWaker(host, m, map[string]wakeup.Waker{wakeup.MethodUDP: pings}, &cfg, &localapi.Notifier{}, make(chan struct{}))
	t.Cleanup(wk.stop)
	if err := wk.load(); err != nil {
		t.Fatal(err)
	}
	return wk, host, pings
}

func awaitPing(t *testing.T, pings sentPings) {
	t.Helper()
	select {
	case <-pings:
	case <-time.After(10 * time.Second):
		t.Fatal("no ping sent")
	}
}

// TestWakerCoalescesAndCaps: requests while a ping is on its way share it;
// pzh wake's pings are never coalesced but stay within the rate cap.
func TestWakerCoalescesAndCaps(t *testing.T) {
	wk, _, pings := newTestWaker(t, 3)
	if !wk.wake("phone") || wk.wake("laptop") {
		t.Fatal("wake: phone registered, laptop did not")
	}
	awaitPing(t, pings)
	wk.wake("phone")
	wk.wake("phone")
	if v := wk.view("phone"); v.Pings != 1 {
		t.Fatalf("pings after three requests within the coalescing window: %d, want 1", v.Pings)
	}
	for range 4 {
		if _, err := wk.wakeNow("phone", false, time.Time{}); err != nil {
			t.Fatal(err)
		}
	}
	v := wk.view("phone")
	if v.Pings != 3 || v.Limited != 2 {
		t.Fatalf("after 4 more pzh wake: pings %d, limited %d; want 3 and 2 (rate 3/min)", v.Pings, v.Limited)
	}
	if _, err := wk.wakeNow("laptop", false, time.Time{}); err == nil {
		t.Fatal("pzh wake of a device that never registered: no error")
	}
}

// TestWakerReleasesHeldCalls: a call held for a device on its way back
// gives up when the device is revoked, and goes ahead when it comes online.
func TestWakerReleasesHeldCalls(t *testing.T) {
	wk, host, pings := newTestWaker(t, 6)
	held := func() chan *hubSession {
		out := make(chan *hubSession, 1)
		go func() { out <- wk.awaitOnline(nil, "phone", time.Now().Add(time.Minute)) }()
		return out
	}
	// A held call asks for a wake once it counts as a holder: its ping
	// is the event that it is held.
	waitHeld := func() { awaitPing(t, pings) }

	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	s := &hubSession{device: "phone", syncCtx: ctx}
	out := held()
	waitHeld()
	host.mu.Lock()
	host.sessions["phone"] = s
	host.mu.Unlock()
	wk.deviceOnline("phone")
	if got := <-out; got != s {
		t.Fatalf("held call got session %v, want the new one", got)
	}

	host.mu.Lock()
	delete(host.sessions, "phone")
	host.mu.Unlock()
	out = held()
	waitHeld()
	host.mu.Lock()
	host.revoked["phone"] = true
	host.mu.Unlock()
	wk.forget("phone")
	if got := <-out; got != nil {
		t.Fatal("a call held for a revoked device went ahead")
	}
}
