package sync

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"maps"
	"net"
	"path/filepath"
	"reflect"
	"slices"
	gosync "sync"
	"testing"
	"time"

	"github.com/pzone/pzone/storefile/kv"
	"github.com/pzone/pzone/transport"
)

// testNode is a store under test with a change signal for waiting on
// events rather than sleeping.
type testNode struct {
	*Store
	path   string
	opts   Options
	kick   chan struct{}
	isHub  bool
	closed bool
}

func (n *testNode) onChange() {
	select {
	case n.kick <- struct{}{}:
	default:
	}
}

func openTestNode(t testing.TB, dir, node string, now func() time.Time) *testNode {
	t.Helper()
	return openTestNodeWith(t, dir, node, now, nil)
}

// openTestNodeWith opens a node with options adjusted by set (nil: the
// defaults). When the test ends, the store's invariants are checked and
// it is closed.
func openTestNodeWith(t testing.TB, dir, node string, now func() time.Time, set func(*Options)) *testNode {
	t.Helper()
	n := &testNode{path: filepath.Join(dir, node+".db"), kick: make(chan struct{}, 1), isHub: node == HubNode}
	n.opts = Options{Node: node, Now: now, OnChange: n.onChange}
	if set != nil {
		set(&n.opts)
	}
	n.reopen(t)
	t.Cleanup(func() {
		if n.closed {
			return
		}
		checkInvariants(t, n.Store)
		n.Store.Close()
	})
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
	n.closed = false
}

// close checks the store's invariants and closes it.
func (n *testNode) close(t testing.TB) {
	t.Helper()
	checkInvariants(t, n.Store)
	if err := n.Store.Close(); err != nil {
		t.Fatal(err)
	}
	n.closed = true
}

// restart closes the store and opens it again, as a daemon restart does.
func (n *testNode) restart(t testing.TB) {
	t.Helper()
	n.close(t)
	n.reopen(t)
}

// epoch is the hub epoch the store holds (a device: the hub's it synced
// with).
func (n *testNode) epoch(t testing.TB) string {
	t.Helper()
	var e string
	if err := n.db.View(func(tx kv.Tx) error {
		e = string(tx.Bucket(bMeta).Get(kEpoch))
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	return e
}

// link is a running sync stream between the hub and one device.
type link struct {
	cancel            context.CancelFunc
	hubDone, peerDone chan struct{}
	down              chan struct{} // closed when either side has returned
	downOnce          gosync.Once
	hubErr, peerErr   error
}

func connect(hub, peer *testNode) *link {
	return connectWith(hub, peer, func(c net.Conn) Stream { return c })
}

// connectWith connects peer to hub through the stream wrap makes of the
// device's end of the pipe.
func connectWith(hub, peer *testNode, wrap func(net.Conn) Stream) *link {
	a, b := net.Pipe()
	ctx, cancel := context.WithCancel(context.Background())
	l := &link{cancel: cancel, hubDone: make(chan struct{}), peerDone: make(chan struct{}), down: make(chan struct{})}
	hs, ps, node := hub.Store, peer.Store, peer.opts.Node
	go func() {
		l.hubErr = hs.Serve(ctx, node, a)
		close(l.hubDone)
		l.downOnce.Do(func() { close(l.down) })
	}()
	go func() {
		l.peerErr = ps.Sync(ctx, wrap(b))
		close(l.peerDone)
		l.downOnce.Do(func() { close(l.down) })
	}()
	return l
}

// stop cuts the link and waits for both sides.
func (l *link) stop() (hubErr, peerErr error) {
	l.cancel()
	<-l.hubDone
	<-l.peerDone
	return l.hubErr, l.peerErr
}

// stopClean stops the link and fails the test unless both sides ended
// only because the stream was cut.
func (l *link) stopClean(t testing.TB, who string) {
	t.Helper()
	herr, perr := l.stop()
	if !isClosedPipe(herr) || !isClosedPipe(perr) {
		t.Fatalf("link to %s ended with hub: %v, device: %v", who, herr, perr)
	}
}

// wait returns both sides' errors once the link has ended by itself.
func (l *link) wait(t testing.TB) (hubErr, peerErr error) {
	t.Helper()
	select {
	case <-l.down:
	case <-time.After(20 * time.Second):
		t.Fatal("the link did not end")
	}
	return l.stop()
}

// broken reports why the link ended, or nil while it is up.
func (l *link) broken() error {
	select {
	case <-l.down:
	default:
		return nil
	}
	// One side ended; the other follows once the stream is cut.
	herr, perr := l.stop()
	return fmt.Errorf("link ended; hub side: %v; device side: %v", herr, perr)
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

// synced reports whether peer has everything the hub has and has pushed
// every local edit.
func synced(hub, peer *testNode) bool {
	st := peer.State()
	return st.Phase == PhaseInSync && st.Pending == 0 && st.LastSeq == hub.Head()
}

// waker returns the channel to wait on for the next event of one kind; it
// is called again after each wake-up.
type waker func() <-chan struct{}

func kicks(n *testNode) waker     { return func() <-chan struct{} { return n.kick } }
func heads(n *testNode) waker     { return func() <-chan struct{} { return n.changed() } }
func linkDown(l *link) waker      { return func() <-chan struct{} { return l.down } }
func tapEvents(p *tap) waker      { return func() <-chan struct{} { return p.events } }
func every(d time.Duration) waker { return func() <-chan struct{} { return after(d) } }

// after is time.After for a waker.
func after(d time.Duration) <-chan struct{} {
	c := make(chan struct{})
	time.AfterFunc(d, func() { close(c) })
	return c
}

// awaitTimeout bounds every wait of the tests: far beyond what any of them
// needs, even under the race detector on a loaded machine.
const awaitTimeout = 20 * time.Second

// await waits until cond is true, checking it again at each event of
// wake; it fails the test when cond returns an error or at awaitTimeout.
// A waker whose channel stays closed (a link that is down) makes this a
// busy loop, so cond should return an error in that case.
func await(t testing.TB, what string, cond func() (bool, error), wake ...waker) {
	t.Helper()
	deadline := after(awaitTimeout)
	for {
		ok, err := cond()
		if err != nil {
			t.Fatalf("waiting for %s: %v", what, err)
		}
		if ok {
			return
		}
		cases := []reflect.SelectCase{{Dir: reflect.SelectRecv, Chan: reflect.ValueOf(deadline)}}
		for _, w := range wake {
			cases = append(cases, reflect.SelectCase{Dir: reflect.SelectRecv, Chan: reflect.ValueOf(w())})
		}
		if i, _, _ := reflect.Select(cases); i == 0 {
			t.Fatalf("timed out waiting for %s", what)
		}
	}
}

// waitSyncedOn is waitSynced that fails at once if the link goes down.
func waitSyncedOn(t testing.TB, hub, peer *testNode, l *link) {
	t.Helper()
	await(t, peer.opts.Node+" in sync", func() (bool, error) {
		if synced(hub, peer) {
			return true, nil
		}
		if err := l.broken(); err != nil {
			return false, fmt.Errorf("%w (state %+v, hub head %d)", err, peer.State(), hub.Head())
		}
		return false, nil
	}, kicks(peer), heads(hub), linkDown(l))
}

// waitAcked waits until the hub holds device's confirmation of seq.
// Devices confirm at most once per ackDelay and nothing signals it, so
// this polls.
func waitAcked(t testing.TB, hub *testNode, device string, seq uint64) {
	t.Helper()
	await(t, fmt.Sprintf("%s to confirm %d", device, seq), func() (bool, error) {
		return hub.Acked(device) >= seq, nil
	}, heads(hub), every(20*time.Millisecond))
}

// warnings is a slog handler that keeps the warnings and errors a store
// logs, for tests that must have none (a device warns of each edit the
// hub refused).
type warnings struct {
	mu   gosync.Mutex
	msgs []string
}

func (h *warnings) Enabled(_ context.Context, l slog.Level) bool { return l >= slog.LevelWarn }

func (h *warnings) Handle(_ context.Context, r slog.Record) error {
	msg := r.Message
	r.Attrs(func(a slog.Attr) bool {
		msg += " " + a.String()
		return true
	})
	h.mu.Lock()
	h.msgs = append(h.msgs, msg)
	h.mu.Unlock()
	return nil
}

func (h *warnings) WithAttrs([]slog.Attr) slog.Handler { return h }
func (h *warnings) WithGroup(string) slog.Handler      { return h }

func (h *warnings) all() []string {
	h.mu.Lock()
	defer h.mu.Unlock()
	return slices.Clone(h.msgs)
}

// confirm gives the hub device's confirmation of seq, as the device
// sends it once it applied seq (after up to ackDelay).
func confirm(hub *testNode, device string, seq uint64) {
	hub.acksMu.Lock()
	hub.acks[device] = max(hub.acks[device], seq)
	hub.acksMu.Unlock()
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

// records is every record a node holds, tombstones included, by
// bucket/key.
func records(t testing.TB, s *Store) map[string]Record {
	t.Helper()
	out := map[string]Record{}
	if err := s.db.View(func(tx kv.Tx) error {
		return tx.Bucket(bRecords).ForEach(func(k, v []byte) error {
			var st stored
			if err := transport.Unmarshal(v, &st); err != nil {
				return corrupt(k, err)
			}
			b, key := splitKey(k)
			out[b+"/"+key] = st.record(b, key)
			return nil
		})
	}); err != nil {
		t.Fatal(err)
	}
	return out
}

// sameState fails the test unless every node shows what the first does.
func sameState(t testing.TB, nodes ...*testNode) map[string]string {
	t.Helper()
	want := dump(t, nodes[0].Store)
	for _, n := range nodes[1:] {
		if got := dump(t, n.Store); !maps.Equal(got, want) {
			t.Fatalf("%s differs from %s:\n%s", n.opts.Node, nodes[0].opts.Node, diffStates(got, want))
		}
	}
	return want
}

// diffStates lists the keys where got and want differ.
func diffStates(got, want map[string]string) string {
	var b bytes.Buffer
	keys := slices.Sorted(maps.Keys(got))
	for k := range want {
		if _, ok := got[k]; !ok {
			keys = append(keys, k)
		}
	}
	slices.Sort(keys)
	for _, k := range keys {
		g, gok := got[k]
		w, wok := want[k]
		if g == w && gok == wok {
			continue
		}
		fmt.Fprintf(&b, "  %s: got %q (present %v), want %q (present %v)\n", k, g, gok, w, wok)
	}
	return b.String()
}

// checkInvariants checks the structure of a store: on the hub, that the
// log and the tombstone index match the records one for one; on a device,
// that the pending queue matches the records marked pending, and that it
// keeps no tombstones but pending ones. Records must be valid on both.
func checkInvariants(t testing.TB, s *Store) {
	t.Helper()
	var errs []error
	bad := func(format string, args ...any) { errs = append(errs, fmt.Errorf(format, args...)) }
	var pendingN int
	err := s.db.View(func(tx kv.Tx) error {
		meta, recs, lg, tombs, pend := tx.Bucket(bMeta), tx.Bucket(bRecords), tx.Bucket(bLog), tx.Bucket(bTombs), tx.Bucket(bPending)
		head := getU64(meta.Get(kSeq))
		err := recs.ForEach(func(k, v []byte) error {
			var st stored
			if err := transport.Unmarshal(v, &st); err != nil {
				return corrupt(k, err)
			}
			b, key := splitKey(k)
			r := st.record(b, key)
			if err := CheckKey(b, key); err != nil {
				bad("record %s/%q: %v", b, key, err)
			}
			if len(st.Value) > MaxValue || st.Deleted && len(st.Value) > 0 {
				bad("record %s/%q: value of %d bytes, deleted %v", b, key, len(st.Value), st.Deleted)
			}
			if s.hub {
				if err := r.check(); err != nil {
					bad("record %s/%q: %v", b, key, err)
				}
				if st.Seq == 0 || st.Seq > head {
					bad("record %s/%q: seq %d outside 1..%d", b, key, st.Seq, head)
				}
				if !bytes.Equal(lg.Get(u64(st.Seq)), k) {
					bad("record %s/%q: log entry %d is %q", b, key, st.Seq, lg.Get(u64(st.Seq)))
				}
				if st.Deleted != bytes.Equal(tombs.Get(u64(st.Seq)), k) {
					bad("record %s/%q: deleted %v, tombstone entry %q", b, key, st.Deleted, tombs.Get(u64(st.Seq)))
				}
				if st.Pending != 0 {
					bad("hub record %s/%q is pending", b, key)
				}
				return nil
			}
			if st.Pending != 0 {
				if !bytes.Equal(pend.Get(u64(st.Pending)), k) {
					bad("record %s/%q: pending %d, queue has %q", b, key, st.Pending, pend.Get(u64(st.Pending)))
				}
			} else if st.Deleted {
				bad("record %s/%q: a tombstone that is not pending", b, key)
			}
			return nil
		})
		if err != nil {
			return err
		}
		if s.hub {
			lg.ForEach(func(k, bk []byte) error {
				if st, err := getStored(tx, bk); err != nil || st == nil || st.Seq != getU64(k) {
					bad("log entry %d for %q does not match its record (%v)", getU64(k), bk, err)
				}
				return nil
			})
			tombs.ForEach(func(k, bk []byte) error {
				if st, err := getStored(tx, bk); err != nil || st == nil || st.Seq != getU64(k) || !st.Deleted {
					bad("tombstone entry %d for %q does not match its record (%v)", getU64(k), bk, err)
				}
				return nil
			})
			if n := pend.KeyN(); n != 0 {
				bad("the hub has %d pending edits", n)
			}
			// The quota count kept edit by edit matches a count from
			// scratch, as the next open makes it.
			by, total, err := scanUsage(tx)
			if err != nil {
				return err
			}
			s.usage.mu.Lock()
			if total != s.usage.total || !maps.Equal(by, s.usage.byNode) {
				bad("usage counted %d %v, the records hold %d %v", s.usage.total, s.usage.byNode, total, by)
			}
			s.usage.mu.Unlock()
			return nil
		}
		pend.ForEach(func(k, bk []byte) error {
			pendingN++
			if st, err := getStored(tx, bk); err != nil || st == nil || st.Pending != getU64(k) {
				bad("pending entry %d for %q does not match its record (%v)", getU64(k), bk, err)
			}
			return nil
		})
		if lg.KeyN() != 0 || tombs.KeyN() != 0 {
			bad("a device store has a log")
		}
		return nil
	})
	if err != nil {
		t.Errorf("check %s store: %v", s.opts.Node, err)
		return
	}
	if st := s.State(); !s.hub && st.Phase == PhaseOffline && st.Pending != pendingN {
		bad("state says %d pending, the queue holds %d", st.Pending, pendingN)
	}
	for _, e := range errs {
		t.Errorf("%s store: %v", s.opts.Node, e)
	}
}

// hubFill writes n records on the hub as its own edits, many per
// transaction, far faster than n Puts. kv names record i.
func hubFill(t testing.TB, hub *testNode, n int, kv func(i int) (bucket, key string, value []byte)) {
	t.Helper()
	const perTxn = 5000
	for i := 0; i < n; i += perTxn {
		err := hub.write(func(tx *txn) error {
			now := uint64(hub.opts.Now().UnixMilli())
			for j := i; j < min(n, i+perTxn); j++ {
				b, k, v := kv(j)
				bk := bucketKey(b, k)
				cur, err := getStored(tx.tx, bk)
				if err != nil {
					return err
				}
				rec := Record{Bucket: b, Key: k, Value: v, Version: hub.clock.next(HubNode)}
				tx.hubPut(bk, cur, &rec, now)
			}
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
	}
}

// fakeClock is a settable clock shared by the nodes of a test.
type fakeClock struct {
	mu gosync.Mutex
	t  time.Time
}

func newFakeClock() *fakeClock {
	return &fakeClock{t: time.Date(2025, 3, 1, 12, 0, 0, 0, time.UTC)}
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

func (c *fakeClock) Set(t time.Time) {
	c.mu.Lock()
	c.t = t
	c.mu.Unlock()
}

// isClosedPipe reports an error a side of a link ends with when the
// stream is cut, possibly in the middle of a frame.
func isClosedPipe(err error) bool {
	return err == nil || errors.Is(err, context.Canceled) || errors.Is(err, net.ErrClosed) || errors.Is(err, io.ErrClosedPipe) || errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF)
}

// tap sits on a device's end of a sync stream. It decodes the hub's
// frames as the device reads them, so tests can count and check them; it
// can hold the device's reads once it has read some Changes frames (the
// hub's writes then block, as on a stalled network); and it can drop the
// device's pushes, as a connection cut just after they were sent would.
type tap struct {
	conn      net.Conn
	closed    chan struct{}
	closeOnce gosync.Once
	events    chan struct{} // kicked at each frame either way

	mu       gosync.Mutex
	buf      []byte // hub bytes read but not yet a whole frame
	frames   []tapFrame
	changes  int // Changes frames read
	holding  bool
	holdAt   int // while holding, hold reads once changes reaches it
	release  chan struct{}
	dropPush bool
	pushes   int // Push frames the device wrote (dropped ones included)
	dropped  int
	err      error // a frame the tap could not decode
}

// tapFrame sums up one frame from the hub.
type tapFrame struct {
	Type     MsgType
	Size     int // body bytes
	Records  int
	Upto     uint64
	Reset    bool
	Restored bool
	CaughtUp bool
}

func newTap() *tap {
	return &tap{closed: make(chan struct{}), events: make(chan struct{}, 1), release: make(chan struct{})}
}

// attach is the wrap function for connectWith.
func (p *tap) attach(c net.Conn) Stream {
	p.conn = c
	return p
}

func (p *tap) kick() {
	select {
	case p.events <- struct{}{}:
	default:
	}
}

// holdAfter makes the device stop reading once it has read the Start
// frame and n Changes frames; unhold lets it go on.
func (p *tap) holdAfter(n int) {
	p.mu.Lock()
	p.holding, p.holdAt = true, n
	p.mu.Unlock()
}

func (p *tap) unhold() {
	p.mu.Lock()
	defer p.mu.Unlock()
	select {
	case <-p.release:
	default:
		close(p.release)
	}
}

func (p *tap) Read(b []byte) (int, error) {
	p.mu.Lock()
	hold, rel := p.holding && len(p.frames) > 0 && p.changes >= p.holdAt, p.release
	p.mu.Unlock()
	if hold {
		select {
		case <-rel:
		case <-p.closed:
			return 0, net.ErrClosed
		}
	}
	n, err := p.conn.Read(b)
	if n > 0 {
		p.parse(b[:n])
	}
	return n, err
}

func (p *tap) parse(b []byte) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.buf = append(p.buf, b...)
	for {
		size, n := binary.Uvarint(p.buf)
		if n <= 0 || uint64(len(p.buf)-n) < size {
			return
		}
		var m Msg
		if err := transport.Unmarshal(p.buf[n:n+int(size)], &m); err != nil && p.err == nil {
			p.err = err
		}
		p.buf = p.buf[n+int(size):]
		p.frames = append(p.frames, tapFrame{Type: m.Type, Size: int(size), Records: len(m.Records), Upto: m.Upto, Reset: m.Reset, Restored: m.Restored, CaughtUp: m.CaughtUp})
		if m.Type == MsgChanges {
			p.changes++
		}
		p.kick()
	}
}

// Write passes one frame from the device (transport.WriteFrame writes
// each in a single call), or drops it if it is a push and pushes are
// being dropped.
func (p *tap) Write(b []byte) (int, error) {
	var m Msg
	if _, n := binary.Uvarint(b); n <= 0 || transport.Unmarshal(b[n:], &m) != nil || m.Type != MsgPush {
		return p.conn.Write(b)
	}
	p.mu.Lock()
	drop := p.dropPush
	p.mu.Unlock()
	n, err := len(b), error(nil)
	if !drop {
		// net.Pipe: when Write returns, the hub has read the frame.
		n, err = p.conn.Write(b)
	}
	p.mu.Lock()
	p.pushes++
	if drop {
		p.dropped++
	}
	p.mu.Unlock()
	p.kick()
	return n, err
}

// pushed counts the pushes the device wrote (dropped ones included).
func (p *tap) pushed() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.pushes
}

func (p *tap) Close() error {
	p.closeOnce.Do(func() { close(p.closed) })
	return p.conn.Close()
}

// seen returns the frames from the hub read so far.
func (p *tap) seen() []tapFrame {
	p.mu.Lock()
	defer p.mu.Unlock()
	return slices.Clone(p.frames)
}

// checkFrames fails the test if a frame from the hub could not be decoded
// or a Changes frame broke the batch bounds.
func (p *tap) checkFrames(t testing.TB) {
	t.Helper()
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.err != nil {
		t.Errorf("a frame from the hub did not decode: %v", p.err)
	}
	for i, f := range p.frames {
		if f.Size > maxFrame {
			t.Errorf("frame %d (type %d) has %d bytes, over %d", i, f.Type, f.Size, maxFrame)
		}
		if f.Type == MsgChanges && f.Records > maxBatchRecords {
			t.Errorf("Changes frame %d carries %d records, over %d", i, f.Records, maxBatchRecords)
		}
	}
}

// start returns the Start frame the hub sent.
func (p *tap) start(t testing.TB) tapFrame {
	t.Helper()
	for _, f := range p.seen() {
		if f.Type == MsgStart {
			return f
		}
	}
	t.Fatal("no Start frame seen")
	return tapFrame{}
}
