package pairing

import (
	"context"
	"crypto/ed25519"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/pzone/pzone/certs"
	"github.com/pzone/pzone/transport"
)

// testTimeout bounds every wait in these tests: generous for a loaded
// machine, yet a hang fails in seconds rather than at the go test timeout.
const testTimeout = 10 * time.Second

// testZoneName is the zone name every test hub answers with.
const testZoneName = "home"

// testZone is a zone CA and the TLS certificate its hub presents.
type testZone struct {
	ca  *certs.CA
	hub tls.Certificate // chain [hub leaf, zone CA], as a hub sends it
}

func newTestZone(t testing.TB) *testZone {
	t.Helper()
	ca, err := certs.NewCA(testZoneName, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	return &testZone{ca: ca, hub: tlsCert(t, ca, certs.HubDevice, ca.Cert)}
}

// tlsCert is a certificate for device signed by signer, presented with
// sentCA as the chain's second element.
func tlsCert(t testing.TB, signer *certs.CA, device string, sentCA *x509.Certificate) tls.Certificate {
	t.Helper()
	key, err := certs.NewKey()
	if err != nil {
		t.Fatal(err)
	}
	leaf, err := signer.Sign(key.Public(), device, time.Now(), time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	return tls.Certificate{Certificate: [][]byte{leaf.Raw, sentCA.Raw}, PrivateKey: key, Leaf: leaf}
}

// listenHub listens on loopback, TCP and UDP, the way a hub listens for
// pairing: its certificate chain, the pairing ALPN, no client
// certificate.
func listenHub(t testing.TB, cert tls.Certificate) transport.Listener {
	t.Helper()
	conf := &tls.Config{
		MinVersion:   tls.VersionTLS13,
		NextProtos:   []string{transport.ALPNPairing},
		Certificates: []tls.Certificate{cert},
	}
	ln, err := transport.ListenBoth("127.0.0.1:0", transport.Config{TLS: conf})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	return ln
}

// closedAddr is a loopback address where nothing listens on TCP or UDP.
func closedAddr(t testing.TB) string {
	t.Helper()
	for range 20 { // the UDP port may be taken; try another
		tl, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		addr := tl.Addr().String()
		ul, err := net.ListenPacket("udp", addr)
		tl.Close()
		if err == nil {
			ul.Close()
			return addr
		}
	}
	t.Fatal("no loopback port free on both TCP and UDP")
	return ""
}

// answerFunc decides a test hub's response to a request whose proof
// checked out; pub is the key in the device's CSR and device the name the
// invite gives it.
type answerFunc func(h *testHub, pub ed25519.PublicKey, device string) *Response

// honest is what a working hub answers.
func honest(h *testHub, pub ed25519.PublicKey, device string) *Response {
	return h.issue(pub, device)
}

// refuse answers with an error as a hub does.
func refuse(e Error) answerFunc {
	return func(*testHub, ed25519.PublicKey, string) *Response { return &Response{Error: &e} }
}

// testHub serves the pairing exchange for one invite the way package
// zone's hub does, one connection at a time, and answers through answer.
// Failures on the hub's side fail the test when it ends.
type testHub struct {
	*testZone
	addr   string
	inv    *Invite
	secret []byte
	answer answerFunc

	answered atomic.Int32 // requests answered, refusals included

	mu   sync.Mutex
	errs []error
}

func startHub(t *testing.T, z *testZone, answer answerFunc) *testHub {
	t.Helper()
	inv, secret, err := NewInvite(Template{Device: "phone"}, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	ln := listenHub(t, z.hub)
	h := &testHub{testZone: z, addr: ln.Addr().String(), inv: inv, secret: secret, answer: answer}
	t.Cleanup(func() { // runs after the hub has stopped
		h.mu.Lock()
		defer h.mu.Unlock()
		for _, err := range h.errs {
			t.Errorf("test hub %s: %v", h.addr, err)
		}
	})
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	wg.Go(func() { h.serve(ctx, ln) })
	t.Cleanup(func() {
		cancel()
		wg.Wait()
	})
	return h
}

// token is the invite token for this hub alone.
func (h *testHub) token() *Token {
	return &Token{Addrs: []string{h.addr}, Zone: h.ca.ZoneID, InviteID: h.inv.ID, Secret: h.secret}
}

func (h *testHub) fail(err error) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.errs = append(h.errs, err)
}

func (h *testHub) serve(ctx context.Context, ln transport.Listener) {
	for {
		conn, err := ln.Accept(ctx)
		if err != nil {
			if ctx.Err() == nil && !errors.Is(err, net.ErrClosed) {
				h.fail(fmt.Errorf("accept: %w", err))
			}
			return
		}
		if err := h.handle(ctx, conn); err != nil {
			h.fail(err)
		}
	}
}

func (h *testHub) handle(ctx context.Context, conn transport.Conn) error {
	defer conn.CloseWithError(0, "test hub done")
	ctx, cancel := context.WithTimeout(ctx, testTimeout)
	defer cancel()
	st, err := conn.AcceptStream(ctx)
	if err != nil {
		return fmt.Errorf("accept pairing stream: %w", err)
	}
	st.SetDeadline(time.Now().Add(testTimeout))
	var req Request
	if err := transport.NewFrameReader(st, 0).ReadFrame(&req); err != nil {
		return fmt.Errorf("read pairing request: %w", err)
	}
	resp := h.redeem(conn.ConnectionState(), &req)
	h.answered.Add(1)
	// Over TCP, yamux can report a write that went out as failed when the
	// device reads the answer and hangs up before yamux confirms the send;
	// whether the answer arrived shows in what Pair returns.
	if err := transport.WriteFrame(st, resp); err != nil && !errors.Is(err, transport.ErrPeerGone) {
		return fmt.Errorf("write pairing response: %w", err)
	}
	if err := st.Close(); err != nil && !errors.Is(err, transport.ErrPeerGone) {
		return fmt.Errorf("close pairing stream: %w", err)
	}
	// The device closes once it has read the answer; closing first could
	// drop the answer in flight.
	select {
	case <-conn.Done():
	case <-ctx.Done():
	}
	return nil
}

func (h *testHub) redeem(cs tls.ConnectionState, req *Request) *Response {
	if req.Version != ProtocolVersion {
		return &Response{Error: &Error{Code: CodeVersion, Message: "unsupported version " + strconv.FormatUint(uint64(req.Version), 10)}}
	}
	if req.InviteID != h.inv.ID || !CheckProof(cs, req.InviteID, h.inv.Verifier, req.Proof) {
		return &Response{Error: &Error{Code: CodeInvalid, Message: "invite not recognised"}}
	}
	pub, err := certs.ParseCSR(req.CSR)
	if err != nil {
		return &Response{Error: &Error{Code: CodeBadRequest, Message: "bad certificate request: " + err.Error()}}
	}
	return h.answer(h, pub, h.inv.DeviceForUse())
}

// issue is an honest answer: pub certified as device by the zone CA.
func (h *testHub) issue(pub ed25519.PublicKey, device string) *Response {
	cert, err := h.ca.Sign(pub, device, time.Now(), h.inv.CertLifetime)
	if err != nil {
		h.fail(fmt.Errorf("sign: %w", err))
		return &Response{Error: &Error{Code: CodeInternal, Message: "sign failed"}}
	}
	return &Response{Device: device, Zone: testZoneName, Cert: cert.Raw, CA: h.ca.Cert.Raw}
}

// connect dials ln as a pairing device pinned to zone z and returns both
// ends of the connection.
func connect(t *testing.T, z *testZone, ln transport.Listener, mode transport.Mode) (client, server transport.Conn) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), testTimeout)
	defer cancel()
	accepted := make(chan transport.Conn, 1)
	errc := make(chan error, 1)
	go func() {
		c, err := ln.Accept(ctx)
		if err != nil {
			errc <- err
			return
		}
		accepted <- c
	}()
	client, err := transport.Dial(ctx, ln.Addr().String(), mode, transport.Config{TLS: PinnedHubTLS(z.ca.ZoneID, transport.ALPNPairing, nil)})
	if err != nil {
		t.Fatalf("dial %s: %v", mode, err)
	}
	t.Cleanup(func() { client.CloseWithError(0, "test done") })
	select {
	case server = <-accepted:
	case err := <-errc:
		t.Fatalf("accept: %v", err)
	}
	t.Cleanup(func() { server.CloseWithError(0, "test done") })
	return client, server
}
