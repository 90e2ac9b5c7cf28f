package wakeup

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
)

// MethodUDP is the built-in wake method: a single UDP datagram to the
// device's address as the hub last observed it.
const MethodUDP = "udp"

// Registration is how a hub reaches one device: the method, a
// method-specific endpoint, and the secret its pings are sealed with.
type Registration struct {
	Method   string // MethodUDP, or another Waker's Method
	Endpoint string // for udp: IP:port as the hub observed it
	Secret   Secret
}

// Waker carries a sealed ping to a device by one method. UDP is built in; a
// push-notification service would be another Waker carrying the same sealed
// bytes, so nothing else changes.
type Waker interface {
	// Method names the method, as in Registration.Method.
	Method() string
	// Wake delivers ping to endpoint. Delivery is best effort: a nil
	// error means the ping was handed on, not that the device woke.
	Wake(ctx context.Context, endpoint string, ping []byte) error
}

// DatagramWriter writes one datagram to addr. It is satisfied by
// *net.UDPConn and by quic-go's *quic.Transport, so a hub can send pings
// from the socket its QUIC listener uses, the address devices already
// reach it at.
type DatagramWriter interface {
	WriteTo(b []byte, addr net.Addr) (int, error)
}

// UDPWaker sends pings as single UDP datagrams from Conn.
type UDPWaker struct {
	Conn DatagramWriter
}

var _ Waker = (*UDPWaker)(nil)

// Method returns MethodUDP.
func (u *UDPWaker) Method() string { return MethodUDP }

// Wake sends ping to endpoint, a literal IP:port (no DNS lookups: the hub
// has an address it observed, and a name would leak to resolvers whom it
// wakes). An IPv4-mapped IPv6 address is sent to as plain IPv4, which
// works from both IPv4 and dual-stack sockets.
func (u *UDPWaker) Wake(ctx context.Context, endpoint string, ping []byte) error {
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("wake %s: %w", endpoint, err)
	}
	if u.Conn == nil {
		return errors.New("wake: UDPWaker has no Conn")
	}
	ap, err := netip.ParseAddrPort(endpoint)
	if err != nil {
		return fmt.Errorf("wake: endpoint %q is not a literal IP:port: %w", endpoint, err)
	}
	if ap.Port() == 0 {
		return fmt.Errorf("wake: endpoint %q has port 0", endpoint)
	}
	ap = netip.AddrPortFrom(ap.Addr().Unmap(), ap.Port())
	n, err := u.Conn.WriteTo(ping, net.UDPAddrFromAddrPort(ap))
	if err != nil {
		return fmt.Errorf("wake %s: %w", endpoint, err)
	}
	if n != len(ping) {
		return fmt.Errorf("wake %s: short write: %d of %d bytes", endpoint, n, len(ping))
	}
	return nil
}
