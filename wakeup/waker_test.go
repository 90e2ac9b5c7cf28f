package wakeup

import (
	"bytes"
	"context"
	"errors"
	"net"
	"net/netip"
	"strconv"
	"strings"
	"testing"
	"time"
)

// readTimeout bounds how long a test waits for a loopback datagram; it is
// a failure bound, not a delay: the read returns as soon as the datagram
// arrives.
const readTimeout = 5 * time.Second

func listenUDP(t *testing.T, network, addr string) *net.UDPConn {
	t.Helper()
	c, err := net.ListenUDP(network, net.UDPAddrFromAddrPort(mustAddrPort(t, addr)))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

func mustAddrPort(t *testing.T, s string) netip.AddrPort {
	t.Helper()
	ap, err := netip.ParseAddrPort(s)
	if err != nil {
		t.Fatal(err)
	}
	return ap
}

func receive(t *testing.T, c *net.UDPConn) []byte {
	t.Helper()
	if err := c.SetReadDeadline(time.Now().Add(readTimeout)); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 1500)
	n, _, err := c.ReadFromUDP(buf)
	if err != nil {
		t.Fatalf("no wake ping received: %v", err)
	}
	return buf[:n]
}

func TestUDPWakerLoopback(t *testing.T) {
	hub := listenUDP(t, "udp4", "127.0.0.1:0")
	dev := listenUDP(t, "udp4", "127.0.0.1:0")
	s := testSecret(t)
	ping := Seal(s, time.Now())
	w := &UDPWaker{Conn: hub}
	if w.Method() != MethodUDP || MethodUDP != "udp" {
		t.Fatalf("Method() = %q, want %q", w.Method(), "udp")
	}

	port := dev.LocalAddr().(*net.UDPAddr).Port
	endpoints := []string{
		dev.LocalAddr().String(),
		// As a dual-stack hub would observe an IPv4 device.
		"[::ffff:127.0.0.1]:" + strconv.Itoa(port),
	}
	for _, ep := range endpoints {
		if err := w.Wake(context.Background(), ep, ping); err != nil {
			t.Fatalf("Wake(%s): %v", ep, err)
		}
		got := receive(t, dev)
		if !bytes.Equal(got, ping) || len(got) != PingSize {
			t.Fatalf("via %s received %d bytes %x, want the %d-byte ping %x", ep, len(got), got, PingSize, ping)
		}
		v := NewVerifier(0, nil)
		v.SetSecret(s)
		if verdict := v.Check(got); verdict != Accepted {
			t.Errorf("received ping: %v, want accepted", verdict)
		}
	}
}

func TestUDPWakerBadEndpoint(t *testing.T) {
	w := &UDPWaker{Conn: failWriter{t}}
	for _, ep := range []string{"", "nohost", "host:port", "example.com:443", "127.0.0.1", "127.0.0.1:0", "127.0.0.1:99999"} {
		err := w.Wake(context.Background(), ep, []byte{Version})
		if err == nil {
			t.Errorf("Wake(%q) succeeded, want an error", ep)
			continue
		}
		if !strings.Contains(err.Error(), `"`+ep+`"`) {
			t.Errorf("Wake(%q) error %q does not name the endpoint", ep, err)
		}
	}
}

func TestUDPWakerErrors(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if err := (&UDPWaker{Conn: failWriter{t}}).Wake(ctx, "127.0.0.1:9", nil); !errors.Is(err, context.Canceled) {
		t.Errorf("Wake with a cancelled context: %v, want context.Canceled", err)
	}
	if err := (&UDPWaker{}).Wake(context.Background(), "127.0.0.1:9", nil); err == nil {
		t.Error("Wake without Conn succeeded")
	}
	errBoom := errors.New("boom")
	err := (&UDPWaker{Conn: errWriter{errBoom}}).Wake(context.Background(), "192.0.2.1:9", []byte{1})
	if !errors.Is(err, errBoom) || !strings.Contains(err.Error(), "192.0.2.1:9") {
		t.Errorf("Wake write error = %v, want boom wrapped with the endpoint", err)
	}
	err = (&UDPWaker{Conn: shortWriter{}}).Wake(context.Background(), "192.0.2.1:9", []byte{1, 2})
	if err == nil || !strings.Contains(err.Error(), "short write") {
		t.Errorf("Wake short write = %v, want a short-write error", err)
	}
}

// failWriter fails the test if anything is written: the cases using it
// must be rejected before writing.
type failWriter struct{ t *testing.T }

func (w failWriter) WriteTo(b []byte, addr net.Addr) (int, error) {
	w.t.Errorf("unexpected write to %v", addr)
	return len(b), nil
}

type errWriter struct{ err error }

func (w errWriter) WriteTo([]byte, net.Addr) (int, error) { return 0, w.err }

type shortWriter struct{}

func (shortWriter) WriteTo(b []byte, _ net.Addr) (int, error) { return len(b) - 1, nil }
