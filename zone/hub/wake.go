package hub

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"

	"github.com/pzone/pzone/zone/localapi"
	"github.com/pzone/pzone/zone/stores"

	"github.com/pzone/pzone/transport"
	"github.com/pzone/pzone/wakeup"
	"github.com/pzone/pzone/zone/api"
	"github.com/pzone/pzone/zone/wire"
)

// Sleeping devices, on the hub's side (docs/PROTOCOL.md, "Wakeup and
// delivery later"): each session registers how to wake its device; the
// hub keeps messages sent for later in its mailbox, wakes the device when
// something waits for it, and delivers in order once it is back.

// Wake timing, with why.
const (
	// DefaultWakeRate caps the pings one device receives per minute, so
	// that no sender can make the hub flood it: six is one every ten
	// seconds on average, plenty for a device that answers the first.
	DefaultWakeRate = 6
	// wakeCoalesce: a request within this long of the last ping, while the
	// device has not yet come back, is covered by that ping, which is still
	// on its way (a burst of messages costs the device one ping).
	wakeCoalesce = time.Second
	// wakeRetryMin and wakeRetryMax bound the backoff of pings while the
	// device stays away and something still waits for it.
	wakeRetryMin = time.Second
	wakeRetryMax = 5 * time.Minute
	// courierRetryMin and courierRetryMax bound the backoff of a queued
	// message whose service is not running on the device. The backoff
	// grows while passes deliver nothing, and a device that went to sleep
	// meanwhile is woken for the retry: so an app that starts later gets
	// its messages, and a backlog no app takes costs a sleeping device at
	// most one wake per courierRetryMax until it expires.
	courierRetryMin = 2 * time.Second
	courierRetryMax = 5 * time.Minute
	// courierBatch is how many queued messages a courier reads at once.
	courierBatch = 32
	// expireEvery is how often expired messages are removed.
	expireEvery = time.Minute
	// deliverTimeout bounds one queued message's delivery to its device.
	deliverTimeout = 30 * time.Second
	// firstAttemptWait bounds how long a sender of a message for later
	// waits to learn whether it was delivered at once (device online).
	firstAttemptWait = 5 * time.Second
)

// waker owns the hub's side of sleeping devices: how to wake each one,
// the pings and their backoff, the calls held until a device is back, and
// the couriers delivering the queues the mailbox keeps. The sessions and
// device records are the hub's; it reaches them through host.
type waker struct {
	host     wakeHost
	mail     *mailbox
	methods  map[string]wakeup.Waker // by method; UDP is built in
	rate     int                     // pings per device per minute
	now      func() time.Time
	log      *slog.Logger
	changes  *localapi.Notifier
	stopping <-chan struct{} // closed when the hub shuts down: held calls give up

	// sent and limited count every ping since the hub started, of
	// devices forgotten since too: the metrics' counters never go back.
	sent, limited atomic.Uint64

	mu         sync.Mutex
	devices    map[string]*hubWake
	deliveries map[string]chan bool // DEVICE/FROM/ID → first delivery attempt's outcome
	couriers   sync.WaitGroup
	stopped    bool
}

// wakeHost is what the waker asks of the hub.
type wakeHost interface {
	// session is the device's registered session, nil if none (it may be
	// closing).
	session(device string) *hubSession
	// online reports whether the device has a session that is not closing.
	online(device string) bool
	// paired reports whether the device is paired and not revoked.
	paired(device string) bool
	// knownZone reports whether zoneID is this zone or a friend's.
	knownZone(zoneID string) bool
}

func newWaker(host wakeHost, mail *mailbox, methods map[string]wakeup.Waker, cfg *Config, changes *localapi.Notifier, stopping <-chan struct{}) *waker {
	return &waker{host: host, mail: mail, methods: methods, rate: cfg.WakeRate, now: cfg.Now, log: cfg.Logger, changes: changes, stopping: stopping,
		devices: map[string]*hubWake{}, deliveries: map[string]chan bool{}}
}

// markNewMail records that a message arrived for device since it last saw
// its queue, so it is worth waking.
func (wk *waker) markNewMail(device string) {
	wk.mu.Lock()
	wk.of(device).newMail = true
	wk.mu.Unlock()
}

// hubWake is the waker's state of one device (waker.mu).
type hubWake struct {
	rec      *wakeRecord // nil: the device never registered
	stamp    time.Time   // last ping's stamp: stamps only go forward
	sent     []time.Time // pings in the last minute
	pings    uint64      // pings sent since the hub started
	limited  uint64      // pings held back by the rate cap
	lastPing time.Time
	covered  time.Time // until then a new request is covered by the last ping (zero once the device came back)
	retry    *time.Timer
	backoff  time.Duration
	holders  int           // calls waiting for the device
	online   chan struct{} // closed when a session registers, or the device is revoked
	// newMail: messages arrived since the device last saw its queue (a
	// courier pass), so it is worth waking. A backlog the device has seen
	// but could not take (its app not running) does not wake it again.
	newMail bool
	courier passRunner // the courier delivering the queue
}

// onlineCh is the channel closed when the device next comes online (or is
// revoked) (waker.mu held).
func (w *hubWake) onlineCh() chan struct{} {
	if w.online == nil {
		w.online = make(chan struct{})
	}
	return w.online
}

func (wk *waker) of(device string) *hubWake {
	w := wk.devices[device]
	if w == nil {
		w = &hubWake{}
		wk.devices[device] = w
	}
	return w
}

// loadWakes reads the wake records at start and wakes the devices whose
// messages survived the restart.
func (wk *waker) load() error {
	recs, err := wk.mail.Wakes()
	if err != nil {
		return err
	}
	wk.mu.Lock()
	for d, r := range recs {
		wk.of(d).rec = r
	}
	var devices []string
	for _, d := range wk.mail.Devices() {
		if !isOutbox(d) { // friend zones' queues go when their links are up
			devices = append(devices, d)
		}
	}
	for _, d := range devices {
		wk.of(d).newMail = true
	}
	wk.mu.Unlock()
	for _, d := range devices {
		wk.wake(d)
	}
	return nil
}

// wakeEndpoint is where the hub will ping a device: the address it
// observes (the session's own over QUIC, where the device dials from its
// wake socket; over TCP, the session's IP with the announced port).
func wakeEndpoint(conn transport.Conn, port uint16) (string, error) {
	ap, err := netip.ParseAddrPort(conn.RemoteAddr().String())
	if err != nil {
		return "", fmt.Errorf("session address %q: %w", conn.RemoteAddr(), err)
	}
	if conn.Kind() == transport.KindQUIC {
		return ap.String(), nil
	}
	if port == 0 {
		return "", errors.New("no wake port")
	}
	return netip.AddrPortFrom(ap.Addr(), port).String(), nil
}

// registerWake keeps a session's wake registration and confirms it.
func (wk *waker) registerWake(s *hubSession, c *wire.Control) error {
	method := c.WakeMethod
	if method == "" {
		method = wakeup.MethodUDP
	}
	if len(c.WakeID) != wakeup.IDSize || len(c.WakeKey) != wakeup.KeySize {
		return fmt.Errorf("wake registration: id of %d and key of %d bytes, want %d and %d", len(c.WakeID), len(c.WakeKey), wakeup.IDSize, wakeup.KeySize)
	}
	if wk.methods[method] == nil {
		return fmt.Errorf("wake registration: unknown method %q", method)
	}
	var endpoint string
	if method == wakeup.MethodUDP {
		var err error
		if endpoint, err = wakeEndpoint(s.conn, c.WakePort); err != nil {
			return fmt.Errorf("wake registration: %w", err)
		}
	} else {
		endpoint = c.WakeEndpoint
		if endpoint == "" || len(endpoint) > 1024 {
			return errors.New("wake registration: bad endpoint")
		}
	}
	rec := &wakeRecord{Method: method, Endpoint: endpoint, ID: c.WakeID, Key: c.WakeKey}
	if !wk.host.paired(s.device) {
		return nil // the session is being cut
	}
	// Memory and disk change together, under the lock, so a session
	// ending at the same moment cannot write back an older secret.
	wk.mu.Lock()
	err := wk.mail.SaveWake(s.device, rec)
	if err == nil {
		wk.of(s.device).rec = rec
	}
	wk.mu.Unlock()
	if err != nil {
		wk.log.Error("save wake registration; the device will not sleep", "device", s.device, "err", err)
		return nil // no WakeOK: the device stays awake, which is safe
	}
	wk.changes.Bump()
	wk.log.Debug("wake registration", "device", s.device, "method", method, "endpoint", endpoint)
	return s.send(&wire.Control{Type: wire.MsgWakeOK, WakeEndpoint: endpoint})
}

// deviceOnline is called once a device's session is registered: its
// pings stop, calls waiting for it go ahead, and its queue is delivered.
func (wk *waker) deviceOnline(device string) {
	wk.mu.Lock()
	w := wk.of(device)
	if w.retry != nil {
		w.retry.Stop()
		w.retry = nil
	}
	w.backoff = 0
	w.covered = time.Time{} // the ping did its job; the next request gets its own
	if w.online != nil {
		close(w.online)
		w.online = nil
	}
	wk.mu.Unlock()
	wk.setAsleep(device, false)
	wk.kickCourier(device)
}

// deviceOffline is called when a device's session ended; asleep says it
// went to sleep (and can be woken).
func (wk *waker) deviceOffline(device string, asleep bool) {
	if asleep {
		wk.setAsleep(device, true)
	}
	// A message queued while the session was closing.
	wk.mu.Lock()
	fresh := wk.of(device).newMail
	wk.mu.Unlock()
	if fresh && wk.mail.Stat(device).n > 0 {
		wk.wake(device)
	}
}

// setAsleep records whether a device is asleep, in memory and on disk
// together, if it changed.
func (wk *waker) setAsleep(device string, asleep bool) {
	wk.mu.Lock()
	defer wk.mu.Unlock()
	w := wk.of(device)
	if w.rec == nil || w.rec.Asleep == asleep {
		return
	}
	c := *w.rec
	c.Asleep, c.Since = asleep, time.Time{}
	if asleep {
		c.Since = wk.now().UTC()
	}
	if err := wk.mail.SaveWake(device, &c); err != nil {
		wk.log.Warn("save wake state", "device", device, "err", err)
	}
	w.rec = &c
	wk.changes.Bump()
}

// asleep reports whether a device's last session ended with it going to
// sleep.
func (wk *waker) asleep(device string) bool {
	wk.mu.Lock()
	defer wk.mu.Unlock()
	w := wk.devices[device]
	return w != nil && w.rec != nil && w.rec.Asleep
}

// wake asks for a device to be woken: it sends a ping unless one is on
// its way or the rate cap is reached, and keeps retrying with backoff
// while the device stays away and something waits for it. It reports
// whether the device can be woken at all (it registered how).
func (wk *waker) wake(device string) bool {
	if wk.host.online(device) {
		return true
	}
	wk.mu.Lock()
	defer wk.mu.Unlock()
	w := wk.of(device)
	if w.rec == nil || wk.stopped {
		return w.rec != nil
	}
	wk.pingLocked(device, w, false)
	if w.retry == nil {
		if w.backoff == 0 {
			w.backoff = wakeRetryMin
		}
		w.retry = time.AfterFunc(w.backoff, func() { wk.retryWake(device) })
	}
	return true
}

// retryWake is a device's backoff timer: another ping if the device is
// still away and something still waits.
func (wk *waker) retryWake(device string) {
	queued := wk.mail.Stat(device).n > 0
	online := wk.host.online(device)
	wk.mu.Lock()
	defer wk.mu.Unlock()
	w := wk.of(device)
	w.retry = nil
	waiting := queued && w.newMail
	if online || w.rec == nil || !waiting && w.holders == 0 || wk.stopped {
		w.backoff = 0
		return
	}
	wk.pingLocked(device, w, true)
	w.backoff = min(w.backoff*2, wakeRetryMax)
	w.retry = time.AfterFunc(w.backoff, func() { wk.retryWake(device) })
}

// pingLocked sends one ping to a device, within the coalescing window and
// the rate cap (waker.mu held). A retry is never coalesced.
func (wk *waker) pingLocked(device string, w *hubWake, retry bool) {
	now := time.Now()
	if !retry && now.Before(w.covered) {
		return
	}
	keep := w.sent[:0]
	for _, t := range w.sent {
		if now.Sub(t) < time.Minute {
			keep = append(keep, t)
		}
	}
	w.sent = keep
	if len(w.sent) >= wk.rate {
		w.limited++
		wk.limited.Add(1)
		wk.changes.Bump()
		return
	}
	stamp := wk.now().Truncate(time.Millisecond)
	if !stamp.After(w.stamp) {
		stamp = w.stamp.Add(time.Millisecond)
	}
	w.stamp = stamp
	w.sent = append(w.sent, now)
	w.lastPing = now
	w.covered = now.Add(wakeCoalesce)
	w.pings++
	wk.sent.Add(1)
	reg := w.rec.registration()
	ping := wakeup.Seal(reg.Secret, stamp)
	waker := wk.methods[reg.Method]
	wk.changes.Bump()
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), wire.StreamTimeout)
		defer cancel()
		if err := waker.Wake(ctx, reg.Endpoint, ping); err != nil {
			wk.log.Info("wake ping not sent", "device", device, "endpoint", reg.Endpoint, "err", err)
			return
		}
		wk.log.Debug("wake ping sent", "device", device, "endpoint", reg.Endpoint)
	}()
}

// awaitOnline holds a call for a device that is away until it is back
// (its session, returned), or until is reached, the caller's session
// ends (gone closes), the device is revoked or the hub stops (nil).
func (wk *waker) awaitOnline(gone <-chan struct{}, device string, until time.Time) *hubSession {
	wk.mu.Lock()
	w := wk.of(device)
	ch := w.onlineCh()
	w.holders++
	wk.mu.Unlock()
	defer func() {
		wk.mu.Lock()
		w.holders--
		wk.mu.Unlock()
	}()
	wk.wake(device)
	t := time.NewTimer(time.Until(until))
	defer t.Stop()
	for {
		if s := wk.host.session(device); s != nil && s.syncCtx.Err() == nil {
			return s
		}
		if !wk.host.paired(device) {
			return nil
		}
		select {
		case <-gone:
			return nil
		case <-wk.stopping:
			return nil
		case <-ch:
			wk.mu.Lock()
			ch = w.onlineCh()
			wk.mu.Unlock()
		case <-t.C:
			return nil
		}
	}
}

func (wk *waker) isStopped() bool {
	wk.mu.Lock()
	defer wk.mu.Unlock()
	return wk.stopped
}

// stopWakes stops every timer and waits for couriers, before the mailbox
// closes.
func (wk *waker) stop() {
	wk.mu.Lock()
	wk.stopped = true
	for _, w := range wk.devices {
		if w.retry != nil {
			w.retry.Stop()
		}
		w.courier.stop()
	}
	wk.mu.Unlock()
	wk.couriers.Wait()
}

// forgetDevice drops a revoked device's queue and wake registration.
func (wk *waker) forget(device string) {
	if err := wk.mail.Drop(device); err != nil {
		wk.log.Warn("drop the mailbox of a revoked device", "device", device, "err", err)
	}
	wk.mu.Lock()
	if w := wk.devices[device]; w != nil {
		if w.retry != nil {
			w.retry.Stop()
		}
		w.courier.stop()
		w.rec, w.newMail = nil, false
		if w.online != nil { // calls waiting for it give up
			close(w.online)
			w.online = nil
		}
	}
	wk.mu.Unlock()
}

// ---- admin ----

func (wk *waker) view(device string) *api.WakeView {
	wk.mu.Lock()
	defer wk.mu.Unlock()
	w := wk.devices[device]
	if w == nil || w.rec == nil {
		return nil
	}
	v := &api.WakeView{Method: w.rec.Method, Endpoint: w.rec.Endpoint, Pings: w.pings, Limited: w.limited}
	if !w.lastPing.IsZero() {
		t := w.lastPing
		v.LastPing = &t
	}
	if w.rec.Asleep {
		t := w.rec.Since
		v.Asleep = &t
	}
	return v
}

var errNoWake = errors.New("device cannot be woken")

// wakeNow is pzh wake: one ping now (within the rate cap), or with print
// a ping stamped at (zero: now) returned instead of sent.
func (wk *waker) wakeNow(device string, print bool, at time.Time) (*api.WakeResult, error) {
	online := wk.host.session(device) != nil
	if !wk.host.paired(device) {
		return nil, fmt.Errorf("%w: no device %q in this zone", stores.ErrNotFound, device)
	}
	res := &api.WakeResult{Device: device}
	wk.mu.Lock()
	defer wk.mu.Unlock()
	w := wk.of(device)
	if w.rec == nil {
		return nil, fmt.Errorf("%w: %q has not registered for wakeup (run it with pzp run --sleep-after)", errNoWake, device)
	}
	res.Endpoint = w.rec.Endpoint
	if print {
		if at.IsZero() {
			at = wk.now()
		}
		res.Ping = fmt.Sprintf("%x", wakeup.Seal(w.rec.registration().Secret, at))
		return res, nil
	}
	if online {
		res.Online = true
		return res, nil
	}
	before := w.pings
	wk.pingLocked(device, w, true)
	res.Sent = w.pings > before
	return res, nil
}

// newWakers returns the hub's wakers by method: UDP from the listener's
// socket when it has one (so a device behind a NAT gets the ping from the
// address its session talked to), else from a socket of its own.
func newWakers(ln transport.Listener, extra []wakeup.Waker) (map[string]wakeup.Waker, func(), error) {
	out := map[string]wakeup.Waker{}
	closer := func() {}
	if dw := transport.Datagrams(ln); dw != nil {
		out[wakeup.MethodUDP] = &wakeup.UDPWaker{Conn: dw}
	} else {
		udp, err := net.ListenUDP("udp", nil)
		if err != nil {
			return nil, nil, fmt.Errorf("wake socket: %w", err)
		}
		out[wakeup.MethodUDP] = &wakeup.UDPWaker{Conn: udp}
		closer = func() { udp.Close() }
	}
	for _, w := range extra {
		out[w.Method()] = w
	}
	return out, closer, nil
}
