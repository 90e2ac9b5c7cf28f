package peer

import (
	"crypto/tls"
	"log/slog"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/pzone/pzone/certs"
)

type tlsConfig = tls.Config

func fmtUint(v uint64) string { return strconv.FormatUint(v, 10) }

// newDummyTLS is a server config good enough to bind a listener and find a
// free port.
func newDummyTLS(t *testing.T) *tls.Config {
	ca, err := certs.NewCA("probe", time.Now())
	if err != nil {
		t.Fatal(err)
	}
	key, _ := certs.NewKey()
	leaf, err := ca.Sign(key.Public(), certs.HubDevice, time.Now(), 3600e9)
	if err != nil {
		t.Fatal(err)
	}
	return &tls.Config{MinVersion: tls.VersionTLS13, NextProtos: []string{"probe"}, Certificates: []tls.Certificate{{Certificate: [][]byte{leaf.Raw}, PrivateKey: key}}}
}

// testLogger sends daemon logs to t.Log under -v, and nowhere otherwise.
func testLogger(t *testing.T, who string) *slog.Logger {
	if !testing.Verbose() {
		return slog.New(slog.DiscardHandler)
	}
	return slog.New(slog.NewTextHandler(tWriter{t}, &slog.HandlerOptions{Level: slog.LevelDebug})).With("node", who)
}

type tWriter struct{ t *testing.T }

func (w tWriter) Write(p []byte) (int, error) {
	w.t.Log(strings.TrimRight(string(p), "\n"))
	return len(p), nil
}
