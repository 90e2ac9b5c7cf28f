package transport

import (
	"bytes"
	"context"
	"testing"
)

// A session dialled from an Endpoint shares its socket with datagrams of
// another protocol both ways: the listener sees the endpoint's address as
// the connection's, a datagram written from the listener's socket to that
// address reaches ReadDatagram, even when it arrives before the first
// ReadDatagram, and the connection survives it.
func TestEndpointSharesSocket(t *testing.T) {
	pki := newPKI(t)
	server := Config{TLS: pki.serverTLS()}
	ln, err := ListenQUIC("127.0.0.1:0", server)
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	ep, err := ListenEndpoint("127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ep.Close()
	ctx, cancel := context.WithTimeout(context.Background(), testTimeout)
	defer cancel()
	accepted := make(chan Conn, 1)
	go func() {
		c, err := ln.Accept(ctx)
		if err == nil {
			accepted <- c
		}
	}()
	client := Config{TLS: pki.clientTLS(), Endpoint: ep}
	c, err := Dial(ctx, ln.Addr().String(), ModeQUIC, client)
	if err != nil {
		t.Fatal(err)
	}
	defer c.CloseWithError(0, "")
	var sc Conn
	select {
	case sc = <-accepted:
	case <-ctx.Done():
		t.Fatal("no connection accepted")
	}
	if got, want := sc.RemoteAddr().String(), ep.LocalAddr().String(); got != want {
		t.Fatalf("listener sees %s, endpoint is %s", got, want)
	}
	dw := Datagrams(ln)
	if dw == nil {
		t.Fatal("a QUIC listener has a datagram socket")
	}
	msg := []byte{0x01, 'h', 'i'}
	if _, err := dw.WriteTo(msg, sc.RemoteAddr()); err != nil {
		t.Fatal(err)
	}
	// The connection still works after the foreign datagram. The stream's
	// bytes reach the endpoint's socket after the datagram, so once the
	// listener has read them the endpoint has taken the datagram in too,
	// before anyone asked to read it: it must have been kept.
	st, err := c.OpenStream(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := st.Write([]byte("x")); err != nil {
		t.Fatal(err)
	}
	ss, err := sc.AcceptStream(ctx)
	if err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 64)
	if _, err := ss.Read(buf[:1]); err != nil {
		t.Fatal(err)
	}
	if _, err := ss.Write([]byte("y")); err != nil {
		t.Fatal(err)
	}
	if _, err := st.Read(buf[:1]); err != nil {
		t.Fatal(err)
	}
	n, from, err := ep.ReadDatagram(ctx, buf)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(buf[:n], msg) || from.String() != ln.Addr().String() {
		t.Fatalf("read %x from %s, want %x from %s", buf[:n], from, msg, ln.Addr())
	}
	if ep.BytesSent() == 0 {
		t.Fatal("the endpoint counted no bytes sent")
	}
	// A TCP-only listener has no datagram socket.
	tl, err := ListenTCP("127.0.0.1:0", server)
	if err != nil {
		t.Fatal(err)
	}
	defer tl.Close()
	if Datagrams(tl) != nil {
		t.Fatal("a TCP listener has no datagram socket")
	}
}
