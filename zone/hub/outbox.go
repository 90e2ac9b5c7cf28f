package hub

import (
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/pzone/pzone/zone/session"
	"github.com/pzone/pzone/zone/stores"

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
func (lk *links) queueForFriend(st transport.Stream, hdr *wire.CallHeader, f *FriendRecord) {
	if hdr.Token != "" {
		lk.h.router.refuse(st, wire.CallBadRequest, "messages kept for later carry no service token: send without a time to live while the friend's hub is linked")
		return
	}
	msg, ok := readKept(st, hdr, lk.h.cfg.Now())
	if !ok {
		return
	}
	zone := f.ZoneID.Compact()
	seq, err := lk.h.mail.Put(outboxKey(zone), msg)
	if err != nil {
		if errors.Is(err, errZoneQueueFull) {
			lk.h.router.refuse(st, wire.CallQueueFull, fmt.Sprintf("%v; try again later", err))
		} else if errors.Is(err, errQueueFull) {
			lk.h.router.refuse(st, wire.CallQueueFull, fmt.Sprintf("queue full: this hub keeps %d messages (%d bytes) for friend zone %q already, its limit; try again later, or raise pzh serve --queue-limit/--queue-mib",
				lk.h.mail.Stat(outboxKey(zone)).n, lk.h.mail.Stat(outboxKey(zone)).bytes, f.Petname))
		} else {
			lk.h.log.Error("queue a message for a friend zone", "friend", f.Petname, "err", err)
			lk.h.router.refuse(st, wire.CallUnavailable, "the hub could not store the message: "+stores.ExplainRemote(err))
		}
		return
	}
	if lk.h.friends.get(zone) == nil { // removed meanwhile: its queue is gone
		lk.h.mail.Remove(outboxKey(zone), seq)
		lk.h.router.refuse(st, wire.CallNotFound, fmt.Sprintf("zone %q is not a friend of zone %q any more", f.Petname, lk.h.zone.Name))
		return
	}
	lk.h.log.Info("message kept for a friend zone that is not linked", "friend", f.Petname, "id", hdr.ID)
	lk.h.changes.Bump()
	lk.kickOutbox(zone) // the link may have come back meanwhile
	if transport.WriteFrame(st, &wire.CallReply{Queued: true, ExpiresMs: msg.Expires.UnixMilli()}) != nil || st.Close() != nil {
		st.Reset()
	}
}

// outbox is the forwarding state of one friend zone's queue (lk.mu).
type outbox struct{ passRunner }

// kickOutbox makes sure the queue of friend zone is being forwarded, if
// it has a link and messages.
func (lk *links) kickOutbox(zone string) {
	if lk.h.mail.Stat(outboxKey(zone)).n == 0 || lk.liveLink(zone) == nil {
		return
	}
	lk.mu.Lock()
	if lk.closing {
		lk.mu.Unlock()
		return
	}
	o := lk.outboxes[zone]
	if o == nil {
		o = &outbox{}
		lk.outboxes[zone] = o
	}
	if !o.claim() {
		lk.mu.Unlock()
		return
	}
	lk.h.conns.Add(1) // under mu, which shutdown takes before it waits
	lk.mu.Unlock()
	go func() {
		defer lk.h.conns.Done()
		lk.runOutbox(zone, o)
	}()
}

// runOutbox forwards a friend zone's queue in order until it is empty,
// the link goes, or the friend's hub cannot take a message now (then it
// tries again with backoff).
func (lk *links) runOutbox(zone string, o *outbox) {
	for {
		retry, progress := lk.outboxPass(zone)
		lk.mu.Lock()
		if lk.outboxes[zone] != o { // the friend was removed (and maybe made again)
			lk.mu.Unlock()
			return
		}
		again := o.passDone(retry, progress, lk.closing, func() { lk.kickOutbox(zone) })
		lk.mu.Unlock()
		if !again {
			return
		}
	}
}

func (lk *links) outboxPass(zone string) (retry, progress bool) {
	key := outboxKey(zone)
	// Destinations (device/service) whose earlier message the friend's
	// hub could not take now: their later messages wait too, to keep
	// their order; other destinations' go on.
	blocked := map[string]bool{}
	var after uint64
	for {
		l := lk.liveLink(zone)
		if l == nil {
			return false, progress // the next link starts a new pass
		}
		batch, err := lk.h.mail.Next(key, after, courierBatch)
		if err != nil {
			lk.h.log.Error("read the mailbox", "friend", lk.h.friends.petname(zone), "err", err)
			return true, progress
		}
		if len(batch) == 0 {
			return false, progress
		}
		for _, q := range batch {
			after = q.seq
			if !lk.h.cfg.Now().Before(q.msg.Expires) {
				lk.h.wakes.dropQueued(key, q, "its time to live ran out")
				continue
			}
			dest := q.msg.ToDevice + "/" + q.msg.Service
			if blocked[dest] {
				retry = true
				continue
			}
			cerr, broke := lk.forwardQueued(l, zone, q.msg)
			switch {
			case broke:
				return true, progress // the link failed: the next one (or a retry) starts a new pass
			case cerr == nil:
				if err := lk.h.mail.Remove(key, q.seq); err != nil {
					lk.h.log.Error("remove a forwarded message", "friend", lk.h.friends.petname(zone), "err", err)
				}
				lk.h.changes.Bump()
				progress = true
			case cerr.Status == wire.CallOffline || cerr.Status == wire.CallUnavailable || cerr.Status == wire.CallDeadline || cerr.Status == wire.CallQueueFull:
				blocked[dest], retry = true, true // the friend's hub says not now: keep it, and its followers' order
			default:
				lk.h.wakes.dropQueued(key, q, cerr.Message)
			}
		}
	}
}

// forwardQueued sends one kept message over the friend's link and reads
// the friend hub's answer (delivered, or kept there for its device);
// broke says the link failed before the friend's hub answered.
func (lk *links) forwardQueued(l *hubLink, zone string, m *queuedMsg) (cerr *wire.CallError, broke bool) {
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
func (lk *links) dropOutbox(zone string) {
	lk.mu.Lock()
	if o := lk.outboxes[zone]; o != nil {
		o.stop()
	}
	delete(lk.outboxes, zone)
	lk.mu.Unlock()
	if err := lk.h.mail.Drop(outboxKey(zone)); err != nil {
		lk.h.log.Warn("drop the messages kept for a friend", "zone", zone, "err", err)
	}
}

// stopOutboxes stops the retry timers at shutdown.
func (lk *links) stopOutboxes() {
	lk.mu.Lock()
	defer lk.mu.Unlock()
	for _, o := range lk.outboxes {
		o.stop()
	}
}

// purgeFrom drops the messages from friend zone that wait in this hub's
// device queues, and reports how many: nothing from a zone that is no
// friend any more is delivered.
func (lk *links) purgeFrom(zone string) int {
	n := 0
	for _, device := range lk.h.mail.Devices() {
		if isOutbox(device) {
			continue
		}
		var after uint64
		for {
			batch, err := lk.h.mail.Next(device, after, courierBatch)
			if err != nil {
				lk.h.log.Warn("read the mailbox", "device", device, "err", err)
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
				if err := lk.h.mail.Remove(device, seqs...); err != nil {
					lk.h.log.Warn("drop messages from a former friend", "device", device, "err", err)
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
