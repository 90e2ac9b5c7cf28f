package hub

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"crypto/x509"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net"
	"sync"
	"sync/atomic"
	"time"

	"github.com/pzone/pzone/zone/metrics"
	"github.com/pzone/pzone/zone/session"
	"github.com/pzone/pzone/zone/stores"

	"github.com/pzone/pzone/certs"
	"github.com/pzone/pzone/pairing"
	"github.com/pzone/pzone/transport"
	"github.com/pzone/pzone/zone/wire"
)

// The hub's device sessions: admission, the session registry, the control
// loop, the streams a session opens (renewal, unpairing, calls, sync), and
// revocation, which cuts a session.

type hubSession struct {
	h      *Hub
	id     string
	device string
	serial string // of the certificate the session was admitted with
	// software and protocol are what the device's Hello said.
	software  string
	protocol  uint
	conn      transport.Conn
	ctrl      transport.Stream
	since     time.Time
	renewOnly bool

	wmu        sync.Mutex // serialises control-stream writes
	lastActive atomic.Int64
	rttUs      atomic.Int64
	syncing    atomic.Bool  // the session's one sync stream is open
	streams    atomic.Int32 // byte streams the hub has open to the device (wire.StreamsPerSession)

	closeOnce sync.Once
	closed    chan struct{}
	reason    wire.CloseReason
	// syncCtx ends the sync stream as soon as the session is closing, so
	// a revoked device cannot push while the Close frame lingers.
	syncCtx  context.Context
	syncStop context.CancelFunc
	// gone is closed when the device ended the session itself, so a close
	// lingering for it to hang up stops waiting.
	gone chan struct{}
}

func (s *hubSession) send(c *wire.Control) error {
	s.wmu.Lock()
	defer s.wmu.Unlock()
	s.ctrl.SetWriteDeadline(time.Now().Add(wire.StreamTimeout))
	return transport.WriteFrame(s.ctrl, c)
}

// close ends the session once: it tells the device why, gives it a moment
// to read that, then closes the connection with the reason as error code.
func (s *hubSession) close(reason wire.CloseReason, msg string) {
	s.finish(reason, &wire.Control{Type: wire.MsgClose, Reason: reason, Message: msg})
}

// finish closes the session once. With a Close frame c it sends it and
// lingers for the device to hang up; with nil (the device ended the
// session itself) it closes at once.
func (s *hubSession) finish(reason wire.CloseReason, c *wire.Control) {
	s.closeOnce.Do(func() {
		s.reason = reason
		s.h.counters.closes.WithLabelValues(metrics.Label(reason.String())).Inc()
		if c != nil {
			s.send(c)
			s.syncStop()
			select {
			case <-s.conn.Done():
			case <-s.gone:
			case <-time.After(wire.CloseLinger):
			}
		}
		s.syncStop()
		s.conn.CloseWithError(uint64(reason), reason.String())
		close(s.closed)
	})
}

func newSessionID() string {
	b := make([]byte, 8)
	rand.Read(b)
	return hex.EncodeToString(b)
}

// acceptHello takes the control stream a dialling node (a device, or a
// friend's hub) opens first, and reads its Hello. On failure it closes
// conn, saying why, and reports false.
func (h *Hub) acceptHello(ctx context.Context, conn transport.Conn, who string) (transport.Stream, *transport.FrameReader, *wire.Control, bool) {
	hctx, cancel := context.WithTimeout(ctx, wire.HelloTimeout)
	ctrl, err := conn.AcceptStream(hctx)
	cancel()
	if err != nil {
		conn.CloseWithError(uint64(wire.ReasonTimeout), "no hello")
		return nil, nil, nil, false
	}
	ctrl.SetReadDeadline(time.Now().Add(wire.HelloTimeout))
	fr := transport.NewFrameReader(ctrl, wire.MaxControlFrame)
	var hdr wire.StreamHeader
	var hello wire.Control
	if err := fr.ReadFrame(&hdr); err != nil || hdr.Kind != wire.StreamControl {
		h.protocolError(conn, who, "first stream is not a control stream", err)
		return nil, nil, nil, false
	}
	if err := fr.ReadFrame(&hello); err != nil || hello.Type != wire.MsgHello {
		h.protocolError(conn, who, "control stream does not start with hello", err)
		return nil, nil, nil, false
	}
	// The ALPN carries the major version; Hello.Version numbers compatible
	// revisions of it, so anything from 1 up is spoken to as version 1.
	if hello.Version < 1 {
		h.protocolError(conn, who, "hello without a version", nil)
		return nil, nil, nil, false
	}
	return ctrl, fr, &hello, true
}

func (h *Hub) serveSession(ctx context.Context, conn transport.Conn) {
	// The TLS callback (transportConfig) verified the chain against the
	// zone CA, and the transport disables resumption, so the callback ran
	// for this very connection: only the identity and expiry are read here,
	// rather than checking the Ed25519 signature a second time (signature
	// checks are a tenth of the hub's CPU in a reconnect storm).
	leaf := conn.ConnectionState().PeerCertificates[0]
	id, err := certs.IdentityFromCert(leaf)
	if err != nil { // cannot happen: the callback checked it
		conn.CloseWithError(uint64(wire.ReasonProtocol), "certificate check failed")
		return
	}
	v := &certs.Verified{Identity: id, Cert: leaf, Expired: h.cfg.Now().After(leaf.NotAfter)}
	ctrl, fr, hello, ok := h.acceptHello(ctx, conn, v.Identity.Device)
	if !ok {
		return
	}
	s := &hubSession{h: h, id: newSessionID(), device: v.Identity.Device, serial: stores.SerialHex(v.Cert), conn: conn, ctrl: ctrl, since: h.cfg.Now(), closed: make(chan struct{}), gone: make(chan struct{}),
		software: wire.CleanSoftware(hello.Software), protocol: hello.Version}
	s.lastActive.Store(s.since.UnixNano())
	s.syncCtx, s.syncStop = context.WithCancel(context.Background())

	if reason, msg := h.reg.admit(v); reason != wire.ReasonNone {
		h.counters.admissions.WithLabelValues(metrics.Label(reason.String())).Inc()
		h.log.Info("session refused", "device", s.device, "remote", conn.RemoteAddr().String(), "reason", reason, "detail", msg)
		s.close(reason, msg)
		return
	}
	s.renewOnly = v.Expired
	if !s.renewOnly {
		h.reg.retireOlder(s.device, s.serial)
		old, refused := h.reg.register(s)
		switch refused {
		case wire.ReasonShutdown:
			s.finish(wire.ReasonShutdown, &wire.Control{Type: wire.MsgClose, Reason: wire.ReasonShutdown, Message: "hub is shutting down", RetryWindowMs: uint64(minRetryWindow / time.Millisecond)})
			return
		case wire.ReasonRevoked:
			h.counters.admissions.WithLabelValues(metrics.Label(refused.String())).Inc()
			h.log.Info("session refused", "device", s.device, "remote", conn.RemoteAddr().String(), "reason", refused, "detail", "revoked during admission")
			s.close(wire.ReasonRevoked, fmt.Sprintf("device %q was revoked", s.device))
			return
		}
		if old != nil {
			h.log.Info("session replaced", "device", s.device, "old_remote", old.conn.RemoteAddr().String(), "new_remote", conn.RemoteAddr().String())
			go old.close(wire.ReasonReplaced, fmt.Sprintf("another pzp for device %q connected from %s", s.device, conn.RemoteAddr()))
		}
	}
	if err := s.send(&wire.Control{Type: wire.MsgWelcome, Version: wire.SessionVersion, SessionID: s.id, HeartbeatMs: uint64(h.cfg.Heartbeat / time.Millisecond), RenewOnly: s.renewOnly,
		TimeMs: h.cfg.Now().UnixMilli()}); err != nil {
		s.close(wire.ReasonProtocol, "")
		h.reg.unregister(s)
		return
	}
	if !s.renewOnly {
		h.wakes.deviceOnline(s.device)
	}
	if s.renewOnly {
		h.counters.admissions.WithLabelValues("renew_only").Inc()
		h.log.Info("expired certificate connected for renewal", "device", s.device, "expired", v.Cert.NotAfter)
	} else {
		h.counters.admissions.WithLabelValues("admitted").Inc()
		h.log.Info("session online", "device", s.device, "remote", conn.RemoteAddr().String(), "via", conn.Kind(), "session", s.id)
	}

	// Stream handlers count as connection handlers: shutdown waits for
	// them before it closes the stores. Added while this handler counts,
	// so never after the wait has begun.
	h.conns.Add(1)
	go func() {
		defer h.conns.Done()
		s.acceptStreams(ctx)
	}()
	reason, msg, byDevice := s.controlLoop(fr)
	if byDevice {
		close(s.gone)
		s.finish(reason, nil)
	} else {
		s.close(reason, msg)
	}
	if h.reg.unregister(s) {
		h.log.Info("session offline", "device", s.device, "reason", s.reason, "session", s.id)
		h.reg.seen(s.device, conn.RemoteAddr().String(), string(conn.Kind()))
		why := fmt.Sprintf("device %q went offline (%s)", s.device, s.reason)
		for _, b := range h.bindings.endDevice(s.device, why, h.cfg.Now()) {
			h.log.Info("binding ended", "binding", b.id, "reason", why)
		}
		h.wakes.deviceOffline(s.device, s.reason == wire.ReasonSleep)
	}
}

// wentAway tells a device that disappeared (closed, reset, idle, network
// gone) from one that sent something malformed.
func wentAway(conn transport.Conn, err error) bool {
	select {
	case <-conn.Done():
		return true
	default:
	}
	var rc *transport.RemoteCloseError
	return errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) || errors.Is(err, transport.ErrPeerGone) ||
		errors.Is(err, transport.ErrIdleTimeout) || errors.Is(err, transport.ErrStreamReset) ||
		errors.Is(err, net.ErrClosed) || errors.As(err, &rc)
}

func (h *Hub) protocolError(conn transport.Conn, device, what string, err error) {
	h.log.Info("session protocol error", "device", device, "remote", conn.RemoteAddr().String(), "problem", what, "err", err)
	conn.CloseWithError(uint64(wire.ReasonProtocol), what)
}

// controlLoop answers pings until the session ends, and returns why and
// whether the device ended it (went away or said Close).
func (s *hubSession) controlLoop(fr *transport.FrameReader) (reason wire.CloseReason, msg string, byDevice bool) {
	dead := wire.DeadAfter(s.h.cfg.Heartbeat)
	for {
		var c wire.Control
		if err := session.ReadControl(s.conn, s.ctrl, fr, dead, &c); err != nil {
			select {
			case <-s.closed:
				return s.reason, "", false
			default:
			}
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() {
				return wire.ReasonTimeout, fmt.Sprintf("no heartbeat for %v", dead), false
			}
			if wentAway(s.conn, err) {
				return wire.ReasonShutdown, "", true
			}
			return wire.ReasonProtocol, "malformed control frame: " + err.Error(), false
		}
		s.lastActive.Store(s.h.cfg.Now().UnixNano())
		switch c.Type {
		case wire.MsgPing:
			if err := s.send(&wire.Control{Type: wire.MsgPong, Seq: c.Seq}); err != nil {
				return wire.ReasonShutdown, "", true
			}
			if c.RTTus > 0 && s.rttUs.Swap(int64(c.RTTus)) == 0 {
				s.h.changes.Bump() // the first RTT figure is news to watchers
			}
		case wire.MsgClose:
			s.h.log.Info("device closed its session", "device", s.device, "reason", c.Reason, "message", c.Message)
			return c.Reason, "", true
		case wire.MsgWake:
			if s.renewOnly {
				return wire.ReasonProtocol, "wake registration on a renewal-only session", false
			}
			if err := s.h.wakes.registerWake(s, &c); err != nil {
				return wire.ReasonProtocol, err.Error(), false
			}
		default:
			return wire.ReasonProtocol, fmt.Sprintf("unexpected control message %d", c.Type), false
		}
	}
}

// acceptStreams accepts one stream of the session and serves it, having
// handed accepting the next to another goroutine first: the stream goes
// on in the goroutine that took it, without a wake-up of another on a
// call's path (a wake-up is tens of microseconds on a loaded machine).
// Each counts as a connection handler (h.conns), as its caller does.
func (s *hubSession) acceptStreams(ctx context.Context) {
	st, err := s.conn.AcceptStream(ctx)
	if err != nil {
		return
	}
	s.h.conns.Add(1)
	session.Go(func() {
		defer s.h.conns.Done()
		s.acceptStreams(ctx)
	})
	s.handleStream(st)
}

func (s *hubSession) handleStream(st transport.Stream) {
	st.SetDeadline(time.Now().Add(wire.StreamTimeout))
	fr := transport.NewFrameReader(st, wire.MaxRequestFrame)
	var hdr wire.StreamHeader
	// A renew-only session (expired but genuine certificate) may renew or
	// unpair, nothing else.
	if err := fr.ReadFrame(&hdr); err != nil || (s.renewOnly && hdr.Kind != wire.StreamRenew && hdr.Kind != wire.StreamUnpair) {
		st.Reset()
		return
	}
	switch hdr.Kind {
	case wire.StreamRenew:
		s.handleRenew(st, fr)
	case wire.StreamUnpair:
		s.handleUnpair(st, fr)
	case wire.StreamSync:
		s.handleSync(st)
	case wire.StreamCall:
		s.h.router.handleCall(s, st, fr)
	case wire.StreamDiscover:
		s.h.router.handleDiscover(s, st, fr)
	default:
		s.h.log.Info("unknown stream kind", "device", s.device, "kind", hdr.Kind)
		st.Reset()
	}
}

// reply writes a one-shot answer and closes the stream. Only a failed
// write resets it: a reset after Close may discard the answer in flight.
func reply(st transport.Stream, v any) bool {
	if err := transport.WriteFrame(st, v); err != nil {
		st.Reset()
		return false
	}
	st.Close()
	return true
}

func (s *hubSession) handleRenew(st transport.Stream, fr *transport.FrameReader) {
	var req wire.RenewRequest
	if err := fr.ReadFrame(&req); err != nil {
		st.Reset()
		return
	}
	resp := wire.RenewResponse{}
	cert, err := s.h.renewDevice(s.device, s.conn.ConnectionState().PeerCertificates[0], req.CSR)
	if err != nil {
		resp.Error = err.Error()
		s.h.log.Warn("renewal refused", "device", s.device, "err", err)
	} else {
		resp.Cert = cert.Raw
		s.h.log.Info("device certificate renewed", "device", s.device, "expires", cert.NotAfter)
	}
	reply(st, &resp)
	if s.renewOnly && err == nil {
		s.close(wire.ReasonRenewed, "certificate renewed: reconnect with it")
	}
}

func (h *Hub) renewDevice(device string, current *x509.Certificate, csr []byte) (*x509.Certificate, error) {
	pub, err := certs.ParseCSR(csr)
	if err != nil {
		return nil, err
	}
	if old, ok := current.PublicKey.(ed25519.PublicKey); ok && old.Equal(pub) {
		return nil, errors.New("renewal must use a fresh key")
	}
	_, rec := h.reg.lookup(device)
	if rec == nil || rec.Revoked {
		return nil, fmt.Errorf("device %q is not paired", device)
	}
	life := rec.CertLifetime
	if life == 0 {
		life = pairing.DefaultCertLifetime
	}
	cert, err := h.ca.Sign(pub, device, h.cfg.Now(), life)
	if err != nil {
		return nil, err
	}
	nrec, err := h.store.AddSerial(device, cert)
	if err != nil {
		return nil, err
	}
	h.publishMu.Lock()
	h.reg.put(nrec)
	h.putCert(wire.CertKeyDevice+device, cert.Raw)
	h.publishMu.Unlock()
	h.changes.Bump()
	return cert, nil
}

func (s *hubSession) handleUnpair(st transport.Stream, fr *transport.FrameReader) {
	var req wire.UnpairRequest
	if err := fr.ReadFrame(&req); err != nil {
		st.Reset()
		return
	}
	resp := wire.UnpairResponse{}
	_, live, err := s.h.revokeRecord(s.device, "unpaired by the device")
	if err != nil {
		resp.Error = err.Error()
	}
	reply(st, &resp)
	if live != nil {
		// After the answer, so the device reads it before the session ends.
		live.close(wire.ReasonUnpaired, "device unpaired itself")
	}
}

// revoke revokes a device, persists it, and cuts its live session.
func (h *Hub) revoke(device, why string, reason wire.CloseReason) (*DeviceRecord, error) {
	rec, s, err := h.revokeRecord(device, why)
	if err != nil {
		return nil, err
	}
	if s != nil {
		// Its exchanges first, so that their ends hear why rather than
		// only that the session went.
		why := fmt.Sprintf("device %q went offline (%s)", device, reason)
		for _, b := range h.bindings.endDevice(device, why, h.cfg.Now()) {
			h.log.Info("binding ended", "binding", b.id, "reason", why)
		}
		go s.close(reason, fmt.Sprintf("device %q was %s", device, reason))
	}
	return rec, nil
}

// revokeRecord persists a revocation and updates the handshake caches; it
// returns the device's live session, which the caller closes.
func (h *Hub) revokeRecord(device, why string) (*DeviceRecord, *hubSession, error) {
	rec, err := h.store.Revoke(device, why, h.cfg.Now())
	if err != nil {
		return nil, nil, err
	}
	h.publishMu.Lock()
	s := h.reg.markRevoked(rec)
	h.publishRevocation(rec)
	h.publishMu.Unlock()
	h.wakes.forget(device)
	h.changes.Bump()
	h.log.Info("device revoked", "device", device, "why", why)
	return rec, s, nil
}

// hubWakeHost is the hub as the waker sees it: sessions and devices from
// the registry, zones from the friends.
type hubWakeHost struct {
	*registry
	*friends
}
