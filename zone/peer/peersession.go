package peer

import (
	"context"
	"crypto/ed25519"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"sync"
	"time"

	"github.com/pzone/pzone/zone/session"
	"github.com/pzone/pzone/zone/stores"

	"github.com/pzone/pzone/certs"
	"github.com/pzone/pzone/pairing"
	"github.com/pzone/pzone/transport"
	"github.com/pzone/pzone/zone/api"
	"github.com/pzone/pzone/zone/wire"
)

// The device's session with its hub: connecting with backoff, Hello and
// Welcome, the session's control loop and streams, certificate renewal
// and unpairing over it.

// peerSession is an admitted session on the device side.
type peerSession struct {
	conn      transport.Conn
	ctrl      transport.Stream
	fr        *transport.FrameReader
	welcome   wire.Control
	heartbeat time.Duration
	addr      string
	wmu       sync.Mutex
}

func (ps *peerSession) send(c *wire.Control) error {
	ps.wmu.Lock()
	defer ps.wmu.Unlock()
	ps.ctrl.SetWriteDeadline(time.Now().Add(wire.StreamTimeout))
	return transport.WriteFrame(ps.ctrl, c)
}

func (p *Peer) sessionTLS() *tls.Config {
	id := p.id.Load()
	conf := pairing.PinnedHubTLS(id.ZoneID, transport.ALPNSession, nil)
	conf.GetClientCertificate = func(*tls.CertificateRequestInfo) (*tls.Certificate, error) {
		cur := p.id.Load()
		return &tls.Certificate{Certificate: [][]byte{cur.Cert.Raw}, PrivateKey: cur.Key, Leaf: cur.Cert}, nil
	}
	return conf
}

// connect dials the hub's addresses in order and says Hello.
func (p *Peer) connect(ctx context.Context) (*peerSession, error) {
	id := p.id.Load()
	var errs []error
	tc := transport.Config{TLS: p.sessionTLS(), Logger: p.log, IdleTimeout: wire.TransportIdle, HandshakeTimeout: session.HandshakeTimeout}
	if p.sleep != nil {
		tc.Endpoint = p.sleep.ep // the hub observes the wake socket's address
	}
	for _, addr := range id.HubAddrs {
		conn, err := transport.Dial(ctx, addr, p.cfg.Mode, tc)
		if err != nil {
			if ctx.Err() != nil {
				return nil, ctx.Err()
			}
			errs = append(errs, fmt.Errorf("%s: %w", addr, err))
			continue
		}
		ps, err := p.hello(ctx, conn, addr)
		if err != nil {
			conn.CloseWithError(uint64(wire.ReasonProtocol), "hello failed")
			return nil, err
		}
		return ps, nil
	}
	err := errors.Join(errs...)
	if now := p.cfg.Now(); now.After(id.Cert.NotAfter) {
		err = fmt.Errorf("%w (note: this device's certificate expired on %s; it renews on its next session if the hub's grace period allows)", err, id.Cert.NotAfter.Format(time.RFC3339))
	}
	return nil, err
}

func (p *Peer) hello(ctx context.Context, conn transport.Conn, addr string) (*peerSession, error) {
	hctx, cancel := context.WithTimeout(ctx, wire.HelloTimeout)
	defer cancel()
	ctrl, err := conn.OpenStream(hctx)
	if err != nil {
		return nil, fmt.Errorf("open control stream: %w", err)
	}
	ps := &peerSession{conn: conn, ctrl: ctrl, fr: transport.NewFrameReader(ctrl, wire.MaxControlFrame), addr: addr}
	ctrl.SetDeadline(time.Now().Add(wire.HelloTimeout))
	if err := transport.WriteFrame(ctrl, &wire.StreamHeader{Kind: wire.StreamControl}); err != nil {
		return nil, err
	}
	if err := ps.send(&wire.Control{Type: wire.MsgHello, Version: wire.SessionVersion, Software: wire.SoftwareVersion}); err != nil {
		return nil, err
	}
	// Over QUIC, keep talking while Welcome is awaited: if the hub that
	// took the handshake died before answering (a restart), the packets
	// reach its successor, which answers with a stateless reset, and this
	// dial fails at once instead of after HelloTimeout. The hub answers
	// Welcome before it reads these pings; their Pongs (Seq 0) are ignored.
	waiting := make(chan struct{})
	defer close(waiting)
	if conn.Kind() == transport.KindQUIC {
		go func() {
			t := time.NewTicker(helloNudge)
			defer t.Stop()
			for {
				select {
				case <-waiting:
					return
				case <-t.C:
					if ps.send(&wire.Control{Type: wire.MsgPing, Pad: make([]byte, wire.PingPad)}) != nil {
						return
					}
				}
			}
		}()
	}
	var c wire.Control
	if err := ps.fr.ReadFrame(&c); err != nil {
		var ne net.Error
		if errors.As(err, &ne) && ne.Timeout() {
			return nil, fmt.Errorf("the hub took the connection but did not answer hello within %v", wire.HelloTimeout)
		}
		return nil, p.readErr(conn, err)
	}
	ctrl.SetDeadline(time.Time{})
	switch c.Type {
	case wire.MsgWelcome:
	case wire.MsgClose:
		return nil, closeErr(&c)
	default:
		return nil, fmt.Errorf("hub answered hello with message %d", c.Type)
	}
	ps.welcome = c
	ps.heartbeat = min(max(time.Duration(c.HeartbeatMs)*time.Millisecond, wire.MinHeartbeat), wire.MaxHeartbeat)
	return ps, nil
}

// retryWithin is a hub shutdown that asked devices to reconnect at a
// random moment within Window.
type retryWithin struct {
	Window time.Duration
	Msg    string
}

func (e *retryWithin) Error() string {
	return fmt.Sprintf("hub closed the session: shutdown: %s (reconnecting within %v)", e.Msg, e.Window)
}

// closeErr turns a hub's Close frame into the error the loop acts on.
func closeErr(c *wire.Control) error {
	if c.Reason.Final() {
		return &wire.EndError{Reason: c.Reason, Message: c.Message}
	}
	if c.Reason == wire.ReasonRenewed {
		return errReconnect
	}
	if c.Reason == wire.ReasonShutdown && c.RetryWindowMs > 0 {
		w := min(time.Duration(c.RetryWindowMs)*time.Millisecond, wire.MaxRetryWindow)
		return &retryWithin{Window: w, Msg: c.Message}
	}
	if c.Message != "" {
		return fmt.Errorf("hub closed the session: %s: %s", c.Reason, c.Message)
	}
	return fmt.Errorf("hub closed the session: %s", c.Reason)
}

// readErr explains a failed control read, using the QUIC close code when
// the Close frame itself was lost.
func (p *Peer) readErr(conn transport.Conn, err error) error {
	select {
	case <-conn.Done():
		var rc *transport.RemoteCloseError
		if errors.As(conn.Err(), &rc) && rc.Code != 0 {
			return closeErr(&wire.Control{Type: wire.MsgClose, Reason: wire.CloseReason(rc.Code)})
		}
	default:
	}
	var ne net.Error
	if errors.As(err, &ne) && ne.Timeout() {
		return fmt.Errorf("hub stopped answering heartbeats: %w", err)
	}
	return fmt.Errorf("lost the hub: %w", err)
}

// runSession drives one admitted session: heartbeats, renewal, unpair
// requests, and reading the hub's frames.
func (p *Peer) runSession(ctx context.Context, ps *peerSession) (*unpairCall, error) {
	// A renewal still in flight must finish (it fails fast once the
	// connection below is closed) before the caller may close the store.
	renewing := false
	renewDone := make(chan error, 1)
	defer func() {
		if renewing {
			<-renewDone
		}
	}()
	// Likewise the sync stream, which writes to the zone state.
	syncing := false
	syncDone := make(chan error, 1)
	defer func() {
		if syncing {
			<-syncDone
		}
	}()
	defer ps.conn.CloseWithError(uint64(wire.ReasonShutdown), wire.ReasonShutdown.String())
	p.hubVersion.Store(uint32(ps.welcome.Version))
	p.conn.Store(&ps.conn)
	defer p.conn.Store(nil)
	p.sleep.woke() // after the connection is in place: a call waiting for it finds it
	now := p.cfg.Now()
	if ps.welcome.RenewOnly {
		p.log.Info("certificate expired; renewing before going online")
		p.setStatus(func(s *api.PeerStatus) { s.State = "renewing" })
	} else {
		p.log.Info("online", "hub", ps.addr, "via", ps.conn.Kind(), "session", ps.welcome.SessionID)
		p.setStatus(func(s *api.PeerStatus) {
			s.State, s.Hub, s.Transport, s.Session, s.Since, s.LastError, s.RTTMs = "online", ps.addr, string(ps.conn.Kind()), ps.welcome.SessionID, &now, "", nil
		})
	}

	frames := make(chan wire.Control)
	readErr := make(chan error, 1)
	dead := wire.DeadAfter(ps.heartbeat)
	go func() {
		for {
			var c wire.Control
			if err := session.ReadControl(ps.conn, ps.ctrl, ps.fr, dead, &c); err != nil {
				readErr <- p.readErr(ps.conn, err)
				return
			}
			select {
			case frames <- c:
			case <-ps.conn.Done():
				readErr <- errors.New("session closed")
				return
			}
		}
	}()

	tick := time.NewTicker(ps.heartbeat)
	defer tick.Stop()
	renewIn := session.RenewAt(p.id.Load().Cert).Sub(now)
	if ps.welcome.RenewOnly || renewIn < 0 {
		renewIn = 0
	}
	renew := time.NewTimer(renewIn)
	defer renew.Stop()

	var seq uint64
	var pingSent time.Time
	var rtt time.Duration
	var pad []byte
	if ps.conn.Kind() == transport.KindQUIC {
		pad = make([]byte, wire.PingPad)
	}
	ping := func() error {
		seq++
		pingSent = time.Now()
		return ps.send(&wire.Control{Type: wire.MsgPing, Seq: seq, RTTus: uint64(rtt / time.Microsecond), Pad: pad})
	}
	if err := ping(); err != nil { // measure RTT at once
		return nil, p.readErr(ps.conn, err)
	}
	if err := p.sleep.registerWake(ps); err != nil {
		return nil, p.readErr(ps.conn, err)
	}
	p.touch()
	var idle <-chan time.Time // fires when the session may have been idle long enough to sleep
	var idleTimer *time.Timer
	if p.sleep != nil && !ps.welcome.RenewOnly {
		idleTimer = time.NewTimer(p.sleep.after)
		defer idleTimer.Stop()
		idle = idleTimer.C
	}
	if p.state != nil && !ps.welcome.RenewOnly {
		syncing = true
		go func() { syncDone <- p.runSync(ctx, ps) }()
	}
	if !ps.welcome.RenewOnly {
		go p.router.acceptCalls(ctx, ps.conn)
	}
	var syncErr error
	var syncGrace <-chan time.Time
	hangUp := func(reason wire.CloseReason, msg string) {
		ps.send(&wire.Control{Type: wire.MsgClose, Reason: reason, Message: msg})
		ps.ctrl.Close()
		select {
		case <-ps.conn.Done():
		case <-time.After(wire.CloseLinger):
		}
	}
	for {
		select {
		case <-ctx.Done():
			hangUp(wire.ReasonShutdown, "device shutting down")
			return nil, ctx.Err()
		case <-p.synced:
			hangUp(wire.ReasonShutdown, "device shutting down")
			return nil, errSynced
		case <-idle:
			if left := p.sleep.after - p.idleFor(); left > 0 || renewing || !p.sleep.doze() {
				idleTimer.Reset(max(left, p.sleep.after/4, MinSleepAfter))
				continue
			}
			p.conn.Store(nil) // calls from now on wait for the next session
			p.sleep.drain()
			hangUp(wire.ReasonSleep, "device going to sleep")
			return nil, errSleep
		case err := <-syncDone:
			syncing = false
			if ctx.Err() != nil {
				continue
			}
			// The hub may be ending the session (it stops the sync
			// stream first): give its Close frame, which says why, a
			// moment to arrive.
			syncErr = err
			syncGrace = time.After(wire.CloseLinger)
		case <-syncGrace:
			p.log.Warn("zone sync stopped; reconnecting", "err", syncErr)
			return nil, &syncError{syncErr}
		case err := <-readErr:
			return nil, err
		case c := <-frames:
			switch c.Type {
			case wire.MsgPong:
				if c.Seq == seq {
					first := rtt == 0
					rtt = time.Since(pingSent)
					ms := float64(rtt) / float64(time.Millisecond)
					p.setStatus(func(s *api.PeerStatus) { s.RTTMs = &ms })
					if first {
						// Report the first figure now rather than a
						// heartbeat later: the hub shows it in pzh devices.
						if err := ping(); err != nil {
							return nil, p.readErr(ps.conn, err)
						}
					}
				}
			case wire.MsgClose:
				return nil, closeErr(&c)
			case wire.MsgWakeOK:
				p.sleep.wakeConfirmed(&c)
			default:
				p.log.Debug("ignoring control message", "type", c.Type)
			}
		case <-tick.C:
			if err := ping(); err != nil {
				return nil, p.readErr(ps.conn, err)
			}
		case <-renew.C:
			renewing = true
			p.renewTried.Store(time.Now().UnixNano())
			go func() { renewDone <- p.renew(ctx, ps) }()
		case err := <-renewDone:
			renewing = false
			if err != nil {
				p.log.Warn("certificate renewal failed; will retry", "err", err)
				renew.Reset(renewRetry)
				continue
			}
			if ps.welcome.RenewOnly {
				// The hub closes this session; the next uses the new certificate.
				continue
			}
			next := session.RenewAt(p.id.Load().Cert).Sub(p.cfg.Now())
			if next < minRenewInterval {
				// A fresh certificate already due means the clocks
				// disagree; do not spin on renewals.
				next = minRenewInterval
			}
			renew.Reset(next)
		case call := <-p.unpairReq:
			call.told <- p.unpairOn(ctx, ps)
			return call, nil
		}
	}
}

// helloNudge is how often a device waiting for Welcome over QUIC sends a
// ping, so that a hub which died after the handshake is found out by its
// successor's stateless reset. Welcome normally comes within one RTT.
const helloNudge = time.Second

// renewRetry is the wait after a failed renewal attempt.
const renewRetry = time.Minute

// minRenewInterval is the least time between two renewals of one session,
// a third of the shortest certificate lifetime an invite may set.
const minRenewInterval = pairing.MinCertLifetime / 3

// renew gets a certificate for a fresh key over the session and stores
// both together before using them.
func (p *Peer) renew(ctx context.Context, ps *peerSession) error {
	key, err := certs.NewKey()
	if err != nil {
		return err
	}
	csr, err := certs.NewCSR(key)
	if err != nil {
		return err
	}
	var resp wire.RenewResponse
	if err := exchange(ctx, ps.conn, wire.StreamRenew, &wire.RenewRequest{CSR: csr}, &resp); err != nil {
		return err
	}
	if resp.Error != "" {
		return fmt.Errorf("hub refused renewal: %s", resp.Error)
	}
	id := p.id.Load()
	cert, err := checkIssued(id, key, resp.Cert, p.cfg.Now())
	if err != nil {
		return err
	}
	var nid *Identity
	if p.store != nil {
		if nid, err = p.store.SaveCert(key, cert); err != nil {
			return fmt.Errorf("save renewed certificate: %w", err)
		}
	} else {
		kder, err := stores.MarshalKey(key)
		if err != nil {
			return err
		}
		c := *id
		c.KeyDER, c.CertDER, c.Key, c.Cert = kder, cert.Raw, key, cert
		nid = &c
	}
	p.id.Store(nid)
	p.changes.Bump()
	p.log.Info("certificate renewed", "expires", cert.NotAfter)
	return nil
}

func checkIssued(id *Identity, key ed25519.PrivateKey, der []byte, now time.Time) (*x509.Certificate, error) {
	v, err := certs.Verify(id.CA, [][]byte{der}, now, 0)
	if err != nil {
		return nil, fmt.Errorf("renewed certificate: %w", err)
	}
	if v.Identity.Device != id.Device {
		return nil, fmt.Errorf("renewed certificate names %q, not %q", v.Identity.Device, id.Device)
	}
	if pub, ok := v.Cert.PublicKey.(ed25519.PublicKey); !ok || !pub.Equal(key.Public()) {
		return nil, errors.New("renewed certificate is not for the new key")
	}
	return v.Cert, nil
}

// exchange runs a one-shot request/response on a new stream of kind.
func exchange(ctx context.Context, conn transport.Conn, kind wire.StreamKind, req, resp any) error {
	return session.Exchange(ctx, conn, kind, req, resp, wire.MaxRequestFrame)
}

func (p *Peer) unpairOn(ctx context.Context, ps *peerSession) error {
	var resp wire.UnpairResponse
	if err := exchange(ctx, ps.conn, wire.StreamUnpair, &wire.UnpairRequest{}, &resp); err != nil {
		return err
	}
	if resp.Error != "" {
		return errors.New(resp.Error)
	}
	return nil
}
