package sync

import (
	"context"
	"errors"
	"io"
	"net"
	"path/filepath"
	gosync "sync"
	"testing"
	"time"
)

// testNode is a store under test with a change signal for waiting on
// events rather than sleeping.
type testNode struct {
	*Store
	path  string
	opts  Options
	kick  chan struct{}
	isHub bool
}

func (n *testNode) onChange() {
	select {
	case n.kick <- struct{}{}:
	default:
	}
}

func openTestNode(t testing.TB, dir, node string, now func() time.Time) *testNode {
	t.Helper()
	n := &testNode{path: filepath.Join(dir, node+".db"), kick: make(chan struct{}, 1), isHub: node == HubNode}
	n.opts = Options{Node: node, Now: now, OnChange: n.onChange}
	n.reopen(t)
	t.Cleanup(func() { n.Store.Close() })
	return n
}

func (n *testNode) reopen(t testing.TB) {
	t.Helper()
	var err error
	if n.isHub {
		n.Store, err = OpenHub(n.path, n.opts)
	} else {
		n.Store, err = OpenPeer(n.path, n.opts)
	}
	if err != nil {
		t.Fatal(err)
	}
}

// link is a running sync stream between the hub and one device.
type link struct {
	cancel          context.CancelFunc
	hubErr, peerErr chan error
}

func connect(hub, peer *testNode) *link {
	a, b := net.Pipe()
	ctx, cancel := context.WithCancel(context.Background())
	l := &link{cancel: cancel, hubErr: make(chan error, 1), peerErr: make(chan error, 1)}
	go func() { l.hubErr <- hub.Serve(ctx, peer.opts.Node, a) }()
	go func() { l.peerErr <- peer.Sync(ctx, b) }()
	return l
}

// stop cuts the link and waits for both sides.
func (l *link) stop() (hubErr, peerErr error) {
	l.cancel()
	return <-l.hubErr, <-l.peerErr
}

// waitSynced waits until peer has everything the hub has and has pushed
// every local edit.
func waitSynced(t testing.TB, hub, peer *testNode) {
	t.Helper()
	deadline := time.After(20 * time.Second)
	for {
		st := peer.State()
		if st.Phase == PhaseInSync && st.Pending == 0 && st.LastSeq == hub.Head() {
			return
		}
		select {
		case <-peer.kick:
		case <-hub.changed():
		case <-deadline:
			t.Fatalf("%s not in sync: %+v, hub head %d", peer.opts.Node, st, hub.Head())
		}
	}
}

// dump is a node's visible state: bucket/key → value.
func dump(t testing.TB, s *Store) map[string]string {
	t.Helper()
	out := map[string]string{}
	for _, b := range Buckets() {
		if err := s.List(b, "", func(r Record) error {
			out[b+"/"+r.Key] = string(r.Value)
			return nil
		}); err != nil {
			t.Fatal(err)
		}
	}
	return out
}

// fakeClock is a settable clock shared by the nodes of a test.
type fakeClock struct {
	mu gosync.Mutex
	t  time.Time
}

func (c *fakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *fakeClock) Add(d time.Duration) {
	c.mu.Lock()
	c.t = c.t.Add(d)
	c.mu.Unlock()
}

func isClosedPipe(err error) bool {
	return err == nil || errors.Is(err, context.Canceled) || errors.Is(err, net.ErrClosed) || errors.Is(err, io.ErrClosedPipe) || errors.Is(err, io.EOF)
}
