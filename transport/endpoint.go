package transport

import (
	"context"
	"errors"
	"fmt"
	"net"
	"sync"
	"sync/atomic"

	"github.com/quic-go/quic-go"
)

// Endpoint is a UDP socket shared by the QUIC connections dialled from it
// and by datagrams of another protocol: those whose first byte has its two
// top bits clear, which QUIC never sends (RFC 9000 §17: the fixed bit is
// set), so the two cannot be confused. A device uses one for its session
// and for wake pings; the hub's QUIC listener answers the same way
// (WriteDatagram).
type Endpoint struct {
	udp *net.UDPConn
	tr  *quic.Transport

	sent atomic.Uint64 // bytes written by this endpoint's datagrams and QUIC connections
	once sync.Once
	err  error
}

// ListenEndpoint binds a UDP socket at addr (host:port; port 0 picks one).
func ListenEndpoint(addr string) (*Endpoint, error) {
	uaddr, err := net.ResolveUDPAddr("udp", addr)
	if err != nil {
		return nil, fmt.Errorf("listen udp %s: %w", addr, err)
	}
	udp, err := net.ListenUDP("udp", uaddr)
	if err != nil {
		return nil, fmt.Errorf("listen udp %s: %w", addr, err)
	}
	e := &Endpoint{udp: udp}
	e.tr = &quic.Transport{Conn: countingPacketConn{udp, &e.sent}}
	// quic-go keeps non-QUIC datagrams only once ReadNonQUICPacket has been
	// called, and drops those that arrive before. Call it once now, with a
	// context already done, so a datagram that arrives before the reader
	// first reads (a wake ping while the device is busy) is queued, not lost.
	done, cancel := context.WithCancel(context.Background())
	cancel()
	if _, _, err := e.tr.ReadNonQUICPacket(done, nil); err != nil && !errors.Is(err, context.Canceled) {
		e.Close()
		return nil, fmt.Errorf("listen udp %s: %w", addr, err)
	}
	return e, nil
}

// LocalAddr is the bound address.
func (e *Endpoint) LocalAddr() net.Addr { return e.udp.LocalAddr() }

// BytesSent counts every byte this socket has sent: QUIC packets and
// datagrams alike. A sleeping device's figure must not move.
func (e *Endpoint) BytesSent() uint64 { return e.sent.Load() }

// ReadDatagram waits for the next non-QUIC datagram. quic-go queues a few
// dozen of them and drops the rest, so a flood costs the reader nothing.
func (e *Endpoint) ReadDatagram(ctx context.Context, b []byte) (int, net.Addr, error) {
	n, addr, err := e.tr.ReadNonQUICPacket(ctx, b)
	if err != nil && ctx.Err() == nil {
		err = fmt.Errorf("%w: %w", ErrClosed, err)
	}
	return n, addr, err
}

// WriteTo sends one datagram (its first byte must have its top two bits
// clear, or the other side takes it for QUIC).
func (e *Endpoint) WriteTo(b []byte, addr net.Addr) (int, error) {
	return e.tr.WriteTo(b, addr)
}

// Close closes the socket and every connection dialled from it.
func (e *Endpoint) Close() error {
	e.once.Do(func() { e.err = errors.Join(e.tr.Close(), e.udp.Close()) })
	return e.err
}

// dial opens a QUIC connection from the endpoint's socket.
func (e *Endpoint) dial(ctx context.Context, addr string, cfg Config) (*quic.Conn, error) {
	uaddr, err := net.ResolveUDPAddr("udp", addr)
	if err != nil {
		return nil, err
	}
	return e.tr.Dial(ctx, uaddr, cfg.clientTLS(addr), quicConfig(cfg))
}

// countingPacketConn counts the bytes written through a socket.
type countingPacketConn struct {
	*net.UDPConn
	n *atomic.Uint64
}

func (c countingPacketConn) WriteTo(b []byte, addr net.Addr) (int, error) {
	n, err := c.UDPConn.WriteTo(b, addr)
	c.n.Add(uint64(n))
	return n, err
}

func (c countingPacketConn) WriteMsgUDP(b, oob []byte, addr *net.UDPAddr) (int, int, error) {
	n, oobn, err := c.UDPConn.WriteMsgUDP(b, oob, addr)
	c.n.Add(uint64(n))
	return n, oobn, err
}

// DatagramWriter sends single datagrams from a listener's UDP socket.
type DatagramWriter interface {
	WriteTo(b []byte, addr net.Addr) (int, error)
}

// Datagrams returns the UDP socket of a listener that has one (QUIC), for
// datagrams of another protocol sent from the address devices talk to; nil
// for a TCP-only listener.
func Datagrams(l Listener) DatagramWriter {
	switch l := l.(type) {
	case interface{ Datagrams() DatagramWriter }: // a Router's share
		return l.Datagrams()
	case *quicListener:
		return l.tr
	case *multiListener:
		for _, s := range l.subs {
			if d := Datagrams(s); d != nil {
				return d
			}
		}
	}
	return nil
}
