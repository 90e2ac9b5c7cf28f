package peer

import (
	"context"
	"crypto/tls"
	"errors"
	"testing"
	"time"

	"github.com/pzone/pzone/zone/session"
	"github.com/pzone/pzone/zone/stores"

	zsync "github.com/pzone/pzone/sync"
	"github.com/pzone/pzone/transport"
	"github.com/pzone/pzone/zone/api"
	"github.com/pzone/pzone/zone/wire"
)

// directZone is a hub and two devices with direct listeners on loopback:
// the laptop serves echo (see serveEcho) and the phone calls it.
type directZone struct {
	hb                  *testHub
	phone, laptop       string
	phonePeer, laptopPr *Peer
	msgs                <-chan api.Event
}

func startDirectZone(t *testing.T, mode transport.Mode, extra ...string) (*directZone, map[string]string) {
	t.Helper()
	clock := &testClock{}
	z := &directZone{hb: startHub(t, clock, nil)}
	z.phone, z.laptop = z.hb.pair(t, clock, "phone", 0), z.hb.pair(t, clock, "laptop", 0)
	others := map[string]string{}
	for _, name := range extra {
		others[name] = z.hb.pair(t, clock, name, 0)
	}
	got := make(chan *Peer, 2)
	direct := func(c *Config) {
		c.DirectListen, c.Mode, c.started = "127.0.0.1:0", mode, func(p *Peer) { got <- p }
	}
	startPeerWith(t, z.phone, clock, direct)
	z.phonePeer = <-got
	startPeerWith(t, z.laptop, clock, direct)
	z.laptopPr = <-got
	waitSyncedPeer(t, z.phone)
	waitSyncedPeer(t, z.laptop)
	z.msgs = serveEcho(t, z.laptop)
	waitRecord(t, z.phone, zsync.BucketApps, "laptop/demo")
	return z, others
}

// pathTo is dir's path to device in its status ("" if not listed).
func pathTo(st *api.PeerStatus, device string) api.DirectPeerStatus {
	if st.Direct != nil {
		for _, p := range st.Direct.Peers {
			if p.Device == device {
				return p
			}
		}
	}
	return api.DirectPeerStatus{}
}

// TestDirectCall: a call between two devices that can reach each other
// takes a direct connection, over either transport, with the caller named
// as through the hub; the hub relays nothing.
func TestDirectCall(t *testing.T) {
	for _, mode := range []transport.Mode{transport.ModeQUIC, transport.ModeTCP} {
		t.Run(string(mode), func(t *testing.T) {
			z, _ := startDirectZone(t, mode)
			c := peerClient(z.phone)
			ctx := testCtx(t)
			res, err := c.Call(ctx, "laptop/echo", "echo", map[string]int{"n": 1})
			if err != nil || string(res) != `{"n":1}` {
				t.Fatalf("direct call: %s, %v", res, err)
			}
			st := waitPeer(t, z.phone, func(s *api.PeerStatus) bool { return pathTo(s, "laptop").Path == "direct" })
			if p := pathTo(st, "laptop"); p.Transport != string(mode) || p.CallsDirect != 1 || p.CallsHub != 0 || p.Inbound {
				t.Fatalf("phone's path to the laptop: %+v", p)
			}
			if err := c.Send(ctx, "laptop/echo", "hi"); err != nil {
				t.Fatal(err)
			}
			if ev := <-z.msgs; ev.From != "alice/phone/pzp" {
				t.Fatalf("message from %q", ev.From)
			}
			// Failures the service's device answers come back as they
			// would through the hub, and do not fall back.
			if _, err := c.Call(ctx, "laptop/echo", "fail", nil); err == nil {
				t.Fatal("a failing method succeeded")
			}
			st = waitPeer(t, z.laptop, func(s *api.PeerStatus) bool { return pathTo(s, "phone").Path == "direct" })
			if p := pathTo(st, "phone"); !p.Inbound {
				t.Fatalf("laptop's path to the phone: %+v", p)
			}
			if b := waitBindings(t, z.hb, true, func([]api.BindingView) bool { return true }); len(b) != 0 {
				t.Fatalf("the hub made bindings for direct calls: %+v", b)
			}
			if st := z.phonePeer.Status(); st.Direct.CallsDirect != 3 || st.Direct.CallsHub != 0 || st.Direct.Fallbacks != 0 {
				t.Fatalf("phone's counts: %+v", st.Direct)
			}
		})
	}
}

// dialDirectAs opens a direct session to addr presenting id's certificate,
// without checking the other end: what a device with id, honest or not,
// could do.
func dialDirectAs(ctx context.Context, id *Identity, addr string) (transport.Conn, error) {
	conf := &tls.Config{MinVersion: tls.VersionTLS13, NextProtos: []string{transport.ALPNDirect}, InsecureSkipVerify: true,
		Certificates: []tls.Certificate{{Certificate: [][]byte{id.Cert.Raw}, PrivateKey: id.Key}}}
	conn, err := transport.Dial(ctx, addr, transport.ModeTCP, transport.Config{TLS: conf})
	if err != nil {
		return nil, err
	}
	ctrl, err := conn.OpenStream(ctx)
	if err == nil {
		ctrl.SetDeadline(time.Now().Add(5 * time.Second))
		err = transport.WriteFrame(ctrl, &wire.StreamHeader{Kind: wire.StreamControl})
	}
	if err == nil {
		err = transport.WriteFrame(ctrl, &wire.Control{Type: wire.MsgHello, Version: directVersion})
	}
	var w wire.Control
	if err == nil {
		err = transport.NewFrameReader(ctrl, wire.MaxControlFrame).ReadFrame(&w)
	}
	if err == nil && w.Type != wire.MsgWelcome {
		err = errors.New("no welcome")
	}
	if err != nil {
		conn.CloseWithError(0, "")
		return nil, err
	}
	return conn, nil
}

// TestDirectIdentityAndRevocation: the caller's zone and device come from
// its certificate, not from the header it sends; revoking a device cuts
// its direct connections at once, and its certificate is refused from then on.
func TestDirectIdentityAndRevocation(t *testing.T) {
	z, others := startDirectZone(t, transport.ModeQUIC, "tablet")
	tablet := peerCert(t, others["tablet"])
	waitRecord(t, z.laptop, zsync.BucketCerts, wire.CertKeyDevice+"tablet")
	addr := z.laptopPr.Status().Direct.Listen[0]
	ctx := testCtx(t)
	conn, err := dialDirectAs(ctx, tablet, addr)
	if err != nil {
		t.Fatalf("tablet's direct session: %v", err)
	}
	defer conn.CloseWithError(0, "")

	// A forged header: another zone, another device.
	st, err := conn.OpenStream(ctx)
	if err != nil {
		t.Fatal(err)
	}
	st.SetDeadline(time.Now().Add(10 * time.Second))
	hdr := &wire.CallHeader{ID: wire.NewCallID(), Kind: wire.CallMessage, FromZone: "bob", FromDevice: "phone", FromApp: "liar", ToDevice: "laptop", ToService: "echo", TimeoutMs: 10000}
	if err := transport.WriteFrame(st, &wire.StreamHeader{Kind: wire.StreamCall}); err != nil {
		t.Fatal(err)
	}
	if err := transport.WriteFrame(st, hdr); err != nil {
		t.Fatal(err)
	}
	if err := session.WriteBody(st, []byte(`"forged"`), false); err != nil {
		t.Fatal(err)
	}
	var rep wire.CallReply
	if err := transport.NewFrameReader(st, wire.CallChunk+16).ReadFrame(&rep); err != nil || rep.Status != wire.CallOK {
		t.Fatalf("message: %+v, %v", rep, err)
	}
	st.Close()
	if ev := <-z.msgs; ev.From != "alice/tablet/liar" {
		t.Fatalf("the service saw the message from %q, not alice/tablet/liar", ev.From)
	}

	// A token call is the hub's to account for.
	st, _ = conn.OpenStream(ctx)
	st.SetDeadline(time.Now().Add(10 * time.Second))
	hdr = &wire.CallHeader{ID: wire.NewCallID(), Kind: wire.CallRequest, ToDevice: "laptop", ToService: "echo", Method: "echo", Token: "x.y", TimeoutMs: 10000}
	transport.WriteFrame(st, &wire.StreamHeader{Kind: wire.StreamCall})
	transport.WriteFrame(st, hdr)
	session.WriteBody(st, []byte("1"), false)
	if err := transport.NewFrameReader(st, wire.CallChunk+16).ReadFrame(&rep); err != nil || rep.Status != wire.CallDenied {
		t.Fatalf("token call direct: %+v, %v", rep, err)
	}

	if err := z.hb.client().Do(ctx, "POST", "/v1/devices/tablet/revoke", nil, nil); err != nil {
		t.Fatal(err)
	}
	select {
	case <-conn.Done():
	case <-time.After(10 * time.Second):
		t.Fatal("the revoked tablet's direct connection is still open")
	}
	waitRecord(t, z.laptop, zsync.BucketCerts, wire.CertKeyRevokedPrefix+stores.SerialHex(tablet.Cert))
	if c, err := dialDirectAs(ctx, tablet, addr); err == nil {
		c.CloseWithError(0, "")
		t.Fatal("a revoked certificate got a direct session")
	}
	// Nor does a device take its own certificate from the other end.
	if _, err := z.laptopPr.checkDirectPeer([][]byte{z.laptopPr.id.Load().Cert.Raw}, ""); err == nil {
		t.Fatal("a device accepted its own certificate from the other end")
	}
}

// TestDirectFallback: when the direct path dies while a call is on it,
// before any answer, the call goes through the hub instead and succeeds;
// later calls go through the hub without waiting for a direct attempt.
func TestDirectFallback(t *testing.T) {
	clock := &testClock{}
	hb := startHub(t, clock, nil)
	phone, laptop := hb.pair(t, clock, "phone", 0), hb.pair(t, clock, "laptop", 0)
	got := make(chan *Peer, 2)
	direct := func(c *Config) { c.DirectListen, c.started = "127.0.0.1:0", func(p *Peer) { got <- p } }
	startPeerWith(t, phone, clock, direct)
	<-got
	startPeerWith(t, laptop, clock, direct)
	lp := <-got
	waitSyncedPeer(t, phone)
	waitSyncedPeer(t, laptop)
	froms := make(chan string, 4)
	cut := make(chan struct{}, 1)
	cut <- struct{}{}
	serveApp(t, appClient(laptop, "demo"), api.ServiceInfo{Name: "echo", Methods: []string{"echo"}}, func(ctx context.Context, ev api.Event) (any, error) {
		froms <- ev.From
		select {
		case <-cut:
			// The first delivery, direct: the laptop's direct listener
			// and its connections go away before it answers.
			lp.direct.ln.Close()
			lp.direct.closeAll(wire.ReasonShutdown, "cut by the test")
			<-ctx.Done()
			return nil, ctx.Err()
		default:
			return ev.Body, nil
		}
	})
	waitRecord(t, phone, zsync.BucketApps, "laptop/demo")
	c := peerClient(phone)
	res, err := c.Call(testCtx(t), "laptop/echo", "echo", "x")
	if err != nil || string(res) != `"x"` {
		t.Fatalf("call with the direct path cut: %s, %v", res, err)
	}
	if f1, f2 := <-froms, <-froms; f1 != "alice/phone/pzp" || f2 != f1 {
		t.Fatalf("deliveries from %q and %q", f1, f2)
	}
	st := waitPeer(t, phone, func(s *api.PeerStatus) bool { return pathTo(s, "laptop").Path == "hub" })
	if st.Direct.Fallbacks != 1 || st.Direct.CallsHub != 1 || st.Direct.CallsDirect != 0 {
		t.Fatalf("after the cut: %+v", st.Direct)
	}
	// The next call: one direct attempt (refused), then the hub; the
	// failure is remembered, so the one after does not try again.
	for i := range 2 {
		if res, err := c.Call(testCtx(t), "laptop/echo", "echo", i); err != nil || string(res) != itoa(uint64(i)) {
			t.Fatalf("call %d after the cut: %s, %v", i, res, err)
		}
	}
	st = waitPeer(t, phone, func(s *api.PeerStatus) bool { return true })
	p := pathTo(st, "laptop")
	if p.Path != "hub" || p.CallsHub != 3 || p.LastError == "" || p.RetryAfter == nil {
		t.Fatalf("path after failures: %+v", p)
	}
}
