package hub

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"sync"
	"sync/atomic"
	"time"

	"github.com/pzone/pzone/zone/session"

	"github.com/pzone/pzone/certs"
	"github.com/pzone/pzone/transport"
	"github.com/pzone/pzone/zone/api"
	"github.com/pzone/pzone/zone/wire"
)

// Links: the session between the hubs of two friend zones (ALPN
// pz-link/1, docs/PROTOCOL.md "Hub-to-hub links"). Each hub keeps dialling
// every friend it has no link with, so either side can bring a link up
// (one of them may sit behind a NAT); when both manage at once, the link
// dialled by the hub with the lower zone ID is kept, on both sides alike.
// The control stream is the device session's (Hello, Welcome, Ping/Pong,
// Close); every call or listing that crosses the link opens its own stream.

// LinkVersion is the link protocol version carried in Hello.
// History: 1 — control stream, call streams, discovery streams; 2 —
// Addrs: each hub tells the other its public addresses when the link
// comes up and when they change (pzh addr), sent only to a hub of
// version 2 or later.
const LinkVersion = 2

// addrsVersion is the first link version that takes Addrs.
const addrsVersion = 2

// Link timing, with why.
const (
	// linkBackoffMin: a friend's hub restart takes about a second.
	linkBackoffMin = 500 * time.Millisecond
	// linkBackoffMax: a friend's hub that is away is tried again at
	// least this often; a hub has few friends, so this costs little.
	linkBackoffMax = time.Minute
	// linkRefusedBackoff: a friend's hub that does not take this zone
	// (it removed the friendship while unreachable) is asked again only
	// this often, in case it is restored.
	linkRefusedBackoff = 5 * time.Minute
	// linkDrain is how long a link replaced by a newer one (both hubs
	// dialled at once, or one came back) keeps carrying the calls already
	// on it before it closes: a call's default time.
	linkDrain = wire.DefaultCallTimeout
	// linkFirstWait: when both hubs start dialling each other at once
	// (they just made friends, or both started), the one with the higher
	// zone ID waits this long first, so usually only one link is made.
	linkFirstWait = 2 * linkBackoffMin
)

// hubLink is one live link with a friend's hub.
type hubLink struct {
	zone    string // the friend's compact zone ID
	id      string
	conn    transport.Conn
	ctrl    transport.Stream
	dialled bool // this hub dialled it
	since   time.Time
	version uint // the other hub's link version

	wmu   sync.Mutex
	rttUs atomic.Int64
	calls atomic.Uint64

	// smu guards streams, the calls and listings on the link now, and
	// drained, closed when they reach none while the link is retired.
	smu     sync.Mutex
	streams int
	drained chan struct{}

	closeOnce sync.Once
	closing   atomic.Bool // set as soon as closing (or retiring) starts: no longer live
	closed    chan struct{}
	reason    wire.CloseReason
	// ctx ends with the link: streams relayed over it stop.
	ctx    context.Context
	cancel context.CancelFunc
}

func newHubLink(zone string, conn transport.Conn, ctrl transport.Stream, dialled bool, now time.Time) *hubLink {
	l := &hubLink{zone: zone, id: newSessionID(), conn: conn, ctrl: ctrl, dialled: dialled, since: now, closed: make(chan struct{})}
	l.ctx, l.cancel = context.WithCancel(context.Background())
	return l
}

func (l *hubLink) send(c *wire.Control) error {
	l.wmu.Lock()
	defer l.wmu.Unlock()
	l.ctrl.SetWriteDeadline(time.Now().Add(wire.StreamTimeout))
	return transport.WriteFrame(l.ctrl, c)
}

// close ends the link once: it tells the other hub why (unless it is
// gone), gives it a moment to read that, and closes the connection.
func (l *hubLink) close(reason wire.CloseReason, msg string, tell bool) {
	l.closeOnce.Do(func() {
		l.closing.Store(true)
		l.reason = reason
		l.cancel()
		if tell {
			if l.send(&wire.Control{Type: wire.MsgClose, Reason: reason, Message: msg}) == nil {
				select {
				case <-l.conn.Done():
				case <-time.After(wire.CloseLinger):
				}
			}
		}
		l.conn.CloseWithError(uint64(reason), reason.String())
		close(l.closed)
	})
}

func (l *hubLink) live() bool { return !l.closing.Load() }

// use counts a stream on the link until the returned release is called.
func (l *hubLink) use() (release func()) {
	l.smu.Lock()
	l.streams++
	l.smu.Unlock()
	return func() {
		l.smu.Lock()
		defer l.smu.Unlock()
		if l.streams--; l.streams == 0 && l.drained != nil {
			close(l.drained)
			l.drained = nil
		}
	}
}

// retire takes l out of use for new streams and waits, at most timeout,
// for the streams on it to end; the caller then closes it.
func (l *hubLink) retire(timeout time.Duration) {
	l.closing.Store(true)
	l.smu.Lock()
	if l.streams == 0 {
		l.smu.Unlock()
		return
	}
	ch := make(chan struct{})
	l.drained = ch
	l.smu.Unlock()
	t := time.NewTimer(timeout)
	defer t.Stop()
	select {
	case <-ch:
	case <-t.C:
	case <-l.conn.Done():
	}
}

// links keeps the hub's links with its friends' hubs: a dialler per
// friend while the hub serves, the live link of each, why a link is down,
// and the outboxes of messages kept for friends while their link is down
// (outbox.go). Its lock is taken before the hub's, never inside it.
type links struct {
	h *Hub

	mu       sync.Mutex
	closing  bool
	ctx      context.Context // the run's, set by begin: diallers end with it
	live     map[string]*hubLink
	stops    map[string]context.CancelFunc // the diallers
	states   map[string]*linkState
	outboxes map[string]*outbox
}

func newLinks(h *Hub) *links {
	return &links{h: h, live: map[string]*hubLink{}, stops: map[string]context.CancelFunc{}, states: map[string]*linkState{}, outboxes: map[string]*outbox{}}
}

// begin starts the diallers of zones, and of friends made from now on,
// until ctx ends.
func (lk *links) begin(ctx context.Context, zones []string) {
	lk.mu.Lock()
	lk.ctx = ctx
	lk.mu.Unlock()
	for _, z := range zones {
		lk.start(z)
	}
}

// linked counts the live links.
func (lk *links) linked() int {
	lk.mu.Lock()
	defer lk.mu.Unlock()
	n := 0
	for _, l := range lk.live {
		if l.live() {
			n++
		}
	}
	return n
}

// shutdown stops the outboxes and ends every link with reason shutdown;
// no dialler or outbox starts after it.
func (lk *links) shutdown() {
	lk.mu.Lock()
	lk.closing = true
	lk.mu.Unlock()
	lk.stopOutboxes()
	lk.shutdownLinks()
}

// errLinkUp: the friend's hub dialled at the same time, and its link is
// the one kept.
var errLinkUp = errors.New("a link with the friend is up already")

// linkState is what pzh friends shows of a friend's link when there is
// none: the dialler's last error.
type linkState struct {
	lastErr  string
	dialling bool
	refused  bool
}

// ---- keeping links ----

// startLink starts the dialler of a friend, unless one runs.
func (lk *links) start(zone string) {
	lk.mu.Lock()
	defer lk.mu.Unlock()
	if lk.ctx == nil || lk.closing || lk.stops[zone] != nil {
		return
	}
	ctx, stop := context.WithCancel(lk.ctx)
	lk.stops[zone] = stop
	lk.h.conns.Add(1)
	go func() {
		defer lk.h.conns.Done()
		lk.keep(ctx, zone)
	}()
}

// stopLink stops a friend's dialler and ends its link, telling the other
// hub reason; it reports whether a link was up to be told.
func (lk *links) stop(zone string, reason wire.CloseReason, msg string) bool {
	lk.mu.Lock()
	stop := lk.stops[zone]
	delete(lk.stops, zone)
	l := lk.live[zone]
	delete(lk.live, zone)
	delete(lk.states, zone)
	lk.mu.Unlock()
	if stop != nil {
		stop()
	}
	if l == nil || !l.live() {
		return false
	}
	l.close(reason, msg, true)
	return true
}

// keepLink dials a friend's hub whenever there is no link with it, with
// backoff and jitter, until ctx ends.
func (lk *links) keep(ctx context.Context, zone string) {
	bo := session.Backoff{Min: linkBackoffMin, Max: linkBackoffMax}
	first := true
	for ctx.Err() == nil {
		if l := lk.liveLink(zone); l != nil {
			select {
			case <-l.closed:
			case <-ctx.Done():
				return
			}
			first = false
			continue
		}
		wait := time.Duration(0)
		switch {
		case !first:
			wait = bo.Next()
		case lk.h.zone.ID.Compact() > zone:
			wait = linkFirstWait
		}
		if wait > 0 {
			t := time.NewTimer(wait)
			select {
			case <-t.C:
			case <-ctx.Done():
				t.Stop()
				return
			}
			if lk.liveLink(zone) != nil {
				continue // the friend's hub dialled meanwhile
			}
		}
		first = false
		lk.setState(zone, func(s *linkState) { s.dialling = true })
		l, err := lk.dial(ctx, zone)
		if errors.Is(err, errLinkUp) {
			lk.setState(zone, func(s *linkState) { *s = linkState{} })
			continue
		}
		if err != nil {
			if ctx.Err() != nil {
				return
			}
			var end *wire.EndError
			refused := errors.As(err, &end) && end.Reason == wire.ReasonUnknown
			lk.setState(zone, func(s *linkState) { s.lastErr, s.dialling, s.refused = err.Error(), true, refused })
			lk.h.log.Info("friend link not up; retrying", "friend", lk.h.friends.petname(zone), "err", err)
			if refused {
				bo.Cur = linkRefusedBackoff
			}
			continue
		}
		bo.Reset()
		lk.run(l)
	}
}

func (lk *links) setState(zone string, f func(*linkState)) {
	lk.mu.Lock()
	s := lk.states[zone]
	if s == nil {
		s = &linkState{}
		lk.states[zone] = s
	}
	f(s)
	lk.mu.Unlock()
	lk.h.changes.Bump()
}

func (lk *links) liveLink(zone string) *hubLink {
	lk.mu.Lock()
	l := lk.live[zone]
	lk.mu.Unlock()
	if l != nil && l.live() {
		return l
	}
	return nil
}

// linkTLS is the client side of pz-link/1 to friend f: its hub must
// present a certificate its CA (as recorded) issued to its hub.
func (lk *links) tlsFor(f *FriendRecord) *tls.Config {
	return &tls.Config{
		MinVersion:           tls.VersionTLS13,
		NextProtos:           []string{transport.ALPNLink},
		ServerName:           certs.ServerName(f.ZoneID),
		InsecureSkipVerify:   true, // replaced by VerifyPeerCertificate: trust is the friend's recorded CA
		GetClientCertificate: lk.h.hubClientCert,
		VerifyPeerCertificate: func(raw [][]byte, _ [][]*x509.Certificate) error {
			v, err := certs.Verify(f.ca, raw, lk.h.cfg.Now(), 0)
			if err != nil {
				return fmt.Errorf("friend %q's hub: %w", f.Petname, err)
			}
			if v.Identity.Device != certs.HubDevice {
				return fmt.Errorf("friend %q's side presented device %q's certificate, not its hub's", f.Petname, v.Identity.Device)
			}
			return nil
		},
	}
}

// dialLink dials a friend's hub at each of its addresses and says Hello.
func (lk *links) dial(ctx context.Context, zone string) (*hubLink, error) {
	f := lk.h.friends.get(zone)
	if f == nil {
		return nil, fmt.Errorf("%w: zone %s", ErrNoFriend, zone)
	}
	tc := transport.Config{TLS: lk.tlsFor(f), Logger: lk.h.log, IdleTimeout: wire.TransportIdle, HandshakeTimeout: session.HandshakeTimeout}
	var errs []error
	for _, addr := range f.HubAddrs {
		conn, err := transport.Dial(ctx, addr, transport.ModeAuto, tc)
		if err != nil {
			if ctx.Err() != nil {
				return nil, ctx.Err()
			}
			errs = append(errs, fmt.Errorf("%s: %w", addr, err))
			continue
		}
		l, err := lk.hello(ctx, zone, conn)
		if err != nil {
			conn.CloseWithError(uint64(wire.ReasonProtocol), "hello failed")
			return nil, err
		}
		return l, nil
	}
	return nil, errors.Join(errs...)
}

func (lk *links) hello(ctx context.Context, zone string, conn transport.Conn) (*hubLink, error) {
	hctx, cancel := context.WithTimeout(ctx, wire.HelloTimeout)
	defer cancel()
	ctrl, err := conn.OpenStream(hctx)
	if err != nil {
		return nil, fmt.Errorf("open control stream: %w", err)
	}
	ctrl.SetDeadline(time.Now().Add(wire.HelloTimeout))
	if err := transport.WriteFrame(ctrl, &wire.StreamHeader{Kind: wire.StreamControl}); err != nil {
		return nil, err
	}
	if err := transport.WriteFrame(ctrl, &wire.Control{Type: wire.MsgHello, Version: LinkVersion, Software: wire.SoftwareVersion}); err != nil {
		return nil, err
	}
	fr := transport.NewFrameReader(ctrl, wire.MaxControlFrame)
	var c wire.Control
	if err := fr.ReadFrame(&c); err != nil {
		return nil, fmt.Errorf("no welcome from the friend's hub: %w", err)
	}
	ctrl.SetDeadline(time.Time{})
	switch c.Type {
	case wire.MsgWelcome:
	case wire.MsgClose:
		if c.Reason == wire.ReasonUnknown {
			return nil, &wire.EndError{Reason: c.Reason, Message: c.Message}
		}
		return nil, fmt.Errorf("the friend's hub closed the link: %s: %s", c.Reason, c.Message)
	default:
		return nil, fmt.Errorf("the friend's hub answered hello with message %d", c.Type)
	}
	l := newHubLink(zone, conn, ctrl, true, lk.h.cfg.Now())
	l.id, l.version = c.SessionID, c.Version
	hb := min(max(time.Duration(c.HeartbeatMs)*time.Millisecond, wire.MinHeartbeat), wire.MaxHeartbeat)
	if !lk.register(l) {
		l.close(wire.ReasonReplaced, "a link with this zone is up already", true)
		return nil, errLinkUp
	}
	lk.h.conns.Add(1)
	go func() {
		defer lk.h.conns.Done()
		lk.control(l, fr, hb, true)
	}()
	lk.tellAddrs(l)
	return l, nil
}

// registerLink makes l the friend's link, unless a live link dialled by
// the hub with the lower zone ID is there already (then false: the
// caller closes l). A link in the same direction as the old is newer and
// replaces it.
func (lk *links) register(l *hubLink) bool {
	dialer := func(x *hubLink) string {
		if x.dialled {
			return lk.h.zone.ID.Compact()
		}
		return x.zone
	}
	lk.mu.Lock()
	if lk.closing || lk.h.friends.get(l.zone) == nil {
		lk.mu.Unlock()
		return false
	}
	old := lk.live[l.zone]
	if old != nil && old.live() && old.dialled != l.dialled && dialer(old) < dialer(l) {
		lk.mu.Unlock()
		return false
	}
	lk.live[l.zone] = l
	delete(lk.states, l.zone)
	if old != nil && old.live() {
		lk.h.conns.Add(1)       // under mu, which shutdown takes before it waits
		old.closing.Store(true) // new streams take the new link from now on
		go func() {
			defer lk.h.conns.Done()
			old.retire(linkDrain) // the calls on it finish first
			old.close(wire.ReasonReplaced, "replaced by a newer link", true)
		}()
	}
	lk.mu.Unlock()
	lk.h.changes.Bump()
	lk.h.log.Info("friend link up", "friend", lk.h.friends.petname(l.zone), "remote", l.conn.RemoteAddr().String(), "via", l.conn.Kind(), "dialled", l.dialled)
	go lk.kickOutbox(l.zone) // messages kept while the link was down
	return true
}

// runLink serves the link's streams until it ends.
func (lk *links) run(l *hubLink) {
	for {
		st, err := l.conn.AcceptStream(l.ctx)
		if err != nil {
			break
		}
		release := l.use() // the friend may not have moved to a newer link yet
		lk.h.conns.Add(1)
		go func() {
			defer lk.h.conns.Done()
			defer release()
			lk.h.router.handleLinkStream(l, st)
		}()
	}
	<-l.closed
	lk.mu.Lock()
	if lk.live[l.zone] == l {
		delete(lk.live, l.zone)
	}
	lk.mu.Unlock()
	lk.h.changes.Bump()
	lk.h.log.Info("friend link down", "friend", lk.h.friends.petname(l.zone), "reason", l.reason)
}

// linkControl reads the control stream until the link ends: the dialler
// pings every hb and reads pongs; the acceptor answers pings. Either
// reads Close.
func (lk *links) control(l *hubLink, fr *transport.FrameReader, hb time.Duration, dialler bool) {
	frames := make(chan wire.Control)
	readErr := make(chan error, 1)
	dead := wire.DeadAfter(hb)
	// Every return below has closed the link, whose connection's end
	// ends the reader's read.
	var reader sync.WaitGroup
	defer reader.Wait()
	reader.Add(1)
	go func() {
		defer reader.Done()
		for {
			var c wire.Control
			if err := session.ReadControl(l.conn, l.ctrl, fr, dead, &c); err != nil {
				readErr <- err
				return
			}
			select {
			case frames <- c:
			case <-l.closed:
				return
			}
		}
	}()
	var tick <-chan time.Time
	var seq uint64
	var sent time.Time
	ping := func() error {
		seq++
		sent = time.Now()
		return l.send(&wire.Control{Type: wire.MsgPing, Seq: seq, RTTus: uint64(l.rttUs.Load()), Pad: make([]byte, wire.PingPad)})
	}
	if dialler {
		t := time.NewTicker(hb)
		defer t.Stop()
		tick = t.C
		if ping() != nil {
			l.close(wire.ReasonShutdown, "", false)
			return
		}
	}
	for {
		select {
		case <-l.closed:
			return
		case err := <-readErr:
			var ne net.Error
			switch {
			case !l.live():
			case errors.As(err, &ne) && ne.Timeout():
				l.close(wire.ReasonTimeout, fmt.Sprintf("no heartbeat for %v", dead), true)
			case wentAway(l.conn, err):
				l.close(wire.ReasonShutdown, "", false)
			default:
				l.close(wire.ReasonProtocol, "malformed control frame", true)
			}
			return
		case <-tick:
			if ping() != nil {
				l.close(wire.ReasonShutdown, "", false)
				return
			}
		case c := <-frames:
			switch c.Type {
			case wire.MsgPing:
				if l.send(&wire.Control{Type: wire.MsgPong, Seq: c.Seq}) != nil {
					l.close(wire.ReasonShutdown, "", false)
					return
				}
				if c.RTTus > 0 && l.rttUs.Swap(int64(c.RTTus)) == 0 {
					lk.h.changes.Bump()
				}
			case wire.MsgPong:
				if c.Seq == seq {
					first := l.rttUs.Swap(int64(time.Since(sent)/time.Microsecond)) == 0
					if first {
						lk.h.changes.Bump()
					}
				}
			case wire.MsgClose:
				lk.closedByFriend(l, &c)
				return
			case wire.MsgAddrs:
				if err := lk.h.friends.moved(l.zone, c.HubAddrs); err != nil {
					l.close(wire.ReasonProtocol, err.Error(), true)
					return
				}
			default:
				l.close(wire.ReasonProtocol, fmt.Sprintf("unexpected control message %d", c.Type), true)
				return
			}
		}
	}
}

// tellAddrs tells the hub at the other end of l this hub's public
// addresses, if it takes them.
func (lk *links) tellAddrs(l *hubLink) {
	if l.version >= addrsVersion {
		l.send(&wire.Control{Type: wire.MsgAddrs, HubAddrs: lk.h.publicAddrs()})
	}
}

// announceAddrs tells every linked friend this hub's public addresses,
// after they changed.
func (lk *links) announceAddrs() {
	lk.mu.Lock()
	var live []*hubLink
	for _, l := range lk.live {
		if l.live() {
			live = append(live, l)
		}
	}
	lk.mu.Unlock()
	for _, l := range live {
		lk.tellAddrs(l)
	}
}

// linkClosedByFriend acts on the friend's Close: a friend that removed
// this zone is removed here too, so neither keeps trusting or dialling
// the other.
func (lk *links) closedByFriend(l *hubLink, c *wire.Control) {
	l.close(c.Reason, "", false)
	lk.h.log.Info("friend closed the link", "friend", lk.h.friends.petname(l.zone), "reason", c.Reason, "message", c.Message)
	if c.Reason == wire.ReasonUnfriended {
		name := lk.h.friends.petname(l.zone)
		if _, err := lk.h.friends.remove(name, "the friend's hub ended the friendship", wire.ReasonUnfriended); err != nil && !errors.Is(err, ErrNoFriend) {
			lk.h.log.Warn("remove friend", "friend", name, "err", err)
		}
	}
}

// serveLink is the accepting side of pz-link/1.
func (lk *links) serve(ctx context.Context, conn transport.Conn) {
	cs := conn.ConnectionState()
	leaf := cs.PeerCertificates[0]
	id, err := certs.IdentityFromCert(leaf)
	if err != nil {
		conn.CloseWithError(uint64(wire.ReasonProtocol), "certificate check failed")
		return
	}
	zone := id.Zone.Compact()
	ctrl, fr, hello, ok := lk.h.acceptHello(ctx, conn, "hub of "+string(id.Zone))
	if !ok {
		return
	}
	l := newHubLink(zone, conn, ctrl, false, lk.h.cfg.Now())
	l.version = hello.Version
	f := lk.h.friends.get(zone)
	if f == nil {
		lk.h.log.Info("link refused: not a friend", "zone_id", id.Zone, "remote", conn.RemoteAddr().String())
		l.close(wire.ReasonUnknown, fmt.Sprintf("zone %s is not a friend of zone %q (it was removed, or never added): make friends again with pzh friend invite/accept", id.Zone, lk.h.zone.Name), true)
		return
	}
	// The chain checked out against itself in the handshake; only the CA
	// recorded when the zones made friends counts.
	if _, err := certs.Verify(f.ca, [][]byte{leaf.Raw}, lk.h.cfg.Now(), 0); err != nil {
		lk.h.log.Warn("link refused: certificate", "friend", f.Petname, "err", err)
		l.close(wire.ReasonUnknown, "the certificate is not from the zone CA recorded for this friend", true)
		return
	}
	if !lk.register(l) {
		l.close(wire.ReasonReplaced, "a link with this zone is up already", true)
		return
	}
	if err := l.send(&wire.Control{Type: wire.MsgWelcome, Version: LinkVersion, SessionID: l.id, HeartbeatMs: uint64(lk.h.cfg.Heartbeat / time.Millisecond), TimeMs: lk.h.cfg.Now().UnixMilli()}); err != nil {
		l.close(wire.ReasonShutdown, "", false)
	}
	ctrl.SetReadDeadline(time.Time{})
	lk.h.conns.Add(1)
	go func() {
		defer lk.h.conns.Done()
		lk.control(l, fr, lk.h.cfg.Heartbeat, false)
	}()
	lk.tellAddrs(l)
	lk.run(l)
}

// shutdownLinks ends every link with reason shutdown.
func (lk *links) shutdownLinks() {
	lk.mu.Lock()
	var live []*hubLink
	for _, l := range lk.live {
		live = append(live, l)
	}
	for _, stop := range lk.stops {
		stop()
	}
	lk.stops = map[string]context.CancelFunc{}
	lk.mu.Unlock()
	var wg sync.WaitGroup
	for _, l := range live {
		wg.Add(1)
		go func() {
			defer wg.Done()
			l.close(wire.ReasonShutdown, "hub is shutting down", true)
		}()
	}
	wg.Wait()
}

// linkView fills the link fields of a friend's row.
func (lk *links) view(zone string, v *api.FriendView) {
	lk.mu.Lock()
	l := lk.live[zone]
	var st *linkState
	if p := lk.states[zone]; p != nil {
		c := *p // setLinkState writes it under mu
		st = &c
	}
	lk.mu.Unlock()
	if l != nil && l.live() {
		v.State = "online"
		v.Transport = string(l.conn.Kind())
		v.RemoteAddr = l.conn.RemoteAddr().String()
		since := l.since
		v.Since = &since
		if us := l.rttUs.Load(); us > 0 {
			ms := float64(us) / 1000
			v.RTTMs = &ms
		}
		v.Calls = l.calls.Load()
		return
	}
	if st != nil {
		v.LastError = st.lastErr
		switch {
		case st.refused:
			v.State = "refused"
		case st.dialling:
			v.State = "connecting"
		}
	}
}
