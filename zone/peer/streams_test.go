package peer

import (
	"bufio"
	"bytes"
	"context"
	"crypto/rand"
	"errors"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"runtime"
	"strings"
	"testing"
	"time"

	zsync "github.com/pzone/pzone/sync"
	"github.com/pzone/pzone/transport"
	"github.com/pzone/pzone/zone/api"
	"github.com/pzone/pzone/zone/appid"
	"github.com/pzone/pzone/zone/policy"
	"github.com/pzone/pzone/zone/token"
	"github.com/pzone/pzone/zone/wire"
)

// serveStreams serves info through c until the test ends, handing each
// stream to handle in a goroutine of its own.
func serveStreams(t *testing.T, c *api.Client, info api.ServiceInfo, handle func(*api.Stream)) {
	t.Helper()
	l, err := c.ListenWith(context.Background(), info)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })
	go func() {
		for {
			s, err := l.AcceptStream()
			if err != nil {
				return
			}
			go handle(s)
		}
	}()
}

// echoStream echoes a stream back, and ends its direction once the other
// end ends its own.
func echoStream(s *api.Stream) {
	defer s.Close()
	if _, err := io.Copy(s, s); err == nil {
		s.CloseWrite()
	}
}

// listenEcho serves a stream service on the device in dir as app until
// the test ends, echoing each stream (echoStream).
func listenEcho(t *testing.T, dir, app, service string) {
	t.Helper()
	serveStreams(t, appClient(dir, app), api.ServiceInfo{Name: service}, echoStream)
}

// roundTrip writes data to a stream, ends its direction, and reads
// everything back.
func roundTrip(t *testing.T, s *api.Stream, data []byte) []byte {
	t.Helper()
	errc := make(chan error, 1)
	go func() {
		_, err := s.Write(data)
		if err == nil {
			err = s.CloseWrite()
		}
		errc <- err
	}()
	got, err := io.ReadAll(s)
	if err != nil {
		t.Fatalf("read the echo: %v", err)
	}
	if err := <-errc; err != nil {
		t.Fatalf("write: %v", err)
	}
	return got
}

// TestStreamsThroughTheHub: an app dials another device's service and
// gets a net.Conn; what it writes comes back in order, half-close
// travels, a larger transfer keeps its bytes, and failures say why.
func TestStreamsThroughTheHub(t *testing.T) {
	for _, mode := range []transport.Mode{transport.ModeQUIC, transport.ModeTCP} {
		t.Run(string(mode), func(t *testing.T) {
			clock := &testClock{}
			hb := startHub(t, clock, nil)
			phone, laptop := hb.pair(t, clock, "phone", 0), hb.pair(t, clock, "laptop", 0)
			startPeerWith(t, phone, clock, func(c *Config) { c.Mode = mode })
			startPeerWith(t, laptop, clock, func(c *Config) { c.Mode = mode })
			waitSyncedPeer(t, phone)
			waitSyncedPeer(t, laptop)
			listenEcho(t, laptop, "shell", "ssh")
			waitRecord(t, phone, zsync.BucketApps, "laptop/shell")
			ctx := testCtx(t)
			c := appClient(phone, "term")

			s, err := c.Dial(ctx, "laptop/ssh")
			if err != nil {
				t.Fatal(err)
			}
			var _ net.Conn = s
			if got := roundTrip(t, s, []byte("hello")); string(got) != "hello" {
				t.Fatalf("echo %q", got)
			}
			s.Close()

			big := make([]byte, 3<<20+17)
			rand.Read(big)
			s, err = c.Dial(ctx, "laptop/ssh")
			if err != nil {
				t.Fatal(err)
			}
			if got := roundTrip(t, s, big); !bytes.Equal(got, big) {
				t.Fatalf("echo of %d bytes: got %d, not the same", len(big), len(got))
			}
			s.Close()

			// The same device, without the network.
			listenEcho(t, phone, "local", "loop")
			s, err = c.Dial(ctx, "phone/loop")
			if err != nil {
				t.Fatal(err)
			}
			if got := roundTrip(t, s, []byte("here")); string(got) != "here" {
				t.Fatalf("local echo %q", got)
			}
			s.Close()

			_, err = c.Dial(ctx, "laptop/nothing")
			wantStatus(t, err, http.StatusServiceUnavailable, `service "nothing" is not running on device "laptop"`)
			_, err = c.Dial(ctx, "desk/ssh")
			wantStatus(t, err, http.StatusNotFound, `no device "desk"`)
			serveEcho(t, laptop)
			_, err = c.Dial(ctx, "laptop/echo")
			wantStatus(t, err, http.StatusBadRequest, "takes calls and messages, not streams")
			_, err = c.Call(ctx, "laptop/ssh", "x", nil)
			wantStatus(t, err, http.StatusBadRequest, "takes streams")

			// The serving app closes without reading: the dialler's read
			// fails, saying so.
			l, err := appClient(laptop, "rude").Listen(ctx, "rude")
			if err != nil {
				t.Fatal(err)
			}
			defer l.Close()
			waitRecord(t, phone, zsync.BucketApps, "laptop/rude")
			go func() {
				if c, err := l.Accept(); err == nil {
					c.Close()
				}
			}()
			s, err = c.Dial(ctx, "laptop/rude")
			if err != nil {
				t.Fatal(err)
			}
			_, err = io.ReadAll(s)
			var se *api.StreamError
			if !errors.As(err, &se) || !strings.Contains(se.Message, "closed the stream") {
				t.Fatalf("read of a stream the other end closed: %v", err)
			}
			s.Close()
		})
	}
}

// wantCut reads s to its end and wants it cut with a reason containing
// want.
func wantCut(t *testing.T, s io.Reader, want string) {
	t.Helper()
	_, err := io.Copy(io.Discard, s)
	var se *api.StreamError
	if !errors.As(err, &se) || !strings.Contains(se.Message, want) {
		t.Fatalf("stream ended with %v, want it cut with %q", err, want)
	}
}

// TestStreamCuts: a service token's byte and duration limits, the
// operator ending the binding, and a revoked device cut streams, and both
// applications read why.
func TestStreamCuts(t *testing.T) {
	clock := &testClock{}
	hb := startHub(t, clock, nil)
	phone, laptop := hb.pair(t, clock, "phone", 0), hb.pair(t, clock, "laptop", 0)
	startPeer(t, phone, clock)
	startPeer(t, laptop, clock)
	waitSyncedPeer(t, phone)
	waitSyncedPeer(t, laptop)
	served := make(chan error, 8) // how each stream ended at the serving app
	serveStreams(t, appClient(laptop, "files"), api.ServiceInfo{Name: "sync", TokenRequired: true}, func(c *api.Stream) {
		// Echo until the read fails, and report why it did (a write can
		// fail first once the stream is cut).
		buf := make([]byte, 32<<10)
		for {
			n, err := c.Read(buf)
			if n > 0 {
				c.Write(buf[:n])
			}
			if err != nil {
				served <- err
				c.Close()
				return
			}
		}
	})
	waitRecord(t, phone, zsync.BucketApps, "laptop/files")
	ctx := testCtx(t)
	c := appClient(phone, "backup")

	_, err := c.Dial(ctx, "laptop/sync")
	wantStatus(t, err, http.StatusForbidden, "requires a token")

	// Bytes: the stream is cut once it passes the token's quota.
	small := issue(t, hb, api.TokenTemplateRequest{Name: "small", Limits: token.Limits{MaxBytesTotal: 100 << 10}}, 1, "")[0]
	s, err := c.DialWith(ctx, "laptop/sync", api.DialOptions{Token: small.Token})
	if err != nil {
		t.Fatal(err)
	}
	go func() {
		chunk := make([]byte, 16<<10)
		for {
			if _, err := s.Write(chunk); err != nil {
				return
			}
		}
	}()
	wantCut(t, s, "the binding ended: quota: 102400 bytes in all")
	s.Close()
	if err := <-served; err == nil || !strings.Contains(err.Error(), "quota: 102400 bytes in all") {
		t.Fatalf("the serving app's stream ended with %v", err)
	}

	// Duration.
	brief := issue(t, hb, api.TokenTemplateRequest{Name: "brief", Limits: token.Limits{MaxBinding: token.Duration(300 * time.Millisecond)}}, 1, "")[0]
	s, err = c.DialWith(ctx, "laptop/sync", api.DialOptions{Token: brief.Token})
	if err != nil {
		t.Fatal(err)
	}
	wantCut(t, s, "the binding ended: duration")
	s.Close()
	<-served

	// The operator ends the binding.
	open := issue(t, hb, api.TokenTemplateRequest{Name: "open"}, 1, "")[0]
	s, err = c.DialWith(ctx, "laptop/sync", api.DialOptions{Token: open.Token})
	if err != nil {
		t.Fatal(err)
	}
	bs := waitBindings(t, hb, false, func(bs []api.BindingView) bool { return len(bs) == 1 })
	if err := hb.client().Do(ctx, http.MethodPost, "/v1/bindings/"+bs[0].ID+"/end", nil, nil); err != nil {
		t.Fatal(err)
	}
	wantCut(t, s, "ended by the hub operator")
	s.Close()
	<-served

	// Revoking the serving device cuts its streams.
	s, err = c.DialWith(ctx, "laptop/sync", api.DialOptions{Token: open.Token})
	if err != nil {
		t.Fatal(err)
	}
	if got := roundTripOpen(t, s, "still"); got != "still" {
		t.Fatalf("echo %q", got)
	}
	if err := hb.client().Do(ctx, http.MethodPost, "/v1/devices/laptop/revoke", nil, nil); err != nil {
		t.Fatal(err)
	}
	wantCut(t, s, `device "laptop" went offline (revoked)`)
	s.Close()
}

// roundTripOpen writes msg and reads as much back, leaving the stream open.
func roundTripOpen(t *testing.T, s *api.Stream, msg string) string {
	t.Helper()
	if _, err := s.Write([]byte(msg)); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, len(msg))
	if _, err := io.ReadFull(s, buf); err != nil {
		t.Fatal(err)
	}
	return string(buf)
}

// TestStreamsDirect: with a direct path between the devices a stream
// takes it, in both transports; when the path dies mid-stream, the stream
// ends with an error and the next Dial goes through the hub.
func TestStreamsDirect(t *testing.T) {
	for _, mode := range []transport.Mode{transport.ModeQUIC, transport.ModeTCP} {
		t.Run(string(mode), func(t *testing.T) {
			z, _ := startDirectZone(t, mode)
			listenEcho(t, z.laptop, "shell", "ssh")
			waitRecord(t, z.phone, zsync.BucketApps, "laptop/shell")
			ctx := testCtx(t)
			c := appClient(z.phone, "term")
			s, err := c.Dial(ctx, "laptop/ssh")
			if err != nil {
				t.Fatal(err)
			}
			if got := roundTripOpen(t, s, "direct"); got != "direct" {
				t.Fatalf("echo %q", got)
			}
			st := waitPeer(t, z.phone, func(s *api.PeerStatus) bool { return true })
			if st.Direct.CallsDirect != 1 || st.Direct.CallsHub != 0 {
				t.Fatalf("the stream did not go direct: %+v", st.Direct)
			}
			// The direct path dies under the stream: it is cut, saying so.
			z.laptopPr.direct.ln.Close()
			z.laptopPr.direct.closeAll(wire.ReasonShutdown, "cut by the test")
			wantCut(t, s, `device "`)
			s.Close()
			// The next one goes through the hub.
			s, err = c.Dial(ctx, "laptop/ssh")
			if err != nil {
				t.Fatal(err)
			}
			if got := roundTrip(t, s, []byte("via the hub")); string(got) != "via the hub" {
				t.Fatalf("echo %q", got)
			}
			s.Close()
			if st := waitPeer(t, z.phone, func(s *api.PeerStatus) bool { return true }); st.Direct.CallsHub == 0 {
				t.Fatalf("after the cut: %+v", st.Direct)
			}
		})
	}
}

// TestFederatedStream: a stream to a friend zone's device needs both
// zones' policies, names its opener as the serving zone names it, and
// is signed at both ends.
func TestFederatedStream(t *testing.T) {
	clock := &testClock{}
	alice := startHubNamed(t, clock, "alice", nil)
	bob := startHubNamed(t, clock, "bob", nil)
	phone := alice.pair(t, clock, "phone", 0)
	laptop := bob.pair(t, clock, "laptop", 0)
	startPeer(t, phone, clock)
	startPeer(t, laptop, clock)
	befriend(t, bob, alice, "bob")
	waitRecord(t, phone, zsync.BucketFriends, bobZone(t, bob))
	peers := make(chan string, 4)
	serveStreams(t, appClient(laptop, "shell"), api.ServiceInfo{Name: "ssh"}, func(c *api.Stream) {
		peers <- c.Peer()
		echoStream(c)
	})
	ctx := testCtx(t)
	c := appClient(phone, "term")

	// bob's policy: nothing for other zones by default.
	_, err := c.Dial(ctx, "bob/laptop/ssh")
	wantStatus(t, err, http.StatusForbidden, `denied by zone "bob"'s policy`)
	putRule(t, bob, "alice-ssh", policy.EffectAllow, "alice/phone/term", "laptop/ssh")
	waitRecord(t, laptop, zsync.BucketPolicy, "alice-ssh")
	s, err := c.Dial(ctx, "bob/laptop/ssh")
	if err != nil {
		t.Fatal(err)
	}
	if got := roundTrip(t, s, []byte("across zones")); string(got) != "across zones" {
		t.Fatalf("echo %q", got)
	}
	s.Close()
	if p := <-peers; p != "alice/phone/term" {
		t.Fatalf("the serving app sees %q", p)
	}
	if st := waitPeer(t, laptop, func(st *api.PeerStatus) bool { return st.Envelopes.Accepted >= 1 }); st.Envelopes.Forged != 0 {
		t.Fatalf("laptop envelopes %+v", st.Envelopes)
	}
	// Another app of the phone is not what bob's rule names.
	_, err = appClient(phone, "games").Dial(ctx, "bob/laptop/ssh")
	wantStatus(t, err, http.StatusForbidden, "denied")
	// alice's own policy, for calls out, is the other end.
	putRule(t, alice, "no-out", policy.EffectDeny, "alice/phone/term", "*")
	waitRecord(t, phone, zsync.BucketPolicy, "no-out")
	_, err = c.Dial(ctx, "bob/laptop/ssh")
	// The phone's own check and alice's hub both hold the rule; which
	// says so first depends on when the phone's engine took the record
	// it stored, so either answer is right ("the caller's policy", or
	// "zone alice's policy for calls out").
	wantStatus(t, err, http.StatusForbidden, "policy")
	if !strings.Contains(err.Error(), "caller's policy") && !strings.Contains(err.Error(), `zone "alice"'s policy for calls out`) {
		t.Fatalf("denied, but not by alice's rule: %v", err)
	}
}

// TestStreamBackpressure: a reader that stops reading stops the writer
// at the other end (every hop holds a bounded amount, nothing queues
// without end); once it reads again, every byte arrives, in order.
// Cancelling either end cuts the stream at the other.
func TestStreamBackpressure(t *testing.T) {
	clock := &testClock{}
	hb := startHub(t, clock, nil)
	phone, laptop := hb.pair(t, clock, "phone", 0), hb.pair(t, clock, "laptop", 0)
	startPeer(t, phone, clock)
	startPeer(t, laptop, clock)
	waitSyncedPeer(t, phone)
	waitSyncedPeer(t, laptop)
	accepted := make(chan *api.Stream, 2)
	serveStreams(t, appClient(laptop, "sink"), api.ServiceInfo{Name: "sink"}, func(c *api.Stream) { accepted <- c })
	waitRecord(t, phone, zsync.BucketApps, "laptop/sink")
	ctx := testCtx(t)
	c := appClient(phone, "src")
	s, err := c.Dial(ctx, "laptop/sink")
	if err != nil {
		t.Fatal(err)
	}
	sink := <-accepted

	// The sink does not read: the writer blocks once the hops' windows
	// and buffers are full. (Each window is a few MiB; without
	// backpressure it would write all of limit.)
	const limit = 96 << 20
	var heap0 runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&heap0)
	chunk := make([]byte, 32<<10)
	seq := byte(0)
	written := 0
	for written < limit {
		for i := range chunk {
			chunk[i] = seq
			seq++
		}
		s.SetWriteDeadline(time.Now().Add(5 * time.Second))
		n, err := s.Write(chunk)
		written += n
		if err != nil {
			var ne net.Error
			if !errors.As(err, &ne) || !ne.Timeout() {
				t.Fatalf("write: %v", err)
			}
			break
		}
	}
	if written >= limit {
		t.Fatalf("wrote %d bytes to a reader that reads nothing: no backpressure", written)
	}
	var heap1 runtime.MemStats
	runtime.ReadMemStats(&heap1)
	t.Logf("blocked after %d KiB in flight; heap %d -> %d KiB", written>>10, heap0.HeapInuse>>10, heap1.HeapInuse>>10)
	if grew := int64(heap1.HeapInuse) - int64(heap0.HeapInuse); grew > 64<<20 {
		t.Fatalf("heap grew %d MiB while the stream was blocked", grew>>20)
	}
	// A write that timed out leaves the stream out of step: the dialler
	// can only cut it. Before that, the sink reads what did arrive, in
	// order. (The last, partial frame does not arrive.)
	go func() {
		buf := make([]byte, 64<<10)
		want := byte(0)
		total := 0
		for total < written-len(chunk) {
			n, err := sink.Read(buf)
			for _, b := range buf[:n] {
				if b != want {
					t.Errorf("byte %d is %d, want %d", total, b, want)
					return
				}
				want++
				total++
			}
			if err != nil {
				t.Errorf("read after %d bytes: %v", total, err)
				return
			}
		}
		sink.Close() // before the end: the dialler is told
	}()
	s.SetDeadline(time.Time{})
	wantCut(t, s, "the application at the other end closed the stream")
	s.Close()
}

// TestStreamsFromPython: the HTTP upgrade on pzp.sock, used from Python's
// standard library: it dials a Go app's stream, and serves one that a Go
// app dials.
func TestStreamsFromPython(t *testing.T) {
	python, err := exec.LookPath("python3")
	if err != nil {
		t.Skip("python3 is not installed: the non-Go client of streams is not tested")
	}
	clock := &testClock{}
	hb := startHub(t, clock, nil)
	phone, laptop := hb.pair(t, clock, "phone", 0), hb.pair(t, clock, "laptop", 0)
	startPeer(t, phone, clock)
	startPeer(t, laptop, clock)
	waitSyncedPeer(t, phone)
	waitSyncedPeer(t, laptop)
	listenEcho(t, laptop, "shell", "ssh")
	waitRecord(t, phone, zsync.BucketApps, "laptop/shell")
	ctx := testCtx(t)
	cred, err := appid.Open(phone).Add("py", time.Now())
	if err != nil {
		t.Fatal(err)
	}
	sock := api.SocketPath(phone, api.PeerSocketName)
	out, err := exec.CommandContext(ctx, python, "testdata/stream_client.py", sock, cred, "dial", "laptop/ssh", "hello from python").CombinedOutput()
	if err != nil || strings.TrimSpace(string(out)) != "peer laptop/ssh echoed hello from python" {
		t.Fatalf("python dial: %s, %v", out, err)
	}

	srv := exec.CommandContext(ctx, python, "testdata/stream_client.py", sock, cred, "listen", "upper", "1")
	stdout, err := srv.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	srv.Stderr = os.Stderr
	if err := srv.Start(); err != nil {
		t.Fatal(err)
	}
	defer srv.Wait()
	defer srv.Process.Kill()
	lines := bufio.NewScanner(stdout)
	if !lines.Scan() || lines.Text() != "listening" {
		t.Fatalf("python listener: %q", lines.Text())
	}
	s, err := appClient(laptop, "caller").Dial(ctx, "phone/upper")
	if err != nil {
		t.Fatal(err)
	}
	if got := roundTrip(t, s, []byte("shout")); string(got) != "SHOUT" {
		t.Fatalf("python served %q", got)
	}
	s.Close()
	if !lines.Scan() || lines.Text() != "served alice/laptop/caller" {
		t.Fatalf("python listener: %q", lines.Text())
	}
}

// TestStreamCancelAndHubHosted: a dialler that closes before the end cuts
// the stream at the serving app, which reads why; a service on the hub's
// host takes streams too (pzh.sock's Listen).
func TestStreamCancelAndHubHosted(t *testing.T) {
	clock := &testClock{}
	hb := startHub(t, clock, nil)
	phone, laptop := hb.pair(t, clock, "phone", 0), hb.pair(t, clock, "laptop", 0)
	startPeer(t, phone, clock)
	startPeer(t, laptop, clock)
	waitSyncedPeer(t, phone)
	waitSyncedPeer(t, laptop)
	ctx := testCtx(t)
	got := make(chan error, 1)
	serveStreams(t, appClient(laptop, "svc"), api.ServiceInfo{Name: "svc"}, func(s *api.Stream) {
		_, err := io.Copy(io.Discard, s)
		got <- err
		s.Close()
	})
	s, err := appClient(phone, "app").Dial(ctx, "laptop/svc")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.Write([]byte("partial")); err != nil {
		t.Fatal(err)
	}
	s.Close() // before reading anything: a cancellation
	err = <-got
	var se *api.StreamError
	if !errors.As(err, &se) || !strings.Contains(se.Message, "closed the stream") {
		t.Fatalf("the serving app's read after the dialler cancelled: %v", err)
	}

	serveStreams(t, hb.client(), api.ServiceInfo{Name: "hubsvc"}, echoStream)
	s, err = appClient(phone, "app").Dial(ctx, "hub/hubsvc")
	if err != nil {
		t.Fatal(err)
	}
	if got := roundTrip(t, s, []byte("to the hub's host")); string(got) != "to the hub's host" {
		t.Fatalf("echo %q", got)
	}
	s.Close()
}

// TestStreamBudget: byte streams held open take at most
// wire.StreamsPerSession of a session's streams, at the device that opens
// them and at the hub for the device they go to; past that, a dial is
// refused saying why, and calls still go through both ways.
func TestStreamBudget(t *testing.T) {
	for _, mode := range []transport.Mode{transport.ModeQUIC, transport.ModeTCP} {
		t.Run(string(mode), func(t *testing.T) {
			clock := &testClock{}
			hb := startHub(t, clock, nil)
			phone, tablet, laptop := hb.pair(t, clock, "phone", 0), hb.pair(t, clock, "tablet", 0), hb.pair(t, clock, "laptop", 0)
			for _, d := range []string{phone, tablet, laptop} {
				startPeerWith(t, d, clock, func(c *Config) { c.Mode = mode })
				waitSyncedPeer(t, d)
			}
			listenEcho(t, laptop, "shell", "ssh")
			serveEcho(t, laptop)
			waitRecord(t, phone, zsync.BucketApps, "laptop/shell")
			waitRecord(t, tablet, zsync.BucketApps, "laptop/demo")
			ctx := testCtx(t)
			fromPhone, fromTablet := appClient(phone, "term"), appClient(tablet, "term")

			open := make([]*api.Stream, 0, wire.StreamsPerSession)
			defer func() {
				for _, s := range open {
					s.Close()
				}
			}()
			for range wire.StreamsPerSession {
				s, err := fromPhone.Dial(ctx, "laptop/ssh")
				if err != nil {
					t.Fatalf("stream %d: %v", len(open)+1, err)
				}
				open = append(open, s)
			}
			_, err := fromPhone.Dial(ctx, "laptop/ssh")
			wantStatus(t, err, http.StatusServiceUnavailable, "this device has 256 byte streams open through the hub")
			_, err = fromTablet.Dial(ctx, "laptop/ssh")
			wantStatus(t, err, http.StatusServiceUnavailable, `device "laptop" has 256 byte streams open`)
			for _, c := range []*api.Client{fromPhone, fromTablet} {
				if out, err := c.Call(ctx, "laptop/echo", "echo", "still"); err != nil || string(out) != `"still"` {
					t.Fatalf("a call beside the open streams: %s, %v", out, err)
				}
			}
			if got := roundTrip(t, open[0], []byte("held")); string(got) != "held" {
				t.Fatalf("echo on a held stream: %q", got)
			}

			// Once one ends, the next dial goes through (the hub counts
			// it out when its relay is over, a moment after).
			open[0].Close()
			open = open[1:]
			for {
				s, err := fromTablet.Dial(ctx, "laptop/ssh")
				if err == nil {
					if got := roundTrip(t, s, []byte("next")); string(got) != "next" {
						t.Fatalf("echo on the next stream: %q", got)
					}
					s.Close()
					break
				}
				wantStatus(t, err, http.StatusServiceUnavailable, `device "laptop" has 256 byte streams open`)
				select {
				case <-ctx.Done():
					t.Fatal("a stream ended, and the hub still refuses the next")
				case <-time.After(10 * time.Millisecond):
				}
			}
		})
	}
}
