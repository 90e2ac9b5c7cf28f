package peer

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/pzone/pzone/zone/hub"
	"github.com/pzone/pzone/zone/session"

	"github.com/pzone/pzone/transport"
	"github.com/pzone/pzone/zone/wire"
)

// Regression tests for defects found in review.

// A frame on the sync stream that is not a message (a valid length
// prefix, then bytes that are not CBOR) is a protocol error: the hub
// closes the session saying so, rather than dropping the stream and
// keeping a session whose device is broken.
func TestMalformedSyncFrameClosesSession(t *testing.T) {
	clock := &testClock{}
	hb := startHub(t, clock, nil)
	raw, _ := openRawSync(t, hb.pair(t, clock, "phone", 0))
	if _, err := raw.st.Write([]byte{0x03, 0xff, 0xfe, 0xfd}); err != nil {
		t.Fatal(err)
	}
	raw.wantProtocolClose(t)
}

// rawCall opens a call stream on sess, as a modified device would, and
// sends the header of a call to target/echo; then the body, unless body
// is nil.
func rawCall(t *testing.T, sess *Session, target string, body []byte) transport.Stream {
	t.Helper()
	st, err := sess.Conn().OpenStream(testCtx(t))
	if err != nil {
		t.Fatal(err)
	}
	hdr := &wire.CallHeader{ID: wire.NewCallID(), Kind: wire.CallRequest, ToDevice: target, ToService: "echo", Method: "echo", TimeoutMs: uint64(wire.MaxCallTimeout / time.Millisecond)}
	if err := transport.WriteFrame(st, &wire.StreamHeader{Kind: wire.StreamCall}); err != nil {
		t.Fatal(err)
	}
	if err := transport.WriteFrame(st, hdr); err != nil {
		t.Fatal(err)
	}
	if body != nil {
		if err := session.WriteBody(st, body, false); err != nil {
			t.Fatal(err)
		}
	}
	return st
}

// callOutcome is what became of a raw call: the hub's or service's reply,
// or the error that ended the stream first.
type callOutcome struct {
	rep wire.CallReply
	err error
}

// awaitReply reads the reply of a raw call, giving up after a generous
// wait (a stream nobody answers).
func awaitReply(st transport.Stream) callOutcome {
	st.SetReadDeadline(time.Now().Add(30 * time.Second))
	var o callOutcome
	o.err = transport.NewFrameReader(st, wire.CallChunk+16).ReadFrame(&o.rep)
	return o
}

// hostileSession opens a session for the device paired in dir without
// running its daemon: the test speaks for it by hand.
func hostileSession(t *testing.T, dir string) *Session {
	t.Helper()
	sess, err := DialSession(testCtx(t), peerCert(t, dir), transport.ModeAuto)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { sess.Close() })
	return sess
}

// legitCalls makes n calls from the peer in dir to target/echo at once,
// each within its own deadline, and fails the test unless all succeed.
func legitCalls(t *testing.T, dir, target string, n int, round string) {
	t.Helper()
	errs := make(chan error, n)
	for i := range n {
		go func() {
			ctx, cancel := context.WithTimeout(testCtx(t), 20*time.Second)
			defer cancel()
			res, err := peerClient(dir).Call(ctx, target+"/echo", "echo", i)
			if err == nil && string(res) != fmt.Sprint(i) {
				err = fmt.Errorf("result %s, want %d", res, i)
			}
			errs <- err
		}()
	}
	var failed []error
	for range n {
		if err := <-errs; err != nil {
			failed = append(failed, err)
		}
	}
	if len(failed) > 0 {
		t.Fatalf("%s: %d of %d legitimate calls failed, first: %v", round, len(failed), n, failed[0])
	}
}

// Review 13, point 3: two paired devices that open many call streams to
// one device and send headers without bodies do not starve a third
// device's calls to it. Each holds at most its share of calls in flight
// (the rest are refused as unavailable at once), and holds them at the
// hub, not at the target: the hub reads a call's body before it opens a
// stream to the target.
func TestCallFloodDoesNotStarveOthers(t *testing.T) {
	clock := &testClock{}
	// Raw sessions send no heartbeats; the long body wait keeps the
	// hostile calls held while the second round runs.
	hb := startHub(t, clock, func(c *hub.Config) { c.Heartbeat, c.CallBodyWait = 30*time.Second, time.Minute })
	target, legit := hb.pair(t, clock, "target", 0), hb.pair(t, clock, "legit", 0)
	bad := []string{hb.pair(t, clock, "bad1", 0), hb.pair(t, clock, "bad2", 0)}
	startPeer(t, target, clock)
	startPeer(t, legit, clock)
	waitSyncedPeer(t, target)
	waitSyncedPeer(t, legit)
	serveEcho(t, target)
	legitCalls(t, legit, "target", 1, "before the flood")

	// Together more calls than the target accepts streams, each device
	// within the streams the hub accepts from it.
	const perDevice = 150
	outcomes := make(chan callOutcome, len(bad)*perDevice)
	for _, dir := range bad {
		sess := hostileSession(t, dir)
		for range perDevice {
			st := rawCall(t, sess, "target", nil)
			go func() { outcomes <- awaitReply(st) }()
		}
	}
	legitCalls(t, legit, "target", 9, "during the flood")

	// Every hostile call over the caller's limit is refused at once; the
	// others wait, held, for bodies that never come. (Counted before it is
	// checked, so that where the limit is missing, the next round shows
	// what the held calls do to others.)
	var wrong []callOutcome
	for range len(bad) * (perDevice - hub.DefaultCallsPerCaller) {
		if o := <-outcomes; o.err != nil || o.rep.Status != wire.CallUnavailable {
			wrong = append(wrong, o)
		}
	}
	// Now the hostile devices hold all the calls they may: still the
	// legitimate ones go through.
	legitCalls(t, legit, "target", 9, "with the hostile calls held")
	if len(wrong) > 0 {
		t.Fatalf("%d hostile calls over the limit were not refused at once; the first ended with %+v, %v", len(wrong), wrong[0].rep, wrong[0].err)
	}
}

// Review 13, point 3: a call whose header comes without its body is
// ended once the body's wait is over, and its slot is free again.
func TestCallWithoutBodyTimesOut(t *testing.T) {
	clock := &testClock{}
	const perCaller = 4
	hb := startHub(t, clock, func(c *hub.Config) {
		// The call over the bound waits for a slot far less long than
		// the others wait for their bodies.
		c.Heartbeat, c.CallsPerCaller, c.CallBodyWait, c.CallSlotWait = 30*time.Second, perCaller, 3*time.Second, 50*time.Millisecond
	})
	target, bad := hb.pair(t, clock, "target", 0), hb.pair(t, clock, "bad", 0)
	startPeer(t, target, clock)
	waitSyncedPeer(t, target)
	serveEcho(t, target)
	sess := hostileSession(t, bad)

	// One call more than the caller may have in flight, none with a body:
	// whichever comes last is refused once its wait for a slot is over, the
	// others end without an answer once the body's wait is over.
	outcomes := make(chan callOutcome, perCaller+1)
	for range perCaller + 1 {
		st := rawCall(t, sess, "target", nil)
		go func() { outcomes <- awaitReply(st) }()
	}
	refused := 0
	for range perCaller + 1 {
		switch o := <-outcomes; {
		case o.err == nil && o.rep.Status == wire.CallUnavailable:
			refused++
		case o.err == nil:
			t.Fatalf("a call without a body was answered: %+v", o.rep)
		}
	}
	if refused != 1 {
		t.Fatalf("%d calls refused as over the limit, want 1", refused)
	}
	// That freed every slot: as many calls as the caller may have, with
	// bodies, all at once, go through.
	for range perCaller {
		st := rawCall(t, sess, "target", []byte(`"hi"`))
		go func() {
			o := awaitReply(st)
			st.Close()
			outcomes <- o
		}()
	}
	for i := range perCaller {
		if o := <-outcomes; o.err != nil || o.rep.Status != wire.CallOK {
			t.Fatalf("call %d after the timeouts: %+v, %v", i, o.rep, o.err)
		}
	}
}
