package sync

import (
	"errors"
	"fmt"
	"os"
	"strings"
	"testing"
)

// A hub is restored from a backup older than what its devices hold. The
// devices push back their own edits made after the backup (the laptop's
// newer a and its new b, the phone's c), and the phone the hub's
// revocation it saw, which the hub vouches for; a hub record it does not
// vouch for stays on the phone only. (Deletions after the backup are not
// held anywhere, and come undone: see restore.go.)
func TestRestoredHub(t *testing.T) {
	dir := t.TempDir()
	hub := openTestNode(t, dir, HubNode, nil)
	laptop := openTestNode(t, dir, "laptop", nil)
	phone := openTestNodeWith(t, dir, "phone", nil, func(o *Options) {
		o.Witness = func(bucket, key string) bool { return bucket == BucketCerts }
	})
	put := func(n *testNode, bucket, key, value string) {
		t.Helper()
		if _, err := n.Put(bucket, key, []byte(value)); err != nil {
			t.Fatal(err)
		}
	}
	syncBoth := func() {
		t.Helper()
		for _, d := range []*testNode{laptop, phone} {
			l := connect(hub, d)
			waitSyncedOn(t, hub, d, l)
			l.stopClean(t, d.opts.Node)
		}
	}
	put(hub, BucketPolicy, "rule", "old")
	put(laptop, BucketAppData, "app/a", "1")
	syncBoth()

	// The backup: the hub's file as it is now.
	hub.close(t)
	backup, err := os.ReadFile(hub.path)
	if err != nil {
		t.Fatal(err)
	}
	hub.reopen(t)

	put(laptop, BucketAppData, "app/a", "2")
	put(laptop, BucketAppData, "app/b", "laptop's")
	put(phone, BucketUserData, "c", "phone's")
	put(hub, BucketCerts, "revoked/01", "signed")
	put(hub, BucketCerts, "forged", "x")
	syncBoth()
	syncBoth() // each device has the other's edits too

	// Restored: the backup put back, marked.
	oldEpoch := hub.epoch(t)
	hub.close(t)
	if err := os.WriteFile(hub.path, backup, 0o600); err != nil {
		t.Fatal(err)
	}
	newEpoch, err := MarkRestored(hub.path)
	if err != nil || newEpoch == oldEpoch {
		t.Fatalf("mark restored: %q %v", newEpoch, err)
	}
	var vouched []string
	hub.opts.Vouch = func(device string, r Record) error {
		if r.Bucket == BucketCerts && strings.HasPrefix(r.Key, "revoked/") && string(r.Value) == "signed" {
			vouched = append(vouched, device+":"+r.Key)
			return nil
		}
		return errors.New("not the hub's")
	}
	hub.reopen(t)
	epochOK := func(epoch string, _ []byte) error {
		if epoch != newEpoch {
			return fmt.Errorf("epoch %s", epoch)
		}
		return nil
	}
	laptop.opts.CheckEpoch, phone.opts.CheckEpoch = epochOK, epochOK
	laptop.restart(t)
	phone.restart(t)
	syncBoth()
	syncBoth()

	want := map[string]string{"policy/rule": "old", "appdata/app/a": "2", "appdata/app/b": "laptop's", "userdata/c": "phone's", "certs/revoked/01": "signed"}
	if got := sameState(t, hub, laptop); fmt.Sprint(got) != fmt.Sprint(want) {
		t.Fatalf("after the restore: %v, want %v", got, want)
	}
	// The phone keeps the record the hub would not take back: a device
	// honours every revocation it saw.
	want["certs/forged"] = "x"
	if got := dump(t, phone.Store); fmt.Sprint(got) != fmt.Sprint(want) {
		t.Fatalf("the phone after the restore: %v, want %v", got, want)
	}
	if fmt.Sprint(vouched) != "[phone:revoked/01]" {
		t.Errorf("vouched for %v", vouched)
	}
	for _, d := range []*testNode{laptop, phone} {
		if st := d.State(); st.FullResync || st.Pending != 0 || st.Refused != 1 && d == phone {
			t.Errorf("%s: %+v", d.opts.Node, st)
		}
	}
	// A later session is an ordinary one.
	put(laptop, BucketAppData, "app/a", "3")
	l := connect(hub, laptop)
	waitSyncedOn(t, hub, laptop, l)
	l.stopClean(t, "laptop")
	if r, _, _ := hub.Get(BucketAppData, "app/a"); string(r.Value) != "3" {
		t.Errorf("after the restore, a = %q", r.Value)
	}
}

// restoredSetup: a hub, a laptop that made app/b after the backup, and
// the hub put back from the backup and marked restored.
func restoredSetup(t *testing.T) (hub, laptop *testNode) {
	dir := t.TempDir()
	hub = openTestNode(t, dir, HubNode, nil)
	laptop = openTestNode(t, dir, "laptop", nil)
	sync1 := func() {
		l := connect(hub, laptop)
		waitSyncedOn(t, hub, laptop, l)
		l.stopClean(t, "laptop")
	}
	if _, err := laptop.Put(BucketAppData, "app/a", []byte("1")); err != nil {
		t.Fatal(err)
	}
	sync1()
	hub.close(t)
	backup, err := os.ReadFile(hub.path)
	if err != nil {
		t.Fatal(err)
	}
	hub.reopen(t)
	if _, err := laptop.Put(BucketAppData, "app/b", []byte("after the backup")); err != nil {
		t.Fatal(err)
	}
	sync1()
	hub.close(t)
	if err := os.WriteFile(hub.path, backup, 0o600); err != nil {
		t.Fatal(err)
	}
	newEpoch, err := MarkRestored(hub.path)
	if err != nil {
		t.Fatal(err)
	}
	hub.reopen(t)
	laptop.opts.CheckEpoch = func(e string, _ []byte) error {
		if e != newEpoch {
			return fmt.Errorf("epoch %s", e)
		}
		return nil
	}
	laptop.restart(t)
	return hub, laptop
}

// The first session with the restored hub is cut after Start, before any
// Changes batch is applied: the next Hello names the new epoch from 0,
// and the hub says nothing of the restore. The pass is still a restored
// one, and the laptop's edit after the backup comes back.
func TestRestoredPassCutShort(t *testing.T) {
	hub, laptop := restoredSetup(t)
	p := newTap()
	p.holdAfter(0)
	l := connectWith(hub, laptop, p.attach)
	await(t, "start applied", func() (bool, error) {
		return laptop.State().Phase == PhaseCatchingUp, nil
	}, kicks(laptop), tapEvents(p))
	if st := p.start(t); !st.Reset || !st.Restored {
		t.Fatalf("start %+v: want a restored reset", st)
	}
	l.stop()

	l = connect(hub, laptop)
	waitSyncedOn(t, hub, laptop, l)
	l.stopClean(t, "laptop")
	for _, n := range []*testNode{hub, laptop} {
		if r, ok, _ := n.Get(BucketAppData, "app/b"); !ok || r.Deleted {
			t.Errorf("%s lost app/b: %v", n.opts.Node, dump(t, n.Store))
		}
	}
}

// A hub record pushed back only fills a gap: the hub keeps its own over
// one a device pushes, whatever that one's version says; and a device
// keeps a pushed-back record the hub refuses.
func TestVouchFillsGapsOnly(t *testing.T) {
	dir := t.TempDir()
	hub := openTestNodeWith(t, dir, HubNode, nil, func(o *Options) {
		o.Vouch = func(device string, r Record) error {
			if r.Key == "revoked/good" {
				return nil
			}
			return errors.New("not signed")
		}
	})
	if _, err := hub.Put(BucketCerts, "revoked/good", []byte("hub's")); err != nil {
		t.Fatal(err)
	}
	cur, _, _ := hub.Get(BucketCerts, "revoked/good")
	later := cur.Version
	later.Wall += 1000
	res, err := hub.accept("laptop", []Record{
		{Bucket: BucketCerts, Key: "revoked/good", Value: []byte("rewritten"), Version: later},
		{Bucket: BucketCerts, Key: "revoked/new", Value: []byte("x"), Version: later},
	})
	if err != nil {
		t.Fatal(err)
	}
	if res[0].Status != PushSuperseded || res[1].Status != PushRefused {
		t.Fatalf("results %+v", res)
	}
	if r, _, _ := hub.Get(BucketCerts, "revoked/good"); string(r.Value) != "hub's" {
		t.Fatalf("the hub's record was replaced: %q", r.Value)
	}
}
