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
	h         *Hub
	id        string
	device    string
	serial    string // of the certificate the session was admitted with
	conn      transport.Conn
	ctrl      transport.Stream
	since     time.Time
	renewOnly bool

	wmu        sync.Mutex // serialises control-stream writes
	lastActive atomic.Int64
	rttUs      atomic.Int64
	syncing    atomic.Bool // the session's one sync stream is open

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
func (h *Hub) acceptHello(ctx context.Context, conn transport.Conn, who string) (transport.Stream, *transport.FrameReader, bool) {
	hctx, cancel := context.WithTimeout(ctx, wire.HelloTimeout)
	ctrl, err := conn.AcceptStream(hctx)
	cancel()
	if err != nil {
		conn.CloseWithError(uint64(wire.ReasonTimeout), "no hello")
		return nil, nil, false
	}
	ctrl.SetReadDeadline(time.Now().Add(wire.HelloTimeout))
	fr := transport.NewFrameReader(ctrl, wire.MaxControlFrame)
	var hdr wire.StreamHeader
	var hello wire.Control
	if err := fr.ReadFrame(&hdr); err != nil || hdr.Kind != wire.StreamControl {
		h.protocolError(conn, who, "first stream is not a control stream", err)
		return nil, nil, false
	}
	if err := fr.ReadFrame(&hello); err != nil || hello.Type != wire.MsgHello {
		h.protocolError(conn, who, "control stream does not start with hello", err)
		return nil, nil, false
	}
	// The ALPN carries the major version; Hello.Version numbers compatible
	// revisions of it, so anything from 1 up is spoken to as version 1.
	if hello.Version < 1 {
		h.protocolError(conn, who, "hello without a version", nil)
		return nil, nil, false
	}
	return ctrl, fr, true
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
	ctrl, fr, ok := h.acceptHello(ctx, conn, v.Identity.Device)
	if !ok {
		return
	}
	s := &hubSession{h: h, id: newSessionID(), device: v.Identity.Device, serial: stores.SerialHex(v.Cert), conn: conn, ctrl: ctrl, since: h.cfg.Now(), closed: make(chan struct{}), gone: make(chan struct{})}
	s.lastActive.Store(s.since.UnixNano())
	s.syncCtx, s.syncStop = context.WithCancel(context.Background())

	if reason, msg := h.admit(v); reason != wire.ReasonNone {
		h.log.Info("session refused", "device", s.device, "remote", conn.RemoteAddr().String(), "reason", reason, "detail", msg)
		s.close(reason, msg)
		return
	}
	s.renewOnly = v.Expired
	if !s.renewOnly {
		h.retireOlder(s.device, s.serial)
		old, refused := h.register(s)
		switch refused {
		case wire.ReasonShutdown:
			s.finish(wire.ReasonShutdown, &wire.Control{Type: wire.MsgClose, Reason: wire.ReasonShutdown, Message: "hub is shutting down", RetryWindowMs: uint64(minRetryWindow / time.Millisecond)})
			return
		case wire.ReasonRevoked:
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
		h.unregister(s)
		return
	}
	if !s.renewOnly {
		h.wakes.deviceOnline(s.device)
	}
	if s.renewOnly {
		h.log.Info("expired certificate connected for renewal", "device", s.device, "expired", v.Cert.NotAfter)
	} else {
		h.log.Info("session online", "device", s.device, "remote", conn.RemoteAddr().String(), "via", conn.Kind(), "session", s.id)
	}

	// Stream handlers count as connection handlers: shutdown waits for
	// them before it closes the stores. Added while this handler counts,
	// so never after the wait has begun.
	h.conns.Add(1)
	go func() {
		defer h.conns.Done()
		h.acceptStreams(ctx, s)
	}()
	reason, msg, byDevice := h.controlLoop(s, fr)
	if byDevice {
		close(s.gone)
		s.finish(reason, nil)
	} else {
		s.close(reason, msg)
	}
	if h.unregister(s) {
		h.log.Info("session offline", "device", s.device, "reason", s.reason, "session", s.id)
		h.seen(s.device, conn.RemoteAddr().String(), string(conn.Kind()))
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

// admit decides whether an authenticated device may hold a session.
func (h *Hub) admit(v *certs.Verified) (wire.CloseReason, string) {
	serial := stores.SerialHex(v.Cert)
	h.mu.Lock()
	defer h.mu.Unlock()
	rec := h.devices[v.Identity.Device]
	switch {
	case h.revoked[serial] || rec != nil && rec.Revoked && rec.hasSerial(serial):
		when := ""
		if rec != nil && rec.Revoked {
			when = " on " + rec.RevokedAt.Format(time.RFC3339)
		}
		return wire.ReasonRevoked, fmt.Sprintf("device %q was revoked%s", v.Identity.Device, when)
	case rec == nil || !rec.hasSerial(serial):
		return wire.ReasonUnknown, fmt.Sprintf("the hub has no pairing for this certificate of device %q; pair again with a new invite", v.Identity.Device)
	case v.Expired && h.cfg.Now().Sub(v.Cert.NotAfter) > h.cfg.RenewGrace:
		return wire.ReasonExpired, fmt.Sprintf("certificate expired on %s, past the hub's %v grace period; pair again with a new invite", v.Cert.NotAfter.Format(time.RFC3339), h.cfg.RenewGrace)
	}
	return wire.ReasonNone, ""
}

// retireOlder forgets the certificates a device held before serial, once
// it has connected with serial: a renewed device has proven it saved the
// new certificate, so the old one (and its key) can no longer be used.
func (h *Hub) retireOlder(device, serial string) {
	h.mu.Lock()
	rec := h.devices[device]
	due := rec != nil && len(rec.Serials) > 1 && rec.Serials[len(rec.Serials)-1] == serial
	h.mu.Unlock()
	if !due {
		return
	}
	nrec, err := h.store.RetireOlder(device, serial)
	if err != nil {
		h.log.Warn("retire old certificates", "device", device, "err", err)
		return
	}
	h.mu.Lock()
	h.putDevice(nrec)
	h.mu.Unlock()
}

// register makes s the device's live session and returns the one it
// replaced, if any. It registers nothing, and says why, once shutdown has
// begun (shutdown has already taken its list of sessions to close) or if
// the device was revoked since admission (the revocation looked for a
// session to close before this one was in the table).
func (h *Hub) register(s *hubSession) (*hubSession, wire.CloseReason) {
	h.mu.Lock()
	if h.closing {
		h.mu.Unlock()
		return nil, wire.ReasonShutdown
	}
	if rec := h.devices[s.device]; rec == nil || rec.Revoked || h.revoked[s.serial] {
		h.mu.Unlock()
		return nil, wire.ReasonRevoked
	}
	old := h.sessions[s.device]
	h.sessions[s.device] = s
	h.mu.Unlock()
	h.changes.Bump()
	return old, wire.ReasonNone
}

// unregister removes s if it is still the device's live session.
func (h *Hub) unregister(s *hubSession) bool {
	h.mu.Lock()
	cur := h.sessions[s.device] == s
	if cur {
		delete(h.sessions, s.device)
	}
	h.mu.Unlock()
	if cur {
		h.changes.Bump()
	}
	return cur
}

// controlLoop answers pings until the session ends, and returns why and
// whether the device ended it (went away or said Close).
func (h *Hub) controlLoop(s *hubSession, fr *transport.FrameReader) (reason wire.CloseReason, msg string, byDevice bool) {
	dead := wire.DeadAfter(h.cfg.Heartbeat)
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
		s.lastActive.Store(h.cfg.Now().UnixNano())
		switch c.Type {
		case wire.MsgPing:
			if err := s.send(&wire.Control{Type: wire.MsgPong, Seq: c.Seq}); err != nil {
				return wire.ReasonShutdown, "", true
			}
			if c.RTTus > 0 && s.rttUs.Swap(int64(c.RTTus)) == 0 {
				h.changes.Bump() // the first RTT figure is news to watchers
			}
		case wire.MsgClose:
			h.log.Info("device closed its session", "device", s.device, "reason", c.Reason, "message", c.Message)
			return c.Reason, "", true
		case wire.MsgWake:
			if s.renewOnly {
				return wire.ReasonProtocol, "wake registration on a renewal-only session", false
			}
			if err := h.wakes.registerWake(s, &c); err != nil {
				return wire.ReasonProtocol, err.Error(), false
			}
		default:
			return wire.ReasonProtocol, fmt.Sprintf("unexpected control message %d", c.Type), false
		}
	}
}

func (h *Hub) acceptStreams(ctx context.Context, s *hubSession) {
	for {
		st, err := s.conn.AcceptStream(ctx)
		if err != nil {
			return
		}
		h.conns.Add(1)
		go func() {
			defer h.conns.Done()
			h.handleStream(s, st)
		}()
	}
}

func (h *Hub) handleStream(s *hubSession, st transport.Stream) {
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
		h.handleRenew(s, st, fr)
	case wire.StreamUnpair:
		h.handleUnpair(s, st, fr)
	case wire.StreamSync:
		h.handleSync(s, st)
	case wire.StreamCall:
		h.router.handleCall(s, st, fr)
	case wire.StreamDiscover:
		h.router.handleDiscover(s, st, fr)
	default:
		h.log.Info("unknown stream kind", "device", s.device, "kind", hdr.Kind)
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

func (h *Hub) handleRenew(s *hubSession, st transport.Stream, fr *transport.FrameReader) {
	var req wire.RenewRequest
	if err := fr.ReadFrame(&req); err != nil {
		st.Reset()
		return
	}
	resp := wire.RenewResponse{}
	cert, err := h.renewDevice(s.device, s.conn.ConnectionState().PeerCertificates[0], req.CSR)
	if err != nil {
		resp.Error = err.Error()
		h.log.Warn("renewal refused", "device", s.device, "err", err)
	} else {
		resp.Cert = cert.Raw
		h.log.Info("device certificate renewed", "device", s.device, "expires", cert.NotAfter)
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
	h.mu.Lock()
	rec := h.devices[device]
	h.mu.Unlock()
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
	h.mu.Lock()
	h.putDevice(nrec)
	h.mu.Unlock()
	h.putCert(wire.CertKeyDevice+device, cert.Raw)
	h.changes.Bump()
	return cert, nil
}

func (h *Hub) handleUnpair(s *hubSession, st transport.Stream, fr *transport.FrameReader) {
	var req wire.UnpairRequest
	if err := fr.ReadFrame(&req); err != nil {
		st.Reset()
		return
	}
	resp := wire.UnpairResponse{}
	_, live, err := h.revokeRecord(s.device, "unpaired by the device")
	if err != nil {
		resp.Error = err.Error()
	}
	reply(st, &resp)
	if live != nil {
		// After the answer, so the device reads it before the session ends.
		live.close(wire.ReasonUnpaired, "device unpaired itself")
	}
}

// putDevice caches a record read back from the store, keeping the
// last-seen fields that are newer in memory than on disk (h.mu held).
func (h *Hub) putDevice(rec *DeviceRecord) {
	if old := h.devices[rec.Name]; old != nil && old.LastSeen.After(rec.LastSeen) {
		rec.LastSeen, rec.LastAddr, rec.LastVia = old.LastSeen, old.LastAddr, old.LastVia
	}
	h.devices[rec.Name] = rec
}

type seenRecord struct {
	at        time.Time
	addr, via string
}

// seenFlush is how often last-seen records reach the store; at most this
// much of "last seen" is lost if the hub crashes.
const seenFlush = time.Minute

// seen notes where a device was connected from when its session ended.
func (h *Hub) seen(device, addr, via string) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.lastSeen[device] = seenRecord{at: h.cfg.Now(), addr: addr, via: via}
	if d := h.devices[device]; d != nil {
		c := *d
		c.LastSeen, c.LastAddr, c.LastVia = h.cfg.Now().UTC(), addr, via
		h.devices[device] = &c
	}
}

// flushSeen writes pending last-seen records in one transaction.
func (h *Hub) flushSeen() {
	h.mu.Lock()
	pending := h.lastSeen
	h.lastSeen = map[string]seenRecord{}
	h.mu.Unlock()
	if len(pending) == 0 {
		return
	}
	err := h.store.SeenMany(func(yield func(string, time.Time, string, string) bool) {
		for d, r := range pending {
			if !yield(d, r.at, r.addr, r.via) {
				return
			}
		}
	})
	if err != nil {
		h.log.Warn("record last seen", "devices", len(pending), "err", err)
	}
}

func (h *Hub) seenLoop(ctx context.Context) error { return every(ctx, seenFlush, h.flushSeen) }

// revoke revokes a device, persists it, and cuts its live session.
func (h *Hub) revoke(device, why string, reason wire.CloseReason) (*DeviceRecord, error) {
	rec, s, err := h.revokeRecord(device, why)
	if err != nil {
		return nil, err
	}
	if s != nil {
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
	h.mu.Lock()
	h.putDevice(rec)
	for _, serial := range rec.Serials {
		h.revoked[serial] = true
	}
	s := h.sessions[device]
	h.mu.Unlock()
	h.wakes.forget(device)
	h.publishRevocation(rec)
	h.changes.Bump()
	h.log.Info("device revoked", "device", device, "why", why)
	return rec, s, nil
}

// session is a device's registered session, nil if none (it may be
// closing).
func (h *Hub) session(device string) *hubSession {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.sessions[device]
}

// online reports whether a device has a session that is not closing.
func (h *Hub) online(device string) bool {
	s := h.session(device)
	return s != nil && s.syncCtx.Err() == nil
}

// paired reports whether a device is paired and not revoked.
func (h *Hub) paired(device string) bool {
	h.mu.Lock()
	defer h.mu.Unlock()
	d := h.devices[device]
	return d != nil && !d.Revoked
}

// knownZone reports whether zoneID is this zone or a friend's.
func (h *Hub) knownZone(zoneID string) bool { return h.friends.knownZone(zoneID) }
