package transport

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"net"
	"testing"
)

// Each name reaches its own server and is authenticated by its own PKI;
// a client of one PKI sending the other's name fails the handshake; a
// name no route has gets the fallback, which a verifying client refuses;
// a closed route takes its name off.
func TestRouterRoutesByServerName(t *testing.T) {
	for _, kind := range kinds {
		t.Run(string(kind), func(t *testing.T) {
			a, b, other := newPKI(t), newPKI(t), newPKI(t)
			fallback := other.serverTLS()
			fallback.ClientAuth = tls.NoClientCert
			r, err := ListenRouted("127.0.0.1:0", Config{TLS: fallback}, func(h *tls.ClientHelloInfo) string {
				if h.ServerName == "alias-of-a" {
					return "a.test"
				}
				return ""
			}, kind)
			if err != nil {
				t.Fatal(err)
			}
			ctx, cancel := context.WithCancel(testCtx(t))
			done := make(chan error, 1)
			go func() { done <- r.Run(ctx) }()
			t.Cleanup(func() { cancel(); r.Close(); <-done })
			ra, err := r.Route("A.test", a.serverTLS()) // names are case-insensitive
			if err != nil {
				t.Fatal(err)
			}
			rb, err := r.Route("b.test", b.serverTLS())
			if err != nil {
				t.Fatal(err)
			}
			if _, err := r.Route("a.test", b.serverTLS()); err == nil {
				t.Fatal("a second route for a.test was taken")
			}
			if Datagrams(ra) == nil && kind == KindQUIC {
				t.Fatal("a route over QUIC has no datagram socket")
			}
			dial := func(p *testPKI, name string) (Conn, error) {
				c := p.clientTLS()
				c.ServerName = name
				// The test certificates name 127.0.0.1 only: verify the
				// chain against the PKI's roots, not the name (as pzone's
				// pinning does).
				c.InsecureSkipVerify = true
				c.VerifyPeerCertificate = func(raw [][]byte, _ [][]*x509.Certificate) error {
					leaf, err := x509.ParseCertificate(raw[0])
					if err != nil {
						return err
					}
					_, err = leaf.Verify(x509.VerifyOptions{Roots: p.pool})
					return err
				}
				return Dial(testCtx(t), r.Addr().String(), modeOf(kind), Config{TLS: c})
			}
			expect := func(rt *Route, p *testPKI, name string) {
				t.Helper()
				got := acceptAsync(testCtx(t), rt)
				c, err := dial(p, name)
				if err != nil {
					t.Fatalf("dial %s: %v", name, err)
				}
				defer c.CloseWithError(0, "done")
				res := <-got
				if res.err != nil {
					t.Fatalf("accept %s: %v", name, res.err)
				}
				res.c.CloseWithError(0, "done")
			}
			expect(ra, a, "a.test")
			expect(rb, b, "b.test")
			expect(ra, a, "alias-of-a")
			// A's client sending B's name meets B's certificate, which its
			// roots refuse, and B's server would refuse A's client anyway.
			if c, err := dial(a, "b.test"); err == nil {
				c.CloseWithError(0, "done")
				t.Fatal("A's client reached B's server")
			}
			if c, err := dial(a, "nobody.test"); err == nil {
				c.CloseWithError(0, "done")
				t.Fatal("a name with no route completed a handshake")
			}
			rb.Close()
			if _, err := rb.Accept(testCtx(t)); !errors.Is(err, net.ErrClosed) {
				t.Fatalf("Accept on a closed route: %v", err)
			}
			if c, err := dial(b, "b.test"); err == nil {
				c.CloseWithError(0, "done")
				t.Fatal("a closed route's name still completed a handshake")
			}
			// The name is free again.
			if _, err := r.Route("b.test", b.serverTLS()); err != nil {
				t.Fatal(err)
			}
		})
	}
}
