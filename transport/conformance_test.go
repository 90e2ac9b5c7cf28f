package transport

import (
	"bytes"
	"context"
	"crypto/rand"
	"errors"
	"io"
	"net"
	"os"
	"strings"
	"sync"
	"testing"
	"time"
)

// The conformance suite runs every test against both implementations: the
// session layer above must not be able to tell them apart except through
// Kind and the documented differences (close reasons, Reset as seen by the
// other end over TCP).
func TestConformance(t *testing.T) {
	tests := []struct {
		name string
		run  func(t *testing.T, kind Kind)
	}{
		{"Handshake", testHandshake},
		{"StreamsBothWays", testStreamsBothWays},
		{"HalfClose", testHalfClose},
		{"Reset", testReset},
		{"ResetWakesBlockedRead", testResetWakesBlockedRead},
		{"ConcurrentStreams", testConcurrentStreams},
		{"CloseWithError", testCloseWithError},
		{"MaxIncomingStreams", testMaxIncomingStreams},
		{"Deadlines", testDeadlines},
		{"IdleTimeout", testIdleTimeout},
		{"ClientWithoutCertRefused", testClientWithoutCert},
		{"WrongALPNRefused", testWrongALPN},
		{"ListenerCloseClosesConns", testListenerClose},
		{"StatsCountWireBytes", testStats},
	}
	for _, kind := range kinds {
		t.Run(string(kind), func(t *testing.T) {
			for _, tt := range tests {
				t.Run(tt.name, func(t *testing.T) { tt.run(t, kind) })
			}
		})
	}
}

func testHandshake(t *testing.T, kind Kind) {
	p := newPair(t, kind, nil)
	for _, c := range []Conn{p.client, p.server} {
		if c.Kind() != kind {
			t.Errorf("Kind() = %q, want %q", c.Kind(), kind)
		}
		cs := c.ConnectionState()
		if cs.NegotiatedProtocol != ALPNSession {
			t.Errorf("NegotiatedProtocol = %q, want %q", cs.NegotiatedProtocol, ALPNSession)
		}
		if cs.Version != 0x0304 {
			t.Errorf("TLS version %#x, want TLS 1.3", cs.Version)
		}
		if c.Err() != nil {
			t.Errorf("Err() = %v on a live connection", c.Err())
		}
	}
	if got := p.server.ConnectionState().PeerCertificates; len(got) == 0 || got[0].Subject.CommonName != "peer" {
		t.Errorf("server sees client certificate %v, want CN=peer", got)
	}
	if got := p.client.ConnectionState().PeerCertificates; len(got) == 0 || got[0].Subject.CommonName != "hub" {
		t.Errorf("client sees server certificate %v, want CN=hub", got)
	}
	if p.client.RemoteAddr().String() != p.l.Addr().String() {
		t.Errorf("client RemoteAddr %v, listener %v", p.client.RemoteAddr(), p.l.Addr())
	}
	if p.server.LocalAddr() == nil || p.server.RemoteAddr() == nil {
		t.Error("server addresses missing")
	}
}

// openWith opens a stream from c and writes msg, so that the other end
// sees it (QUIC announces a stream with its first data).
func openWith(t *testing.T, c Conn, msg string) Stream {
	t.Helper()
	s, err := c.OpenStream(testCtx(t))
	if err != nil {
		t.Fatalf("OpenStream: %v", err)
	}
	if _, err := s.Write([]byte(msg)); err != nil {
		t.Fatalf("Write: %v", err)
	}
	return s
}

func acceptStream(t *testing.T, c Conn) Stream {
	t.Helper()
	s, err := c.AcceptStream(testCtx(t))
	if err != nil {
		t.Fatalf("AcceptStream: %v", err)
	}
	return s
}

func readN(t *testing.T, s Stream, n int) string {
	t.Helper()
	s.SetReadDeadline(time.Now().Add(testTimeout))
	buf := make([]byte, n)
	if _, err := io.ReadFull(s, buf); err != nil {
		t.Fatalf("read %d bytes: %v", n, err)
	}
	return string(buf)
}

func expectEOF(t *testing.T, s Stream) {
	t.Helper()
	s.SetReadDeadline(time.Now().Add(testTimeout))
	var b [1]byte
	if n, err := s.Read(b[:]); n != 0 || err != io.EOF {
		t.Fatalf("Read = %d, %v; want 0, io.EOF", n, err)
	}
}

func testStreamsBothWays(t *testing.T, kind Kind) {
	p := newPair(t, kind, nil)
	for _, dir := range []struct {
		name         string
		opener, peer Conn
	}{{"client opens", p.client, p.server}, {"server opens", p.server, p.client}} {
		s := openWith(t, dir.opener, "ping")
		a := acceptStream(t, dir.peer)
		if got := readN(t, a, 4); got != "ping" {
			t.Fatalf("%s: got %q", dir.name, got)
		}
		if _, err := a.Write([]byte("pong")); err != nil {
			t.Fatal(err)
		}
		if got := readN(t, s, 4); got != "pong" {
			t.Fatalf("%s: echo got %q", dir.name, got)
		}
		s.Close()
		a.Close()
	}
}

func testHalfClose(t *testing.T, kind Kind) {
	p := newPair(t, kind, nil)
	s := openWith(t, p.client, "request")
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	a := acceptStream(t, p.server)
	if got := readN(t, a, 7); got != "request" {
		t.Fatalf("got %q", got)
	}
	expectEOF(t, a)
	// The other direction still works after the client closed its side.
	for _, part := range []string{"resp", "onse"} {
		if _, err := a.Write([]byte(part)); err != nil {
			t.Fatalf("write after peer's Close: %v", err)
		}
	}
	a.Close()
	if got := readN(t, s, 8); got != "response" {
		t.Fatalf("got %q", got)
	}
	expectEOF(t, s)
}

func testReset(t *testing.T, kind Kind) {
	p := newPair(t, kind, nil)
	s := openWith(t, p.client, "doomed")
	a := acceptStream(t, p.server)
	readN(t, a, 6)

	s.Reset()
	if _, err := s.Write([]byte("x")); !errors.Is(err, ErrStreamReset) {
		t.Errorf("Write after Reset: %v, want ErrStreamReset", err)
	}
	if _, err := s.Read(make([]byte, 1)); !errors.Is(err, ErrStreamReset) {
		t.Errorf("Read after Reset: %v, want ErrStreamReset", err)
	}
	// The other end's reads end: ErrStreamReset over QUIC, io.EOF over TCP
	// (yamux cannot send a reset).
	a.SetReadDeadline(time.Now().Add(testTimeout))
	_, err := a.Read(make([]byte, 1))
	switch {
	case kind == KindQUIC && !errors.Is(err, ErrStreamReset):
		t.Errorf("peer Read after Reset: %v, want ErrStreamReset", err)
	case kind == KindTCP && err != io.EOF:
		t.Errorf("peer Read after Reset: %v, want io.EOF", err)
	}
	// The connection is unaffected.
	s2 := openWith(t, p.client, "next")
	if got := readN(t, acceptStream(t, p.server), 4); got != "next" {
		t.Fatalf("got %q", got)
	}
	s2.Close()
}

func testResetWakesBlockedRead(t *testing.T, kind Kind) {
	p := newPair(t, kind, nil)
	for _, side := range []string{"opener", "acceptor"} {
		// A fresh stream each time: the other end's Reset would end this
		// end's reads by itself.
		s := openWith(t, p.client, "x")
		a := acceptStream(t, p.server)
		readN(t, a, 1)
		st := s
		if side == "acceptor" {
			st = a
		}
		errc := make(chan error, 1)
		go func() {
			_, err := st.Read(make([]byte, 1))
			errc <- err
		}()
		st.Reset()
		select {
		case err := <-errc:
			if !errors.Is(err, ErrStreamReset) {
				t.Errorf("%s: blocked Read returned %v, want ErrStreamReset", side, err)
			}
		case <-time.After(testTimeout):
			t.Fatalf("%s: Reset did not wake a blocked Read", side)
		}
	}
}

func testConcurrentStreams(t *testing.T, kind Kind) {
	p := newPair(t, kind, nil)
	const streams = 50
	const size = 64 << 10

	ctx := testCtx(t)
	var serverWG sync.WaitGroup
	serverWG.Add(1)
	go func() {
		defer serverWG.Done()
		for range streams {
			a, err := p.server.AcceptStream(ctx)
			if err != nil {
				t.Errorf("AcceptStream: %v", err)
				return
			}
			serverWG.Add(1)
			go func() {
				defer serverWG.Done()
				if _, err := io.Copy(a, a); err != nil {
					t.Errorf("echo: %v", err)
				}
				a.Close()
			}()
		}
	}()

	var wg sync.WaitGroup
	for range streams {
		wg.Add(1)
		go func() {
			defer wg.Done()
			want := make([]byte, size)
			rand.Read(want)
			s, err := p.client.OpenStream(ctx)
			if err != nil {
				t.Errorf("OpenStream: %v", err)
				return
			}
			s.SetDeadline(time.Now().Add(testTimeout))
			werr := make(chan error, 1)
			go func() {
				_, err := s.Write(want)
				if err == nil {
					err = s.Close()
				}
				werr <- err
			}()
			got, err := io.ReadAll(s)
			if err != nil {
				t.Errorf("read echo: %v", err)
			}
			if err := <-werr; err != nil {
				t.Errorf("write: %v", err)
			}
			if !bytes.Equal(got, want) {
				t.Errorf("echo mismatch: got %d bytes, want %d", len(got), len(want))
			}
		}()
	}
	wg.Wait()
	serverWG.Wait()
}

func testCloseWithError(t *testing.T, kind Kind) {
	p := newPair(t, kind, nil)
	s := openWith(t, p.client, "x")
	a := acceptStream(t, p.server)

	if err := p.client.CloseWithError(7, "going away"); err != nil {
		t.Fatalf("CloseWithError: %v", err)
	}
	if err := p.client.CloseWithError(8, "again"); err != nil {
		t.Fatalf("second CloseWithError: %v", err)
	}
	waitClosed(t, p.client.Done(), "closing end's Done")
	waitClosed(t, p.server.Done(), "other end's Done")

	if err := p.client.Err(); !errors.Is(err, ErrClosed) || !errors.Is(err, net.ErrClosed) {
		t.Errorf("closing end Err() = %v, want ErrClosed", err)
	}
	serr := p.server.Err()
	switch kind {
	case KindQUIC:
		var rce *RemoteCloseError
		if !errors.As(serr, &rce) || rce.Code != 7 || rce.Msg != "going away" {
			t.Errorf("other end Err() = %v, want RemoteCloseError{7, going away}", serr)
		}
	case KindTCP:
		if !errors.Is(serr, ErrPeerGone) {
			t.Errorf("other end Err() = %v, want ErrPeerGone", serr)
		}
	}
	// Streams and new operations fail with the connection's error.
	a.SetReadDeadline(time.Now().Add(testTimeout))
	if _, err := io.ReadAll(a); err == nil {
		t.Error("read on a stream of a closed connection succeeded")
	}
	if _, err := s.Write([]byte("y")); err == nil {
		t.Error("write on a stream of a closed connection succeeded")
	}
	if _, err := p.server.AcceptStream(testCtx(t)); err == nil {
		t.Error("AcceptStream on a closed connection succeeded")
	}
	if _, err := p.client.OpenStream(testCtx(t)); err == nil {
		t.Error("OpenStream on a closed connection succeeded")
	}
}

func testMaxIncomingStreams(t *testing.T, kind Kind) {
	const limit = 2
	p := newPair(t, kind, func(server, _ *Config) { server.MaxIncomingStreams = limit })

	var open []Stream
	var accepted []Stream
	for i := range limit {
		open = append(open, openWith(t, p.client, string(rune('a'+i))))
		accepted = append(accepted, acceptStream(t, p.server))
	}

	// One more: over QUIC the opener waits for credit, over TCP the stream
	// waits unacknowledged; either way the server cannot accept it yet.
	third := make(chan error, 1)
	go func() {
		s, err := p.client.OpenStream(testCtx(t))
		if err == nil {
			_, err = s.Write([]byte("c"))
		}
		third <- err
	}()
	if _, err := p.server.AcceptStream(shortCtx(t)); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("AcceptStream beyond the limit: %v, want context.DeadlineExceeded", err)
	}

	// Finish the first stream in both directions: its slot frees.
	open[0].Close()
	readN(t, accepted[0], 1)
	expectEOF(t, accepted[0])
	accepted[0].Close()
	expectEOF(t, open[0])

	a := acceptStream(t, p.server)
	if got := readN(t, a, 1); got != "c" {
		t.Fatalf("third stream got %q", got)
	}
	if err := <-third; err != nil {
		t.Fatalf("opening the third stream: %v", err)
	}

	// A reset stream frees its slot too.
	accepted[1].Reset()
	open[1].Reset()
	s := openWith(t, p.client, "d")
	if got := readN(t, acceptStream(t, p.server), 1); got != "d" {
		t.Fatalf("fourth stream got %q", got)
	}
	s.Close()
}

func testDeadlines(t *testing.T, kind Kind) {
	p := newPair(t, kind, nil)
	s := openWith(t, p.client, "x")
	a := acceptStream(t, p.server)
	readN(t, a, 1)

	a.SetReadDeadline(time.Now().Add(50 * time.Millisecond))
	_, err := a.Read(make([]byte, 1))
	var ne net.Error
	if !errors.Is(err, os.ErrDeadlineExceeded) || !errors.As(err, &ne) || !ne.Timeout() {
		t.Fatalf("Read past deadline: %v, want os.ErrDeadlineExceeded", err)
	}
	// A deadline in the past fails at once; clearing it lets data through.
	s.SetWriteDeadline(time.Now().Add(-time.Second))
	if _, err := s.Write([]byte("y")); !errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("Write past deadline: %v, want os.ErrDeadlineExceeded", err)
	}
	s.SetDeadline(time.Time{})
	if _, err := s.Write([]byte("z")); err != nil {
		t.Fatal(err)
	}
	if got := readN(t, a, 1); got != "z" {
		t.Fatalf("got %q after a timed-out read", got)
	}
}

func testIdleTimeout(t *testing.T, kind Kind) {
	// Long enough that a loaded machine still completes the handshake and
	// the TCP confirmation round trip inside it.
	const idle = time.Second
	p := newPair(t, kind, func(server, client *Config) {
		server.IdleTimeout = idle
		client.IdleTimeout = idle
	})
	waitClosed(t, p.client.Done(), "idle client")
	waitClosed(t, p.server.Done(), "idle server")
	// Over QUIC both ends time out silently. Over TCP the end whose timer
	// fires first closes the connection, which the other may see first.
	timedOut := 0
	for _, c := range []Conn{p.client, p.server} {
		switch err := c.Err(); {
		case errors.Is(err, ErrIdleTimeout):
			timedOut++
		case kind == KindTCP && errors.Is(err, ErrPeerGone):
		default:
			t.Errorf("Err() = %v, want ErrIdleTimeout", err)
		}
	}
	if timedOut == 0 {
		t.Error("neither end reports ErrIdleTimeout")
	}
}

func testClientWithoutCert(t *testing.T, kind Kind) {
	pki := newPKI(t)
	log := newTestLogger(t)
	l := listenKind(t, kind, Config{TLS: pki.serverTLS(), Logger: log})
	ctx := testCtx(t)
	accepted := acceptAsync(ctx, l)

	ccfg := pki.clientTLS()
	ccfg.Certificates = nil
	c, err := Dial(ctx, l.Addr().String(), modeOf(kind), Config{TLS: ccfg})
	if err == nil {
		// In TLS 1.3 the client finishes before the server has checked its
		// certificate; over QUIC the refusal then arrives as a close.
		t.Logf("dial succeeded, waiting for the server's refusal")
		waitClosed(t, c.Done(), "refused connection")
		err = c.Err()
	}
	if err == nil {
		t.Fatal("client without a certificate was not refused")
	}
	t.Logf("refused: %v", err)
	select {
	case r := <-accepted:
		t.Fatalf("server accepted a client without a certificate: %v, %v", r.c, r.err)
	case <-shortCtx(t).Done():
	}
	if kind == KindTCP && !log.saw("handshake failed") {
		t.Error("failed handshake was not logged")
	}
}

func testWrongALPN(t *testing.T, kind Kind) {
	pki := newPKI(t)
	l := listenKind(t, kind, Config{TLS: pki.serverTLS()})
	ctx := testCtx(t)
	accepted := acceptAsync(ctx, l)
	ccfg := pki.clientTLS()
	ccfg.NextProtos = []string{"pz/999"}
	if c, err := Dial(ctx, l.Addr().String(), modeOf(kind), Config{TLS: ccfg}); err == nil {
		c.CloseWithError(0, "")
		t.Fatal("dial with an unknown ALPN succeeded")
	} else {
		t.Logf("refused: %v", err)
	}
	select {
	case r := <-accepted:
		t.Fatalf("server accepted a client with the wrong ALPN: %v, %v", r.c, r.err)
	case <-shortCtx(t).Done():
	}
}

func testListenerClose(t *testing.T, kind Kind) {
	p := newPair(t, kind, nil)
	if err := p.l.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	if err := p.l.Close(); err != nil {
		t.Fatalf("second Close: %v", err)
	}
	waitClosed(t, p.server.Done(), "accepted connection")
	waitClosed(t, p.client.Done(), "client of a closed listener")
	if _, err := p.l.Accept(testCtx(t)); !errors.Is(err, net.ErrClosed) {
		t.Errorf("Accept after Close: %v, want net.ErrClosed", err)
	}
}

// Stats must count what crossed the wire: at least the payload, both ways,
// and the same bytes on both ends once they have settled.
func testStats(t *testing.T, kind Kind) {
	p := newPair(t, kind, nil)
	base := p.client.Stats()
	if base.BytesSent == 0 || base.BytesReceived == 0 {
		t.Fatalf("after the handshake: %+v, want both directions counted", base)
	}
	payload := strings.Repeat("x", 64<<10)
	cs := openWith(t, p.client, payload)
	ss := acceptStream(t, p.server)
	if got := readN(t, ss, len(payload)); got != payload {
		t.Fatal("payload corrupted")
	}
	if _, err := ss.Write([]byte(payload)); err != nil {
		t.Fatal(err)
	}
	if got := readN(t, cs, len(payload)); got != payload {
		t.Fatal("echo corrupted")
	}
	after := p.client.Stats()
	if sent := after.BytesSent - base.BytesSent; sent < uint64(len(payload)) {
		t.Errorf("client counted %d bytes sent, below the %d-byte payload", sent, len(payload))
	}
	if recv := after.BytesReceived - base.BytesReceived; recv < uint64(len(payload)) {
		t.Errorf("client counted %d bytes received, below the %d-byte payload", recv, len(payload))
	}
}
