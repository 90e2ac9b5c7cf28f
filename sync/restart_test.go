package sync

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"testing"
	"time"
)

// What the hub acknowledged — its own edits once Put returned, a device's
// once accepted — survives a restart; a device resuming after the restart
// is not sent everything again, only what changed.
func TestHubRestartDurable(t *testing.T) {
	dir := t.TempDir()
	hub := openTestNode(t, dir, HubNode, time.Now)
	phone := openTestNode(t, dir, "phone", time.Now)
	for i := range 3 {
		if _, err := hub.Put(BucketAppData, fmt.Sprintf("app/h%d", i), []byte("hub")); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := hub.Delete(BucketAppData, "app/h2"); err != nil {
		t.Fatal(err)
	}
	l := connect(hub, phone)
	if _, err := phone.Put(BucketAppData, "app/p", []byte("phone")); err != nil {
		t.Fatal(err)
	}
	if _, err := phone.Put(BucketDevices, "phone", []byte("me")); err != nil {
		t.Fatal(err)
	}
	waitSyncedOn(t, hub, phone, l)
	l.stopClean(t, "phone")

	epoch, head := hub.epoch(t), hub.Head()
	want := dump(t, hub.Store)
	wantRecs := records(t, hub.Store)

	// A crash: the file as it is on disk while the hub still has it open.
	crashed := filepath.Join(t.TempDir(), FileName)
	if b, err := os.ReadFile(hub.path); err != nil {
		t.Fatal(err)
	} else if err := os.WriteFile(crashed, b, 0o600); err != nil {
		t.Fatal(err)
	}
	cs, err := OpenHub(crashed, Options{})
	if err != nil {
		t.Fatal(err)
	}
	if got := dump(t, cs); fmt.Sprint(got) != fmt.Sprint(want) || cs.Head() != head {
		t.Errorf("after a crash the hub has %v at %d, want %v at %d", got, cs.Head(), want, head)
	}
	checkInvariants(t, cs)
	cs.Close()

	hub.restart(t)
	if hub.epoch(t) != epoch || hub.Head() != head {
		t.Fatalf("after the restart: epoch %s head %d, before %s %d", hub.epoch(t), hub.Head(), epoch, head)
	}
	if got := dump(t, hub.Store); fmt.Sprint(got) != fmt.Sprint(want) {
		t.Fatalf("after the restart the hub has %v, before %v", got, want)
	}
	if got := records(t, hub.Store); fmt.Sprint(got) != fmt.Sprint(wantRecs) {
		t.Fatalf("records changed in the restart:\n%v\n%v", got, wantRecs)
	}

	// The hub's clock went back while it was down: its edits still win
	// over the ones it accepted before.
	clock := newFakeClock()
	clock.Set(time.Now().Add(-time.Hour))
	hub.opts.Now = clock.Now
	hub.restart(t)
	if _, err := hub.Put(BucketAppData, "app/p", []byte("hub, after the restart")); err != nil {
		t.Fatal(err)
	}
	if _, err := hub.Put(BucketAppData, "app/new", []byte("new")); err != nil {
		t.Fatal(err)
	}

	p := newTap()
	l = connectWith(hub, phone, p.attach)
	waitSyncedOn(t, hub, phone, l)
	l.stopClean(t, "phone")
	if p.start(t).Reset {
		t.Error("the phone got a full resync from the same hub after its restart")
	}
	if st := phone.State(); st.Received != 2 {
		t.Errorf("the phone received %d records, want the 2 new ones", st.Received)
	}
	want["appdata/app/p"], want["appdata/app/new"] = "hub, after the restart", "new"
	if got := sameState(t, hub, phone); fmt.Sprint(got) != fmt.Sprint(want) {
		t.Fatalf("state %v, want %v", got, want)
	}
}

// A device meets a hub whose store is new (rebuilt from scratch: another
// epoch) with the zone's proof that it was replaced on purpose. It gets a
// full resync: the records of the old hub go, its own edits not yet
// accepted stay and are pushed to the new hub.
func TestNewHubEpoch(t *testing.T) {
	hub2, phone, p := newEpochSetup(t)
	hub2.SetEpochProof([]byte("signed"))
	phone.opts.CheckEpoch = func(epoch string, proof []byte) error {
		if epoch != hub2.Epoch() || string(proof) != "signed" {
			return fmt.Errorf("proof %q for %s", proof, epoch)
		}
		return nil
	}
	phone.restart(t)
	l := connectWith(hub2, phone, p.attach)
	waitSyncedOn(t, hub2, phone, l)
	l.stopClean(t, "phone")
	if !p.start(t).Reset {
		t.Error("no full resync with a new hub")
	}
	if phone.epoch(t) != hub2.epoch(t) {
		t.Error("the phone does not hold the new hub's epoch")
	}
	want := map[string]string{"appdata/app/b": "phone's b", "appdata/app/fresh": "new hub", "appdata/app/mine": "pending"}
	if got := sameState(t, hub2, phone); fmt.Sprint(got) != fmt.Sprint(want) {
		t.Fatalf("state %v, want %v", got, want)
	}
	if st := phone.State(); st.FullResync || st.Refused != 0 || st.LastSeq != hub2.Head() {
		t.Errorf("phone state %+v", st)
	}
}

// A hub that lost its store and started a new one, without the zone's
// proof (or with a proof the device does not accept), cannot make the
// devices that reconnect drop their copies: the device refuses the sync
// and keeps every record, until the hub's state is put back.
func TestNewHubEpochUnproven(t *testing.T) {
	for _, tc := range []struct {
		name  string
		proof []byte
		check func(string, []byte) error
	}{
		{"no proof, no check", nil, nil},
		{"no proof", nil, func(string, []byte) error { return errors.New("no proof") }},
		{"bad proof", []byte("forged"), func(string, []byte) error { return errors.New("bad signature") }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			hub2, phone, _ := newEpochSetup(t)
			hub2.SetEpochProof(tc.proof)
			phone.opts.CheckEpoch = tc.check
			phone.restart(t)
			before := dump(t, phone.Store)
			l := connect(hub2, phone)
			_, err := l.wait(t)
			if !errors.Is(err, ErrEpochUnproven) {
				t.Fatalf("device side ended with %v, want ErrEpochUnproven", err)
			}
			t.Log(err)
			if got := dump(t, phone.Store); fmt.Sprint(got) != fmt.Sprint(before) {
				t.Fatalf("the device's copy changed: %v, was %v", got, before)
			}
			if phone.State().Pending != 2 {
				t.Errorf("pending edits %d, want 2", phone.State().Pending)
			}
			if _, ok, _ := hub2.Get(BucketAppData, "app/mine"); ok {
				t.Error("the device pushed its edits to a hub it does not trust")
			}
		})
	}
}

// newEpochSetup: a phone synced with a first hub (app/a, b, c), then made
// two edits offline; a second hub, of another epoch, holds app/fresh. The
// phone reopens with its options as set before connecting.
func newEpochSetup(t *testing.T) (hub2, phone *testNode, p *tap) {
	dir := t.TempDir()
	hub := openTestNode(t, dir, HubNode, time.Now)
	phone = openTestNode(t, dir, "phone", time.Now)
	for _, k := range []string{"app/a", "app/b", "app/c"} {
		if _, err := hub.Put(BucketAppData, k, []byte("old hub")); err != nil {
			t.Fatal(err)
		}
	}
	l := connect(hub, phone)
	waitSyncedOn(t, hub, phone, l)
	l.stopClean(t, "phone")
	hub.close(t)

	// Offline: a new key, and an edit of a key the old hub had.
	if _, err := phone.Put(BucketAppData, "app/mine", []byte("pending")); err != nil {
		t.Fatal(err)
	}
	if _, err := phone.Put(BucketAppData, "app/b", []byte("phone's b")); err != nil {
		t.Fatal(err)
	}

	hub2 = openTestNode(t, t.TempDir(), HubNode, time.Now)
	if _, err := hub2.Put(BucketAppData, "app/fresh", []byte("new hub")); err != nil {
		t.Fatal(err)
	}
	return hub2, phone, newTap()
}
