package sync

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"strings"
	gosync "sync"
	"testing"
	"time"

	"github.com/pzone/pzone/transport"
)

// A device pushes small offline edits to keys the hub meanwhile gave
// large values. Each edit loses, and the hub's answer must still fit in a
// frame: otherwise the stream fails, and fails again at every reconnect
// for as long as the device pushes before it applies the winners.
func TestPushResultFitsFrame(t *testing.T) {
	clock := newFakeClock()
	dir := t.TempDir()
	hub := openTestNode(t, dir, HubNode, clock.Now)
	phone := openTestNode(t, dir, "phone", clock.Now)
	const keys = 6
	key := func(i int) string { return fmt.Sprintf("app/k%d", i) }
	for i := range keys {
		if _, err := hub.Put(BucketAppData, key(i), []byte("small")); err != nil {
			t.Fatal(err)
		}
	}
	l := connect(hub, phone)
	waitSyncedOn(t, hub, phone, l)
	l.stopClean(t, "phone")
	clock.Add(time.Minute)
	for i := range keys {
		if _, err := phone.Put(BucketAppData, key(i), []byte("phone, offline")); err != nil {
			t.Fatal(err)
		}
	}
	clock.Add(time.Minute)
	big := strings.Repeat("v", MaxValue-1024)
	for i := range keys {
		if _, err := hub.Put(BucketAppData, key(i), []byte(big)); err != nil {
			t.Fatal(err)
		}
	}

	// The phone pushes before it reads any change.
	p := newTap()
	p.holdAfter(0)
	l = connectWith(hub, phone, p.attach)
	await(t, "the push to reach the hub", func() (bool, error) { return p.pushed() > 0, l.broken() }, tapEvents(p), linkDown(l))
	p.unhold()
	waitSyncedOn(t, hub, phone, l)
	l.stopClean(t, "phone")
	p.checkFrames(t)
	got := sameState(t, hub, phone)
	for i := range keys {
		if got["appdata/"+key(i)] != big {
			t.Fatalf("%s is %.20q..., want the hub's value", key(i), got["appdata/"+key(i)])
		}
	}
	if st := phone.State(); st.Refused != 0 {
		t.Errorf("phone state %+v", st)
	}
}

// frame encodes m as one frame.
func frame(t testing.TB, m *Msg) []byte {
	t.Helper()
	var b bytes.Buffer
	if err := transport.WriteFrame(&b, m); err != nil {
		t.Fatal(err)
	}
	return b.Bytes()
}

// rawEnd is one end of a sync stream spoken by hand, facing a store that
// runs the other end (Serve or Sync). The frames the store sends are
// read as they come and queued without bound, so that its writes never
// block.
type rawEnd struct {
	t    testing.TB
	conn net.Conn
	done chan error // the store's Serve or Sync

	mu     gosync.Mutex
	queue  []Msg
	ended  bool          // the store's side of the stream is done
	arrive chan struct{} // kicked when a frame is queued or the stream ends
}

func newRawEnd(t testing.TB, run func(ctx context.Context, st Stream) error) *rawEnd {
	a, b := net.Pipe()
	ctx, cancel := context.WithCancel(context.Background())
	e := &rawEnd{t: t, conn: b, done: make(chan error, 1), arrive: make(chan struct{}, 1)}
	go func() { e.done <- run(ctx, a) }()
	go func() {
		fr := transport.NewFrameReader(b, 0)
		for {
			var m Msg
			err := fr.ReadFrame(&m)
			e.mu.Lock()
			if err != nil {
				e.ended = true
			} else {
				e.queue = append(e.queue, m)
			}
			e.mu.Unlock()
			select {
			case e.arrive <- struct{}{}:
			default:
			}
			if err != nil {
				return
			}
		}
	}()
	t.Cleanup(func() {
		cancel()
		b.Close()
		<-e.done
	})
	return e
}

// rawDevice faces the hub's Serve as device, having said hello.
func rawDevice(t testing.TB, hub *testNode, device string, hello *Msg) *rawEnd {
	e := newRawEnd(t, func(ctx context.Context, st Stream) error { return hub.Serve(ctx, device, st) })
	if hello != nil {
		e.send(hello)
	}
	return e
}

// rawHub faces a device's Sync as its hub.
func rawHub(t testing.TB, peer *testNode) *rawEnd {
	return newRawEnd(t, peer.Sync)
}

// send writes frames; a store that stopped reading makes it fail, which
// is not an error here.
func (e *rawEnd) send(ms ...*Msg) {
	for _, m := range ms {
		e.conn.Write(frame(e.t, m))
	}
}

// next returns the next frame of type typ the store sends, skipping
// others.
func (e *rawEnd) next(typ MsgType) Msg {
	e.t.Helper()
	var m Msg
	await(e.t, fmt.Sprintf("a frame of type %d", typ), func() (bool, error) {
		e.mu.Lock()
		defer e.mu.Unlock()
		for len(e.queue) > 0 {
			m, e.queue = e.queue[0], e.queue[1:]
			if m.Type == typ {
				return true, nil
			}
		}
		if e.ended {
			return false, errors.New("the stream ended")
		}
		return false, nil
	}, func() <-chan struct{} { return e.arrive })
	return m
}

// result is the store's Serve or Sync error, once it returned.
func (e *rawEnd) result() error {
	e.t.Helper()
	select {
	case err := <-e.done:
		e.done <- err // for the cleanup
		return err
	case <-after(awaitTimeout):
		e.t.Fatal("the store did not end the stream")
		return nil
	}
}

// The hub refuses, one by one, pushed edits a device may not make, and
// accepts the rest of the push.
func TestServeRefusesBadEdits(t *testing.T) {
	clock := newFakeClock()
	hub := openTestNode(t, t.TempDir(), HubNode, clock.Now)
	if _, err := hub.Put(BucketPolicy, "rule", []byte("allow")); err != nil {
		t.Fatal(err)
	}
	now := uint64(clock.Now().UnixMilli())
	good := func(bucket, key string) Record {
		return Record{Bucket: bucket, Key: key, Value: []byte("x"), Version: Version{Wall: now, Node: "phone"}}
	}
	with := func(r Record, f func(*Record)) Record { f(&r); return r }
	tests := []struct {
		name   string
		rec    Record
		reason string
	}{
		{"another node's name", with(good(BucketAppData, "app/a"), func(r *Record) { r.Version.Node = "laptop" }), "stamped by node"},
		{"the hub's name", with(good(BucketAppData, "app/a"), func(r *Record) { r.Version.Node = HubNode }), "stamped by node"},
		{"unknown bucket", good("nope", "k"), "unknown bucket"},
		{"value over MaxValue", with(good(BucketAppData, "app/a"), func(r *Record) { r.Value = make([]byte, MaxValue+1) }), "over the"},
		{"deletion with a value", with(good(BucketAppData, "app/a"), func(r *Record) { r.Deleted = true }), "carries a value"},
		{"no version", with(good(BucketAppData, "app/a"), func(r *Record) { r.Version = Version{} }), "bad version"},
		{"node name too long", with(good(BucketAppData, "app/a"), func(r *Record) { r.Version.Node = strings.Repeat("n", maxNode+1) }), "bad version"},
		{"clock ahead", with(good(BucketAppData, "app/a"), func(r *Record) { r.Version.Wall = now + uint64((DefaultMaxClockAhead + time.Minute).Milliseconds()) }), "ahead of the hub's clock"},
		{"hub-only bucket", good(BucketPolicy, "rule"), "written by the hub only"},
		{"another device's record", good(BucketDevices, "laptop"), "only its own record"},
		{"another device's app", good(BucketApps, "laptop/app"), "only keys under"},
		{"key without app", good(BucketAppData, "noapp"), "must be APP/KEY"},
		{"empty key", good(BucketUserData, ""), "key must be"},
		{"key too long", good(BucketUserData, strings.Repeat("k", MaxKey+1)), "key must be"},
		{"control character", good(BucketUserData, "a\x00b"), "control character"},
	}
	var recs []Record
	for _, tc := range tests {
		recs = append(recs, tc.rec)
	}
	recs = append(recs, good(BucketAppData, "app/ok"), good(BucketDevices, "phone"))
	before := records(t, hub.Store)
	d := rawDevice(t, hub, "phone", &Msg{Type: MsgHello, Version: ProtocolVersion})
	d.send(&Msg{Type: MsgPush, ID: 7, Records: recs})
	res := d.next(MsgPushResult)
	if res.ID != 7 || len(res.Results) != len(recs) {
		t.Fatalf("push result %d with %d results for %d records", res.ID, len(res.Results), len(recs))
	}
	for i, tc := range tests {
		r := res.Results[i]
		if r.Status != PushRefused || !strings.Contains(r.Reason, tc.reason) {
			t.Errorf("%s: %+v, want refused with %q", tc.name, r, tc.reason)
		}
		if tc.rec.Bucket == BucketPolicy && (r.Current == nil || string(r.Current.Value) != "allow") {
			t.Errorf("%s: the refusal does not carry the hub's record: %+v", tc.name, r.Current)
		}
	}
	for _, r := range res.Results[len(tests):] {
		if r.Status != PushAccepted || r.Seq == 0 {
			t.Errorf("a permitted edit: %+v", r)
		}
	}
	after := records(t, hub.Store)
	if len(after) != len(before)+2 || after["appdata/app/ok"].Seq == 0 || after["devices/phone"].Seq == 0 {
		t.Errorf("the hub holds %v", after)
	}
}

// A device that breaks the protocol ends its stream with an error; the
// hub's store is untouched.
func TestServeProtocolErrors(t *testing.T) {
	clock := newFakeClock()
	hub := openTestNode(t, t.TempDir(), HubNode, clock.Now)
	for _, k := range []string{"app/a", "app/b"} {
		if _, err := hub.Put(BucketAppData, k, []byte("v")); err != nil {
			t.Fatal(err)
		}
	}
	now := uint64(clock.Now().UnixMilli())
	rec := func(i int) Record {
		return Record{Bucket: BucketAppData, Key: fmt.Sprintf("app/n%d", i), Value: []byte("x"), Version: Version{Wall: now, Node: "phone"}}
	}
	var tooMany []Record
	for i := range maxBatchRecords + 1 {
		tooMany = append(tooMany, rec(i))
	}
	// Past the decoder's bound on array elements, in a frame that fits.
	var farTooMany []Record
	for range 5000 {
		farTooMany = append(farTooMany, Record{Bucket: "x", Key: "y", Version: Version{Wall: 1, Node: "p"}})
	}
	hello := &Msg{Type: MsgHello, Version: ProtocolVersion}
	tests := []struct {
		name   string
		hello  *Msg
		frames []*Msg
		raw    []byte
		want   error // nil: any error
	}{
		{name: "no hello", frames: []*Msg{{Type: MsgPush, ID: 1, Records: []Record{rec(0)}}}, want: ErrProtocol},
		{name: "hello of version 0", frames: []*Msg{{Type: MsgHello}}, want: ErrProtocol},
		{name: "empty push", hello: hello, frames: []*Msg{{Type: MsgPush, ID: 1}}, want: ErrProtocol},
		{name: "push over the batch bound", hello: hello, frames: []*Msg{{Type: MsgPush, ID: 1, Records: tooMany}}, want: ErrProtocol},
		{name: "push over the decoder's bound", hello: hello, frames: []*Msg{{Type: MsgPush, ID: 1, Records: farTooMany}}},
		{name: "ack beyond the head", hello: hello, frames: []*Msg{{Type: MsgAck, Seq: 3}}, want: ErrProtocol},
		{name: "changes from a device", hello: hello, frames: []*Msg{{Type: MsgChanges, Records: []Record{rec(0)}, Upto: 9}}, want: ErrProtocol},
		{name: "second hello", hello: hello, frames: []*Msg{hello}, want: ErrProtocol},
		{name: "unknown type", hello: hello, frames: []*Msg{{Type: 99}}, want: ErrProtocol},
		{name: "frame over the limit", hello: hello, raw: binary.AppendUvarint(nil, maxFrame+1), want: transport.ErrFrameTooLarge},
		{name: "not CBOR", hello: hello, raw: []byte{3, 0xff, 0xff, 0xff}},
		{name: "truncated frame", hello: hello, raw: []byte{10, 0xa1}},
	}
	before := records(t, hub.Store)
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			d := rawDevice(t, hub, "phone", tc.hello)
			d.send(tc.frames...)
			if tc.raw != nil {
				d.conn.Write(tc.raw)
				d.conn.Close()
			}
			err := d.result()
			if err == nil || tc.want != nil && !errors.Is(err, tc.want) {
				t.Fatalf("Serve returned %v, want %v", err, tc.want)
			}
			t.Logf("Serve: %v", err)
			if after := records(t, hub.Store); fmt.Sprint(after) != fmt.Sprint(before) {
				t.Fatalf("the hub's records changed:\n%v\n%v", after, before)
			}
		})
	}
}

// primePeer makes peer a device that synced with hub epoch up to seq 5,
// holding one record from the hub and one local edit not yet pushed.
func primePeer(t testing.TB, peer *testNode, epoch string) {
	t.Helper()
	err := peer.write(func(tx *txn) error {
		tx.tx.Bucket(bMeta).Put(kEpoch, []byte(epoch))
		tx.setSeq(5)
		return putStored(tx.tx, bucketKey(BucketAppData, "app/s"), &stored{Value: []byte("from hub"), Version: Version{Wall: 1000, Node: HubNode}, Seq: 3})
	})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := peer.Put(BucketAppData, "app/p", []byte("pending")); err != nil {
		t.Fatal(err)
	}
}

// A hub that breaks the protocol ends the device's stream with an error;
// the device's store is untouched.
func TestSyncProtocolErrors(t *testing.T) {
	const epoch = "e1"
	now := uint64(time.Now().UnixMilli())
	hubRec := func(key string, seq uint64) Record {
		return Record{Bucket: BucketAppData, Key: key, Value: []byte("h"), Version: Version{Wall: now, Node: HubNode}, Seq: seq}
	}
	start := &Msg{Type: MsgStart, Epoch: epoch, Head: 10}
	tests := []struct {
		name     string
		start    *Msg
		frames   []*Msg
		wantPush bool // wait for the device's push before sending frames
	}{
		{name: "no start", start: &Msg{Type: MsgChanges, Upto: 6}},
		{name: "start without epoch", start: &Msg{Type: MsgStart, Head: 10}},
		{name: "record at or before the last applied", start: start, frames: []*Msg{{Type: MsgChanges, Records: []Record{hubRec("app/x", 5)}, Upto: 8}}},
		{name: "record beyond upto", start: start, frames: []*Msg{{Type: MsgChanges, Records: []Record{hubRec("app/x", 9)}, Upto: 8}}},
		{name: "upto behind", start: start, frames: []*Msg{{Type: MsgChanges, Upto: 4}}},
		{name: "bad record", start: start, frames: []*Msg{{Type: MsgChanges, Records: []Record{{Bucket: "nope", Key: "k", Version: Version{Wall: now, Node: HubNode}, Seq: 6}}, Upto: 6}}},
		{name: "oversized value", start: start, frames: []*Msg{{Type: MsgChanges, Records: []Record{{Bucket: BucketAppData, Key: "app/x", Value: make([]byte, MaxValue+1), Version: Version{Wall: now, Node: HubNode}, Seq: 6}}, Upto: 6}}},
		{name: "result of no push", start: start, frames: []*Msg{{Type: MsgPushResult, ID: 9, Results: []PushResult{{Status: PushAccepted, Seq: 6}}}}},
		{name: "result count", start: start, wantPush: true, frames: []*Msg{{Type: MsgPushResult, ID: 1, Results: []PushResult{{Status: PushAccepted, Seq: 6}, {Status: PushAccepted, Seq: 7}}}}},
		{name: "result with another key", start: start, wantPush: true, frames: []*Msg{{Type: MsgPushResult, ID: 1, Results: []PushResult{{Status: PushSuperseded, Current: &Record{Bucket: BucketAppData, Key: "app/other", Value: []byte("x"), Version: Version{Wall: now, Node: HubNode}}}}}}},
		{name: "result with a bad record", start: start, wantPush: true, frames: []*Msg{{Type: MsgPushResult, ID: 1, Results: []PushResult{{Status: PushRefused, Current: &Record{Bucket: BucketAppData, Key: "app/p", Value: []byte("x")}}}}}},
		{name: "unknown status", start: start, wantPush: true, frames: []*Msg{{Type: MsgPushResult, ID: 1, Results: []PushResult{{Status: 9}}}}},
		{name: "hello from the hub", start: start, frames: []*Msg{{Type: MsgHello, Version: 1}}},
		{name: "ack from the hub", start: start, frames: []*Msg{{Type: MsgAck, Seq: 1}}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			phone := openTestNode(t, t.TempDir(), "phone", time.Now)
			primePeer(t, phone, epoch)
			before := records(t, phone.Store)
			h := rawHub(t, phone)
			if hello := h.next(MsgHello); hello.Epoch != epoch || hello.Since != 5 || hello.Version != ProtocolVersion {
				t.Fatalf("hello %+v", hello)
			}
			h.send(tc.start)
			if tc.wantPush {
				if p := h.next(MsgPush); p.ID != 1 || len(p.Records) != 1 {
					t.Fatalf("push %+v", p)
				}
			}
			h.send(tc.frames...)
			if err := h.result(); !errors.Is(err, ErrProtocol) {
				t.Fatalf("Sync returned %v, want a protocol error", err)
			} else {
				t.Logf("Sync: %v", err)
			}
			if after := records(t, phone.Store); fmt.Sprint(after) != fmt.Sprint(before) {
				t.Fatalf("the device's records changed:\n%v\n%v", after, before)
			}
			if st := phone.State(); st.Pending != 1 || st.LastSeq != 5 {
				t.Fatalf("device state %+v", st)
			}
		})
	}
}

// A superseded edit whose result comes without the hub's record (left
// out to keep the answer within a frame) stops being pending; a pending
// deletion goes, as the device keeps no other tombstones; the winner then
// arrives with the changes.
func TestSupersededWithoutCurrent(t *testing.T) {
	const epoch = "e1"
	phone := openTestNode(t, t.TempDir(), "phone", time.Now)
	primePeer(t, phone, epoch)
	if _, err := phone.Delete(BucketAppData, "app/s"); err != nil {
		t.Fatal(err)
	}
	h := rawHub(t, phone)
	h.next(MsgHello)
	h.send(&Msg{Type: MsgStart, Epoch: epoch, Head: 5})
	p := h.next(MsgPush)
	if len(p.Records) != 2 {
		t.Fatalf("push %+v", p)
	}
	h.send(&Msg{Type: MsgPushResult, ID: p.ID, Results: []PushResult{{Status: PushSuperseded}, {Status: PushSuperseded}}})
	await(t, "the results applied", func() (bool, error) { return phone.State().Pending == 0, nil }, kicks(phone))
	recs := records(t, phone.Store)
	if r, ok := recs["appdata/app/p"]; !ok || string(r.Value) != "pending" || len(recs) != 1 {
		t.Fatalf("device records %v", recs)
	}
	now := uint64(time.Now().UnixMilli()) + 1000
	h.send(&Msg{Type: MsgChanges, Upto: 7, CaughtUp: true, Records: []Record{
		{Bucket: BucketAppData, Key: "app/p", Value: []byte("winner"), Version: Version{Wall: now, Node: HubNode}, Seq: 6},
		{Bucket: BucketAppData, Key: "app/s", Value: []byte("winner"), Version: Version{Wall: now, Node: HubNode}, Seq: 7},
	}})
	await(t, "the changes applied", func() (bool, error) { return phone.State().LastSeq == 7, nil }, kicks(phone))
	if got := dump(t, phone.Store); got["appdata/app/p"] != "winner" || got["appdata/app/s"] != "winner" {
		t.Fatalf("device state %v", got)
	}
}

// fuzzHub is a hub with a little of everything: a hub-only record, a
// device's record, a live record and a tombstone.
func fuzzHub(t testing.TB) *testNode {
	clock := newFakeClock()
	hub := openTestNode(t, t.TempDir(), HubNode, clock.Now)
	hubFill(t, hub, 4, func(i int) (string, string, []byte) {
		return [...]string{BucketPolicy, BucketDevices, BucketAppData, BucketAppData}[i], [...]string{"rule", "fuzzdev", "app/a", "app/b"}[i], []byte("v")
	})
	if _, err := hub.Delete(BucketAppData, "app/b"); err != nil {
		t.Fatal(err)
	}
	return hub
}

// FuzzSyncFrames feeds arbitrary bytes to the hub as what a device sends
// after a valid hello. Serve must end without panicking, and the hub's
// store may change only by edits the device is permitted to make.
func FuzzSyncFrames(f *testing.F) {
	now := uint64(newFakeClock().Now().UnixMilli())
	rec := func(bucket, key string) Record {
		return Record{Bucket: bucket, Key: key, Value: []byte("f"), Version: Version{Wall: now, Node: "fuzzdev"}}
	}
	seeds := [][]*Msg{
		{{Type: MsgPush, ID: 1, Records: []Record{rec(BucketAppData, "app/a"), rec(BucketAppData, "app/new")}}, {Type: MsgAck, Seq: 5}},
		{{Type: MsgPush, ID: 1, Records: []Record{rec(BucketPolicy, "rule"), rec(BucketDevices, "other"), rec(BucketDevices, "fuzzdev")}}},
		{{Type: MsgPush, ID: 1, Records: []Record{{Bucket: BucketAppData, Key: "app/a", Deleted: true, Version: Version{Wall: now, Node: "fuzzdev"}}}}},
		{{Type: MsgPush, ID: 2, Records: []Record{rec(BucketUserData, "u")}}, {Type: MsgPush, ID: 2, Records: []Record{rec(BucketUserData, "u")}}},
		{{Type: MsgAck, Seq: 99}},
		{{Type: MsgPush, ID: 1}},
		{{Type: MsgHello, Version: 1}},
	}
	for _, ms := range seeds {
		var b []byte
		for _, m := range ms {
			b = append(b, frame(f, m)...)
		}
		f.Add(b)
	}
	f.Add([]byte{})
	f.Add([]byte{0xff, 0xff, 0xff, 0xff})
	f.Add([]byte{5, 0xa1, 0x01, 0x04})
	f.Fuzz(func(t *testing.T, data []byte) {
		hub := fuzzHub(t)
		before := records(t, hub.Store)
		d := rawDevice(t, hub, "fuzzdev", &Msg{Type: MsgHello, Version: ProtocolVersion, Epoch: hub.epoch(t), Since: hub.Head()})
		d.conn.Write(data)
		d.conn.Close()
		d.result()
		after := records(t, hub.Store)
		for k, r := range after {
			if b, ok := before[k]; ok && b.Version == r.Version && b.Deleted == r.Deleted {
				continue
			}
			if err := CheckWrite("fuzzdev", r.Bucket, r.Key); err != nil || r.Version.Node != "fuzzdev" {
				t.Errorf("%s changed to %+v, which the device may not do (%v)", k, r, err)
			}
		}
		for k := range before {
			if _, ok := after[k]; !ok {
				t.Errorf("%s is gone", k)
			}
		}
	})
}

// FuzzSyncFramesToDevice feeds arbitrary bytes to a device as what its
// hub sends after a valid start. Sync must end without panicking and
// leave the device's store consistent (checked when the test ends).
func FuzzSyncFramesToDevice(f *testing.F) {
	const epoch = "e1"
	now := uint64(newFakeClock().Now().UnixMilli())
	rec := func(key string, seq uint64) Record {
		return Record{Bucket: BucketAppData, Key: key, Value: []byte("h"), Version: Version{Wall: now, Node: HubNode}, Seq: seq}
	}
	seeds := [][]*Msg{
		{{Type: MsgChanges, Records: []Record{rec("app/x", 6), rec("app/p", 7)}, Upto: 8, CaughtUp: true}},
		{{Type: MsgChanges, Records: []Record{{Bucket: BucketAppData, Key: "app/s", Deleted: true, Version: Version{Wall: now, Node: HubNode}, Seq: 6}}, Upto: 6, Head: 9}},
		{{Type: MsgPushResult, ID: 1, Results: []PushResult{{Status: PushAccepted, Seq: 6}}}},
		{{Type: MsgPushResult, ID: 1, Results: []PushResult{{Status: PushSuperseded, Current: &Record{Bucket: BucketAppData, Key: "app/p", Value: []byte("w"), Version: Version{Wall: now, Node: HubNode}, Seq: 6}}}}},
		{{Type: MsgPushResult, ID: 1, Results: []PushResult{{Status: PushRefused, Reason: "no"}}}},
		{{Type: MsgChanges, Records: []Record{rec("app/x", 5)}, Upto: 8}},
	}
	for _, ms := range seeds {
		var b []byte
		for _, m := range ms {
			b = append(b, frame(f, m)...)
		}
		f.Add(b, false)
		f.Add(b, true)
	}
	f.Add([]byte{0x80}, false)
	f.Fuzz(func(t *testing.T, data []byte, reset bool) {
		phone := openTestNode(t, t.TempDir(), "phone", time.Now)
		primePeer(t, phone, epoch)
		h := rawHub(t, phone)
		h.next(MsgHello)
		h.send(&Msg{Type: MsgStart, Epoch: epoch, Head: 8, Reset: reset})
		h.conn.Write(data)
		h.conn.Close()
		h.result()
		checkInvariants(t, phone.Store)
	})
}
