package sync

import (
	"errors"
	"fmt"
	"testing"
	"time"
)

func TestHubToPeerAndBack(t *testing.T) {
	dir := t.TempDir()
	hub := openTestNode(t, dir, HubNode, time.Now)
	phone := openTestNode(t, dir, "phone", time.Now)
	laptop := openTestNode(t, dir, "laptop", time.Now)

	if _, err := hub.Put(BucketAppData, "notes/a", []byte("from hub")); err != nil {
		t.Fatal(err)
	}
	l1, l2 := connect(hub, phone), connect(hub, laptop)
	waitSynced(t, hub, phone)
	if r, ok, _ := phone.Get(BucketAppData, "notes/a"); !ok || string(r.Value) != "from hub" || r.Seq != 1 {
		t.Fatalf("phone has %+v %v", r, ok)
	}
	waitSynced(t, hub, laptop)
	w, err := laptop.Watch(BucketAppData, "notes/")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := phone.Put(BucketAppData, "notes/b", []byte("from phone")); err != nil {
		t.Fatal(err)
	}
	select {
	case r := <-w.Changes():
		if r.Key != "notes/b" || string(r.Value) != "from phone" {
			t.Fatalf("laptop saw %+v", r)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("laptop did not see the phone's edit")
	}
	w.Close()
	waitSynced(t, hub, phone)
	waitSynced(t, hub, laptop)

	// Offline edits on both devices, a conflict on one key, a delete.
	l1.stop()
	l2.stop()
	pv, _ := phone.Put(BucketAppData, "notes/c", []byte("phone offline"))
	lv, _ := laptop.Put(BucketAppData, "notes/c", []byte("laptop offline"))
	// Both clocks may read the same millisecond: the greater version wins,
	// whichever it is, the same on every node.
	winner := "phone offline"
	if lv.Version.Compare(pv.Version) > 0 {
		winner = "laptop offline"
	}
	laptop.Delete(BucketAppData, "notes/a")
	if st := laptop.State(); st.Pending != 2 || st.Phase != PhaseOffline {
		t.Fatalf("laptop state %+v", st)
	}
	l1, l2 = connect(hub, phone), connect(hub, laptop)
	waitSynced(t, hub, laptop)
	waitSynced(t, hub, phone)
	waitSynced(t, hub, laptop)
	want := map[string]string{"appdata/notes/b": "from phone", "appdata/notes/c": winner}
	for _, n := range []*testNode{hub, phone, laptop} {
		if got := dump(t, n.Store); fmt.Sprint(got) != fmt.Sprint(want) {
			t.Errorf("%s has %v, want %v", n.opts.Node, got, want)
		}
	}
	l1.stop()
	l2.stop()
}

func TestDevicePermissions(t *testing.T) {
	dir := t.TempDir()
	hub := openTestNode(t, dir, HubNode, time.Now)
	phone := openTestNode(t, dir, "phone", time.Now)
	for _, b := range Buckets() {
		if !HubOnly(b) {
			continue
		}
		if _, err := phone.Put(b, "x", []byte("y")); !errors.Is(err, ErrPermission) {
			t.Errorf("local put to %s: %v", b, err)
		}
	}
	// At the hub, whatever the device checked: push forged edits.
	hub.Put(BucketPolicy, "rule1", []byte("allow"))
	now := uint64(time.Now().UnixMilli())
	var recs []Record
	for _, b := range Buckets() {
		if HubOnly(b) {
			recs = append(recs, Record{Bucket: b, Key: "rule1", Value: []byte("mine"), Version: Version{Wall: now, Node: "phone"}})
		}
	}
	recs = append(recs,
		Record{Bucket: BucketDevices, Key: "laptop", Value: []byte("x"), Version: Version{Wall: now, Node: "phone"}},
		Record{Bucket: BucketApps, Key: "laptop/app", Value: []byte("x"), Version: Version{Wall: now, Node: "phone"}},
		Record{Bucket: BucketAppData, Key: "a/b", Value: []byte("x"), Version: Version{Wall: now, Node: "laptop"}},
		Record{Bucket: BucketAppData, Key: "a/c", Value: []byte("x"), Version: Version{Wall: now + uint64(time.Hour.Milliseconds()), Node: "phone"}},
		Record{Bucket: BucketDevices, Key: "phone", Value: []byte("me"), Version: Version{Wall: now, Node: "phone"}},
	)
	res, err := hub.accept("phone", recs)
	if err != nil {
		t.Fatal(err)
	}
	for i, r := range res[:len(res)-1] {
		if r.Status != PushRefused || r.Reason == "" {
			t.Errorf("%s/%s: %+v", recs[i].Bucket, recs[i].Key, r)
		}
		if recs[i].Bucket == BucketPolicy && (r.Current == nil || string(r.Current.Value) != "allow") {
			t.Errorf("refusal does not carry the hub's record: %+v", r.Current)
		}
	}
	if r := res[len(res)-1]; r.Status != PushAccepted {
		t.Errorf("own device record: %+v", r)
	}
	if r, _, _ := hub.Get(BucketPolicy, "rule1"); string(r.Value) != "allow" {
		t.Errorf("policy changed to %q", r.Value)
	}
}
