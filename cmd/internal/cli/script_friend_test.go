package cli

import (
	"fmt"
	"strconv"

	"github.com/pzone/pzone/zone/api"
	"github.com/rogpeppe/go-internal/testscript"
)

// waitenvelopes DIR VERDICT N: wait until the pzp of DIR has counted at
// least N signed envelopes from friend zones with VERDICT (accepted,
// forged, stale, replayed, unknown).
func cmdWaitEnvelopes(ts *testscript.TestScript, neg bool, args []string) {
	if neg || len(args) != 3 {
		ts.Fatalf("usage: waitenvelopes DIR VERDICT N")
	}
	want, err := strconv.ParseUint(args[2], 10, 64)
	ts.Check(err)
	count := func(st *api.PeerStatus) uint64 {
		e := st.Envelopes
		got := map[string]uint64{"accepted": e.Accepted, "forged": e.Forged, "stale": e.Stale, "replayed": e.Replayed, "unknown": e.Unknown}
		n, ok := got[args[1]]
		if !ok {
			ts.Fatalf("waitenvelopes: unknown verdict %q", args[1])
		}
		return n
	}
	st := waitPeerStatus(ts, args[0], "waitenvelopes", func(st *api.PeerStatus) bool { return count(st) >= want })
	e := st.Envelopes
	fmt.Fprintf(ts.Stdout(), "envelopes accepted %d forged %d stale %d replayed %d unknown %d\n", e.Accepted, e.Forged, e.Stale, e.Replayed, e.Unknown)
}
