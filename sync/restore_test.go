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
// vouch for is dropped. Nothing acknowledged to a device is lost.
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
	if got := sameState(t, hub, laptop, phone); fmt.Sprint(got) != fmt.Sprint(want) {
		t.Fatalf("after the restore: %v, want %v", got, want)
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
