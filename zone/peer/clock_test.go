package peer

import (
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/pzone/pzone/pairing"
	zsync "github.com/pzone/pzone/sync"
	"github.com/pzone/pzone/transport"
	"github.com/pzone/pzone/zone/api"
	"github.com/pzone/pzone/zone/policy"
)

// TestClockSkew (the fault matrix's row 9, in process: a daemon reads the
// real-time clock directly, which no namespace can shift, so the hub here
// runs on a clock 2 h off the device's). A device 2 h ahead of its hub
// pairs and has its session, and its edits are refused saying to set its
// clock right; a device 2 h behind pairs (its certificate begins in its
// future, but only the hub checks it), comes online and syncs.
func TestClockSkew(t *testing.T) {
	t.Run("device ahead", func(t *testing.T) {
		hubClock := &testClock{}
		hubClock.Set(-2 * time.Hour)
		h := startHub(t, hubClock, nil)
		devClock := &testClock{}
		dir := h.pair(t, devClock, "ahead", 0)
		startPeer(t, dir, devClock)
		waitPeer(t, dir, func(st *api.PeerStatus) bool { return st.State == "online" })
		st := waitPeer(t, dir, func(st *api.PeerStatus) bool { return strings.Contains(st.Sync.LastError, "clock") })
		t.Logf("fault row 9: a device 2 h ahead of its hub pairs and is online; its edits are refused: %q", st.Sync.LastError)
		if !strings.Contains(st.Sync.LastError, "set this device's clock right") {
			t.Errorf("sync: %q", st.Sync.LastError)
		}
	})
	t.Run("device behind", func(t *testing.T) {
		// The zone made long ago; the hub's clock runs 2 h ahead now.
		hubClock := &testClock{}
		h := startHub(t, hubClock, nil)
		hubClock.Set(2 * time.Hour)
		var inv api.InviteView
		if err := h.client().Do(testCtx(t), http.MethodPost, "/v1/invites", api.InviteRequest{Device: "behind"}, &inv); err != nil {
			t.Fatal(err)
		}
		tok, err := pairing.ParseToken(inv.Token)
		if err != nil {
			t.Fatal(err)
		}
		res, err := pairing.Pair(testCtx(t), tok, transport.ModeAuto)
		if err != nil {
			t.Fatalf("a device 2 h behind its hub does not pair: %v", err)
		}
		devClock := &testClock{}
		dir := t.TempDir()
		if err := SavePairing(dir, res, devClock.Now()); err != nil {
			t.Fatal(err)
		}
		startPeer(t, dir, devClock)
		waitPeer(t, dir, func(st *api.PeerStatus) bool { return st.State == "online" })
		if err := peerClient(dir).Do(testCtx(t), http.MethodPut, "/v1/data/appdata/app%2Fk", "from behind", nil); err != nil {
			t.Fatal(err)
		}
		st := waitPeer(t, dir, func(st *api.PeerStatus) bool {
			return st.State == "online" && st.Sync.Pending == 0 && st.Sync.Phase == "in sync"
		})
		t.Logf("fault row 9: a device 2 h behind its hub pairs, is online and syncs its edits (sync %+v)", st.Sync)
	})
	// Calls and wake pings need no agreement between the clocks: a call
	// carries a time left, not a deadline, and a device checks a ping's
	// stamp against its estimate of the hub's clock (from Welcome).
	for _, skew := range []time.Duration{2 * time.Hour, -2 * time.Hour} {
		t.Run("calls and wake pings, hub "+skew.String(), func(t *testing.T) {
			// The zone made on the hub's clock (ahead: long ago), as in
			// the tests above.
			hubClock := &testClock{}
			if skew < 0 {
				hubClock.Set(skew)
			}
			h := startHub(t, hubClock, nil)
			hubClock.Set(skew)
			devClock := &testClock{}
			phone, laptop := h.pair(t, devClock, "phone", 0), h.pair(t, devClock, "laptop", 0)
			startPeer(t, phone, devClock)
			startPeerWith(t, laptop, devClock, sleepy(300*time.Millisecond, transport.ModeQUIC))
			serveEcho(t, laptop)
			waitAsleep(t, laptop)
			ctx := testCtx(t)
			out, err := peerClient(phone).CallWith(ctx, api.CallRequestBody{To: "laptop/echo", Method: "echo", Body: []byte(`"hi"`), TTLMs: 20000})
			if err != nil || string(out) != `"hi"` {
				t.Fatalf("a call for later to a sleeping device, the hub's clock %v off: %s, %v", skew, out, err)
			}
			st := waitAsleep(t, laptop)
			if st.Wake.PingWakes != 1 || st.Wake.Pings.Accepted != 1 {
				t.Fatalf("wake counters: %+v", st.Wake)
			}
			t.Logf("fault row 9: the hub's clock %v off its devices': a call for later woke the sleeping device (ping accepted) and got its answer", skew)
		})
	}
	// A call to another zone is signed with the device's clock and checked
	// against the receiver's: 2 h off is stale there, and the caller is
	// told so.
	t.Run("cross-zone call from a device 2 h ahead", func(t *testing.T) {
		clock := &testClock{}
		alice := startHubNamed(t, clock, "alice", nil)
		bob := startHubNamed(t, clock, "bob", nil)
		phone := alice.pair(t, clock, "phone", 0)
		laptop := bob.pair(t, clock, "laptop", 0)
		ahead := &testClock{}
		ahead.Set(2 * time.Hour)
		startPeer(t, phone, ahead)
		startPeer(t, laptop, clock)
		serveEcho(t, laptop)
		befriend(t, bob, alice, "bob")
		waitRecord(t, phone, zsync.BucketFriends, bobZone(t, bob))
		putRule(t, bob, "alice-echo", policy.EffectAllow, "alice/phone/notes", "laptop/echo")
		waitRecord(t, laptop, zsync.BucketPolicy, "alice-echo")
		_, err := appClient(phone, "notes").Call(testCtx(t), "bob/laptop/echo", "echo", "hi")
		t.Logf("fault row 9: a cross-zone call from a device 2 h ahead: %v", err)
		if err == nil || !strings.Contains(err.Error(), "clock") {
			t.Fatalf("a call stamped 2 h ahead: %v, want a refusal that names the clock", err)
		}
		if st := waitPeer(t, laptop, func(st *api.PeerStatus) bool { return st.Envelopes.Stale >= 1 }); st.Envelopes.Accepted != 0 {
			t.Fatalf("laptop envelopes %+v", st.Envelopes)
		}
	})
}
