package hub

import (
	"context"
	"time"

	"github.com/pzone/pzone/zone/wire"
)

// The couriers: each device's queue in the mailbox is delivered in order
// by one courier at a time while the device has a session (docs/PROTOCOL.md,
// "Wakeup and delivery later"). A sender of a message for a device that is
// online learns whether the first attempt delivered it.

// deliveryKey names a queued message: the sender picks its ID, so the
// sending device is part of the name.
func deliveryKey(to, from, id string) string { return to + "/" + from + "/" + id }

// watchDelivery returns a channel that receives whether the first attempt
// to deliver the message key succeeded.
func (wk *waker) watchDelivery(key string) chan bool {
	ch := make(chan bool, 1)
	wk.mu.Lock()
	wk.deliveries[key] = ch
	wk.mu.Unlock()
	return ch
}

func (wk *waker) unwatchDelivery(key string) {
	wk.mu.Lock()
	delete(wk.deliveries, key)
	wk.mu.Unlock()
}

func (wk *waker) delivered(device string, m *queuedMsg, ok bool) {
	key := deliveryKey(device, m.sender(), m.ID)
	wk.mu.Lock()
	ch := wk.deliveries[key]
	delete(wk.deliveries, key)
	wk.mu.Unlock()
	if ch != nil {
		ch <- ok
	}
}

// kickCourier makes sure a courier is delivering the device's queue.
func (wk *waker) kickCourier(device string) {
	if wk.mail.Stat(device).n == 0 {
		return
	}
	wk.mu.Lock()
	w := wk.of(device)
	if wk.stopped {
		wk.mu.Unlock()
		return
	}
	if !w.courier.claim() {
		wk.mu.Unlock()
		return
	}
	wk.couriers.Add(1) // under the lock that stopWakes takes before it waits
	wk.mu.Unlock()
	go func() {
		defer wk.couriers.Done()
		wk.runCourier(device)
	}()
}

// runCourier delivers a device's queue in order while its session lasts.
// A message whose service is not running (or is busy) stays, and so do
// later ones for the same service, to keep their order; the pass retries
// them with backoff.
func (wk *waker) runCourier(device string) {
	for {
		retry, progress := wk.courierPass(device)
		wk.mu.Lock()
		again := wk.of(device).courier.passDone(retry, progress, wk.stopped, func() { wk.retryBacklog(device) })
		wk.mu.Unlock()
		if !again {
			return
		}
	}
}

// retryBacklog is the courier's retry timer: deliver again, waking the
// device first if it went to sleep meanwhile.
func (wk *waker) retryBacklog(device string) {
	if wk.host.online(device) {
		wk.kickCourier(device)
		return
	}
	wk.mu.Lock()
	w := wk.of(device)
	if w.rec != nil && !wk.stopped && wk.mail.Stat(device).n > 0 {
		wk.pingLocked(device, w, true)
	}
	wk.mu.Unlock()
}

// courierPass tries every queued message of device once, in order, and
// reports whether some must be tried again and whether any was delivered.
func (wk *waker) courierPass(device string) (retry, progress bool) {
	blocked := map[string]bool{} // services whose earlier message waits
	var after uint64
	first := true
	for {
		s := wk.host.session(device)
		if s == nil || wk.isStopped() {
			return retry, progress // the next session starts a new pass
		}
		if first {
			// The device sees its whole queue now.
			wk.mu.Lock()
			wk.of(device).newMail = false
			wk.mu.Unlock()
			first = false
		}
		batch, err := wk.mail.Next(device, after, courierBatch)
		if err != nil {
			wk.log.Error("read the mailbox", "device", device, "err", err)
			return true, progress
		}
		if len(batch) == 0 {
			return retry, progress
		}
		for _, q := range batch {
			after = q.seq
			now := wk.now()
			if !now.Before(q.msg.Expires) {
				wk.dropQueued(device, q, "its time to live ran out")
				continue
			}
			if z := q.msg.FromZoneID; z != "" && !wk.host.knownZone(z) {
				wk.delivered(device, q.msg, false)
				wk.dropQueued(device, q, "its sender's zone is no friend any more")
				continue
			}
			if blocked[q.msg.Service] {
				wk.delivered(device, q.msg, false)
				retry = true
				continue
			}
			cerr := deliverQueued(s, q.msg)
			switch {
			case cerr == nil:
				if err := wk.mail.Remove(device, q.seq); err != nil {
					wk.log.Error("remove a delivered message", "device", device, "err", err)
				}
				wk.changes.Bump()
				wk.delivered(device, q.msg, true)
				progress = true
			case cerr.Status == wire.CallOffline || cerr.Status == wire.CallUnavailable || cerr.Status == wire.CallDeadline:
				// Not now: the app is not running or busy, or the session
				// broke. Keep it, and its followers for the same service.
				wk.delivered(device, q.msg, false)
				blocked[q.msg.Service] = true
				retry = true
			default:
				wk.delivered(device, q.msg, false)
				wk.dropQueued(device, q, cerr.Message)
			}
		}
	}
}

func (wk *waker) dropQueued(device string, q queued, why string) {
	wk.log.Warn("queued message dropped", "device", device, "id", q.msg.ID, "from", q.msg.FromDevice, "service", q.msg.Service, "why", why)
	if err := wk.mail.Remove(device, q.seq); err != nil {
		wk.log.Error("remove a queued message", "device", device, "err", err)
	}
	wk.changes.Bump()
}

// deliverQueued sends one queued message over a device's session and
// waits for its device to confirm it reached the application.
func deliverQueued(s *hubSession, m *queuedMsg) *wire.CallError {
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
func (wk *waker) expireLoop(ctx context.Context) error {
	wk.expire()
	return every(ctx, expireEvery, wk.expire)
}

func (wk *waker) expire() {
	exp, err := wk.mail.Expired(wk.now())
	if err != nil {
		wk.log.Error("read the mailbox", "err", err)
		return
	}
	for device, seqs := range exp {
		if err := wk.mail.Remove(device, seqs...); err != nil {
			wk.log.Error("remove expired messages", "device", device, "err", err)
			continue
		}
		wk.log.Info("queued messages expired", "device", device, "count", len(seqs))
		wk.changes.Bump()
	}
}
