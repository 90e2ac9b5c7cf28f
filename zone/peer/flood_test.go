package peer

import (
	"net"
	"net/http"
	"syscall"
	"testing"
	"time"

	"github.com/pzone/pzone/pairing"
	"github.com/pzone/pzone/transport"
	"github.com/pzone/pzone/zone/api"
)

// floodSockets is how many idle TCP sockets the flood holds: the review
// that found the fault kept a TCP-only device out with 800.
const floodSockets = 1000

// A hub whose TCP port is held by a thousand idle sockets (connected,
// sending nothing, from many loopback addresses and from the device's
// own) still pairs a TCP-only device and brings its session online.
func TestTCPDeviceDuringHandshakeFlood(t *testing.T) {
	var rl syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &rl); err == nil && rl.Cur < 3*floodSockets {
		if rl.Max < 3*floodSockets {
			t.Skipf("the file descriptor limit (%d) is too low to hold %d sockets on both ends", rl.Max, floodSockets)
		}
		raised := rl
		raised.Cur = 3 * floodSockets
		if err := syscall.Setrlimit(syscall.RLIMIT_NOFILE, &raised); err != nil {
			t.Skipf("cannot raise the file descriptor limit: %v", err)
		}
		defer syscall.Setrlimit(syscall.RLIMIT_NOFILE, &rl)
	}
	clock := &testClock{}
	hb := startHub(t, clock, nil)
	var inv api.InviteView
	if err := hb.client().Do(testCtx(t), http.MethodPost, "/v1/invites", api.InviteRequest{Device: "phone"}, &inv); err != nil {
		t.Fatal(err)
	}
	tok, err := pairing.ParseToken(inv.Token)
	if err != nil {
		t.Fatal(err)
	}

	var idle []net.Conn
	defer func() {
		for _, c := range idle {
			c.Close()
		}
	}()
	_, port, err := net.SplitHostPort(hb.addr.String())
	if err != nil {
		t.Fatal(err)
	}
	for i := range floodSockets {
		// Most from other addresses, every tenth from the device's own.
		src := net.IPv4(127, 0, 1+byte(i/250), 1+byte(i%250))
		if i%10 == 0 {
			src = net.IPv4(127, 0, 0, 1)
		}
		d := net.Dialer{LocalAddr: &net.TCPAddr{IP: src}, Timeout: 10 * time.Second}
		c, err := d.Dial("tcp", net.JoinHostPort("127.0.0.1", port))
		if err != nil {
			t.Fatalf("idle socket %d: %v", i, err)
		}
		idle = append(idle, c)
	}

	start := time.Now()
	res, err := pairing.Pair(testCtx(t), tok, transport.ModeTCP)
	if err != nil {
		t.Fatalf("pairing over TCP during the flood: %v", err)
	}
	paired := time.Since(start)
	dir := t.TempDir()
	if err := SavePairing(dir, res, clock.Now()); err != nil {
		t.Fatal(err)
	}
	start = time.Now()
	startPeerWith(t, dir, clock, func(c *Config) { c.Mode = transport.ModeTCP })
	waitPeer(t, dir, func(s *api.PeerStatus) bool { return s.State == "online" })
	t.Logf("with %d idle sockets held: paired over TCP in %v, session online in %v", floodSockets, paired.Round(time.Millisecond), time.Since(start).Round(time.Millisecond))
}
