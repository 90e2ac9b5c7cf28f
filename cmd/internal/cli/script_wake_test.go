package cli

import (
	"encoding/hex"
	"fmt"
	"net"
	"strconv"

	"github.com/pzone/pzone/zone/api"
	"github.com/rogpeppe/go-internal/testscript"
)

// Commands for the wakeup scripts.

// udpsend ADDR HEX...: send each HEX as one UDP datagram to ADDR, back to
// back, from one socket.
func cmdUDPSend(ts *testscript.TestScript, neg bool, args []string) {
	if neg || len(args) < 2 {
		ts.Fatalf("usage: udpsend ADDR HEX...")
	}
	c, err := net.Dial("udp", args[0])
	ts.Check(err)
	defer c.Close()
	for _, h := range args[1:] {
		b, err := hex.DecodeString(h)
		ts.Check(err)
		_, err = c.Write(b)
		ts.Check(err)
	}
}

// waitpings DIR VERDICT N: wait until the pzp in DIR has counted at least N
// wake datagrams with VERDICT (accepted, forged, stale, replayed,
// malformed), then print its state and counters.
func cmdWaitPings(ts *testscript.TestScript, neg bool, args []string) {
	if neg || len(args) != 3 {
		ts.Fatalf("usage: waitpings DIR VERDICT N")
	}
	want, err := strconv.ParseUint(args[2], 10, 64)
	ts.Check(err)
	var n uint64
	st := waitPeerStatus(ts, args[0], "waitpings", func(st *api.PeerStatus) bool {
		if st.Wake == nil {
			ts.Fatalf("waitpings: %s does not sleep (no --sleep-after)", args[0])
		}
		p := st.Wake.Pings
		got := map[string]uint64{"accepted": p.Accepted, "forged": p.Forged, "stale": p.Stale, "replayed": p.Replayed, "malformed": p.Malformed}
		var ok bool
		if n, ok = got[args[1]]; !ok {
			ts.Fatalf("waitpings: unknown verdict %q", args[1])
		}
		return n >= want
	})
	p := st.Wake.Pings
	fmt.Fprintf(ts.Stdout(), "state %s; pings accepted %d forged %d stale %d replayed %d malformed %d; woken %d\n",
		st.State, p.Accepted, p.Forged, p.Stale, p.Replayed, p.Malformed, st.Wake.PingWakes)
}

// maybe PROG ARGS...: run a program whose success or failure the script
// does not depend on (e.g. a wake ping that the rate cap may hold back).
func cmdMaybe(ts *testscript.TestScript, neg bool, args []string) {
	if neg || len(args) < 1 {
		ts.Fatalf("usage: maybe PROG ARGS...")
	}
	if err := ts.Exec(args[0], args[1:]...); err != nil {
		fmt.Fprintf(ts.Stdout(), "maybe: %v\n", err)
	}
}
