package sync

import (
	"context"
	"strings"
	"testing"
	"time"
)

// quotaHub opens a hub with the given quotas (0: the default).
func quotaHub(t *testing.T, dir string, device, zone int64) *testNode {
	return openTestNodeWith(t, dir, HubNode, time.Now, func(o *Options) {
		o.DeviceQuota, o.ZoneQuota = device, zone
	})
}

// owned is what the hub counts node as owning.
func owned(hub *testNode, node string) int64 {
	own, _ := hub.usage.get(node)
	return own
}

// refusedAfter waits until peer counts n refusals in all, then for it to
// settle with the hub, and returns its last refusal.
func refusedAfter(t *testing.T, hub, peer *testNode, l *link, n uint64) string {
	t.Helper()
	await(t, "a refusal", func() (bool, error) {
		return peer.State().Refused >= n, l.broken()
	}, kicks(peer), linkDown(l))
	waitSyncedOn(t, hub, peer, l)
	st := peer.State()
	if st.Refused != n {
		t.Fatalf("%d refusals, want %d (last: %s)", st.Refused, n, st.LastRefused)
	}
	return st.LastRefused
}

// putSettled makes an edit on peer and waits until the hub has settled it.
func putSettled(t *testing.T, hub, peer *testNode, l *link, key string, size int) Record {
	t.Helper()
	r, err := peer.Put(BucketAppData, key, []byte(strings.Repeat("x", size)))
	if err != nil {
		t.Fatal(err)
	}
	waitSyncedOn(t, hub, peer, l)
	return r
}

func TestDeviceQuota(t *testing.T) {
	dir := t.TempDir()
	hub := quotaHub(t, dir, 1000, 0)
	phone := openTestNode(t, dir, "phone", time.Now)
	laptop := openTestNode(t, dir, "laptop", time.Now)
	lp, ll := connect(hub, phone), connect(hub, laptop)
	waitSyncedOn(t, hub, phone, lp)
	waitSyncedOn(t, hub, laptop, ll)

	putSettled(t, hub, phone, lp, "app/a", 600)
	if got := owned(hub, "phone"); got != 605 {
		t.Fatalf("phone owns %d bytes, want 605", got)
	}
	// 605 + 605 is over 1000: refused, and undone on the phone.
	putSettled(t, hub, phone, lp, "app/b", 600)
	why := refusedAfter(t, hub, phone, lp, 1)
	for _, want := range []string{"appdata/app/b", "device quota", `"phone" holds 605 B`, "1.18 KiB", "1000 B limit", "pzh serve --device-quota", "delete some of its data"} {
		if !strings.Contains(why, want) {
			t.Errorf("refusal %q does not say %q", why, want)
		}
	}
	for _, n := range []*testNode{hub, phone} {
		if _, ok, _ := n.Get(BucketAppData, "app/b"); ok {
			t.Errorf("%s holds the refused edit", n.opts.Node)
		}
	}
	// The laptop has a quota of its own, and keeps syncing.
	putSettled(t, hub, laptop, ll, "app/c", 600)
	if laptop.State().Refused != 0 {
		t.Fatalf("laptop refused: %s", laptop.State().LastRefused)
	}
	waitSyncedOn(t, hub, phone, lp)
	if r, ok, _ := phone.Get(BucketAppData, "app/c"); !ok || len(r.Value) != 600 {
		t.Fatalf("phone did not get the laptop's edit: %+v %v", r, ok)
	}

	// The operator lowers the quota: the phone is over it. The count
	// survives the restart.
	lp.stopClean(t, "phone")
	ll.stopClean(t, "laptop")
	hub.close(t)
	hub.opts.DeviceQuota = 300
	hub.reopen(t)
	if got := owned(hub, "phone"); got != 605 {
		t.Fatalf("after reopening, phone owns %d bytes, want 605", got)
	}
	lp = connect(hub, phone)
	waitSyncedOn(t, hub, phone, lp)
	// Shrinking stays allowed over the quota; growing does not, even by
	// a byte, and neither does a new record.
	putSettled(t, hub, phone, lp, "app/a", 500)
	if phone.State().Refused != 1 {
		t.Fatalf("a shrinking edit was refused: %s", phone.State().LastRefused)
	}
	putSettled(t, hub, phone, lp, "app/a", 501)
	refusedAfter(t, hub, phone, lp, 2)
	if r, _, _ := phone.Get(BucketAppData, "app/a"); len(r.Value) != 500 || r.Seq == 0 {
		t.Fatalf("phone holds %d bytes at seq %d, want the hub's 500", len(r.Value), r.Seq)
	}
	putSettled(t, hub, phone, lp, "app/d", 1)
	refusedAfter(t, hub, phone, lp, 3)
	// A deletion is always taken and frees the bytes.
	if _, err := phone.Delete(BucketAppData, "app/a"); err != nil {
		t.Fatal(err)
	}
	waitSyncedOn(t, hub, phone, lp)
	if phone.State().Refused != 3 || owned(hub, "phone") != 0 {
		t.Fatalf("after the deletion: %d refusals, phone owns %d", phone.State().Refused, owned(hub, "phone"))
	}
	putSettled(t, hub, phone, lp, "app/e", 200)
	if phone.State().Refused != 3 {
		t.Fatalf("refused under the quota: %s", phone.State().LastRefused)
	}
	lp.stopClean(t, "phone")
}

func TestZoneQuota(t *testing.T) {
	dir := t.TempDir()
	hub := quotaHub(t, dir, 0, 2000)
	phone := openTestNode(t, dir, "phone", time.Now)
	// The hub's own writes are never refused, and count.
	if _, err := hub.Put(BucketPolicy, "r1", []byte(strings.Repeat("p", 1500))); err != nil {
		t.Fatal(err)
	}
	l := connect(hub, phone)
	waitSyncedOn(t, hub, phone, l)

	putSettled(t, hub, phone, l, "app/a", 600)
	why := refusedAfter(t, hub, phone, l, 1)
	for _, want := range []string{"zone quota", "holds 1.47 KiB", "1.95 KiB limit", "pzh serve --zone-quota"} {
		if !strings.Contains(why, want) {
			t.Errorf("refusal %q does not say %q", why, want)
		}
	}
	putSettled(t, hub, phone, l, "app/a", 400)
	if phone.State().Refused != 1 {
		t.Fatalf("refused within the zone quota: %s", phone.State().LastRefused)
	}
	// The hub goes over the quota by itself.
	if _, err := hub.Put(BucketAppData, "hub/big", []byte(strings.Repeat("h", 1000))); err != nil {
		t.Fatal(err)
	}
	waitSyncedOn(t, hub, phone, l)
	if u := hub.Usage(); u.Bytes != 1502+405+1007 || u.ZoneQuota != 2000 || u.DeviceQuota != DefaultDeviceQuota {
		t.Fatalf("usage %+v", u)
	}
	// Over the zone quota, the phone may still take over the hub's record
	// with a smaller value (the zone shrinks), and delete its own.
	putSettled(t, hub, phone, l, "hub/big", 10)
	if _, err := phone.Delete(BucketAppData, "app/a"); err != nil {
		t.Fatal(err)
	}
	waitSyncedOn(t, hub, phone, l)
	if phone.State().Refused != 1 {
		t.Fatalf("refused over the zone quota: %s", phone.State().LastRefused)
	}
	u := hub.Usage()
	if u.Bytes != 1502+17 || len(u.Nodes) != 2 || u.Nodes[0] != (NodeUsage{HubNode, 1502}) || u.Nodes[1] != (NodeUsage{"phone", 17}) {
		t.Fatalf("usage %+v", u)
	}
	l.stopClean(t, "phone")
}

// A push holding several edits is counted edit by edit, the refused ones
// leaving the others' verdicts alone; and a device that waits for the
// verdict on its edit gets it.
func TestQuotaWithinOnePush(t *testing.T) {
	dir := t.TempDir()
	hub := quotaHub(t, dir, 1000, 0)
	phone := openTestNode(t, dir, "phone", time.Now)
	// Offline edits go out together.
	for _, k := range []string{"app/1", "app/2", "app/3"} {
		if _, err := phone.Put(BucketAppData, k, []byte(strings.Repeat("x", 400))); err != nil {
			t.Fatal(err)
		}
	}
	w := phone.WatchVerdicts(BucketAppData, "app/4")
	defer w.Close()
	r4, err := phone.Put(BucketAppData, "app/4", []byte("small"))
	if err != nil {
		t.Fatal(err)
	}
	l := connect(hub, phone)
	if why := refusedAfter(t, hub, phone, l, 1); !strings.Contains(why, "appdata/app/3: over the device quota") {
		t.Fatalf("refusal %q", why)
	}
	ctx, cancel := context.WithTimeout(context.Background(), awaitTimeout)
	defer cancel()
	v, err := w.Wait(ctx, r4.Version)
	if err != nil || v.Status != PushAccepted || v.Seq == 0 {
		t.Fatalf("verdict %+v, %v", v, err)
	}
	w3 := phone.WatchVerdicts(BucketAppData, "app/5")
	defer w3.Close()
	r5, err := phone.Put(BucketAppData, "app/5", []byte(strings.Repeat("x", 400)))
	if err != nil {
		t.Fatal(err)
	}
	v, err = w3.Wait(ctx, r5.Version)
	if err != nil || v.Status != PushRefused || !strings.Contains(v.Reason, "device quota") {
		t.Fatalf("verdict %+v, %v", v, err)
	}
	if got := owned(hub, "phone"); got != 2*405+10 {
		t.Fatalf("phone owns %d", got)
	}
	l.stopClean(t, "phone")
}

// Usage follows the last writer: a device overwriting or deleting another
// device's record takes its bytes off that device's count; the hub's
// batches and compaction keep the count right (checkInvariants compares
// it with a count from scratch when each test ends).
func TestUsageMovesBetweenOwners(t *testing.T) {
	dir := t.TempDir()
	hub := quotaHub(t, dir, 0, 0)
	phone := openTestNode(t, dir, "phone", time.Now)
	laptop := openTestNode(t, dir, "laptop", time.Now)
	lp, ll := connect(hub, phone), connect(hub, laptop)
	putSettled(t, hub, phone, lp, "app/a", 100)
	putSettled(t, hub, phone, lp, "app/b", 100)
	waitSyncedOn(t, hub, laptop, ll)
	putSettled(t, hub, laptop, ll, "app/a", 30)
	if _, err := laptop.Delete(BucketAppData, "app/b"); err != nil {
		t.Fatal(err)
	}
	waitSyncedOn(t, hub, laptop, ll)
	if p, lt := owned(hub, "phone"), owned(hub, "laptop"); p != 0 || lt != 35 {
		t.Fatalf("phone owns %d, laptop %d; want 0 and 35", p, lt)
	}
	if _, err := hub.Apply([]Edit{{Bucket: BucketAppData, Key: "app/a", Value: []byte("h")}, {Bucket: BucketUserData, Key: "u", Value: []byte("12345")}}); err != nil {
		t.Fatal(err)
	}
	if lt, h, u := owned(hub, "laptop"), owned(hub, HubNode), hub.Usage(); lt != 0 || h != 6+6 || u.Bytes != h {
		t.Fatalf("laptop owns %d, hub %d, usage %+v", lt, h, u)
	}
	waitSyncedOn(t, hub, phone, lp)
	waitSyncedOn(t, hub, laptop, ll)
	lp.stopClean(t, "phone")
	ll.stopClean(t, "laptop")
	if _, err := hub.Compact([]string{"phone", "laptop"}); err != nil {
		t.Fatal(err)
	}
	before := hub.Usage()
	hub.restart(t)
	if after := hub.Usage(); after.Bytes != before.Bytes || len(after.Nodes) != len(before.Nodes) {
		t.Fatalf("usage %+v before the restart, %+v after", before, after)
	}
}

func TestFormatSize(t *testing.T) {
	for n, want := range map[int64]string{0: "0 B", 1023: "1023 B", 1024: "1 KiB", 1536: "1.5 KiB", 64 << 20: "64 MiB", 512<<20 + 1<<19: "512.5 MiB", 2000: "1.95 KiB", 3 << 30: "3 GiB"} {
		if got := FormatSize(n); got != want {
			t.Errorf("FormatSize(%d) = %q, want %q", n, got, want)
		}
	}
}
