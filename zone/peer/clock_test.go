package peer

import (
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/pzone/pzone/pairing"
	"github.com/pzone/pzone/transport"
	"github.com/pzone/pzone/zone/api"
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
}
