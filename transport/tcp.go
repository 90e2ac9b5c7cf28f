package transport

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hashicorp/yamux"
)

const (
	// tcpAcceptBacklog is how many streams the other end may have opened
	// that this end has not accepted yet; yamux resets streams beyond it.
	// It is also how many of this end's own streams may wait for the other
	// end to accept them before OpenStream blocks. Each waiting stream can
	// hold one yamux window (256 KiB) of data, so 64 bounds that at 16 MiB.
	tcpAcceptBacklog = 64

	// tcpWriteTimeout is yamux's safety valve for a frame stuck in the send
	// queue. A healthy link moves a 256 KiB window in well under a second
	// even on a slow uplink; ten seconds of no progress means the
	// connection is dead and waiting longer only delays noticing.
	tcpWriteTimeout = 10 * time.Second

	// acceptRetryMin and acceptRetryMax bound the back-off after a failed
	// accept (typically running out of file descriptors), as net/http does:
	// short enough to recover quickly, long enough not to spin.
	acceptRetryMin = 5 * time.Millisecond
	acceptRetryMax = time.Second
)

// disableTCPKeepAlive turns off kernel TCP keep-alives (Go enables them by
// default every 15 s): the session layer's heartbeats already detect dead
// peers, and idle traffic must stay minimal.
const disableTCPKeepAlive = -1

// ListenTCP listens for TLS-over-TCP connections multiplexed with yamux.
func ListenTCP(addr string, cfg Config) (Listener, error) {
	cfg, err := cfg.resolve()
	if err != nil {
		return nil, err
	}
	lc := net.ListenConfig{KeepAlive: disableTCPKeepAlive}
	ln, err := lc.Listen(context.Background(), "tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("listen tcp %s: %w", addr, err)
	}
	return newTCPListener(ln, cfg), nil
}

// tcpListener accepts TCP connections and runs each TLS handshake in its
// own goroutine, bounded by HandshakeTimeout, so that a slow or garbage
// client never holds up Accept. The accept loop starts with the first
// Accept and stops on Close. When handshakes pile up it sheds the ones
// least likely to be real clients (see tcpshed.go).
type tcpListener struct {
	cfg Config
	tls *tls.Config
	ln  net.Listener

	ctx    context.Context // cancelled by Close
	cancel context.CancelFunc
	ready  chan *tcpConn // handshaken connections, handed to Accept
	// slots holds one token, up to maxPendingHandshakes, for each
	// handshake in progress, evicted handshake not yet ended, and finished
	// connection waiting for Accept.
	slots chan struct{}
	wg    sync.WaitGroup // accept loop and handshakes
	conns connSet
	shed  shedCounts

	mu       sync.Mutex
	started  bool
	closed   bool
	pending  handshakeTable // handshakes in progress
	evicting int            // evicted handshakes still holding their slot
}

func newTCPListener(ln net.Listener, cfg Config) *tcpListener {
	ctx, cancel := context.WithCancel(context.Background())
	return &tcpListener{
		cfg:    cfg,
		tls:    cfg.serverTLS(),
		ln:     ln,
		ctx:    ctx,
		cancel: cancel,
		ready:  make(chan *tcpConn),
		slots:  make(chan struct{}, maxPendingHandshakes),
	}
}

func (l *tcpListener) Accept(ctx context.Context) (Conn, error) {
	l.mu.Lock()
	if l.closed {
		l.mu.Unlock()
		return nil, ErrClosed
	}
	if !l.started {
		l.started = true
		l.wg.Add(1)
		go l.acceptLoop()
	}
	l.mu.Unlock()

	select {
	case c := <-l.ready:
		if !l.conns.add(c) {
			c.CloseWithError(closeCodeListener, "listener closed")
			return nil, ErrClosed
		}
		return c, nil
	case <-ctx.Done():
		return nil, ctx.Err()
	case <-l.ctx.Done():
		return nil, ErrClosed
	}
}

// acceptLoop takes connections off the kernel's accept queue as fast as
// they come. Leaving them there while handshake slots were full is what
// let idle sockets keep real clients out.
func (l *tcpListener) acceptLoop() {
	defer l.wg.Done()
	delay := time.Duration(0)
	for {
		raw, err := l.ln.Accept()
		if err != nil {
			if l.ctx.Err() != nil || errors.Is(err, net.ErrClosed) {
				return
			}
			delay = min(max(2*delay, acceptRetryMin), acceptRetryMax)
			l.cfg.debug("transport: tcp accept failed, retrying", "err", err, "delay", delay)
			t := time.NewTimer(delay)
			select {
			case <-t.C:
			case <-l.ctx.Done():
				t.Stop()
				return
			}
			continue
		}
		delay = 0
		if !l.admit(raw) {
			return
		}
	}
}

// admit starts raw's handshake, first evicting a pending handshake if raw's
// source has too many or no slot is free. It waits only while an evicted
// handshake ends (its goroutine returns as soon as it runs) or while every
// slot holds a finished connection that Accept has not taken, which is
// the application's own back-pressure. It reports false once the listener
// is closed.
func (l *tcpListener) admit(raw net.Conn) bool {
	h := &pendingHandshake{counted: &countConn{Conn: raw}, src: sourceOf(raw.RemoteAddr())}
	shed := false
	l.mu.Lock()
	if h.src.IsValid() && l.pending.len() >= pressureThreshold && l.pending.count(h.src) >= maxHandshakesPerSource {
		l.shed.sameSource.Add(1)
		v := l.pending.victim(h.src)
		if v == nil {
			// Every one of the source's handshakes is under way: the
			// newcomer waits its turn outside, as its client retries.
			l.mu.Unlock()
			l.shed.report(l.cfg, false)
			raw.Close()
			return l.ctx.Err() == nil
		}
		l.evictLocked(v)
		shed = true
	}
	slotted := false
	select {
	case l.slots <- struct{}{}:
		slotted = true
	default:
		// Evict only if no slot is about to be freed already: one
		// newcomer, one eviction.
		if l.evicting == 0 {
			if v := l.pending.victim(netip.Prefix{}); v != nil {
				l.evictLocked(v)
				l.shed.forRoom.Add(1)
				shed = true
			}
		}
	}
	l.mu.Unlock()
	if shed {
		l.shed.report(l.cfg, false)
	}
	if !slotted {
		select {
		case l.slots <- struct{}{}:
		case <-l.ctx.Done():
			raw.Close()
			return false
		}
	}

	l.mu.Lock()
	budget, pressured := l.cfg.HandshakeTimeout, l.pending.len() >= pressureThreshold
	if pressured {
		budget = min(budget, pressureHandshakeTimeout)
	}
	l.pending.add(h)
	l.mu.Unlock()
	l.wg.Add(1)
	go l.handshake(h, budget, pressured)
	return true
}

// evictLocked closes h's connection, which ends its handshake at once;
// h's goroutine gives back the slot. l.mu must be held.
func (l *tcpListener) evictLocked(h *pendingHandshake) {
	l.pending.remove(h)
	l.evicting++
	h.counted.Conn.Close()
}

// handshake runs h's TLS handshake within budget and hands the connection
// to Accept. A handshake started under pressure that fails is counted
// rather than logged, as is an evicted one: a flood would otherwise log a
// line per socket.
func (l *tcpListener) handshake(h *pendingHandshake, budget time.Duration, pressured bool) {
	defer l.wg.Done()
	raw := h.counted.Conn

	ctx, cancel := context.WithTimeout(l.ctx, budget)
	defer cancel()
	tc := tls.Server(h.counted, l.tls)
	err := tc.HandshakeContext(ctx)
	if err == nil {
		err = checkALPN(tc.ConnectionState())
	}
	l.mu.Lock()
	evicted := !l.pending.remove(h)
	if evicted {
		// Under l.mu, so that admit sees the slot free as soon as it
		// sees no eviction in progress.
		l.evicting--
		<-l.slots
	}
	l.mu.Unlock()
	if evicted {
		raw.Close()
		return
	}
	defer func() { <-l.slots }()

	if err != nil {
		raw.Close()
		switch {
		case l.ctx.Err() != nil:
			// Cut off by Close: not the client's failure.
		case pressured:
			l.shed.pressured.Add(1)
			l.shed.report(l.cfg, false)
		default:
			l.cfg.debug("transport: tcp handshake failed", "remote", raw.RemoteAddr(), "err", err)
		}
		return
	}
	c, err := newTCPConn(tc, h.counted, l.cfg, false)
	if err != nil {
		l.cfg.debug("transport: yamux setup failed", "remote", raw.RemoteAddr(), "err", err)
		raw.Close()
		return
	}
	select {
	case l.ready <- c:
	case <-l.ctx.Done():
		c.CloseWithError(closeCodeListener, "listener closed")
	}
}

func (l *tcpListener) Addr() net.Addr { return l.ln.Addr() }

// Close stops accepting, waits for the accept loop and handshakes in
// progress to end, and closes every connection this listener accepted (as
// closing a QUIC listener does).
func (l *tcpListener) Close() error {
	l.mu.Lock()
	if l.closed {
		l.mu.Unlock()
		return nil
	}
	l.closed = true
	l.mu.Unlock()

	l.cancel()
	err := l.ln.Close()
	l.wg.Wait()
	l.conns.closeAll()
	l.shed.report(l.cfg, true)
	return err
}

// dialTCP connects over TLS 1.3 on TCP and starts a yamux client session.
func dialTCP(ctx context.Context, addr string, cfg Config) (Conn, error) {
	ctx, cancel := context.WithTimeout(ctx, cfg.HandshakeTimeout)
	defer cancel()
	d := net.Dialer{KeepAlive: disableTCPKeepAlive}
	raw, err := d.DialContext(ctx, "tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("tcp %s: %w", addr, err)
	}
	counted := &countConn{Conn: raw}
	tc := tls.Client(counted, cfg.clientTLS(addr))
	err = tc.HandshakeContext(ctx)
	if err == nil {
		err = checkALPN(tc.ConnectionState())
	}
	if err != nil {
		raw.Close()
		return nil, fmt.Errorf("tcp %s: %w", addr, err)
	}
	c, err := newTCPConn(tc, counted, cfg, true)
	if err != nil {
		raw.Close()
		return nil, fmt.Errorf("tcp %s: %w", addr, err)
	}
	if err := c.confirm(ctx); err != nil {
		c.CloseWithError(closeCodeListener, "")
		return nil, fmt.Errorf("tcp %s: %w", addr, err)
	}
	return c, nil
}

// tcpStreamWindow is the most a yamux stream may have in flight. yamux's
// default, 256 KiB, is half of one zone-state batch (512 KiB): a sender
// stalled until the receiver had read each batch. 1 MiB keeps two batches
// in flight and is still below QUIC's per-stream window; it is memory only
// while a reader lags, never for an idle stream.
const tcpStreamWindow = 1 << 20

// yamuxConfig is the yamux configuration for a connection with cfg.
func yamuxConfig(cfg Config) *yamux.Config {
	yc := yamux.DefaultConfig()
	yc.AcceptBacklog = tcpAcceptBacklog
	// Session heartbeats detect dead peers; yamux pings would only add
	// idle traffic.
	yc.EnableKeepAlive = false
	yc.MaxStreamWindowSize = tcpStreamWindow
	yc.ConnectionWriteTimeout = tcpWriteTimeout
	// A stream opened while the other end is at its stream limit waits,
	// unacknowledged, until a slot frees (see tcpConn.AcceptStream); yamux
	// would otherwise kill the whole session after StreamOpenTimeout.
	yc.StreamOpenTimeout = 0
	// Close only ends the write direction and the other end may take as
	// long as it likes to finish (a long download after a short request);
	// yamux would otherwise reset such a stream after StreamCloseTimeout.
	yc.StreamCloseTimeout = 0
	if cfg.Logger != nil {
		yc.LogOutput = nil
		yc.Logger = yamuxLogger{cfg.Logger}
	} else {
		yc.LogOutput = io.Discard
	}
	return yc
}

// yamuxLogger sends yamux's log lines to Config.Logger at debug level.
type yamuxLogger struct{ l Logger }

func (y yamuxLogger) Print(v ...any)                 { y.l.Debug(fmt.Sprint(v...)) }
func (y yamuxLogger) Printf(format string, v ...any) { y.l.Debug(fmt.Sprintf(format, v...)) }
func (y yamuxLogger) Println(v ...any)               { y.l.Debug(fmt.Sprint(v...)) }

// tcpConn is a yamux session over a TLS connection.
//
// Incoming streams are capped at Config.MaxIncomingStreams by a slot
// table: AcceptStream takes a slot before it takes a stream from yamux, and
// the stream gives it back once it is finished (see tcpStream). While no
// slot is free, new streams wait unacknowledged in yamux's accept backlog,
// so the other end's writes to them stall rather than fail, much as QUIC's
// stream limit makes the opener wait.
type tcpConn struct {
	sess    *yamux.Session
	wire    *idleConn
	counted *countConn
	state   tls.ConnectionState
	slots   chan struct{}

	mu  sync.Mutex
	err error // set once the session has ended
}

func newTCPConn(tc *tls.Conn, counted *countConn, cfg Config, client bool) (*tcpConn, error) {
	w := &idleConn{Conn: tc, idle: cfg.IdleTimeout}
	var sess *yamux.Session
	var err error
	if client {
		sess, err = yamux.Client(w, yamuxConfig(cfg))
	} else {
		sess, err = yamux.Server(w, yamuxConfig(cfg))
	}
	if err != nil {
		return nil, err
	}
	return &tcpConn{
		sess:    sess,
		wire:    w,
		counted: counted,
		state:   tc.ConnectionState(),
		slots:   make(chan struct{}, cfg.MaxIncomingStreams),
	}, nil
}

// confirm waits for one round trip through the session. In TLS 1.3 a
// client finishes its handshake before the server has checked the client's
// certificate, so without this a refused client would only find out on
// its first read.
func (c *tcpConn) confirm(ctx context.Context) error {
	done := make(chan error, 1)
	go func() {
		_, err := c.sess.Ping()
		done <- err
	}()
	select {
	case err := <-done:
		if err != nil {
			return c.failure(err)
		}
		return nil
	case <-ctx.Done():
		c.sess.Close()
		<-done
		return ctx.Err()
	}
}

// failure explains err from a session operation: once the session has
// ended, the reason it ended.
func (c *tcpConn) failure(err error) error {
	if c.sess.IsClosed() {
		return c.Err()
	}
	return err
}

func (c *tcpConn) OpenStream(ctx context.Context) (Stream, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	type opened struct {
		s   *yamux.Stream
		err error
	}
	// yamux's OpenStream takes no context and blocks while
	// tcpAcceptBacklog of this end's streams await acknowledgement.
	res := make(chan opened, 1)
	go func() {
		s, err := c.sess.OpenStream()
		res <- opened{s, err}
	}()
	select {
	case r := <-res:
		if r.err != nil {
			return nil, c.failure(r.err)
		}
		return newTCPStream(c, r.s, nil), nil
	case <-ctx.Done():
		go func() {
			if r := <-res; r.s != nil {
				newTCPStream(c, r.s, nil).Reset()
			}
		}()
		return nil, ctx.Err()
	}
}

func (c *tcpConn) AcceptStream(ctx context.Context) (Stream, error) {
	select {
	case c.slots <- struct{}{}:
	case <-ctx.Done():
		return nil, ctx.Err()
	case <-c.sess.CloseChan():
		return nil, c.Err()
	}
	s, err := c.sess.AcceptStreamWithContext(ctx)
	if err != nil {
		<-c.slots
		return nil, c.failure(err)
	}
	return newTCPStream(c, s, func() { <-c.slots }), nil
}

func (c *tcpConn) ConnectionState() tls.ConnectionState { return c.state }
func (c *tcpConn) LocalAddr() net.Addr                  { return c.wire.LocalAddr() }
func (c *tcpConn) RemoteAddr() net.Addr                 { return c.wire.RemoteAddr() }
func (c *tcpConn) Kind() Kind                           { return KindTCP }
func (c *tcpConn) Done() <-chan struct{}                { return c.sess.CloseChan() }

func (c *tcpConn) Stats() Stats {
	return Stats{BytesSent: c.counted.sent.Load(), BytesReceived: c.counted.recv.Load()}
}

// countConn counts the bytes of a TCP connection below TLS.
type countConn struct {
	net.Conn
	sent, recv atomic.Uint64
}

func (c *countConn) Read(p []byte) (int, error) {
	n, err := c.Conn.Read(p)
	c.recv.Add(uint64(n))
	return n, err
}

func (c *countConn) Write(p []byte) (int, error) {
	n, err := c.Conn.Write(p)
	c.sent.Add(uint64(n))
	return n, err
}

// CloseWithError closes the session. TCP has no way to carry code and msg,
// so they are dropped; the other end's Err is ErrPeerGone.
func (c *tcpConn) CloseWithError(code uint64, msg string) error {
	c.mu.Lock()
	if c.err == nil {
		if c.sess.IsClosed() {
			c.err = c.endReason()
		} else {
			c.err = ErrClosed
		}
	}
	c.mu.Unlock()
	return c.sess.Close()
}

func (c *tcpConn) Err() error {
	select {
	case <-c.sess.CloseChan():
	default:
		return nil
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.err == nil {
		c.err = c.endReason()
	}
	return c.err
}

// endReason explains a session that ended without a local close, from
// the first read error on the wire.
func (c *tcpConn) endReason() error {
	err := c.wire.readErr()
	var ne net.Error
	switch {
	case err == nil:
		// yamux stopped for a protocol error of the other end.
		return errors.New("transport: tcp session ended: yamux protocol error")
	case errors.Is(err, io.EOF):
		return ErrPeerGone
	case errors.As(err, &ne) && ne.Timeout():
		return ErrIdleTimeout
	}
	return fmt.Errorf("transport: tcp connection failed: %w", err)
}

// idleConn enforces the idle timeout, which yamux lacks: every read must
// complete within idle. It also keeps the first read error, which is why
// the session ended.
type idleConn struct {
	net.Conn
	idle time.Duration

	firstErr atomic.Pointer[error]
}

func (w *idleConn) Read(p []byte) (int, error) {
	if err := w.Conn.SetReadDeadline(time.Now().Add(w.idle)); err != nil {
		w.firstErr.CompareAndSwap(nil, &err)
		return 0, err
	}
	n, err := w.Conn.Read(p)
	if err != nil {
		w.firstErr.CompareAndSwap(nil, &err)
	}
	return n, err
}

func (w *idleConn) readErr() error {
	if p := w.firstErr.Load(); p != nil {
		return *p
	}
	return nil
}

// tcpStream adapts *yamux.Stream to Stream.
//
// yamux has no way for an application to send a stream reset, so Reset
// closes the write direction (the other end reads io.EOF) and discards
// whatever still arrives, in a goroutine, until the other end closes its
// side too or the session ends. Reads and writes at this end fail with
// ErrStreamReset at once. The other end's writes keep succeeding until it
// closes; protocols must therefore not take EOF alone as success where a
// reset would matter (frames make a cut-off body ErrUnexpectedEOF).
type tcpStream struct {
	conn    *tcpConn
	s       *yamux.Stream
	release func() // gives back the incoming-stream slot; nil when this end opened the stream

	mu        sync.Mutex
	idle      *sync.Cond // signalled when reading drops to zero after a reset
	reading   int        // Reads in progress
	reset     bool
	readDone  bool // read direction finished: EOF, or a reset by either end
	writeDone bool // write direction finished: Close or Reset
	released  bool
	// writeDeadline is kept here too: yamux checks it only while a Write
	// waits for window, and a Write past its deadline must fail at once as
	// on QUIC and net.Conn.
	writeDeadline time.Time
}

func newTCPStream(c *tcpConn, s *yamux.Stream, release func()) *tcpStream {
	t := &tcpStream{conn: c, s: s, release: release}
	t.idle = sync.NewCond(&t.mu)
	return t
}

func (t *tcpStream) Read(p []byte) (int, error) {
	t.mu.Lock()
	if t.reset {
		t.mu.Unlock()
		return 0, ErrStreamReset
	}
	t.reading++
	t.mu.Unlock()

	n, err := t.s.Read(p)

	t.mu.Lock()
	defer t.mu.Unlock()
	t.reading--
	if t.reset {
		if t.reading == 0 {
			t.idle.Broadcast()
		}
		return 0, ErrStreamReset
	}
	if err == nil {
		return n, nil
	}
	err = t.mapErr(err)
	switch {
	case err == io.EOF:
		t.readDone = true
	case err == ErrStreamReset:
		t.readDone, t.writeDone = true, true
	}
	t.maybeReleaseLocked()
	return n, err
}

func (t *tcpStream) Write(p []byte) (int, error) {
	t.mu.Lock()
	if t.reset {
		t.mu.Unlock()
		return 0, ErrStreamReset
	}
	deadline := t.writeDeadline
	t.mu.Unlock()
	if !deadline.IsZero() && !time.Now().Before(deadline) {
		return 0, os.ErrDeadlineExceeded
	}

	n, err := t.s.Write(p)
	if err == nil {
		return n, nil
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.reset {
		return n, ErrStreamReset
	}
	err = t.mapErr(err)
	if err == ErrStreamReset {
		t.readDone, t.writeDone = true, true
		t.maybeReleaseLocked()
	}
	return n, err
}

// mapErr translates yamux's errors: a deadline is os.ErrDeadlineExceeded
// and a reset ErrStreamReset, as over QUIC; once the session has ended,
// any error (even the io.EOF yamux gives every stream of a dead session)
// is the connection's.
func (t *tcpStream) mapErr(err error) error {
	switch {
	case errors.Is(err, yamux.ErrTimeout):
		return os.ErrDeadlineExceeded
	case t.conn.sess.IsClosed():
		return t.conn.Err()
	case errors.Is(err, yamux.ErrConnectionReset):
		return ErrStreamReset
	}
	return err
}

func (t *tcpStream) Close() error {
	t.mu.Lock()
	if t.reset {
		t.mu.Unlock()
		return nil
	}
	t.writeDone = true
	t.maybeReleaseLocked()
	t.mu.Unlock()
	return t.s.Close()
}

func (t *tcpStream) Reset() {
	t.mu.Lock()
	if t.reset {
		t.mu.Unlock()
		return
	}
	t.reset = true
	t.writeDone = true
	// Wake this end's blocked Reads and Writes; they return ErrStreamReset.
	past := time.Unix(1, 0)
	t.s.SetDeadline(past)
	drain := !t.readDone
	t.mu.Unlock()

	t.s.Close()
	if drain {
		go t.drain()
		return
	}
	t.mu.Lock()
	t.maybeReleaseLocked()
	t.mu.Unlock()
}

// drain discards what the other end still sends after a Reset, so that a
// peer blocked writing is released and yamux can forget the stream once
// the peer closes its side. The stream keeps its slot until then.
func (t *tcpStream) drain() {
	t.mu.Lock()
	for t.reading > 0 {
		t.idle.Wait()
	}
	t.mu.Unlock()
	t.s.SetReadDeadline(time.Time{})
	io.Copy(io.Discard, t.s)

	t.mu.Lock()
	t.readDone = true
	t.maybeReleaseLocked()
	t.mu.Unlock()
}

// maybeReleaseLocked gives back the incoming-stream slot once both
// directions are finished. t.mu must be held.
func (t *tcpStream) maybeReleaseLocked() {
	if t.readDone && t.writeDone && !t.released && t.release != nil {
		t.released = true
		t.release()
	}
}

func (t *tcpStream) SetDeadline(d time.Time) error {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.reset {
		return nil
	}
	t.writeDeadline = d
	return t.s.SetDeadline(d)
}

func (t *tcpStream) SetReadDeadline(d time.Time) error {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.reset {
		return nil
	}
	return t.s.SetReadDeadline(d)
}

func (t *tcpStream) SetWriteDeadline(d time.Time) error {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.reset {
		return nil
	}
	t.writeDeadline = d
	return t.s.SetWriteDeadline(d)
}
