package peer

import (
	"context"
	"errors"
	"fmt"
	"net"
	"sync"
	"time"

	"github.com/pzone/pzone/zone/session"

	"github.com/pzone/pzone/transport"
	"github.com/pzone/pzone/wakeup"
	"github.com/pzone/pzone/zone/api"
	"github.com/pzone/pzone/zone/wire"
)

// Sleeping, on the device's side (docs/PROTOCOL.md, "Wakeup and delivery
// later"): after SleepAfter without activity a device closes its session
// and sends nothing at all; it listens on the UDP socket its sessions are
// dialled from for wake pings, and reconnects on a valid one, on a local
// need (an application's call or message, a local edit, unpair), when its
// certificate is due for renewal, or at its check-in interval.

// sleeper is a peer's wake machinery; nil when the peer never sleeps.
type sleeper struct {
	p        *Peer
	after    time.Duration
	checkIn  time.Duration
	ep       *transport.Endpoint
	verifier *wakeup.Verifier
	pinged   chan struct{} // a valid ping arrived
	needed   chan struct{} // something local wants the session

	mu         sync.Mutex    // guards the fields below; asleep is st.Asleep != nil
	dozing     bool          // decided to sleep, closing the session: local calls wait for the next one
	waking     bool          // woken, reconnecting: local calls wait for the session
	pending    wakeup.Secret // sent to the hub, not yet confirmed
	registered bool          // this session's registration confirmed
	st         api.PeerWakeStatus
}

func (p *Peer) newSleeper() (*sleeper, error) {
	if p.cfg.SleepAfter <= 0 {
		return nil, nil
	}
	listen := p.cfg.WakeListen
	if listen == "" {
		listen = ":0"
	}
	ep, err := transport.ListenEndpoint(listen)
	if err != nil {
		return nil, fmt.Errorf("wake socket: %w (choose another with --wake-listen)", err)
	}
	sl := &sleeper{p: p, after: p.cfg.SleepAfter, checkIn: p.cfg.CheckIn, ep: ep, verifier: wakeup.NewVerifier(p.cfg.WakeWindow, nil),
		pinged: make(chan struct{}, 1), needed: make(chan struct{}, 1)}
	sl.st = api.PeerWakeStatus{SleepAfter: p.cfg.SleepAfter.String(), Listen: ep.LocalAddr().String()}
	return sl, nil
}

// listen reads wake pings until the socket closes. Nothing is ever sent
// back, whatever arrives.
func (sl *sleeper) listenWake(ctx context.Context) {
	buf := make([]byte, 2048)
	for {
		n, from, err := sl.ep.ReadDatagram(ctx, buf)
		if err != nil {
			return
		}
		v := sl.verifier.Check(buf[:n])
		sl.p.changes.Bump()
		if v != wakeup.Accepted {
			sl.p.log.Debug("wake datagram dropped", "from", from, "size", n, "verdict", v)
			continue
		}
		sl.p.log.Info("wake ping", "from", from)
		select {
		case sl.pinged <- struct{}{}:
		default:
		}
	}
}

// need wakes a sleeping peer for something local; it does nothing when
// the peer does not sleep.
func (sl *sleeper) need() {
	if sl == nil {
		return
	}
	select {
	case sl.needed <- struct{}{}:
	default:
	}
}

// isAsleep reports whether the peer is asleep.
func (sl *sleeper) isAsleep() bool {
	if sl == nil {
		return false
	}
	sl.mu.Lock()
	defer sl.mu.Unlock()
	return sl.st.Asleep != nil
}

// registerWake sends this session's wake registration: a fresh secret,
// and the port of the wake socket for a hub that sees the session over
// TCP. The secret counts once the hub confirms it (wakeConfirmed); until
// then the hub still holds the previous one.
func (sl *sleeper) registerWake(ps *peerSession) error {
	if sl == nil || ps.welcome.RenewOnly {
		return nil
	}
	if ps.welcome.Version < 2 {
		sl.p.log.Warn("the hub cannot wake devices (its session version is older); staying awake", "hub_version", ps.welcome.Version)
		return nil
	}
	if ps.welcome.TimeMs != 0 {
		sl.verifier.SetOffset(time.UnixMilli(ps.welcome.TimeMs).Sub(time.Now()))
	}
	secret, err := wakeup.NewSecret()
	if err != nil {
		return err
	}
	sl.mu.Lock()
	sl.pending, sl.registered = secret, false
	sl.mu.Unlock()
	port := uint16(sl.ep.LocalAddr().(*net.UDPAddr).Port)
	return ps.send(&wire.Control{Type: wire.MsgWake, WakePort: port, WakeID: secret.ID[:], WakeKey: secret.Key[:]})
}

func (sl *sleeper) wakeConfirmed(c *wire.Control) {
	if sl == nil {
		return
	}
	sl.mu.Lock()
	if !sl.pending.IsZero() {
		sl.verifier.SetSecret(sl.pending)
		sl.pending = wakeup.Secret{}
		sl.registered = true
	}
	sl.st.Endpoint = c.WakeEndpoint
	sl.mu.Unlock()
	sl.p.changes.Bump()
	sl.p.log.Info("wake registration confirmed", "endpoint", c.WakeEndpoint)
}

// doze decides whether an idle session may end for sleep: registered for
// wakeup, nothing in flight, every local edit pushed. If so the peer is
// dozing from then on: a call that starts now waits for the next session
// rather than use this one. (The flag is set before in-flight calls are
// counted, and a call counts itself before it reads the flag, so one of
// the two always sees the other.)
func (sl *sleeper) doze() bool {
	sl.mu.Lock()
	if !sl.registered {
		sl.mu.Unlock()
		return false
	}
	sl.dozing = true
	sl.mu.Unlock()
	if sl.p.inflight.Load() == 0 && (sl.p.state == nil || sl.p.state.State().Synced()) {
		return true
	}
	sl.mu.Lock()
	sl.dozing = false
	sl.mu.Unlock()
	return false
}

// away reports whether the peer is dozing, asleep or waking up: a call
// must wait for the next session.
func (sl *sleeper) away() bool {
	if sl == nil {
		return false
	}
	sl.mu.Lock()
	defer sl.mu.Unlock()
	return sl.dozing || sl.st.Asleep != nil || sl.waking
}

// touch notes activity that keeps the session awake.
func (p *Peer) touch() { p.lastActive.Store(time.Now().UnixNano()) }

// idleFor is how long the session has been idle.
func (p *Peer) idleFor() time.Duration { return time.Since(time.Unix(0, p.lastActive.Load())) }

// errSleep ends a session whose device goes to sleep.
var errSleep = errors.New("going to sleep")

// sleepUntilWoken is the peer asleep: no connection, nothing sent, until a
// valid ping, a local need, renewal, check-in, or ctx ends.
func (sl *sleeper) sleepUntilWoken(ctx context.Context) {
	now := time.Now()
	sentBefore := sl.ep.BytesSent()
	sl.mu.Lock()
	sl.dozing = false
	sl.st.Asleep = &now
	sl.st.Sleeps++
	sl.mu.Unlock()
	sl.p.setStatus(func(s *api.PeerStatus) {
		s.State, s.Transport, s.Session, s.Since, s.RTTMs = "asleep", "", "", nil, nil
	})
	sl.p.log.Info("asleep: session closed; waiting for a wake ping", "listen", sl.st.Listen)
	defer func() {
		t := time.Now()
		sl.mu.Lock()
		sl.waking = true
		sl.st.Asleep = nil
		sl.st.LastWake = &t
		sl.st.BytesAsleep += sl.ep.BytesSent() - sentBefore
		sl.mu.Unlock()
		sl.p.setStatus(func(s *api.PeerStatus) { s.State = "connecting" })
	}()
	// A local edit or call that came while the session was closing.
	if sl.p.state != nil && sl.p.state.State().Pending > 0 || sl.p.inflight.Load() > 0 {
		sl.count(&sl.st.LocalWakes)
		return
	}
	// Renewal: when due, but not sooner than renewRetry after the last
	// attempt, so a renewal that keeps failing cannot make it spin.
	renewDue := session.RenewAt(sl.p.id.Load().Cert)
	if tried := sl.p.renewTried.Load(); tried != 0 {
		if next := time.Unix(0, tried).Add(renewRetry); next.After(renewDue) {
			renewDue = next
		}
	}
	renew := time.NewTimer(max(time.Until(renewDue), 0))
	defer renew.Stop()
	var checkIn <-chan time.Time
	if sl.checkIn > 0 {
		t := time.NewTimer(sl.checkIn)
		defer t.Stop()
		checkIn = t.C
	}
	select {
	case <-ctx.Done():
	case <-sl.pinged:
		sl.count(&sl.st.PingWakes)
		sl.p.log.Info("woken by a ping")
	case <-sl.needed:
		sl.count(&sl.st.LocalWakes)
		sl.p.log.Info("woken: an application or a local edit needs the hub")
	case <-renew.C:
		sl.count(&sl.st.LocalWakes)
		sl.p.log.Info("woken: certificate renewal is due")
	case <-checkIn:
		sl.count(&sl.st.LocalWakes)
		sl.p.log.Info("woken: check-in")
	}
}

func (sl *sleeper) count(n *uint64) {
	sl.mu.Lock()
	*n++
	sl.mu.Unlock()
}

// drain forgets wake signals from before the device decided to sleep.
func (sl *sleeper) drain() {
	for _, ch := range []chan struct{}{sl.pinged, sl.needed} {
		select {
		case <-ch:
		default:
		}
	}
}

func (sl *sleeper) wakeStatus() *api.PeerWakeStatus {
	if sl == nil {
		return nil
	}
	sl.mu.Lock()
	st := sl.st
	sl.mu.Unlock()
	st.Pings = sl.verifier.Counters()
	return &st
}

// awaitSession waits, until ctx ends, for the session of a peer that is
// asleep or waking up, after asking it to wake.
func (sl *sleeper) awaitSession(ctx context.Context) transport.Conn {
	if sl == nil {
		return nil
	}
	var ver uint64
	for {
		away := sl.away()
		if c := sl.p.conn.Load(); c != nil && !away {
			return *c
		}
		if !away {
			return nil
		}
		sl.need()
		nv := sl.p.changes.Wait(ctx, ver)
		if ctx.Err() != nil {
			return nil
		}
		ver = nv
	}
}

// woke ends the waking phase: the first connection attempt after sleep
// succeeded or failed.
func (sl *sleeper) woke() {
	if sl == nil {
		return
	}
	sl.mu.Lock()
	changed := sl.waking
	sl.waking = false
	sl.mu.Unlock()
	if changed {
		sl.p.changes.Bump()
	}
}
