package transport

import (
	"errors"
	"fmt"
	"net"
)

// Errors callers may need to tell apart. Connection-level errors come from
// Conn.Err and from stream operations on a connection that has ended;
// stream-level errors from a single Stream's Read and Write.
var (
	// ErrClosed: this end closed the connection or listener. It wraps
	// net.ErrClosed, so errors.Is(err, net.ErrClosed) holds as well.
	ErrClosed = fmt.Errorf("transport: closed by this end: %w", net.ErrClosed)

	// ErrIdleTimeout: nothing arrived from the other end for
	// Config.IdleTimeout.
	ErrIdleTimeout = errors.New("transport: idle timeout: nothing received from the peer")

	// ErrPeerGone: the other end closed a TCP connection (or the network
	// did). TCP carries no close reason; compare *RemoteCloseError over QUIC.
	ErrPeerGone = errors.New("transport: connection closed by the peer")

	// ErrStreamReset: the stream was aborted with Reset. Over QUIC either
	// end's Reset is reported this way; over TCP only this end's Reset is
	// (the other end reads io.EOF instead, see Stream.Reset on tcpStream).
	ErrStreamReset = errors.New("transport: stream reset")
)
