package hub

import (
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/pzone/pzone/zone/session"

	"github.com/pzone/pzone/transport"
	"github.com/pzone/pzone/zone/envelope"
	"github.com/pzone/pzone/zone/wire"
)

// The outbox: messages for later (TTLMs) to a friend zone whose hub is not
// linked wait at the sender's hub, in mailbox.db under the friend's own
// queue, and are forwarded in order once the link is back. On the friend's
// side they then wait, and wake the device, as any message for later.
// Each keeps its sender's signature, which covers its time to live: a
// message is never accepted past it, however long it waited where.

// outboxPrefix starts the mailbox key of a friend zone's queue; device
// names have no '/', so no device's queue can be taken for one.
const outboxPrefix = "friend/"

func outboxKey(zone string) string { return outboxPrefix + zone }

// isOutbox reports whether a mailbox key is a friend zone's queue.
func isOutbox(key string) bool { return strings.HasPrefix(key, outboxPrefix) }

// queueForFriend keeps a message for friend f until its link is back.
func (h *Hub) queueForFriend(st transport.Stream, hdr *wire.CallHeader, f *FriendRecord) {
	if hdr.Token != "" {
		session.RefuseCall(st, wire.CallBadRequest, "messages kept for later carry no service token: send without a time to live while the friend's hub is linked")
		return
	}
	msg, ok := readKept(st, hdr, h.cfg.Now())
	if !ok {
		return
	}
	zone := f.ZoneID.Compact()
	seq, err := h.mail.Put(outboxKey(zone), msg)
	if err != nil {
		if errors.Is(err, errQueueFull) {
			session.RefuseCall(st, wire.CallQueueFull, fmt.Sprintf("queue full: this hub keeps %d messages (%d bytes) for friend zone %q already, its limit; try again later, or raise pzh serve --queue-limit/--queue-mib",
				h.mail.Stat(outboxKey(zone)).n, h.mail.Stat(outboxKey(zone)).bytes, f.Petname))
		} else {
			h.log.Error("queue a message for a friend zone", "friend", f.Petname, "err", err)
			session.RefuseCall(st, wire.CallUnavailable, "the hub could not store the message: "+err.Error())
		}
		return
	}
	if h.friend(zone) == nil { // removed meanwhile: its queue is gone
		h.mail.Remove(outboxKey(zone), seq)
		session.RefuseCall(st, wire.CallNotFound, fmt.Sprintf("zone %q is not a friend of zone %q any more", f.Petname, h.zone.Name))
		return
	}
	h.log.Info("message kept for a friend zone that is not linked", "friend", f.Petname, "id", hdr.ID)
	h.changes.Bump()
	h.kickOutbox(zone) // the link may have come back meanwhile
	if transport.WriteFrame(st, &wire.CallReply{Queued: true, ExpiresMs: msg.Expires.UnixMilli()}) != nil || st.Close() != nil {
		st.Reset()
	}
}

// outbox is the forwarding state of one friend zone's queue (h.mu).
type outbox struct{ passRunner }

// kickOutbox makes sure the queue of friend zone is being forwarded, if
// it has a link and messages.
func (h *Hub) kickOutbox(zone string) {
	if h.mail.Stat(outboxKey(zone)).n == 0 || h.liveLink(zone) == nil {
		return
	}
	h.mu.Lock()
	if h.closing {
		h.mu.Unlock()
		return
	}
	o := h.outboxes[zone]
	if o == nil {
		o = &outbox{}
		h.outboxes[zone] = o
	}
	if !o.claim() {
		h.mu.Unlock()
		return
	}
	h.conns.Add(1) // under mu, which shutdown takes before it waits
	h.mu.Unlock()
	go func() {
		defer h.conns.Done()
		h.runOutbox(zone, o)
	}()
}

// runOutbox forwards a friend zone's queue in order until it is empty,
// the link goes, or the friend's hub cannot take a message now (then it
// tries again with backoff).
func (h *Hub) runOutbox(zone string, o *outbox) {
	for {
		retry, progress := h.outboxPass(zone)
		h.mu.Lock()
		if h.outboxes[zone] != o { // the friend was removed (and maybe made again)
			h.mu.Unlock()
			return
		}
		again := o.passDone(retry, progress, h.closing, func() { h.kickOutbox(zone) })
		h.mu.Unlock()
		if !again {
			return
		}
	}
}

func (h *Hub) outboxPass(zone string) (retry, progress bool) {
	key := outboxKey(zone)
	// Destinations (device/service) whose earlier message the friend's
	// hub could not take now: their later messages wait too, to keep
	// their order; other destinations' go on.
	blocked := map[string]bool{}
	var after uint64
	for {
		l := h.liveLink(zone)
		if l == nil {
			return false, progress // the next link starts a new pass
		}
		batch, err := h.mail.Next(key, after, courierBatch)
		if err != nil {
			h.log.Error("read the mailbox", "friend", h.petname(zone), "err", err)
			return true, progress
		}
		if len(batch) == 0 {
			return false, progress
		}
		for _, q := range batch {
			after = q.seq
			if !h.cfg.Now().Before(q.msg.Expires) {
				h.wakes.dropQueued(key, q, "its time to live ran out")
				continue
			}
			dest := q.msg.ToDevice + "/" + q.msg.Service
			if blocked[dest] {
				retry = true
				continue
			}
			cerr, broke := h.forwardQueued(l, zone, q.msg)
			switch {
			case broke:
				return true, progress // the link failed: the next one (or a retry) starts a new pass
			case cerr == nil:
				if err := h.mail.Remove(key, q.seq); err != nil {
					h.log.Error("remove a forwarded message", "friend", h.petname(zone), "err", err)
				}
				h.changes.Bump()
				progress = true
			case cerr.Status == wire.CallOffline || cerr.Status == wire.CallUnavailable || cerr.Status == wire.CallDeadline || cerr.Status == wire.CallQueueFull:
				blocked[dest], retry = true, true // the friend's hub says not now: keep it, and its followers' order
			default:
				h.wakes.dropQueued(key, q, cerr.Message)
			}
		}
	}
}

// forwardQueued sends one kept message over the friend's link and reads
// the friend hub's answer (delivered, or kept there for its device);
// broke says the link failed before the friend's hub answered.
func (h *Hub) forwardQueued(l *hubLink, zone string, m *queuedMsg) (cerr *wire.CallError, broke bool) {
	defer l.use()()
	hdr := &wire.CallHeader{ID: m.ID, Kind: wire.CallMessage, FromZone: m.FromZone, FromDevice: m.FromDevice, FromApp: m.FromApp, ToDevice: m.ToDevice,
		ToService: m.Service, Method: m.Method, TimeoutMs: uint64(deliverTimeout / time.Millisecond), TTLMs: m.TTLMs,
		FromZoneID: m.FromZoneID, Envelope: m.Envelope, ToZone: zone}
	rep, _, err := exchangeCall(l.ctx, l.conn, hdr, m.Body, time.Now().Add(deliverTimeout))
	if err != nil {
		return &wire.CallError{Status: wire.CallOffline, Message: "the link went away: " + err.Error()}, true
	}
	l.calls.Add(1)
	if rep.Status != wire.CallOK {
		return &wire.CallError{Status: rep.Status, Message: rep.Message}, false
	}
	return nil, false
}

// dropOutbox forgets a friend zone's queue (the friend was removed).
func (h *Hub) dropOutbox(zone string) {
	h.mu.Lock()
	if o := h.outboxes[zone]; o != nil {
		o.stop()
	}
	delete(h.outboxes, zone)
	h.mu.Unlock()
	if err := h.mail.Drop(outboxKey(zone)); err != nil {
		h.log.Warn("drop the messages kept for a friend", "zone", zone, "err", err)
	}
}

// stopOutboxes stops the retry timers at shutdown.
func (h *Hub) stopOutboxes() {
	h.mu.Lock()
	defer h.mu.Unlock()
	for _, o := range h.outboxes {
		o.stop()
	}
}

// purgeFrom drops the messages from friend zone that wait in this hub's
// device queues, and reports how many: nothing from a zone that is no
// friend any more is delivered.
func (h *Hub) purgeFrom(zone string) int {
	n := 0
	for _, device := range h.mail.Devices() {
		if isOutbox(device) {
			continue
		}
		var after uint64
		for {
			batch, err := h.mail.Next(device, after, courierBatch)
			if err != nil {
				h.log.Warn("read the mailbox", "device", device, "err", err)
				break
			}
			if len(batch) == 0 {
				break
			}
			var seqs []uint64
			for _, q := range batch {
				after = q.seq
				if q.msg.FromZoneID == zone {
					seqs = append(seqs, q.seq)
				}
			}
			if len(seqs) > 0 {
				if err := h.mail.Remove(device, seqs...); err != nil {
					h.log.Warn("drop messages from a former friend", "device", device, "err", err)
					break
				}
				n += len(seqs)
			}
		}
	}
	return n
}

// readKept reads the body of a message for later from st and makes the
// record a hub keeps of it; on failure it refuses the message.
func readKept(st transport.Stream, hdr *wire.CallHeader, now time.Time) (*queuedMsg, bool) {
	body, err := session.ReadBody(transport.NewFrameReader(st, wire.CallChunk+16), wire.MaxCallBody)
	if err != nil {
		session.RefuseCall(st, wire.CallBadRequest, "request body: "+err.Error())
		return nil, false
	}
	return &queuedMsg{ID: hdr.ID, FromZone: hdr.FromZone, FromDevice: hdr.FromDevice, FromApp: hdr.FromApp, ToDevice: hdr.ToDevice, Service: hdr.ToService,
		Method: hdr.Method, Body: body, Queued: now.UTC(), Expires: keptUntil(hdr, now).UTC(), FromZoneID: hdr.FromZoneID, Envelope: hdr.Envelope,
		TTLMs: hdr.TTLMs}, true
}

// keptUntil is how long a hub keeps a message for later: its time to
// live from now, but, for one signed in a friend zone (that may have
// waited at another hub first), no longer than its device would still
// accept it.
func keptUntil(hdr *wire.CallHeader, now time.Time) time.Time {
	until := now.Add(min(time.Duration(hdr.TTLMs)*time.Millisecond, wire.MaxTTL))
	if env := hdr.Envelope; env != nil {
		if signed := time.UnixMilli(env.TimeMs).Add(time.Duration(hdr.TTLMs)*time.Millisecond + envelope.Window); signed.Before(until) {
			until = signed
		}
	}
	return until
}
