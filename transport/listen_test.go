package transport

import (
	"bytes"
	"context"
	"crypto/rand"
	"errors"
	"net"
	"runtime"
	"strconv"
	"strings"
	"testing"
	"time"
)

func TestListenBothSamePort(t *testing.T) {
	pki := newPKI(t)
	log := newTestLogger(t)
	l, err := ListenBoth("127.0.0.1:0", Config{TLS: pki.serverTLS(), Logger: log})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })
	taddr, ok := l.Addr().(*net.TCPAddr)
	if !ok || taddr.Port == 0 {
		t.Fatalf("Addr() = %v, want the bound TCP address", l.Addr())
	}

	ccfg := Config{TLS: pki.clientTLS(), Logger: log}
	for _, kind := range kinds {
		client, server := dialAccept(t, l, kind, ccfg)
		if client.Kind() != kind || server.Kind() != kind {
			t.Errorf("dialled %s, got client %s, server %s", kind, client.Kind(), server.Kind())
		}
		if got := server.LocalAddr().String(); !strings.HasSuffix(got, ":"+strconv.Itoa(taddr.Port)) {
			t.Errorf("%s connection arrived on %s, want port %d", kind, got, taddr.Port)
		}
	}
}

func TestListenBothKinds(t *testing.T) {
	pki := newPKI(t)
	cfg := Config{TLS: pki.serverTLS()}
	l, err := ListenBoth("127.0.0.1:0", cfg, KindTCP)
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	if _, ok := l.Addr().(*net.TCPAddr); !ok {
		t.Errorf("TCP-only Addr() = %T", l.Addr())
	}
	l2, err := ListenBoth("127.0.0.1:0", cfg, KindQUIC)
	if err != nil {
		t.Fatal(err)
	}
	defer l2.Close()
	if _, ok := l2.Addr().(*net.UDPAddr); !ok {
		t.Errorf("QUIC-only Addr() = %T", l2.Addr())
	}
	if _, err := ListenBoth("127.0.0.1:0", cfg, "sctp"); err == nil {
		t.Error("unknown kind accepted")
	}
}

func TestListenBothExplicitPortInUse(t *testing.T) {
	pki := newPKI(t)
	udp, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	defer udp.Close()
	addr := udp.LocalAddr().String()
	if l, err := ListenBoth(addr, Config{TLS: pki.serverTLS()}); err == nil {
		l.Close()
		t.Fatalf("ListenBoth(%s) succeeded although the UDP port is taken", addr)
	}
	// The TCP side it bound first was released again.
	tl, err := net.Listen("tcp", addr)
	if err != nil {
		t.Fatalf("TCP port left bound after a failed ListenBoth: %v", err)
	}
	tl.Close()
}

func TestDialAutoPrefersQUIC(t *testing.T) {
	pki := newPKI(t)
	l, err := ListenBoth("127.0.0.1:0", Config{TLS: pki.serverTLS()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })
	client, server := dialAccept(t, l, Kind(ModeAuto), Config{TLS: pki.clientTLS()})
	if client.Kind() != KindQUIC || server.Kind() != KindQUIC {
		t.Fatalf("auto chose %s/%s with both up, want quic", client.Kind(), server.Kind())
	}
}

func TestDialAutoFallsBackToTCP(t *testing.T) {
	for _, udp := range []string{"nothing listening", "packets swallowed"} {
		t.Run(udp, func(t *testing.T) {
			pki := newPKI(t)
			l := listenKind(t, KindTCP, Config{TLS: pki.serverTLS()})
			var swallowed chan struct{}
			if udp == "packets swallowed" {
				// A socket that reads and never answers: UDP blocked
				// somewhere on the path.
				swallowed = make(chan struct{})
				u, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1), Port: l.Addr().(*net.TCPAddr).Port})
				if err != nil {
					t.Skipf("UDP port of the TCP listener is taken: %v", err)
				}
				t.Cleanup(func() { u.Close() })
				go func() {
					buf := make([]byte, 2048)
					if _, _, err := u.ReadFrom(buf); err == nil {
						close(swallowed)
					}
				}()
			}
			client, server := dialAccept(t, l, Kind(ModeAuto), Config{TLS: pki.clientTLS()})
			if client.Kind() != KindTCP || server.Kind() != KindTCP {
				t.Fatalf("auto chose %s with only TCP up", client.Kind())
			}
			if swallowed != nil {
				waitClosed(t, swallowed, "QUIC attempt reaching the UDP socket")
			}
		})
	}
}

func TestDialAutoBothFail(t *testing.T) {
	pki := newPKI(t)
	// A port nobody listens on, for TCP or UDP.
	tl, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := tl.Addr().String()
	tl.Close()
	cfg := Config{TLS: pki.clientTLS(), HandshakeTimeout: 500 * time.Millisecond}
	_, err = Dial(testCtx(t), addr, ModeAuto, cfg)
	if err == nil {
		t.Fatal("dial to nothing succeeded")
	}
	if msg := err.Error(); !strings.Contains(msg, "quic") || !strings.Contains(msg, "tcp") {
		t.Errorf("error %q does not name both failures", msg)
	}
}

func TestDialBadMode(t *testing.T) {
	pki := newPKI(t)
	if _, err := Dial(context.Background(), "127.0.0.1:1", "carrier-pigeon", Config{TLS: pki.clientTLS()}); err == nil {
		t.Error("unknown mode accepted")
	}
	if _, err := Dial(context.Background(), "127.0.0.1:1", ModeTCP, Config{}); err == nil {
		t.Error("nil TLS config accepted")
	}
}

func TestConfigNotMutated(t *testing.T) {
	pki := newPKI(t)
	stls, ctls := pki.serverTLS(), pki.clientTLS()
	l := listenKind(t, KindTCP, Config{TLS: stls})
	dialAccept(t, l, KindTCP, Config{TLS: ctls})
	if stls.MinVersion != 0 || ctls.MinVersion != 0 || ctls.ServerName != "" || stls.SessionTicketsDisabled {
		t.Error("caller's tls.Config was modified")
	}
}

func TestGarbageDoesNotBreakListener(t *testing.T) {
	pki := newPKI(t)
	log := newTestLogger(t)
	l, err := ListenBoth("127.0.0.1:0", Config{TLS: pki.serverTLS(), Logger: log, HandshakeTimeout: 2 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })
	addr := l.Addr().String()

	junk := make([]byte, 4096)
	rand.Read(junk)

	// TCP: a client sending junk, one speaking the wrong protocol, and one
	// that connects and says nothing (it must not hold up the others).
	silent, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer silent.Close()
	for _, payload := range [][]byte{junk, []byte("GET / HTTP/1.1\r\nHost: x\r\n\r\n")} {
		c, err := net.Dial("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		c.Write(payload)
		c.Close()
	}

	// UDP: random datagrams, and one that looks like a QUIC Initial.
	u, err := net.Dial("udp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer u.Close()
	for i := range 20 {
		u.Write(junk[:1200-i])
	}
	initial := append([]byte{0xc3, 0, 0, 0, 1, 8}, junk[:1194]...)
	u.Write(initial)

	ccfg := Config{TLS: pki.clientTLS()}
	for _, kind := range kinds {
		client, _ := dialAccept(t, l, kind, ccfg)
		if client.Kind() != kind {
			t.Fatalf("got %s, want %s", client.Kind(), kind)
		}
	}
	// Stalling TLS clients are cut off after HandshakeTimeout.
	silent.SetReadDeadline(time.Now().Add(testTimeout))
	if _, err := silent.Read(make([]byte, 1)); err == nil || errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("silent client: %v, want the server to close it", err)
	}
	waitFor(t, "handshake failures logged", func() bool { return log.saw("handshake failed") })
}

func TestValidate(t *testing.T) {
	pki := newPKI(t)
	noALPN := pki.clientTLS()
	noALPN.NextProtos = nil
	for _, c := range []Config{
		{},
		{TLS: noALPN},
		{TLS: pki.clientTLS(), MaxIncomingStreams: -1},
		{TLS: pki.clientTLS(), MaxIncomingStreams: MaxStreamsLimit + 1},
		{TLS: pki.clientTLS(), IdleTimeout: -time.Second},
	} {
		if err := c.Validate(); err == nil {
			t.Errorf("Validate(%+v) = nil", c)
		}
	}
	if err := (Config{TLS: pki.clientTLS()}).Validate(); err != nil {
		t.Errorf("Validate(valid) = %v", err)
	}
	if _, err := ParseMode("udp"); err == nil {
		t.Error("ParseMode accepted udp")
	}
}

// TestNoGoroutineLeaks: once listeners and connections are closed, nothing
// of this package, quic-go or yamux keeps running.
func TestNoGoroutineLeaks(t *testing.T) {
	func() {
		pki := newPKI(t)
		l, err := ListenBoth("127.0.0.1:0", Config{TLS: pki.serverTLS()})
		if err != nil {
			t.Fatal(err)
		}
		defer l.Close()
		for _, kind := range kinds {
			ctx := testCtx(t)
			accepted := acceptAsync(ctx, l)
			c, err := Dial(ctx, l.Addr().String(), modeOf(kind), Config{TLS: pki.clientTLS()})
			if err != nil {
				t.Fatal(err)
			}
			s, err := c.OpenStream(ctx)
			if err != nil {
				t.Fatal(err)
			}
			s.Write([]byte("x"))
			r := <-accepted
			if r.err != nil {
				t.Fatal(r.err)
			}
			a, err := r.c.AcceptStream(ctx)
			if err != nil {
				t.Fatal(err)
			}
			a.Reset() // leaves a drain goroutine over TCP until the conn ends
			// An OpenStream abandoned by its context.
			cctx, cancel := context.WithCancel(ctx)
			cancel()
			c.OpenStream(cctx)
			defer c.CloseWithError(0, "")
		}
	}()
	// Goroutines end on their own schedule (quic-go retires a closed
	// connection's IDs from a timer a few round trips later), so the
	// check is that they all do, within the deadline; a second snapshot
	// after that would race with those timers firing.
	var left string
	tick := time.NewTicker(10 * time.Millisecond)
	defer tick.Stop()
	deadline := time.After(testTimeout)
	for left = leaked(); left != ""; left = leaked() {
		select {
		case <-tick.C:
		case <-deadline:
			t.Fatalf("goroutines left:\n%s", left)
		}
	}
}

// leaked lists goroutines running code of this package (other than tests),
// quic-go or yamux.
func leaked() string {
	buf := make([]byte, 1<<20)
	buf = buf[:runtime.Stack(buf, true)]
	var out []string
	for _, g := range bytes.Split(buf, []byte("\n\n")) {
		s := string(g)
		if strings.Contains(s, "_test.go") || strings.Contains(s, "testing.tRunner") && !strings.Contains(s, "transport.(") {
			continue
		}
		if strings.Contains(s, "quic-go") || strings.Contains(s, "yamux") || strings.Contains(s, "pzone/transport.") {
			out = append(out, s)
		}
	}
	return strings.Join(out, "\n\n")
}

// waitFor polls cond until it holds or testTimeout passes. For conditions
// that no channel announces, such as goroutines ending.
func waitFor(t testing.TB, what string, cond func() bool) {
	t.Helper()
	tick := time.NewTicker(10 * time.Millisecond)
	defer tick.Stop()
	deadline := time.After(testTimeout)
	for !cond() {
		select {
		case <-tick.C:
		case <-deadline:
			t.Fatalf("timed out waiting for %s", what)
		}
	}
}

// Closing a listener ends an Accept that has no deadline of its own.
func TestCloseUnblocksAccept(t *testing.T) {
	for _, kind := range kinds {
		t.Run(string(kind), func(t *testing.T) {
			pki := newPKI(t)
			l := listenKind(t, kind, Config{TLS: pki.serverTLS()})
			// A connection first, so the QUIC accept pump is running.
			c, _ := dialAccept(t, l, kind, Config{TLS: pki.clientTLS()})
			defer c.CloseWithError(0, "")
			errc := make(chan error, 1)
			go func() {
				_, err := l.Accept(context.Background())
				errc <- err
			}()
			l.Close()
			select {
			case err := <-errc:
				if !errors.Is(err, ErrClosed) && !errors.Is(err, net.ErrClosed) {
					t.Errorf("Accept after Close: %v", err)
				}
			case <-testCtx(t).Done():
				t.Fatal("Accept still blocked after Close")
			}
		})
	}
}
