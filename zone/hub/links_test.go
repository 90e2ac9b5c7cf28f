package hub

import (
	"log/slog"
	"net"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/pzone/pzone/certs"
	"github.com/pzone/pzone/transport"
)

// fakeLinkConn is just enough of a connection for the links table: it
// records being closed.
type fakeLinkConn struct {
	transport.Conn
	once sync.Once
	done chan struct{}
}

func (c *fakeLinkConn) RemoteAddr() net.Addr {
	return &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1), Port: 9}
}
func (c *fakeLinkConn) Kind() transport.Kind  { return transport.KindQUIC }
func (c *fakeLinkConn) Done() <-chan struct{} { return c.done }
func (c *fakeLinkConn) CloseWithError(uint64, string) error {
	c.once.Do(func() { close(c.done) })
	return nil
}

// fakeCtrl swallows control frames.
type fakeCtrl struct{ transport.Stream }

func (fakeCtrl) Write(p []byte) (int, error)      { return len(p), nil }
func (fakeCtrl) SetWriteDeadline(time.Time) error { return nil }

func newTestLinks(t *testing.T, own, friend certs.ZoneID) *Hub {
	t.Helper()
	m, err := openMailbox(filepath.Join(t.TempDir(), MailboxDBName), true, 10, 1<<20)
	if err != nil {
		t.Fatal(err)
	}
	h := &Hub{log: slog.New(slog.DiscardHandler), mail: m, zone: &ZoneInfo{Name: "home", ID: own}}
	h.friends = &friends{h: h, byZone: map[string]*FriendRecord{friend.Compact(): {Petname: "alice", ZoneID: friend}}}
	h.links = newLinks(h)
	t.Cleanup(func() {
		h.links.shutdown()
		h.conns.Wait()
		m.Close()
	})
	return h
}

func testLink(zone certs.ZoneID, dialled bool) *hubLink {
	return newHubLink(zone.Compact(), &fakeLinkConn{done: make(chan struct{})}, fakeCtrl{}, dialled, time.Now())
}

func closedSoon(t *testing.T, l *hubLink) {
	t.Helper()
	select {
	case <-l.closed:
	case <-time.After(10 * time.Second):
		t.Fatal("the replaced link was never closed")
	}
}

// TestLinksKeepOneLinkPerFriend: when both hubs dial at once, the link
// dialled by the lower zone ID is kept on both sides; a newer link in the
// same direction replaces the old; strangers and a hub shutting down get
// none.
func TestLinksKeepOneLinkPerFriend(t *testing.T) {
	low, high := certs.ZoneID("AAAA"), certs.ZoneID("BBBB")

	// This hub has the lower ID: its own dialled link wins.
	h := newTestLinks(t, low, high)
	mine, theirs := testLink(high, true), testLink(high, false)
	if !h.links.register(mine) {
		t.Fatal("first link refused")
	}
	if h.links.register(theirs) {
		t.Fatal("the friend's link (dialled by the higher zone ID) replaced this hub's")
	}
	if h.links.liveLink(high.Compact()) != mine || h.links.linked() != 1 {
		t.Fatal("this hub's link is not the one kept")
	}
	newer := testLink(high, true)
	if !h.links.register(newer) {
		t.Fatal("a newer link in the same direction was refused")
	}
	closedSoon(t, mine)
	if h.links.liveLink(high.Compact()) != newer {
		t.Fatal("the newer link is not the live one")
	}

	// This hub has the higher ID: the friend's link replaces its own.
	h2 := newTestLinks(t, high, low)
	mine, theirs = testLink(low, true), testLink(low, false)
	if !h2.links.register(mine) || !h2.links.register(theirs) {
		t.Fatal("the friend's link (dialled by the lower zone ID) was refused")
	}
	closedSoon(t, mine)

	if h2.links.register(testLink(certs.ZoneID("CCCC"), false)) {
		t.Fatal("a link with a zone that is no friend was registered")
	}
	h2.links.shutdown()
	if h2.links.register(testLink(low, true)) {
		t.Fatal("a link was registered while the hub shuts down")
	}
	if h2.links.linked() != 0 {
		t.Fatalf("links live after shutdown: %d", h2.links.linked())
	}
}
