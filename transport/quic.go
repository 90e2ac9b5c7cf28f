package transport

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"strings"
	"sync"
	"time"

	"github.com/quic-go/quic-go"
)

const (
	// maxCloseReasonLen bounds the message sent with CloseWithError. The
	// CONNECTION_CLOSE frame carrying it must fit in one QUIC packet
	// (at least 1200 bytes) next to the headers; 512 bytes leaves room and
	// is plenty for a human-readable reason.
	maxCloseReasonLen = 512

	// quicResetCode is the stream error code Reset sends. Reset carries no
	// reason, so a single code is enough.
	quicResetCode quic.StreamErrorCode = 0

	// closeCodeListener is the application code used when a listener closes
	// the connections it accepted, and when Dial discards the loser of the
	// ModeAuto race.
	closeCodeListener = 0
)

// quicConfig translates cfg (defaults applied) for quic-go.
func quicConfig(cfg Config) *quic.Config {
	return &quic.Config{
		// quic-go aborts a handshake after twice HandshakeIdleTimeout, so
		// half of ours makes the whole handshake fit in HandshakeTimeout.
		HandshakeIdleTimeout: cfg.HandshakeTimeout / 2,
		MaxIdleTimeout:       cfg.IdleTimeout,
		MaxIncomingStreams:   int64(cfg.MaxIncomingStreams),
		// Sessions use bidirectional streams only.
		MaxIncomingUniStreams: -1,
		// The session layer sends its own heartbeats, which also measure
		// RTT; QUIC PINGs on top would only add idle traffic.
		KeepAlivePeriod: 0,
		// 0-RTT data can be replayed and arrives before the client is
		// authenticated; sessions gain nothing worth that.
		Allow0RTT: false,
	}
}

// ListenQUIC listens for QUIC connections on a UDP address.
func ListenQUIC(addr string, cfg Config) (Listener, error) {
	cfg, err := cfg.resolve()
	if err != nil {
		return nil, err
	}
	uaddr, err := net.ResolveUDPAddr("udp", addr)
	if err != nil {
		return nil, fmt.Errorf("listen quic %s: %w", addr, err)
	}
	udp, err := net.ListenUDP("udp", uaddr)
	if err != nil {
		return nil, fmt.Errorf("listen quic %s: %w", addr, err)
	}
	l, err := newQUICListener(udp, cfg)
	if err != nil {
		udp.Close()
		return nil, fmt.Errorf("listen quic %s: %w", addr, err)
	}
	return l, nil
}

// quicListener accepts QUIC connections on a UDP socket it owns.
type quicListener struct {
	cfg   Config
	udp   *net.UDPConn
	tr    *quic.Transport
	ln    *quic.Listener
	conns connSet

	closeOnce sync.Once
	closeErr  error

	// quic-go queues only 32 finished handshakes for Accept and refuses
	// any beyond that, so under a reconnect storm connections that had
	// completed their handshake were turned away (and their devices backed
	// off). A pump moves them into a queue of our own as they finish.
	pumpOnce sync.Once
	pumping  sync.WaitGroup
	ready    chan quicAccepted
	done     chan struct{} // closed by Close
}

// acceptQueue is how many finished QUIC handshakes wait for Accept: a
// second's worth of handshakes at the rates measured on 2 cores.
const acceptQueue = 2048

type quicAccepted struct {
	c   *quic.Conn
	err error
}

// pump drains quic-go's accept queue until the listener closes.
func (l *quicListener) pump() {
	defer l.pumping.Done()
	for {
		qc, err := l.ln.Accept(context.Background())
		select {
		case l.ready <- quicAccepted{qc, err}:
		case <-l.done:
			if qc != nil {
				qc.CloseWithError(closeCodeListener, "listener closed")
			}
			return
		}
		if err != nil {
			return
		}
	}
}

func newQUICListener(udp *net.UDPConn, cfg Config) (*quicListener, error) {
	tr := &quic.Transport{Conn: udp}
	if cfg.StatelessResetKey != nil {
		k := quic.StatelessResetKey(*cfg.StatelessResetKey)
		tr.StatelessResetKey = &k
	}
	ln, err := tr.Listen(cfg.serverTLS(), quicConfig(cfg))
	if err != nil {
		return nil, err
	}
	return &quicListener{cfg: cfg, udp: udp, tr: tr, ln: ln, ready: make(chan quicAccepted, acceptQueue), done: make(chan struct{})}, nil
}

// Accept returns the next connection whose handshake completed. quic-go
// runs handshakes concurrently and only hands over finished ones, so a slow
// or garbage client never blocks it; it does not report failed handshakes,
// so only the checks made here are logged.
func (l *quicListener) Accept(ctx context.Context) (Conn, error) {
	l.pumpOnce.Do(func() {
		l.pumping.Add(1)
		go l.pump()
	})
	for {
		var qc *quic.Conn
		var err error
		select {
		case r := <-l.ready:
			qc, err = r.c, r.err
			if err != nil {
				l.ready <- r // every later Accept sees the same end
			}
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-l.done:
			return nil, ErrClosed
		}
		if err != nil {
			if errors.Is(err, quic.ErrServerClosed) {
				return nil, ErrClosed
			}
			return nil, err
		}
		if err := checkALPN(qc.ConnectionState().TLS); err != nil {
			l.cfg.debug("transport: refused quic connection", "remote", qc.RemoteAddr(), "err", err)
			qc.CloseWithError(closeCodeListener, "no application protocol")
			continue
		}
		c := &quicConn{c: qc}
		if !l.conns.add(c) {
			c.CloseWithError(closeCodeListener, "listener closed")
			return nil, ErrClosed
		}
		return c, nil
	}
}

func (l *quicListener) Addr() net.Addr { return l.udp.LocalAddr() }

// Close stops accepting, closes every connection this listener accepted
// (they share its UDP socket) and releases the socket.
func (l *quicListener) Close() error {
	l.closeOnce.Do(func() {
		close(l.done)
		l.conns.closeAll()
		err := l.ln.Close()
		// Once the pump has stopped (quic-go's Accept fails after Close),
		// nothing can join the queue: the finished handshakes nobody
		// accepted are closed here, so their clients hear about it instead
		// of waiting for an answer that will never come.
		l.pumpOnce.Do(func() {}) // a pump can no longer start
		l.pumping.Wait()
		for {
			select {
			case r := <-l.ready:
				if r.c != nil {
					r.c.CloseWithError(closeCodeListener, "listener closed")
				}
				continue
			default:
			}
			break
		}
		l.closeErr = errors.Join(err, l.tr.Close(), l.udp.Close())
	})
	return l.closeErr
}

// dialQUIC connects over QUIC from cfg.Endpoint or else a fresh UDP socket,
// which quic-go closes when the connection ends.
func dialQUIC(ctx context.Context, addr string, cfg Config) (Conn, error) {
	ctx, cancel := context.WithTimeout(ctx, cfg.HandshakeTimeout)
	defer cancel()
	var qc *quic.Conn
	var err error
	if cfg.Endpoint != nil {
		qc, err = cfg.Endpoint.dial(ctx, addr, cfg)
	} else {
		qc, err = quic.DialAddr(ctx, addr, cfg.clientTLS(addr), quicConfig(cfg))
	}
	if err != nil {
		var idleErr *quic.IdleTimeoutError
		var hsErr *quic.HandshakeTimeoutError
		if errors.As(err, &idleErr) || errors.As(err, &hsErr) {
			return nil, fmt.Errorf("quic %s: handshake timed out (nothing listening, or UDP blocked?): %w", addr, err)
		}
		return nil, fmt.Errorf("quic %s: %w", addr, quicErr(err))
	}
	if err := checkALPN(qc.ConnectionState().TLS); err != nil {
		qc.CloseWithError(closeCodeListener, "no application protocol")
		return nil, fmt.Errorf("quic %s: %w", addr, err)
	}
	return &quicConn{c: qc}, nil
}

// quicConn adapts *quic.Conn to Conn.
type quicConn struct {
	c *quic.Conn
}

func (q *quicConn) OpenStream(ctx context.Context) (Stream, error) {
	s, err := q.c.OpenStreamSync(ctx)
	if err != nil {
		return nil, quicErr(err)
	}
	return &quicStream{s: s}, nil
}

func (q *quicConn) AcceptStream(ctx context.Context) (Stream, error) {
	s, err := q.c.AcceptStream(ctx)
	if err != nil {
		return nil, quicErr(err)
	}
	return &quicStream{s: s}, nil
}

func (q *quicConn) ConnectionState() tls.ConnectionState { return q.c.ConnectionState().TLS }
func (q *quicConn) LocalAddr() net.Addr                  { return q.c.LocalAddr() }
func (q *quicConn) RemoteAddr() net.Addr                 { return q.c.RemoteAddr() }
func (q *quicConn) Kind() Kind                           { return KindQUIC }
func (q *quicConn) Done() <-chan struct{}                { return q.c.Context().Done() }

func (q *quicConn) Stats() Stats {
	st := q.c.ConnectionStats()
	return Stats{BytesSent: st.BytesSent, BytesReceived: st.BytesReceived}
}

func (q *quicConn) CloseWithError(code uint64, msg string) error {
	if len(msg) > maxCloseReasonLen {
		msg = strings.ToValidUTF8(msg[:maxCloseReasonLen], "")
	}
	return q.c.CloseWithError(quic.ApplicationErrorCode(code), msg)
}

func (q *quicConn) Err() error {
	ctx := q.c.Context()
	select {
	case <-ctx.Done():
	default:
		return nil
	}
	return quicErr(context.Cause(ctx))
}

// quicErr maps quic-go's errors onto this package's: a close by either end,
// an idle timeout, a stream reset and a deadline read the same as over TCP.
// Other errors pass through.
func quicErr(err error) error {
	var appErr *quic.ApplicationError
	var idleErr *quic.IdleTimeoutError
	var streamErr *quic.StreamError
	switch {
	case err == nil:
		return nil
	case errors.As(err, &appErr):
		if appErr.Remote {
			return &RemoteCloseError{Code: uint64(appErr.ErrorCode), Msg: appErr.ErrorMessage}
		}
		return ErrClosed
	case errors.As(err, &idleErr):
		return ErrIdleTimeout
	case errors.As(err, &streamErr):
		return ErrStreamReset
	case errors.Is(err, os.ErrDeadlineExceeded):
		return os.ErrDeadlineExceeded
	}
	return err
}

// quicStream adapts *quic.Stream to Stream.
type quicStream struct {
	s *quic.Stream
}

func (q *quicStream) Read(p []byte) (int, error) {
	n, err := q.s.Read(p)
	if err != nil && err != io.EOF {
		err = quicErr(err)
	}
	return n, err
}

func (q *quicStream) Write(p []byte) (int, error) {
	n, err := q.s.Write(p)
	return n, quicErr(err)
}

func (q *quicStream) Close() error { return quicErr(q.s.Close()) }

// Reset stops both directions: STOP_SENDING asks the peer to stop
// writing, RESET_STREAM abandons what this end has not delivered. The peer
// sees ErrStreamReset on its next Read or Write.
func (q *quicStream) Reset() {
	q.s.CancelRead(quicResetCode)
	q.s.CancelWrite(quicResetCode)
}

func (q *quicStream) SetDeadline(t time.Time) error      { return q.s.SetDeadline(t) }
func (q *quicStream) SetReadDeadline(t time.Time) error  { return q.s.SetReadDeadline(t) }
func (q *quicStream) SetWriteDeadline(t time.Time) error { return q.s.SetWriteDeadline(t) }
