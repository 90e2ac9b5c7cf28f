package sync

import (
	"fmt"
	"maps"
	"strings"
	"testing"
	"time"
)

// catchUpRecords is the size of the hub's state in TestKillMidSync: about
// twenty batches.
const catchUpRecords = 20000

// A new device's first sync is cut after it applied some of the batches,
// and the device restarts. It resumes where it stopped, without a new
// full resync and without the hub sending again what it has, and ends up
// with exactly the hub's records. No frame breaks the batch bounds, by
// count or by bytes.
func TestKillMidSync(t *testing.T) {
	dir := t.TempDir()
	hub := openTestNode(t, dir, HubNode, time.Now)
	phone := openTestNode(t, dir, "phone", time.Now)
	hubFill(t, hub, catchUpRecords, func(i int) (string, string, []byte) {
		return BucketAppData, fmt.Sprintf("app/%05d", i), []byte(fmt.Sprint(i))
	})
	// A few large values, which the byte bound splits off.
	big := strings.Repeat("b", MaxValue)
	for i := range 6 {
		if _, err := hub.Put(BucketUserData, fmt.Sprintf("big%d", i), []byte(big)); err != nil {
			t.Fatal(err)
		}
	}
	// A change to an early record moves it to the end of the log.
	if _, err := hub.Put(BucketAppData, "app/00000", []byte("moved")); err != nil {
		t.Fatal(err)
	}
	// A record deleted before the phone syncs at all.
	if _, err := hub.Delete(BucketAppData, "app/00001"); err != nil {
		t.Fatal(err)
	}

	const before = 3 // batches applied before the cut
	p1 := newTap()
	p1.holdAfter(before)
	l := connectWith(hub, phone, p1.attach)
	var upto uint64
	await(t, fmt.Sprintf("%d batches", before), func() (bool, error) {
		var changes []tapFrame
		for _, f := range p1.seen() {
			if f.Type == MsgChanges {
				changes = append(changes, f)
			}
		}
		if len(changes) < before {
			return false, l.broken()
		}
		upto = changes[before-1].Upto
		return phone.State().LastSeq == upto, l.broken()
	}, kicks(phone), tapEvents(p1), linkDown(l))
	if !p1.start(t).Reset {
		t.Error("a new device got no full resync")
	}
	l.stopClean(t, "phone")
	phone.restart(t)
	if st := phone.State(); st.LastSeq != upto || !st.FullResync || st.LastSeq >= hub.Head() {
		t.Fatalf("after the restart the phone is at %+v; it applied up to %d of %d", st, upto, hub.Head())
	}
	got1 := phone.State().LastSeq

	p2 := newTap()
	l = connectWith(hub, phone, p2.attach)
	waitSyncedOn(t, hub, phone, l)
	l.stopClean(t, "phone")
	if p2.start(t).Reset {
		t.Error("the phone started over instead of resuming its full resync")
	}
	p1.checkFrames(t)
	p2.checkFrames(t)

	// Every record sent once: the first session's batches plus the
	// second's are the hub's records (tombstone included), no more.
	sent := 0
	for _, p := range []*tap{p1, p2} {
		for _, f := range p.seen() {
			if f.Type == MsgChanges {
				sent += f.Records
			}
		}
	}
	hubRecs, phoneRecs := records(t, hub.Store), records(t, phone.Store)
	if sent != len(hubRecs) {
		t.Errorf("the hub sent %d records for a state of %d (resumed at %d)", sent, len(hubRecs), got1)
	}
	delete(hubRecs, BucketAppData+"/app/00001") // the device keeps no tombstones
	if !maps.EqualFunc(hubRecs, phoneRecs, func(a, b Record) bool {
		return a.Version == b.Version && a.Seq == b.Seq && string(a.Value) == string(b.Value) && !b.Deleted
	}) {
		t.Fatalf("the phone has %d records, the hub %d live; they differ", len(phoneRecs), len(hubRecs))
	}
	if st := phone.State(); st.LastSeq != hub.Head() || st.FullResync {
		t.Errorf("phone state %+v, hub head %d", st, hub.Head())
	}
	if r, _, _ := phone.Get(BucketAppData, "app/00000"); string(r.Value) != "moved" {
		t.Errorf("app/00000 is %q", r.Value)
	}
}
