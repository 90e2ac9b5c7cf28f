package api

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"strconv"
	"sync"
	"time"

	"github.com/pzone/pzone/zone/wire"
)

// Byte streams between applications (docs/PROTOCOL.md, "Streams"): Dial
// opens one to a service that an application serves with Listen; both
// ends get a Stream, a net.Conn. On the socket it is an HTTP upgrade
// (StreamProtocol), after which the connection carries stream frames.

// StreamProtocol is the Upgrade token of a stream on the local API.
const StreamProtocol = "pzone-stream"

// StreamPeerHeader names the other end in the 101 answer of an upgrade:
// ZONE/DEVICE/APP for a stream accepted, the address for one dialled.
const StreamPeerHeader = "Pzone-Stream-Peer"

// DialOptions are a stream's options beyond its address.
type DialOptions struct {
	// Token is a service token (ID.SECRET) for services that require one;
	// its byte and duration limits then apply to the stream.
	Token string
	// TTL waits up to this long for a device that is asleep or offline
	// (the hub wakes it).
	TTL time.Duration
}

// Dial opens a byte stream to the service at to (DEVICE/SERVICE or
// ZONE/DEVICE/SERVICE), which an application there serves with Listen.
// It returns once that application accepted it, or fails with an
// *APIError saying why (as a call does: 404, 403, 503, 504). ctx bounds
// the opening only.
func (c *Client) Dial(ctx context.Context, to string) (*Stream, error) {
	return c.DialWith(ctx, to, DialOptions{})
}

// DialWith is Dial with options.
func (c *Client) DialWith(ctx context.Context, to string, o DialOptions) (*Stream, error) {
	q := url.Values{"to": {to}}
	if o.Token != "" {
		q.Set("token", o.Token)
	}
	if o.TTL > 0 {
		q.Set("ttl_ms", strconv.FormatInt(o.TTL.Milliseconds(), 10))
	}
	if ms := timeoutMs(ctx); ms > 0 {
		q.Set("timeout_ms", strconv.FormatInt(ms, 10))
	}
	return c.upgrade(ctx, "/v1/streams/dial?"+q.Encode())
}

// upgrade makes an upgrade request on a connection of its own and returns
// the stream it became.
func (c *Client) upgrade(ctx context.Context, path string) (*Stream, error) {
	conn, br, resp, err := c.upgradeConn(ctx, path, StreamProtocol)
	if err != nil {
		return nil, err
	}
	return &Stream{c: conn, br: br, peer: resp.Header.Get(StreamPeerHeader)}, nil
}

// upgradeConn makes an upgrade request to protocol on a connection of its
// own and returns the connection, once the daemon switched it, with what
// it read past the 101.
func (c *Client) upgradeConn(ctx context.Context, path, protocol string) (net.Conn, *bufio.Reader, *http.Response, error) {
	return c.upgradeOnce(ctx, path, protocol, false)
}

// upgradeOnce is upgradeConn, asking once more (unless retried) when a
// credential read from a file changed as the daemon refused it (send).
func (c *Client) upgradeOnce(ctx context.Context, path, protocol string, retried bool) (net.Conn, *bufio.Reader, *http.Response, error) {
	var d net.Dialer
	conn, err := d.DialContext(ctx, "unix", c.socket)
	if err != nil {
		return nil, nil, nil, c.dialErr(err)
	}
	stop := context.AfterFunc(ctx, func() { conn.SetDeadline(time.Now()) })
	req, _ := http.NewRequest(http.MethodGet, "http://local"+path, nil)
	req.Header.Set("Connection", "Upgrade")
	req.Header.Set("Upgrade", protocol)
	cred := c.cred()
	if cred != "" {
		req.Header.Set("Authorization", "Bearer "+cred)
	}
	fail := func(err error) (net.Conn, *bufio.Reader, *http.Response, error) {
		stop()
		conn.Close()
		if ctx.Err() != nil {
			return nil, nil, nil, ctx.Err()
		}
		return nil, nil, nil, err
	}
	if err := req.Write(conn); err != nil {
		return fail(err)
	}
	br := bufio.NewReaderSize(conn, 4<<10)
	resp, err := http.ReadResponse(br, req)
	if err != nil {
		return fail(err)
	}
	if resp.StatusCode != http.StatusSwitchingProtocols {
		data, _ := io.ReadAll(io.LimitReader(resp.Body, maxBody))
		resp.Body.Close()
		if !retried && c.credChanged(resp, cred) {
			stop()
			conn.Close()
			return c.upgradeOnce(ctx, path, protocol, true)
		}
		return fail(answerError(resp, data))
	}
	if !stop() {
		conn.Close()
		return nil, nil, nil, ctx.Err()
	}
	conn.SetDeadline(time.Time{})
	return conn, br, resp, nil
}

// Listener takes the streams opened to a service this application serves.
type Listener struct {
	c       *Client
	service string
	resp    *http.Response
	sc      *bufio.Scanner
	cancel  context.CancelFunc
	mu      sync.Mutex
	closed  bool
}

// Listen serves the service name, taking byte streams (not calls), until
// the Listener is closed or ctx ends. It returns once the daemon has
// registered it.
func (c *Client) Listen(ctx context.Context, name string) (*Listener, error) {
	return c.ListenWith(ctx, ServiceInfo{Name: name})
}

// ListenWith is Listen with the service's description and whether it
// takes only streams made with a service token.
func (c *Client) ListenWith(ctx context.Context, info ServiceInfo) (*Listener, error) {
	q := url.Values{"streams": {"accept"}}
	if info.Description != "" {
		q.Set("description", info.Description)
	}
	if info.TokenRequired {
		q.Set("token", "required")
	}
	lctx, cancel := context.WithCancel(ctx)
	resp, err := c.stream(lctx, "/v1/services/"+url.PathEscape(info.Name)+"/events?"+q.Encode())
	if err != nil {
		cancel()
		return nil, err
	}
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 4<<10), 64<<10)
	return &Listener{c: c, service: info.Name, resp: resp, sc: sc, cancel: cancel}, nil
}

// Accept waits for the next stream and returns it, accepted.
func (l *Listener) Accept() (net.Conn, error) { return l.AcceptStream() }

// AcceptStream is Accept returning the *Stream.
func (l *Listener) AcceptStream() (*Stream, error) {
	for l.sc.Scan() {
		var ev Event
		if err := json.Unmarshal(l.sc.Bytes(), &ev); err != nil {
			return nil, fmt.Errorf("bad event from the daemon: %w", err)
		}
		if ev.Type != "stream" {
			continue
		}
		ctx, cancel := context.WithDeadline(context.Background(), ev.Deadline)
		st, err := l.c.upgrade(ctx, "/v1/streams/"+url.PathEscape(ev.ID)+"/accept")
		cancel()
		var ae *APIError
		if errors.As(err, &ae) && ae.Status == http.StatusNotFound {
			continue // its caller gave up meanwhile
		}
		if err != nil {
			return nil, err
		}
		if st.peer == "" {
			st.peer = ev.From
		}
		return st, nil
	}
	l.mu.Lock()
	closed := l.closed
	l.mu.Unlock()
	if closed {
		return nil, net.ErrClosed
	}
	if err := l.sc.Err(); err != nil {
		return nil, err
	}
	return nil, errors.New("the daemon ended the service's event stream")
}

// Close stops serving the service; streams accepted go on.
func (l *Listener) Close() error {
	l.mu.Lock()
	l.closed = true
	l.mu.Unlock()
	l.cancel()
	return l.resp.Body.Close()
}

// Addr is the service's name.
func (l *Listener) Addr() net.Addr { return streamAddr(l.service) }

type streamAddr string

func (a streamAddr) Network() string { return "pzone" }
func (a streamAddr) String() string  { return string(a) }

// StreamError is why a stream was cut: by the other application, a hop on
// the way (a service token's limit, a revoked device, a lost session), or
// its own device.
type StreamError struct {
	Status  wire.CallStatus
	Message string
}

func (e *StreamError) Error() string { return "stream cut: " + e.Message }

// Stream is one byte stream between two applications: a net.Conn whose
// CloseWrite ends this direction only (the other end reads io.EOF), and
// whose Read, once the stream is cut, returns a *StreamError with why.
type Stream struct {
	c    net.Conn
	br   *bufio.Reader
	peer string

	rmu  sync.Mutex
	left int   // data bytes of the current frame not read yet
	rerr error // sticky: io.EOF at the other end's CloseWrite, or why it ended

	wmu    sync.Mutex
	wdone  bool
	hdr    [wire.StreamFrameHeader]byte
	closed sync.Once
}

// Peer is the other end: ZONE/DEVICE/APP for an accepted stream, the
// address dialled for one that Dial opened.
func (s *Stream) Peer() string { return s.peer }

func (s *Stream) Read(p []byte) (int, error) {
	s.rmu.Lock()
	defer s.rmu.Unlock()
	for s.left == 0 {
		if s.rerr != nil {
			return 0, s.rerr
		}
		if err := s.nextFrame(); err != nil {
			s.rerr = err
			return 0, err
		}
	}
	if len(p) > s.left {
		p = p[:s.left]
	}
	n, err := s.br.Read(p)
	s.left -= n
	if err != nil {
		s.rerr = s.broke(err)
		if n > 0 {
			return n, nil
		}
		return 0, s.rerr
	}
	return n, nil
}

// nextFrame reads frame headers until data (setting left) or the end.
func (s *Stream) nextFrame() error {
	var h [wire.StreamFrameHeader]byte
	if _, err := io.ReadFull(s.br, h[:]); err != nil {
		return s.broke(err)
	}
	typ, n, err := wire.ParseStreamHeader(h[:])
	if err != nil {
		return &StreamError{Status: wire.CallBadRequest, Message: "the device sent a malformed frame: " + err.Error()}
	}
	switch typ {
	case wire.StreamData:
		s.left = n
		return nil
	case wire.StreamEnd:
		return io.EOF
	default:
		payload := make([]byte, n)
		if _, err := io.ReadFull(s.br, payload); err != nil {
			return s.broke(err)
		}
		ce := wire.ParseAbort(payload)
		return &StreamError{Status: ce.Status, Message: ce.Message}
	}
}

// broke explains a read of the connection that failed.
func (s *Stream) broke(err error) error {
	var ne net.Error
	if errors.As(err, &ne) && ne.Timeout() {
		return err // a deadline the application set
	}
	if errors.Is(err, net.ErrClosed) {
		return err
	}
	return &StreamError{Status: wire.CallUnavailable, Message: "the device's pzp broke off the stream: " + err.Error()}
}

func (s *Stream) Write(p []byte) (int, error) {
	s.wmu.Lock()
	defer s.wmu.Unlock()
	if s.wdone {
		return 0, errors.New("write on a stream after CloseWrite or Close")
	}
	n := 0
	for len(p) > 0 {
		k := min(len(p), wire.MaxStreamData)
		wire.PutStreamHeader(s.hdr[:], wire.StreamData, k)
		bufs := net.Buffers{s.hdr[:], p[:k]}
		if _, err := bufs.WriteTo(s.c); err != nil {
			s.wdone = true // out of step: nothing more can be framed
			return n, err
		}
		n += k
		p = p[k:]
	}
	return n, nil
}

// CloseWrite ends this direction: the other application reads io.EOF
// once it has read everything written before; reading goes on.
func (s *Stream) CloseWrite() error {
	s.wmu.Lock()
	defer s.wmu.Unlock()
	return s.endLocked()
}

func (s *Stream) endLocked() error {
	if s.wdone {
		return nil
	}
	s.wdone = true
	wire.PutStreamHeader(s.hdr[:], wire.StreamEnd, 0)
	_, err := s.c.Write(s.hdr[:])
	return err
}

// Close ends the stream. Closed after reading to its end, it ends this
// direction cleanly too (as CloseWrite); closed before, it cuts the
// stream, and the other application's reads fail saying so.
func (s *Stream) Close() error {
	s.closed.Do(func() {
		s.rmu.Lock()
		readDone := errors.Is(s.rerr, io.EOF)
		s.rmu.Unlock()
		s.wmu.Lock()
		if readDone || s.wdone {
			s.endLocked()
		} else {
			s.abortLocked(wire.CallUnavailable, "the application at the other end closed the stream")
		}
		s.wmu.Unlock()
	})
	return s.c.Close()
}

// abortLocked writes the abort frame, the last this end writes; s.wmu is
// held.
func (s *Stream) abortLocked(status wire.CallStatus, reason string) {
	s.wdone = true
	s.c.SetWriteDeadline(time.Now().Add(time.Second))
	s.c.Write(wire.AbortFrame(status, reason))
}

// Abort cuts the stream with reason, which the other application reads
// as the *StreamError of its next read, and closes it.
func (s *Stream) Abort(reason string) error {
	s.closed.Do(func() {
		s.wmu.Lock()
		if !s.wdone {
			s.abortLocked(wire.CallFailed, reason)
		}
		s.wmu.Unlock()
	})
	return s.c.Close()
}

func (s *Stream) LocalAddr() net.Addr                { return streamAddr("local") }
func (s *Stream) RemoteAddr() net.Addr               { return streamAddr(s.peer) }
func (s *Stream) SetDeadline(t time.Time) error      { return s.c.SetDeadline(t) }
func (s *Stream) SetReadDeadline(t time.Time) error  { return s.c.SetReadDeadline(t) }
func (s *Stream) SetWriteDeadline(t time.Time) error { return s.c.SetWriteDeadline(t) }
