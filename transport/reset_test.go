package transport

import (
	"strings"
	"testing"
	"time"
)

// A server that restarts with the same StatelessResetKey makes clients of
// the old instance drop their connection as soon as they send anything,
// instead of waiting for an idle timeout.
func TestStatelessResetAfterRestart(t *testing.T) {
	pki := newPKI(t)
	key := [32]byte{1, 2, 3}
	scfg := Config{TLS: pki.serverTLS(), StatelessResetKey: &key}
	l, err := ListenQUIC("127.0.0.1:0", scfg)
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	client, server := dialAccept(t, l, KindQUIC, Config{TLS: pki.clientTLS(), IdleTimeout: time.Minute})
	_ = server
	// Crash: the socket goes away without a word to the client.
	ql := l.(*quicListener)
	ql.udp.Close()
	ql.tr.Close()

	l2, err := ListenQUIC(addr, scfg)
	if err != nil {
		t.Fatal(err)
	}
	defer l2.Close()
	st, err := client.OpenStream(testCtx(t))
	if err != nil {
		t.Fatal(err)
	}
	// Keep talking, as a heartbeat would: each write is a packet well over
	// the 42 bytes quic-go wants before it answers with a reset, and a
	// reset it skipped while busy gets another chance.
	probe := make([]byte, 100)
	tick := time.NewTicker(100 * time.Millisecond)
	defer tick.Stop()
	deadline := time.After(10 * time.Second)
	for {
		st.Write(probe)
		select {
		case <-client.Done():
			if err := client.Err(); err == nil || !strings.Contains(err.Error(), "stateless reset") {
				t.Errorf("connection ended with %v, want a stateless reset", err)
			}
			return
		case <-deadline:
			t.Fatal("client connection still up 10 s after it started writing to a restarted server")
		case <-tick.C:
		}
	}
}
