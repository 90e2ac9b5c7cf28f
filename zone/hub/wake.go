package hub

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"time"

	"github.com/pzone/pzone/zone/session"
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

// hubWake is the hub's wake state of one device (h.wakeMu).
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
// revoked) (h.wakeMu held).
func (w *hubWake) onlineCh() chan struct{} {
	if w.online == nil {
		w.online = make(chan struct{})
	}
	return w.online
}

func (h *Hub) wakeOf(device string) *hubWake {
	w := h.wakes[device]
	if w == nil {
		w = &hubWake{}
		h.wakes[device] = w
	}
	return w
}

// loadWakes reads the wake records at start and wakes the devices whose
// messages survived the restart.
func (h *Hub) loadWakes() error {
	recs, err := h.mail.Wakes()
	if err != nil {
		return err
	}
	h.wakeMu.Lock()
	for d, r := range recs {
		h.wakeOf(d).rec = r
	}
	var devices []string
	for _, d := range h.mail.Devices() {
		if !isOutbox(d) { // friend zones' queues go when their links are up
			devices = append(devices, d)
		}
	}
	for _, d := range devices {
		h.wakeOf(d).newMail = true
	}
	h.wakeMu.Unlock()
	for _, d := range devices {
		h.wake(d)
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
func (h *Hub) registerWake(s *hubSession, c *wire.Control) error {
	method := c.WakeMethod
	if method == "" {
		method = wakeup.MethodUDP
	}
	if len(c.WakeID) != wakeup.IDSize || len(c.WakeKey) != wakeup.KeySize {
		return fmt.Errorf("wake registration: id of %d and key of %d bytes, want %d and %d", len(c.WakeID), len(c.WakeKey), wakeup.IDSize, wakeup.KeySize)
	}
	if h.wakers[method] == nil {
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
	h.mu.Lock()
	d := h.devices[s.device]
	h.mu.Unlock()
	if d == nil || d.Revoked {
		return nil // the session is being cut
	}
	// Memory and disk change together, under the lock, so a session
	// ending at the same moment cannot write back an older secret.
	h.wakeMu.Lock()
	err := h.mail.SaveWake(s.device, rec)
	if err == nil {
		h.wakeOf(s.device).rec = rec
	}
	h.wakeMu.Unlock()
	if err != nil {
		h.log.Error("save wake registration; the device will not sleep", "device", s.device, "err", err)
		return nil // no WakeOK: the device stays awake, which is safe
	}
	h.changes.Bump()
	h.log.Debug("wake registration", "device", s.device, "method", method, "endpoint", endpoint)
	return s.send(&wire.Control{Type: wire.MsgWakeOK, WakeEndpoint: endpoint})
}

// deviceOnline is called once a device's session is registered: its
// pings stop, calls waiting for it go ahead, and its queue is delivered.
func (h *Hub) deviceOnline(device string) {
	h.wakeMu.Lock()
	w := h.wakeOf(device)
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
	h.wakeMu.Unlock()
	h.setAsleep(device, false)
	h.kickCourier(device)
}

// deviceOffline is called when a device's session ended; asleep says it
// went to sleep (and can be woken).
func (h *Hub) deviceOffline(device string, asleep bool) {
	if asleep {
		h.setAsleep(device, true)
	}
	// A message queued while the session was closing.
	h.wakeMu.Lock()
	fresh := h.wakeOf(device).newMail
	h.wakeMu.Unlock()
	if fresh && h.mail.Stat(device).n > 0 {
		h.wake(device)
	}
}

// setAsleep records whether a device is asleep, in memory and on disk
// together, if it changed.
func (h *Hub) setAsleep(device string, asleep bool) {
	h.wakeMu.Lock()
	defer h.wakeMu.Unlock()
	w := h.wakeOf(device)
	if w.rec == nil || w.rec.Asleep == asleep {
		return
	}
	c := *w.rec
	c.Asleep, c.Since = asleep, time.Time{}
	if asleep {
		c.Since = h.cfg.Now().UTC()
	}
	if err := h.mail.SaveWake(device, &c); err != nil {
		h.log.Warn("save wake state", "device", device, "err", err)
	}
	w.rec = &c
	h.changes.Bump()
}

// asleep reports whether a device's last session ended with it going to
// sleep.
func (h *Hub) asleep(device string) bool {
	h.wakeMu.Lock()
	defer h.wakeMu.Unlock()
	w := h.wakes[device]
	return w != nil && w.rec != nil && w.rec.Asleep
}

// online reports whether a device has a session that is not closing.
func (h *Hub) online(device string) bool {
	h.mu.Lock()
	s := h.sessions[device]
	h.mu.Unlock()
	return s != nil && s.syncCtx.Err() == nil
}

// wake asks for a device to be woken: it sends a ping unless one is on
// its way or the rate cap is reached, and keeps retrying with backoff
// while the device stays away and something waits for it. It reports
// whether the device can be woken at all (it registered how).
func (h *Hub) wake(device string) bool {
	if h.online(device) {
		return true
	}
	h.wakeMu.Lock()
	defer h.wakeMu.Unlock()
	w := h.wakeOf(device)
	if w.rec == nil || h.wakeStopped {
		return w.rec != nil
	}
	h.pingLocked(device, w, false)
	if w.retry == nil {
		if w.backoff == 0 {
			w.backoff = wakeRetryMin
		}
		w.retry = time.AfterFunc(w.backoff, func() { h.retryWake(device) })
	}
	return true
}

// retryWake is a device's backoff timer: another ping if the device is
// still away and something still waits.
func (h *Hub) retryWake(device string) {
	queued := h.mail.Stat(device).n > 0
	online := h.online(device)
	h.wakeMu.Lock()
	defer h.wakeMu.Unlock()
	w := h.wakeOf(device)
	w.retry = nil
	waiting := queued && w.newMail
	if online || w.rec == nil || !waiting && w.holders == 0 || h.wakeStopped {
		w.backoff = 0
		return
	}
	h.pingLocked(device, w, true)
	w.backoff = min(w.backoff*2, wakeRetryMax)
	w.retry = time.AfterFunc(w.backoff, func() { h.retryWake(device) })
}

// pingLocked sends one ping to a device, within the coalescing window and
// the rate cap (h.wakeMu held). A retry is never coalesced.
func (h *Hub) pingLocked(device string, w *hubWake, retry bool) {
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
	if len(w.sent) >= h.cfg.WakeRate {
		w.limited++
		h.changes.Bump()
		return
	}
	stamp := h.cfg.Now().Truncate(time.Millisecond)
	if !stamp.After(w.stamp) {
		stamp = w.stamp.Add(time.Millisecond)
	}
	w.stamp = stamp
	w.sent = append(w.sent, now)
	w.lastPing = now
	w.covered = now.Add(wakeCoalesce)
	w.pings++
	reg := w.rec.registration()
	ping := wakeup.Seal(reg.Secret, stamp)
	waker := h.wakers[reg.Method]
	h.changes.Bump()
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), wire.StreamTimeout)
		defer cancel()
		if err := waker.Wake(ctx, reg.Endpoint, ping); err != nil {
			h.log.Info("wake ping not sent", "device", device, "endpoint", reg.Endpoint, "err", err)
			return
		}
		h.log.Debug("wake ping sent", "device", device, "endpoint", reg.Endpoint)
	}()
}

// awaitOnline holds a call for a device that is away until it is back
// (its session, returned), or until is reached, the caller's session
// ends (gone closes), the device is revoked or the hub stops (nil).
func (h *Hub) awaitOnline(gone <-chan struct{}, device string, until time.Time) *hubSession {
	h.wakeMu.Lock()
	w := h.wakeOf(device)
	ch := w.onlineCh()
	w.holders++
	h.wakeMu.Unlock()
	defer func() {
		h.wakeMu.Lock()
		w.holders--
		h.wakeMu.Unlock()
	}()
	h.wake(device)
	t := time.NewTimer(time.Until(until))
	defer t.Stop()
	for {
		h.mu.Lock()
		s := h.sessions[device]
		rec := h.devices[device]
		h.mu.Unlock()
		if s != nil && s.syncCtx.Err() == nil {
			return s
		}
		if rec == nil || rec.Revoked {
			return nil
		}
		select {
		case <-gone:
			return nil
		case <-h.stopping:
			return nil
		case <-ch:
			h.wakeMu.Lock()
			ch = w.onlineCh()
			h.wakeMu.Unlock()
		case <-t.C:
			return nil
		}
	}
}

// ---- the queue ----

// queueMessage keeps a message for later: it answers the sender once the
// message is stored (and, for a device online, once the first attempt to
// deliver it has told whether it arrived).
func (h *Hub) queueMessage(st transport.Stream, hdr *wire.CallHeader, deadline time.Time) {
	h.mu.Lock()
	rec := h.devices[hdr.ToDevice]
	h.mu.Unlock()
	if rec == nil || rec.Revoked {
		session.RefuseCall(st, wire.CallNotFound, fmt.Sprintf("no device %q in zone %q", hdr.ToDevice, h.zone.Name))
		return
	}
	if hdr.Token != "" || h.needsToken(hdr.ToDevice, hdr.ToService) {
		session.RefuseCall(st, wire.CallBadRequest, fmt.Sprintf("service %s/%s takes a service token, and messages kept for later carry none: send without a time to live while the device is online", hdr.ToDevice, hdr.ToService))
		return
	}
	msg, ok := readKept(st, hdr, h.cfg.Now())
	if !ok {
		return
	}
	var done chan bool
	key := deliveryKey(hdr.ToDevice, msg.sender(), hdr.ID)
	if h.online(hdr.ToDevice) {
		done = h.watchDelivery(key)
		defer h.unwatchDelivery(key)
	}
	seq, err := h.mail.Put(hdr.ToDevice, msg)
	if err != nil {
		if errors.Is(err, errQueueFull) {
			session.RefuseCall(st, wire.CallQueueFull, fmt.Sprintf("%v; try again later, or raise pzh serve --queue-limit/--queue-mib", err))
		} else {
			h.log.Error("queue a message", "device", hdr.ToDevice, "err", err)
			session.RefuseCall(st, wire.CallUnavailable, "the hub could not store the message: "+err.Error())
		}
		return
	}
	h.mu.Lock()
	rec = h.devices[hdr.ToDevice]
	h.mu.Unlock()
	if rec == nil || rec.Revoked { // revoked meanwhile: its queue is gone
		h.mail.Remove(hdr.ToDevice, seq)
		session.RefuseCall(st, wire.CallNotFound, fmt.Sprintf("device %q was revoked", hdr.ToDevice))
		return
	}
	h.wakeMu.Lock()
	h.wakeOf(hdr.ToDevice).newMail = true
	h.wakeMu.Unlock()
	h.changes.Bump()
	// Wake after the message is stored: if the session closed meanwhile,
	// this pings; if it is up, it does nothing.
	h.wake(hdr.ToDevice)
	delivered := false
	if done != nil {
		h.kickCourier(hdr.ToDevice)
		t := time.NewTimer(min(time.Until(deadline), firstAttemptWait))
		select {
		case delivered = <-done:
		case <-t.C:
		}
		t.Stop()
	}
	ans := &wire.CallReply{Queued: !delivered}
	if !delivered {
		ans.ExpiresMs = msg.Expires.UnixMilli()
	}
	if transport.WriteFrame(st, ans) != nil || st.Close() != nil {
		st.Reset()
	}
}

// deliveryKey names a queued message: the sender picks its ID, so the
// sending device is part of the name.
func deliveryKey(to, from, id string) string { return to + "/" + from + "/" + id }

// watchDelivery returns a channel that receives whether the first attempt
// to deliver the message key succeeded.
func (h *Hub) watchDelivery(key string) chan bool {
	ch := make(chan bool, 1)
	h.wakeMu.Lock()
	h.deliveries[key] = ch
	h.wakeMu.Unlock()
	return ch
}

func (h *Hub) unwatchDelivery(key string) {
	h.wakeMu.Lock()
	delete(h.deliveries, key)
	h.wakeMu.Unlock()
}

func (h *Hub) delivered(device string, m *queuedMsg, ok bool) {
	key := deliveryKey(device, m.sender(), m.ID)
	h.wakeMu.Lock()
	ch := h.deliveries[key]
	delete(h.deliveries, key)
	h.wakeMu.Unlock()
	if ch != nil {
		ch <- ok
	}
}

// kickCourier makes sure a courier is delivering the device's queue.
func (h *Hub) kickCourier(device string) {
	if h.mail.Stat(device).n == 0 {
		return
	}
	h.wakeMu.Lock()
	w := h.wakeOf(device)
	if h.wakeStopped {
		h.wakeMu.Unlock()
		return
	}
	if !w.courier.claim() {
		h.wakeMu.Unlock()
		return
	}
	h.couriers.Add(1) // under the lock that stopWakes takes before it waits
	h.wakeMu.Unlock()
	go func() {
		defer h.couriers.Done()
		h.runCourier(device)
	}()
}

// runCourier delivers a device's queue in order while its session lasts.
// A message whose service is not running (or is busy) stays, and so do
// later ones for the same service, to keep their order; the pass retries
// them with backoff.
func (h *Hub) runCourier(device string) {
	for {
		retry, progress := h.courierPass(device)
		h.wakeMu.Lock()
		again := h.wakeOf(device).courier.passDone(retry, progress, h.wakeStopped, func() { h.retryBacklog(device) })
		h.wakeMu.Unlock()
		if !again {
			return
		}
	}
}

// retryBacklog is the courier's retry timer: deliver again, waking the
// device first if it went to sleep meanwhile.
func (h *Hub) retryBacklog(device string) {
	if h.online(device) {
		h.kickCourier(device)
		return
	}
	h.wakeMu.Lock()
	w := h.wakeOf(device)
	if w.rec != nil && !h.wakeStopped && h.mail.Stat(device).n > 0 {
		h.pingLocked(device, w, true)
	}
	h.wakeMu.Unlock()
}

// courierPass tries every queued message of device once, in order, and
// reports whether some must be tried again and whether any was delivered.
func (h *Hub) courierPass(device string) (retry, progress bool) {
	blocked := map[string]bool{} // services whose earlier message waits
	var after uint64
	first := true
	for {
		h.mu.Lock()
		s := h.sessions[device]
		h.mu.Unlock()
		if s == nil || h.wakesStopped() {
			return retry, progress // the next session starts a new pass
		}
		if first {
			// The device sees its whole queue now.
			h.wakeMu.Lock()
			h.wakeOf(device).newMail = false
			h.wakeMu.Unlock()
			first = false
		}
		batch, err := h.mail.Next(device, after, courierBatch)
		if err != nil {
			h.log.Error("read the mailbox", "device", device, "err", err)
			return true, progress
		}
		if len(batch) == 0 {
			return retry, progress
		}
		for _, q := range batch {
			after = q.seq
			now := h.cfg.Now()
			if !now.Before(q.msg.Expires) {
				h.dropQueued(device, q, "its time to live ran out")
				continue
			}
			if z := q.msg.FromZoneID; z != "" && z != h.zone.ID.Compact() && h.friend(z) == nil {
				h.delivered(device, q.msg, false)
				h.dropQueued(device, q, "its sender's zone is no friend any more")
				continue
			}
			if blocked[q.msg.Service] {
				h.delivered(device, q.msg, false)
				retry = true
				continue
			}
			cerr := h.deliverQueued(s, q.msg)
			switch {
			case cerr == nil:
				if err := h.mail.Remove(device, q.seq); err != nil {
					h.log.Error("remove a delivered message", "device", device, "err", err)
				}
				h.changes.Bump()
				h.delivered(device, q.msg, true)
				progress = true
			case cerr.Status == wire.CallOffline || cerr.Status == wire.CallUnavailable || cerr.Status == wire.CallDeadline:
				// Not now: the app is not running or busy, or the session
				// broke. Keep it, and its followers for the same service.
				h.delivered(device, q.msg, false)
				blocked[q.msg.Service] = true
				retry = true
			default:
				h.delivered(device, q.msg, false)
				h.dropQueued(device, q, cerr.Message)
			}
		}
	}
}

func (h *Hub) dropQueued(device string, q queued, why string) {
	h.log.Warn("queued message dropped", "device", device, "id", q.msg.ID, "from", q.msg.FromDevice, "service", q.msg.Service, "why", why)
	if err := h.mail.Remove(device, q.seq); err != nil {
		h.log.Error("remove a queued message", "device", device, "err", err)
	}
	h.changes.Bump()
}

// deliverQueued sends one queued message over a device's session and
// waits for its device to confirm it reached the application.
func (h *Hub) deliverQueued(s *hubSession, m *queuedMsg) *wire.CallError {
	hdr := &wire.CallHeader{ID: m.ID, Kind: wire.CallMessage, FromZone: m.FromZone, FromDevice: m.FromDevice, FromApp: m.FromApp, ToDevice: s.device,
		ToService: m.Service, Method: m.Method, TimeoutMs: uint64(deliverTimeout / time.Millisecond), QueuedMs: m.Queued.UnixMilli(),
		FromZoneID: m.FromZoneID, Envelope: m.Envelope, TTLMs: m.TTLMs}
	rep, _, err := exchangeCall(s.syncCtx, s.conn, hdr, m.Body, time.Now().Add(deliverTimeout))
	if err != nil {
		return &wire.CallError{Status: wire.CallOffline, Message: "the device went away: " + err.Error()}
	}
	if rep.Status != wire.CallOK {
		return &wire.CallError{Status: rep.Status, Message: rep.Message}
	}
	return nil
}

// expireLoop removes messages past their time to live.
func (h *Hub) expireLoop(ctx context.Context) error {
	h.expire()
	return every(ctx, expireEvery, h.expire)
}

func (h *Hub) expire() {
	exp, err := h.mail.Expired(h.cfg.Now())
	if err != nil {
		h.log.Error("read the mailbox", "err", err)
		return
	}
	for device, seqs := range exp {
		if err := h.mail.Remove(device, seqs...); err != nil {
			h.log.Error("remove expired messages", "device", device, "err", err)
			continue
		}
		h.log.Info("queued messages expired", "device", device, "count", len(seqs))
		h.changes.Bump()
	}
}

func (h *Hub) wakesStopped() bool {
	h.wakeMu.Lock()
	defer h.wakeMu.Unlock()
	return h.wakeStopped
}

// stopWakes stops every timer and waits for couriers, before the mailbox
// closes.
func (h *Hub) stopWakes() {
	h.wakeMu.Lock()
	h.wakeStopped = true
	for _, w := range h.wakes {
		if w.retry != nil {
			w.retry.Stop()
		}
		w.courier.stop()
	}
	h.wakeMu.Unlock()
	h.couriers.Wait()
}

// forgetDevice drops a revoked device's queue and wake registration.
func (h *Hub) forgetDevice(device string) {
	if err := h.mail.Drop(device); err != nil {
		h.log.Warn("drop the mailbox of a revoked device", "device", device, "err", err)
	}
	h.wakeMu.Lock()
	if w := h.wakes[device]; w != nil {
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
	h.wakeMu.Unlock()
}

// ---- admin ----

func (h *Hub) wakeView(device string) *api.WakeView {
	h.wakeMu.Lock()
	defer h.wakeMu.Unlock()
	w := h.wakes[device]
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
func (h *Hub) wakeNow(device string, print bool, at time.Time) (*api.WakeResult, error) {
	h.mu.Lock()
	rec := h.devices[device]
	online := h.sessions[device] != nil
	h.mu.Unlock()
	if rec == nil || rec.Revoked {
		return nil, fmt.Errorf("%w: no device %q in this zone", stores.ErrNotFound, device)
	}
	res := &api.WakeResult{Device: device}
	h.wakeMu.Lock()
	defer h.wakeMu.Unlock()
	w := h.wakeOf(device)
	if w.rec == nil {
		return nil, fmt.Errorf("%w: %q has not registered for wakeup (run it with pzp run --sleep-after)", errNoWake, device)
	}
	res.Endpoint = w.rec.Endpoint
	if print {
		if at.IsZero() {
			at = h.cfg.Now()
		}
		res.Ping = fmt.Sprintf("%x", wakeup.Seal(w.rec.registration().Secret, at))
		return res, nil
	}
	if online {
		res.Online = true
		return res, nil
	}
	before := w.pings
	h.pingLocked(device, w, true)
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
