// Package transport carries pzone sessions between nodes: one connection
// interface with two implementations, QUIC (quic-go) and TLS 1.3 over TCP
// multiplexed with yamux, plus the length-prefixed CBOR framing every stream
// uses.
//
// It is not for deciding who may connect: callers pass a *tls.Config whose
// verification callbacks encode the zone's trust rules (see package certs),
// and read the verified identity back from ConnectionState. Nor does it
// keep sessions alive: heartbeats, reconnection and close reasons that
// must survive TCP belong to the session layer (package zone).
package transport

import (
	"context"
	"crypto/tls"
	"fmt"
	"io"
	"net"
	"time"
)

// ALPN protocol names. The version is part of the name so that an
// incompatible change is negotiated in the TLS handshake rather than
// discovered mid-session.
const (
	// ALPNSession is the authenticated session protocol, version 1. Both ends
	// present certificates from the zone CA (or a friend zone's CA).
	ALPNSession = "pz/1"
	// ALPNPairing is the invite redemption protocol, version 1. The client
	// presents no certificate; it pins the hub by zone ID instead.
	ALPNPairing = "pz-pair/1"
	// ALPNPairCode is pairing by a short code, version 1: the client
	// presents no certificate and knows no zone ID; a CPace exchange over
	// the code authenticates both ends (docs/PROTOCOL.md).
	ALPNPairCode = "pz-pair-code/1"
	// ALPNFriendCode is making friends by a short code, version 1: the
	// redeeming hub presents its chain; the code authenticates both.
	ALPNFriendCode = "pz-friend-code/1"
	// ALPNFriend is the friend invite redemption between two hubs,
	// version 1. Both present their hub certificate chains; the redeeming
	// hub pins the inviting one by zone ID, the inviting hub learns the
	// redeeming zone from its chain and a proof of the invite secret.
	ALPNFriend = "pz-friend/1"
	// ALPNLink is the session between the hubs of two friend zones,
	// version 1. Each verifies the other against the friend's zone CA it
	// recorded when they made friends.
	ALPNLink = "pz-link/1"
	// ALPNDirect is the direct session between two devices of one zone,
	// version 1. Both ends present their zone device certificates and check
	// the other's against the zone CA and the zone state's revocations.
	ALPNDirect = "pz-direct/1"
)

// Kind names a transport implementation.
type Kind string

const (
	KindQUIC Kind = "quic" // QUIC over UDP
	KindTCP  Kind = "tcp"  // TLS 1.3 over TCP, streams multiplexed by yamux
)

// Mode selects which transports a dialer tries.
type Mode string

const (
	ModeAuto Mode = "auto" // QUIC first, TCP after a short head start (see AutoFallbackDelay)
	ModeQUIC Mode = "quic"
	ModeTCP  Mode = "tcp"
)

// ParseMode parses a --transport flag value.
func ParseMode(s string) (Mode, error) {
	switch Mode(s) {
	case ModeAuto, ModeQUIC, ModeTCP:
		return Mode(s), nil
	}
	return "", fmt.Errorf("unknown transport %q: use auto, quic or tcp", s)
}

// Stream is one bidirectional, ordered byte stream within a Conn.
type Stream interface {
	io.Reader
	io.Writer
	// Close closes the write direction: the other end reads io.EOF after the
	// data already written. Reading remains possible until the other end
	// closes its write direction too.
	Close() error
	// Reset aborts both directions at once; pending data may be discarded.
	// This end's Reads and Writes then fail with ErrStreamReset. Over QUIC
	// the other end's do too; over TCP (yamux has no reset an application
	// can send) the other end reads io.EOF and its writes are discarded
	// until it closes its side.
	Reset()
	SetDeadline(t time.Time) error
	SetReadDeadline(t time.Time) error
	SetWriteDeadline(t time.Time) error
}

// Conn is one authenticated, multiplexed connection between two nodes.
type Conn interface {
	// OpenStream opens a new stream. It blocks while the peer's stream limit
	// is reached, until ctx ends. (Over TCP the stream is returned at once
	// and waits, unacknowledged, for the peer to accept it; OpenStream
	// blocks only once 64 such streams are waiting.)
	OpenStream(ctx context.Context) (Stream, error)
	// AcceptStream waits for the next stream opened by the other end.
	AcceptStream(ctx context.Context) (Stream, error)
	// ConnectionState is the completed TLS handshake: negotiated ALPN and
	// the peer's verified certificates.
	ConnectionState() tls.ConnectionState
	LocalAddr() net.Addr
	RemoteAddr() net.Addr
	Kind() Kind
	// CloseWithError closes the connection and every stream in it. Over QUIC
	// the code and message reach the other end as an application error;
	// over TCP they cannot, so protocols that need the other end to learn a
	// reason send it in-band first. Closing twice is harmless.
	CloseWithError(code uint64, msg string) error
	// Done is closed once the connection is closed, by either end or by
	// failure.
	Done() <-chan struct{}
	// Err reports why the connection ended once Done is closed (nil before).
	// A close by the other end over QUIC is a *RemoteCloseError, over TCP
	// ErrPeerGone; a close by this end is ErrClosed; silence for
	// IdleTimeout is ErrIdleTimeout. Stream operations on an ended
	// connection fail with the same error.
	Err() error
	// Stats counts the bytes this connection has put on and taken off the
	// wire so far, handshake included.
	Stats() Stats
}

// Stats counts a connection's traffic above UDP or TCP: QUIC packets (with
// their headers and retransmissions), or TLS records on TCP. IP, UDP and
// TCP headers are not included.
type Stats struct {
	BytesSent     uint64
	BytesReceived uint64
}

// RemoteCloseError is the reason the other end gave when it closed a QUIC
// connection with CloseWithError.
type RemoteCloseError struct {
	Code uint64
	Msg  string
}

func (e *RemoteCloseError) Error() string {
	return fmt.Sprintf("closed by peer: %s (code %d)", e.Msg, e.Code)
}

// Listener accepts connections of one or more kinds.
type Listener interface {
	// Accept returns the next connection whose TLS handshake completed. A
	// failed handshake is logged by the listener and never returned.
	// (quic-go does not report failed QUIC handshakes, so only TCP ones and
	// connections refused after the handshake are logged. Handshakes a
	// flooded TCP listener sheds are counted instead, and the totals noted
	// at most every 10 s.)
	Accept(ctx context.Context) (Conn, error)
	// Addr is the bound address (for ListenBoth: the TCP address; the UDP
	// socket has the same IP and port).
	Addr() net.Addr
	// Close stops accepting and closes every connection the listener
	// accepted: QUIC connections share the listener's UDP socket, and TCP
	// ones are closed too so that both kinds behave alike.
	Close() error
}

// Config holds the settings shared by listeners and dialers.
type Config struct {
	// TLS is the base configuration; it must set NextProtos. Transport
	// works on a copy that requires TLS 1.3 and disables session
	// resumption (a resumed handshake would skip VerifyPeerCertificate),
	// and never weakens verification. Listeners route by the NextProtos
	// the configuration allows; a client that negotiates none is refused.
	TLS *tls.Config
	// HandshakeTimeout bounds a TLS handshake (TCP) or QUIC handshake.
	// Zero means DefaultHandshakeTimeout. A TCP listener flooded with
	// handshakes gives new ones at most 2 s (pressureHandshakeTimeout).
	HandshakeTimeout time.Duration
	// IdleTimeout closes a connection after this long without any traffic
	// from the peer. Zero means DefaultIdleTimeout. Session heartbeats keep
	// a live connection above it.
	IdleTimeout time.Duration
	// MaxIncomingStreams caps concurrently open streams the other end may
	// open. Zero means DefaultMaxIncomingStreams. A stream counts until
	// this end has closed it and read it to io.EOF, or has reset it. Over TCP the cap applies to accepted
	// streams; up to 64 more may wait to be accepted.
	MaxIncomingStreams int
	// Logger receives debug-level notes about failed handshakes. Nil
	// discards them.
	Logger Logger
	// StatelessResetKey, on a listener, lets a restarted server that uses
	// the same key answer packets of connections it no longer knows with a
	// QUIC stateless reset (RFC 9000 §10.3), so clients learn at once that
	// their connection died instead of waiting for a timeout. Derive it
	// from a long-lived secret; nil disables resets.
	StatelessResetKey *[32]byte
	// Endpoint, on a dialer, is the UDP socket QUIC connections are
	// dialled from; nil means a fresh socket per connection. A device that
	// sleeps dials from the socket it listens on for wake pings, so the
	// address its hub observes is the one that reaches it (through a NAT,
	// the mapping the session kept open).
	Endpoint *Endpoint
}

// Logger is the part of *slog.Logger the transport uses.
type Logger interface {
	Debug(msg string, args ...any)
}

// Defaults, with why they are what they are.
const (
	// DefaultHandshakeTimeout: a loopback handshake takes ~1 ms and a
	// handshake over a slow mobile link well under 2 s; 10 s leaves room
	// for retransmits without letting a stalled client hold a slot for long.
	DefaultHandshakeTimeout = 10 * time.Second
	// DefaultIdleTimeout is above three missed session heartbeats at the
	// default interval, so the session layer, which knows the reason,
	// decides first.
	DefaultIdleTimeout = 2 * time.Minute
	// DefaultMaxIncomingStreams bounds the memory one peer can pin on the
	// other by opening streams it never uses (a few KiB each, unless it
	// sends data, which flow control bounds per stream). A zone session
	// carries calls and long-lived byte streams at once, each with its
	// own budget below this (zone/wire: DefaultCallsPerTarget,
	// StreamsPerSession).
	DefaultMaxIncomingStreams = 512
	// AutoFallbackDelay is the head start QUIC gets in ModeAuto before TCP
	// is dialled too. A loopback or LAN QUIC handshake finishes in a few
	// ms; 300 ms keeps QUIC preferred on slow links while a network that
	// drops UDP costs only this much extra.
	AutoFallbackDelay = 300 * time.Millisecond
)
