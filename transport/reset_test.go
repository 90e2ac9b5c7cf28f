package transport

import (
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
	st.Write([]byte("anyone there?"))
	select {
	case <-client.Done():
		t.Logf("client learned at once: %v", client.Err())
	case <-time.After(5 * time.Second):
		t.Fatal("client connection still up 5 s after writing to a restarted server")
	}
}
