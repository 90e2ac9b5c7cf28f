package provider

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"net"
	"net/http"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/pzone/pzone/certs"
	"github.com/pzone/pzone/pairing"
	"github.com/pzone/pzone/transport"
	"github.com/pzone/pzone/zone/api"
)

const testTimeout = 30 * time.Second

// runProvider runs a provider with the zones named, on a free loopback
// port, until the test ends.
func runProvider(t *testing.T, zones ...string) (dir, addr string, ids map[string]certs.ZoneID) {
	t.Helper()
	dir = t.TempDir()
	port := freePort(t)
	addr = net.JoinHostPort("127.0.0.1", port)
	if err := Init(dir, []string{addr}, time.Now()); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	ready := make(chan struct{})
	done := make(chan error, 1)
	go func() {
		done <- Run(ctx, Config{DataDir: dir, Listen: addr, Ready: func(net.Addr) { close(ready) }})
	}()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("provider: %v", err)
		}
	})
	select {
	case <-ready:
	case err := <-done:
		t.Fatalf("provider stopped: %v", err)
	case <-time.After(testTimeout):
		t.Fatal("provider not ready")
	}
	c := api.NewClient(api.SocketPath(dir, api.ProviderSocketName))
	ids = map[string]certs.ZoneID{}
	for _, z := range zones {
		var v api.ProviderZone
		if err := c.Do(testCtx(t), http.MethodPost, "/v1/zones", api.ZoneAddRequest{Name: z, Limits: api.DefaultZoneLimits}, &v); err != nil {
			t.Fatal(err)
		}
		ids[z] = certs.ZoneID(v.ZoneID)
	}
	return dir, addr, ids
}

func freePort(t *testing.T) string {
	t.Helper()
	for range 20 {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		_, port, _ := net.SplitHostPort(l.Addr().String())
		l.Close()
		// The UDP port must be free too (QUIC).
		if u, err := net.ListenPacket("udp", "127.0.0.1:"+port); err == nil {
			u.Close()
			return port
		}
	}
	t.Fatal("no free port")
	return ""
}

func testCtx(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), testTimeout)
	t.Cleanup(cancel)
	return ctx
}

// pairDevice pairs a device named device with zone's hub.
func pairDevice(t *testing.T, dir, zone, device string) *pairing.Result {
	t.Helper()
	var inv api.InviteView
	c := api.NewClient(api.SocketPath(filepath.Join(dir, ZonesDir, zone), api.HubSocketName))
	if err := c.Do(testCtx(t), http.MethodPost, "/v1/invites", api.InviteRequest{Device: device}, &inv); err != nil {
		t.Fatal(err)
	}
	tok, err := pairing.ParseToken(inv.Token)
	if err != nil {
		t.Fatal(err)
	}
	res, err := pairing.Pair(testCtx(t), tok, transport.ModeAuto)
	if err != nil {
		t.Fatalf("pair %s with zone %s: %v", device, zone, err)
	}
	return res
}

// A device or hub of zone A that sends zone B's server name meets B's hub,
// which knows nothing of it: every way in is refused, on both transports.
// A's own name works, and a name no zone has gets a certificate no pinning
// client accepts, with a message saying so.
func TestZonesCannotReachEachOther(t *testing.T) {
	dir, addr, ids := runProvider(t, "alice", "bob")
	dev := pairDevice(t, dir, "alice", "phone")
	devCert := tls.Certificate{Certificate: [][]byte{dev.Cert.Raw}, PrivateKey: dev.Key, Leaf: dev.Cert}
	for _, mode := range []transport.Mode{transport.ModeQUIC, transport.ModeTCP} {
		t.Run(string(mode), func(t *testing.T) {
			dial := func(conf *tls.Config) (transport.Conn, error) {
				return transport.Dial(testCtx(t), addr, mode, transport.Config{TLS: conf, HandshakeTimeout: 10 * time.Second})
			}
			session := func(zone certs.ZoneID, name string) *tls.Config {
				conf := pairing.PinnedHubTLS(zone, transport.ALPNSession, nil)
				conf.ServerName = name
				conf.Certificates = []tls.Certificate{devCert}
				return conf
			}
			// Its own zone: the session's handshake completes.
			c, err := dial(session(ids["alice"], certs.ServerName(ids["alice"])))
			if err != nil {
				t.Fatalf("alice's device to alice: %v", err)
			}
			c.CloseWithError(0, "done")

			// B's name, the device pinning B: B's hub refuses A's certificate.
			c, err = dial(session(ids["bob"], certs.ServerName(ids["bob"])))
			if err == nil {
				// Over TCP the server's refusal can come after the client's
				// handshake ends: the connection must then die unused.
				if !deadSoon(c) {
					t.Fatal("alice's device completed a session handshake with bob's hub")
				}
			}
			// B's name, the device pinning A: it is not A's hub that answers.
			_, err = dial(session(ids["alice"], certs.ServerName(ids["bob"])))
			if !errors.Is(err, pairing.ErrZoneMismatch) && (err == nil || !strings.Contains(err.Error(), "expected zone")) {
				t.Fatalf("alice's device sending bob's name: %v, want a zone mismatch", err)
			}
			// Pairing with B's name shows B's zone, never A's.
			var got x509.Certificate
			pc, err := dial(pairing.PinnedHubTLS(ids["bob"], transport.ALPNPairing, &got))
			if err != nil {
				t.Fatalf("pairing connection to bob: %v", err)
			}
			pc.CloseWithError(0, "done")
			if id, _ := certs.ZoneIDFromKey(got.PublicKey); id != ids["bob"] {
				t.Fatalf("bob's name answered with zone %s", id)
			}
			// A friend link from A's hub to B, which has no such friend:
			// refused in the handshake (A's hub certificate, which a device
			// cannot have, is stood in for by the device's: B knows neither).
			link := &tls.Config{NextProtos: []string{transport.ALPNLink}, ServerName: certs.ServerName(ids["bob"]),
				InsecureSkipVerify: true, Certificates: []tls.Certificate{devCert}}
			if c, err := dial(link); err == nil && !deadSoon(c) {
				t.Fatal("a link from alice's zone to bob's, not friends, was taken")
			}
			// A name no zone has, as pzp before server names sent.
			_, err = dial(session(ids["alice"], certs.LegacyServerName))
			if err == nil || !strings.Contains(err.Error(), UnknownZoneName) {
				t.Fatalf("the legacy name: %v, want the provider's refusal", err)
			}
		})
	}
}

// deadSoon reports whether c is closed by the other end within a few
// seconds, without ever carrying a stream.
func deadSoon(c transport.Conn) bool {
	defer c.CloseWithError(0, "done")
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if st, err := c.OpenStream(ctx); err == nil {
		st.Write([]byte{0})
		buf := make([]byte, 1)
		st.SetDeadline(time.Now().Add(10 * time.Second))
		if _, err := st.Read(buf); err == nil {
			return false
		}
	}
	select {
	case <-c.Done():
		return true
	case <-ctx.Done():
		return false
	}
}

// Devices beyond a zone's limit are refused with a clear message, and the
// invite stays unused.
func TestZoneDeviceLimit(t *testing.T) {
	dir, _, _ := runProvider(t)
	c := api.NewClient(api.SocketPath(dir, api.ProviderSocketName))
	var v api.ProviderZone
	if err := c.Do(testCtx(t), http.MethodPost, "/v1/zones", api.ZoneAddRequest{Name: "small", Limits: api.ZoneLimits{MaxDevices: 1}}, &v); err != nil {
		t.Fatal(err)
	}
	pairDevice(t, dir, "small", "one")
	var inv api.InviteView
	hc := api.NewClient(api.SocketPath(filepath.Join(dir, ZonesDir, "small"), api.HubSocketName))
	if err := hc.Do(testCtx(t), http.MethodPost, "/v1/invites", api.InviteRequest{Device: "two"}, &inv); err != nil {
		t.Fatal(err)
	}
	tok, _ := pairing.ParseToken(inv.Token)
	_, err := pairing.Pair(testCtx(t), tok, transport.ModeAuto)
	var perr *pairing.Error
	if !errors.As(err, &perr) || perr.Code != pairing.CodeZoneFull {
		t.Fatalf("pairing past the limit: %v", err)
	}
	var invs []api.InviteView
	if err := hc.Do(testCtx(t), http.MethodGet, "/v1/invites", nil, &invs); err != nil {
		t.Fatal(err)
	}
	for _, i := range invs {
		if i.ID == inv.ID && i.UsesLeft != 1 {
			t.Fatalf("the refused invite has %d uses left", i.UsesLeft)
		}
	}
	if err := c.Do(testCtx(t), http.MethodPost, "/v1/zones", api.ZoneAddRequest{Name: "neg", Limits: api.ZoneLimits{MaxDevices: -1}}, &v); err == nil || !strings.Contains(err.Error(), "negative") {
		t.Fatalf("a negative limit: %v", err)
	}
}
