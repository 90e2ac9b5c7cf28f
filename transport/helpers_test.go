package transport

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"fmt"
	"math/big"
	"net"
	"strings"
	"sync"
	"testing"
	"time"
)

// testTimeout bounds every wait in these tests: generous for a loaded CI
// machine, yet a hang fails in seconds rather than at the go test timeout.
const testTimeout = 10 * time.Second

var kinds = []Kind{KindQUIC, KindTCP}

// testPKI is a throwaway Ed25519 CA with one server and one client
// certificate, standing in for package certs.
type testPKI struct {
	pool           *x509.CertPool
	server, client tls.Certificate
}

func newPKI(t testing.TB) *testPKI {
	t.Helper()
	caPub, caKey, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	now := time.Now()
	caTmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(1),
		Subject:               pkix.Name{CommonName: "test zone CA"},
		NotBefore:             now.Add(-time.Hour),
		NotAfter:              now.Add(time.Hour),
		IsCA:                  true,
		BasicConstraintsValid: true,
		KeyUsage:              x509.KeyUsageCertSign,
	}
	caDER, err := x509.CreateCertificate(rand.Reader, caTmpl, caTmpl, caPub, caKey)
	if err != nil {
		t.Fatal(err)
	}
	ca, err := x509.ParseCertificate(caDER)
	if err != nil {
		t.Fatal(err)
	}
	leaf := func(serial int64, name string, usage x509.ExtKeyUsage) tls.Certificate {
		pub, key, err := ed25519.GenerateKey(rand.Reader)
		if err != nil {
			t.Fatal(err)
		}
		tmpl := &x509.Certificate{
			SerialNumber: big.NewInt(serial),
			Subject:      pkix.Name{CommonName: name},
			NotBefore:    now.Add(-time.Hour),
			NotAfter:     now.Add(time.Hour),
			KeyUsage:     x509.KeyUsageDigitalSignature,
			ExtKeyUsage:  []x509.ExtKeyUsage{usage},
			IPAddresses:  []net.IP{net.IPv4(127, 0, 0, 1)},
		}
		der, err := x509.CreateCertificate(rand.Reader, tmpl, ca, pub, caKey)
		if err != nil {
			t.Fatal(err)
		}
		return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key}
	}
	pool := x509.NewCertPool()
	pool.AddCert(ca)
	return &testPKI{
		pool:   pool,
		server: leaf(2, "hub", x509.ExtKeyUsageServerAuth),
		client: leaf(3, "peer", x509.ExtKeyUsageClientAuth),
	}
}

func (p *testPKI) serverTLS() *tls.Config {
	return &tls.Config{
		Certificates: []tls.Certificate{p.server},
		ClientCAs:    p.pool,
		ClientAuth:   tls.RequireAndVerifyClientCert,
		NextProtos:   []string{ALPNSession},
	}
}

func (p *testPKI) clientTLS() *tls.Config {
	return &tls.Config{
		Certificates: []tls.Certificate{p.client},
		RootCAs:      p.pool,
		NextProtos:   []string{ALPNSession},
	}
}

// testLogger collects debug lines and passes them to t.Log until the test
// ends (goroutines may still log while cleanups run).
type testLogger struct {
	t    testing.TB
	mu   sync.Mutex
	done bool
	msgs []string
}

func newTestLogger(t testing.TB) *testLogger {
	l := &testLogger{t: t}
	t.Cleanup(func() {
		l.mu.Lock()
		l.done = true
		l.mu.Unlock()
	})
	return l
}

func (l *testLogger) Debug(msg string, args ...any) {
	line := fmt.Sprint(append([]any{msg}, args...)...)
	l.mu.Lock()
	defer l.mu.Unlock()
	l.msgs = append(l.msgs, line)
	if !l.done {
		l.t.Log(line)
	}
}

func (l *testLogger) saw(substr string) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	for _, m := range l.msgs {
		if strings.Contains(m, substr) {
			return true
		}
	}
	return false
}

func listenKind(t testing.TB, kind Kind, cfg Config) Listener {
	t.Helper()
	var l Listener
	var err error
	switch kind {
	case KindQUIC:
		l, err = ListenQUIC("127.0.0.1:0", cfg)
	case KindTCP:
		l, err = ListenTCP("127.0.0.1:0", cfg)
	}
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })
	return l
}

func modeOf(kind Kind) Mode { return Mode(kind) }

func testCtx(t testing.TB) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), testTimeout)
	t.Cleanup(cancel)
	return ctx
}

// shortCtx is for asserting that something does not happen: long enough
// that it would have happened on a loopback connection.
func shortCtx(t testing.TB) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
	t.Cleanup(cancel)
	return ctx
}

// acceptAsync accepts one connection in the background.
func acceptAsync(ctx context.Context, l Listener) <-chan acceptResult {
	ch := make(chan acceptResult, 1)
	go func() {
		c, err := l.Accept(ctx)
		ch <- acceptResult{c, err}
	}()
	return ch
}

// dialAccept dials l with kind and returns both ends.
func dialAccept(t testing.TB, l Listener, kind Kind, clientCfg Config) (client, server Conn) {
	t.Helper()
	ctx := testCtx(t)
	accepted := acceptAsync(ctx, l)
	client, err := Dial(ctx, l.Addr().String(), modeOf(kind), clientCfg)
	if err != nil {
		t.Fatalf("dial %s: %v", kind, err)
	}
	t.Cleanup(func() { client.CloseWithError(0, "test over") })
	r := <-accepted
	if r.err != nil {
		t.Fatalf("accept %s: %v", kind, r.err)
	}
	t.Cleanup(func() { r.c.CloseWithError(0, "test over") })
	return client, r.c
}

// pair sets up a listener of kind with default settings and one
// connection to it.
type pair struct {
	pki            *testPKI
	log            *testLogger
	l              Listener
	client, server Conn
}

func newPair(t testing.TB, kind Kind, tweak func(server, client *Config)) *pair {
	t.Helper()
	p := &pair{pki: newPKI(t), log: newTestLogger(t)}
	scfg := Config{TLS: p.pki.serverTLS(), Logger: p.log}
	ccfg := Config{TLS: p.pki.clientTLS(), Logger: p.log}
	if tweak != nil {
		tweak(&scfg, &ccfg)
	}
	p.l = listenKind(t, kind, scfg)
	p.client, p.server = dialAccept(t, p.l, kind, ccfg)
	return p
}

func waitClosed(t testing.TB, ch <-chan struct{}, what string) {
	t.Helper()
	select {
	case <-ch:
	case <-time.After(testTimeout):
		t.Fatalf("%s: not closed after %v", what, testTimeout)
	}
}
