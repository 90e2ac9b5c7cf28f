package sync

import (
	"errors"
	"fmt"
	"testing"
	"time"
)

// A deletion is compacted once every active device confirmed it, and the
// devices that saw it go on without a full resync. A device that is not
// active does not hold compaction back, and when it comes back it gets a
// full resync in which the deleted key goes.
func TestCompactAfterAcks(t *testing.T) {
	dir := t.TempDir()
	hub := openTestNode(t, dir, HubNode, time.Now)
	phone := openTestNode(t, dir, "phone", time.Now)
	laptop := openTestNode(t, dir, "laptop", time.Now)
	tablet := openTestNode(t, dir, "tablet", time.Now)
	all := []string{"phone", "laptop", "tablet"}

	for _, k := range []string{"app/a", "app/b", "app/c"} {
		if _, err := hub.Put(BucketAppData, k, []byte("v-"+k)); err != nil {
			t.Fatal(err)
		}
	}
	lp, ll, lt := connect(hub, phone), connect(hub, laptop), connect(hub, tablet)
	waitSyncedOn(t, hub, phone, lp)
	waitSyncedOn(t, hub, laptop, ll)
	waitSyncedOn(t, hub, tablet, lt)
	lt.stopClean(t, "tablet") // the tablet is away for the deletion

	if _, err := phone.Delete(BucketAppData, "app/a"); err != nil {
		t.Fatal(err)
	}
	waitSyncedOn(t, hub, phone, lp)
	waitSyncedOn(t, hub, laptop, ll)
	del, _, _ := hub.Get(BucketAppData, "app/a")
	if !del.Deleted {
		t.Fatalf("hub has %+v", del)
	}
	waitAcked(t, hub, "phone", del.Seq)
	waitAcked(t, hub, "laptop", del.Seq)

	// The tablet has not confirmed it: nothing goes.
	if n, err := hub.Compact(all); err != nil || n != 0 {
		t.Fatalf("compact with the tablet behind: %d, %v", n, err)
	}
	// The tablet is no longer active (unpaired): the deletion goes.
	if n, err := hub.Compact([]string{"phone", "laptop"}); err != nil || n != 1 {
		t.Fatalf("compact: %d, %v", n, err)
	}
	if _, ok, _ := hub.Get(BucketAppData, "app/a"); ok {
		t.Fatal("the tombstone is still there")
	}
	if n, err := hub.Compact([]string{"phone", "laptop"}); err != nil || n != 0 {
		t.Fatalf("second compact: %d, %v", n, err)
	}

	// The devices that saw it carry on where they were.
	ll.stopClean(t, "laptop")
	if _, err := hub.Put(BucketAppData, "app/d", []byte("after")); err != nil {
		t.Fatal(err)
	}
	p := newTap()
	ll = connectWith(hub, laptop, p.attach)
	waitSyncedOn(t, hub, laptop, ll)
	if f := p.start(t); f.Reset {
		t.Error("the laptop got a full resync after a compaction it had confirmed")
	}
	if st := laptop.State(); st.Received != 1 {
		t.Errorf("the laptop received %d records, want only the new one", st.Received)
	}
	waitSyncedOn(t, hub, phone, lp)

	// The tablet missed the deletion: full resync, and the key goes.
	if _, ok, _ := tablet.Get(BucketAppData, "app/a"); !ok {
		t.Fatal("the tablet lost app/a while offline")
	}
	p = newTap()
	lt = connectWith(hub, tablet, p.attach)
	waitSyncedOn(t, hub, tablet, lt)
	if f := p.start(t); !f.Reset {
		t.Error("the tablet missed a compacted deletion but got no full resync")
	}
	want := map[string]string{"appdata/app/b": "v-app/b", "appdata/app/c": "v-app/c", "appdata/app/d": "after"}
	if got := sameState(t, hub, phone, laptop, tablet); fmt.Sprint(got) != fmt.Sprint(want) {
		t.Fatalf("state %v, want %v", got, want)
	}
	lp.stopClean(t, "phone")
	ll.stopClean(t, "laptop")
	lt.stopClean(t, "tablet")
}

// retentionWorld is a hub and devices on fake clocks with a short
// tombstone retention, for the tests of devices away longer than it.
type retentionWorld struct {
	t     *testing.T
	clock *fakeClock
	hub   *testNode
}

const testRetention = time.Hour

func newRetentionWorld(t *testing.T) *retentionWorld {
	clock := newFakeClock()
	hub := openTestNodeWith(t, t.TempDir(), HubNode, clock.Now, func(o *Options) { o.TombstoneRetention = testRetention })
	return &retentionWorld{t: t, clock: clock, hub: hub}
}

func (w *retentionWorld) put(n *testNode, key, value string) Record {
	w.t.Helper()
	r, err := n.Put(BucketAppData, key, []byte(value))
	if err != nil {
		w.t.Fatal(err)
	}
	return r
}

// A device away longer than the retention period comes back: it gets a
// full resync, the deleted keys do not come back, the rest stays, its
// offline edit made before the deletion of the same key is refused, and
// its offline edits made after the deletion land.
func TestResyncAfterRetention(t *testing.T) {
	w := newRetentionWorld(t)
	dir := t.TempDir()
	phone := openTestNode(t, dir, "phone", w.clock.Now)
	laptop := openTestNode(t, dir, "laptop", w.clock.Now)
	for _, k := range []string{"app/a", "app/b", "app/c", "app/x"} {
		w.put(w.hub, k, "hub-"+k)
	}
	lp, ll := connect(w.hub, phone), connect(w.hub, laptop)
	waitSyncedOn(t, w.hub, phone, lp)
	waitSyncedOn(t, w.hub, laptop, ll)
	lp.stopClean(t, "phone")

	w.clock.Add(time.Minute)
	w.put(phone, "app/a", "phone, before the deletion")
	w.clock.Add(time.Minute)
	if _, err := laptop.Delete(BucketAppData, "app/a"); err != nil {
		t.Fatal(err)
	}
	if _, err := w.hub.Delete(BucketAppData, "app/x"); err != nil {
		t.Fatal(err)
	}
	waitSyncedOn(t, w.hub, laptop, ll)
	w.clock.Add(time.Minute)
	w.put(phone, "app/b", "phone, after the deletion")
	w.put(phone, "app/n", "phone, new key")

	w.clock.Add(2 * testRetention)
	if n, err := w.hub.Compact([]string{"phone", "laptop"}); err != nil || n != 2 {
		t.Fatalf("compact: %d, %v", n, err)
	}

	p := newTap()
	lp = connectWith(w.hub, phone, p.attach)
	waitSyncedOn(t, w.hub, phone, lp)
	waitSyncedOn(t, w.hub, laptop, ll)
	if !p.start(t).Reset {
		t.Error("the phone missed compacted deletions but got no full resync")
	}
	if st := phone.State(); st.Refused != 1 || st.FullResync {
		t.Errorf("phone state %+v, want one refused edit", st)
	}
	want := map[string]string{
		"appdata/app/b": "phone, after the deletion",
		"appdata/app/c": "hub-app/c",
		"appdata/app/n": "phone, new key",
	}
	if got := sameState(t, w.hub, phone, laptop); fmt.Sprint(got) != fmt.Sprint(want) {
		t.Fatalf("state %v, want %v", got, want)
	}
	lp.stopClean(t, "phone")
	ll.stopClean(t, "laptop")
}

// The full resync that follows a compaction is cut short after the device
// caught up but before the hub saw its offline edits (the pushes were
// lost with the connection). The next session is not a full resync any
// more, yet the offline edit made before the deletion must still be
// refused.
func TestResyncInterruptedBeforePush(t *testing.T) {
	w := newRetentionWorld(t)
	phone := openTestNode(t, t.TempDir(), "phone", w.clock.Now)
	w.put(w.hub, "app/a", "hub")
	w.put(w.hub, "app/c", "hub")
	lp := connect(w.hub, phone)
	waitSyncedOn(t, w.hub, phone, lp)
	lp.stopClean(t, "phone")

	w.clock.Add(time.Minute)
	w.put(phone, "app/a", "phone, before the deletion")
	w.clock.Add(time.Minute)
	if _, err := w.hub.Delete(BucketAppData, "app/a"); err != nil {
		t.Fatal(err)
	}
	w.clock.Add(2 * testRetention)
	if n, err := w.hub.Compact([]string{"phone"}); err != nil || n != 1 {
		t.Fatalf("compact: %d, %v", n, err)
	}

	p := newTap()
	p.dropPush = true
	lp = connectWith(w.hub, phone, p.attach)
	await(t, "the phone to catch up", func() (bool, error) {
		st := phone.State()
		return st.Phase == PhaseInSync && st.LastSeq == w.hub.Head(), lp.broken()
	}, kicks(phone), linkDown(lp))
	if !p.start(t).Reset {
		t.Fatal("no full resync")
	}
	lp.stopClean(t, "phone")
	if p.dropped == 0 {
		t.Fatal("the phone pushed nothing")
	}

	lp = connect(w.hub, phone)
	waitSyncedOn(t, w.hub, phone, lp)
	lp.stopClean(t, "phone")
	want := map[string]string{"appdata/app/c": "hub"}
	if got := sameState(t, w.hub, phone); fmt.Sprint(got) != fmt.Sprint(want) {
		t.Fatalf("state %v, want %v: a deleted key came back", got, want)
	}
	if st := phone.State(); st.Refused != 1 {
		t.Errorf("phone state %+v, want one refused edit", st)
	}
}

// A connected device is still receiving its backlog when the hub compacts
// a deletion in it that outlived the retention period. The device must
// not end up in sync without that deletion: the hub ends the stream and
// the device's next session is a full resync.
func TestCompactDuringCatchUp(t *testing.T) {
	w := newRetentionWorld(t)
	phone := openTestNode(t, t.TempDir(), "phone", w.clock.Now)
	w.put(w.hub, "app/x", "doomed")
	lp := connect(w.hub, phone)
	waitSyncedOn(t, w.hub, phone, lp)
	lp.stopClean(t, "phone")

	// A backlog of several batches, then the deletion.
	hubFill(t, w.hub, 3*maxBatchRecords, func(i int) (string, string, []byte) {
		return BucketAppData, fmt.Sprintf("fill/%05d", i), []byte("x")
	})
	if _, err := w.hub.Delete(BucketAppData, "app/x"); err != nil {
		t.Fatal(err)
	}
	w.clock.Add(2 * testRetention)

	// The phone comes back and reads one batch; then the hub compacts.
	p := newTap()
	p.holdAfter(1)
	lp = connectWith(w.hub, phone, p.attach)
	await(t, "the first batch", func() (bool, error) {
		f := p.seen()
		return len(f) >= 2 && phone.State().LastSeq == f[1].Upto, lp.broken()
	}, kicks(phone), tapEvents(p), linkDown(lp))
	if p.start(t).Reset {
		t.Fatal("full resync before the compaction")
	}
	if n, err := w.hub.Compact([]string{"phone"}); err != nil || n != 1 {
		t.Fatalf("compact: %d, %v", n, err)
	}
	p.unhold()

	// Either the hub ends the stream, and the phone reconnects, or the
	// phone catches up; it must not be in sync with app/x.
	await(t, "the phone to catch up or the stream to end", func() (bool, error) {
		return synced(w.hub, phone) || lp.broken() != nil, nil
	}, kicks(phone), heads(w.hub), linkDown(lp))
	if lp.broken() != nil {
		herr, _ := lp.stop()
		if !errors.Is(herr, errCompactedAhead) {
			t.Fatalf("the stream ended with %v", herr)
		}
		p = newTap()
		lp = connectWith(w.hub, phone, p.attach)
		waitSyncedOn(t, w.hub, phone, lp)
		if !p.start(t).Reset {
			t.Error("no full resync after the stream ended")
		}
	}
	lp.stopClean(t, "phone")
	if _, ok, _ := phone.Get(BucketAppData, "app/x"); ok {
		t.Fatal("the phone kept app/x, deleted and compacted while it was catching up")
	}
	sameState(t, w.hub, phone)
}
