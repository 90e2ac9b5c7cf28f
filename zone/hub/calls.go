package hub

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"errors"
	"fmt"
	"io"
	"net"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/pzone/pzone/zone/metrics"
	"github.com/pzone/pzone/zone/services"
	"github.com/pzone/pzone/zone/session"
	"github.com/pzone/pzone/zone/stores"

	"github.com/pzone/pzone/certs"
	"github.com/pzone/pzone/transport"
	"github.com/pzone/pzone/zone/envelope"
	"github.com/pzone/pzone/zone/policy"
	"github.com/pzone/pzone/zone/token"
	"github.com/pzone/pzone/zone/wire"
)

// router takes calls and messages from devices and from friends' links,
// checks them (call slots, policy, tokens, envelopes) and sends each on
// its way: to a device (held while it wakes, or kept for later), to the
// hub's own services, or to a friend's zone over its link
// (federation.go).
type router struct {
	h *Hub
	// envelopes checks calls from friend zones to services on the hub.
	envelopes *envelope.Checker
	// slots bounds the calls in flight per caller and per target.
	slots *callSlots
	// rate bounds the calls the zone admits per second (nil: no bound).
	rate *callRate
}

// replayStream is a call stream whose request body the hub has read
// already: reads return the body's frames as they came, then go on with
// the stream (where the caller sends nothing more, only its end).
type replayStream struct {
	transport.Stream
	mu   sync.Mutex
	rest []byte // what was read already and not yet read again
}

// Read is safe to call from two goroutines, as the stream's is (a server
// watches for the caller's reset while it answers): the lock covers only
// the replayed bytes, never a blocking read of the stream.
func (s *replayStream) Read(p []byte) (int, error) {
	s.mu.Lock()
	if len(s.rest) > 0 {
		n := copy(p, s.rest)
		s.rest = s.rest[n:]
		s.mu.Unlock()
		return n, nil
	}
	s.mu.Unlock()
	return s.Stream.Read(p)
}

// replayed is the body st would replay, in its frames as they came, for
// the opening of the next hop (nil if st replays none); sent says the
// next hop has it, and st replays it no more.
func replayed(st transport.Stream) (framed []byte, sent func()) {
	s, ok := st.(*replayStream)
	if !ok {
		return nil, func() {}
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.rest, func() {
		s.mu.Lock()
		s.rest = nil
		s.mu.Unlock()
	}
}

// readCallBody reads a call's request body (at most wire.MaxCallBody, held in
// memory) before the hub commits anything to the call: a caller that
// sends a header and no body then holds no stream to the target, only a
// slot of its own, until the body's deadline. It returns the stream to go
// on with, which reads the body again from the start; on failure it has
// reset the stream (the body did not come in time), releasing slot, or
// answered it.
func (rt *router) readCallBody(st transport.Stream, hdr *wire.CallHeader, slot *callSlot) (transport.Stream, bool) {
	var raw bytes.Buffer
	fr := transport.NewFrameReader(io.TeeReader(st, &raw), wire.CallChunk+16)
	_, err := session.ReadRequest(st, fr, rt.h.cfg.CallBodyWait, time.Now().Add(wire.CallTimeout(hdr)), slot.hold)
	var ne net.Error
	var over *overBudget
	switch {
	case errors.As(err, &over):
		rt.refuse(st, wire.CallUnavailable, over.Error())
		return nil, false
	case errors.As(err, &ne) && ne.Timeout():
		slot.release() // first: once the caller sees the reset, the slot is free
		st.Reset()
		return nil, false
	case err != nil:
		rt.refuse(st, wire.CallBadRequest, "request body: "+err.Error())
		return nil, false
	}
	return &replayStream{Stream: st, rest: raw.Bytes()}, true
}

// ---- the hub: relay ----

// handleCall relays a device's call: to the target device's session, to
// a service on the hub's host, or (ToZone) to a friend zone's hub.
func (rt *router) handleCall(s *hubSession, st transport.Stream, fr *transport.FrameReader) {
	st, hdr, slot, ok := rt.admitCall(st, fr, deviceCaller(s.device), s.syncCtx.Done())
	if !ok {
		return
	}
	defer slot.release()
	hdr.FromZone, hdr.FromDevice, hdr.QueuedMs, hdr.FromZoneID = rt.h.zone.Name, s.device, 0, rt.h.zone.ID.Compact()
	if hdr.ToZone != "" && !rt.ownZone(hdr.ToZone) {
		rt.forwardCall(st, hdr, slot)
		return
	}
	hdr.ToZone, hdr.Envelope = "", nil
	rt.routeCall(st, hdr, s.syncCtx.Done(), s.device, slot)
}

// admitCall reads a call's header, takes a slot for it from caller
// (waiting for one, not past the call's deadline nor once gone closes),
// and reads its body (readCallBody). On failure it has answered or reset
// the stream and given back the slot; on success the caller releases it.
func (rt *router) admitCall(st transport.Stream, fr *transport.FrameReader, caller string, gone <-chan struct{}) (transport.Stream, *wire.CallHeader, *callSlot, bool) {
	hdr, ok := readCallHeader(st, fr)
	if !ok {
		return nil, nil, nil, false
	}
	if ok, why := rt.rate.admit(rt.h.zone.Name); !ok {
		rt.refuse(st, wire.CallUnavailable, why)
		return nil, nil, nil, false
	}
	slot, why := rt.slots.enterWait(caller, time.Now().Add(wire.CallTimeout(hdr)), gone)
	if slot == nil {
		rt.refuse(st, wire.CallUnavailable, why)
		return nil, nil, nil, false
	}
	if hdr.Kind == wire.CallStream {
		return st, hdr, slot, true // a stream's opening has no body
	}
	if st, ok = rt.readCallBody(st, hdr, slot); !ok {
		slot.release()
		return nil, nil, nil, false
	}
	return st, hdr, slot, true
}

// readCallHeader reads and checks the CallHeader of a call stream the
// hub was sent; on failure it answers or resets the stream.
func readCallHeader(st transport.Stream, fr *transport.FrameReader) (*wire.CallHeader, bool) {
	var hdr wire.CallHeader
	if err := fr.ReadFrame(&hdr); err != nil {
		st.Reset()
		return nil, false
	}
	if err := wire.CheckCallHeader(&hdr); err != nil {
		session.RefuseCall(st, wire.CallBadRequest, err.Error())
		return nil, false
	}
	return &hdr, true
}

// refuse answers a call the hub itself refuses, and counts it.
func (rt *router) refuse(st transport.Stream, status wire.CallStatus, msg string) {
	rt.h.counters.refusals.WithLabelValues(metrics.Label(status.String())).Inc()
	session.RefuseCall(st, status, msg)
}

// ownZone reports whether name (a zone name or ID) is this zone.
func (rt *router) ownZone(name string) bool {
	if name == rt.h.zone.Name {
		return true
	}
	id, err := certs.ParseZoneID(name)
	return err == nil && id == rt.h.zone.ID
}

// routeCall delivers a call whose caller is established (hdr's From*
// fields) within this zone, its body read (readCallBody). gone closes
// when the caller's session or link ends; from names the caller in
// bindings and token checks (the device, or PETNAME/DEVICE for a
// friend's); slot is the call's hold on the caller's calls in flight, to
// which routeCall adds the target's.
func (rt *router) routeCall(st transport.Stream, hdr *wire.CallHeader, gone <-chan struct{}, from string, slot *callSlot) {
	rt.h.counters.routedCall(hdr.Kind)
	timeout := wire.CallTimeout(hdr)
	deadline := time.Now().Add(timeout)
	st.SetDeadline(deadline)
	if hdr.Kind == wire.CallMessage && hdr.TTLMs > 0 && hdr.ToDevice != certs.HubDevice {
		rt.queueMessage(st, hdr, deadline)
		return
	}

	target, rec := rt.h.reg.lookup(hdr.ToDevice)
	if target != nil && target.syncCtx.Err() != nil {
		target = nil // closing: the device is going away (to sleep, say)
	}
	switch {
	case hdr.ToDevice == certs.HubDevice:
		if why := slot.toWait(deviceCaller(hdr.ToDevice), deadline, gone); why != "" {
			rt.refuse(st, wire.CallUnavailable, why)
			return
		}
		rt.serveHosted(st, hdr, deadline)
		return
	case rec == nil || rec.Revoked:
		rt.refuse(st, wire.CallNotFound, fmt.Sprintf("no device %q in zone %q", hdr.ToDevice, rt.h.zone.Name))
		return
	case target == nil && hdr.TTLMs > 0:
		// A call for later waits for the device, woken, within its time.
		until := time.Now().Add(time.Duration(hdr.TTLMs) * time.Millisecond)
		if deadline.Before(until) {
			until = deadline
		}
		if target = rt.h.wakes.awaitOnline(gone, hdr.ToDevice, until); target == nil {
			rt.refuse(st, wire.CallOffline, fmt.Sprintf("device %q did not come back within %v", hdr.ToDevice, time.Duration(hdr.TTLMs)*time.Millisecond))
			return
		}
	case target == nil && rt.h.wakes.asleep(hdr.ToDevice):
		rt.refuse(st, wire.CallOffline, fmt.Sprintf("device %q is asleep; send with a time to live (--ttl) for the hub to wake it", hdr.ToDevice))
		return
	case target == nil:
		rt.refuse(st, wire.CallOffline, fmt.Sprintf("device %q is offline", hdr.ToDevice))
		return
	}
	// A token, presented or required, decides whether a binding can be
	// made and what it may use.
	key := bindKey{from, hdr.FromApp, hdr.ToDevice, hdr.ToService, ""}
	var limitsOf func() (token.Grant, error)
	if hdr.Token != "" || rt.h.tokens.needed(hdr.ToDevice, hdr.ToService) {
		tok, err := rt.h.tokens.presented(hdr.Token, hdr.ToDevice, hdr.ToService)
		if err != nil {
			rt.refuse(st, wire.CallDenied, err.Error())
			return
		}
		key.token = tok.ID
		limitsOf = func() (token.Grant, error) { return rt.h.tokens.bind(tok, from) }
	}
	hdr.Token, hdr.TokenID = "", key.token
	if why := slot.toWait(deviceCaller(hdr.ToDevice), deadline, gone); why != "" {
		rt.refuse(st, wire.CallUnavailable, why)
		return
	}
	if rt.h.cfg.FriendCallHook != nil && hdr.Envelope != nil {
		if rt.h.cfg.FriendCallHook(&FriendCall{Header: hdr, st: st, target: target, deadline: deadline}) {
			return
		}
	}
	if hdr.Kind == wire.CallStream {
		if target.streams.Add(1) > wire.StreamsPerSession {
			target.streams.Add(-1)
			rt.refuse(st, wire.CallUnavailable, fmt.Sprintf("device %q has %d byte streams open, the most its session carries: dial again once one of them ends", hdr.ToDevice, wire.StreamsPerSession))
			return
		}
		defer target.streams.Add(-1)
	}
	ctx, cancel := context.WithDeadline(target.syncCtx, deadline)
	defer cancel()
	// Without a token's limits, nothing can refuse the call once the
	// stream to the target is open: its body goes in the same packet as
	// its header. With them, the body follows once the binding took it.
	var framed []byte
	sent := func() {}
	if limitsOf == nil {
		framed, sent = replayed(st)
	}
	out, err := openCallStream(ctx, target.conn, hdr, deadline, framed)
	if err != nil {
		rt.refuse(st, wire.CallOffline, fmt.Sprintf("device %q cannot be reached: %v", hdr.ToDevice, err))
		return
	}
	sent()
	r := &relay{a: st, b: out}
	b, err := rt.h.bindings.attach(key, r, rt.h.cfg.Now(), limitsOf)
	if err != nil {
		out.Reset()
		rt.refuse(st, wire.CallDenied, err.Error())
		return
	}
	defer b.detach(r)
	b.in.Add(uint64(len(framed)))
	if hdr.Kind == wire.CallStream {
		rt.relayStream(st, out, slot, fmt.Sprintf("device %q", from), fmt.Sprintf("device %q", hdr.ToDevice), b, r)
		return
	}
	check := func() error {
		if why := b.over(); why != "" {
			rt.h.bindings.end(b, why, rt.h.cfg.Now())
			return errors.New(why)
		}
		return nil
	}
	rt.splice(st, out, &b.in, &b.out, check)
}

// exchangeCall sends one call or message on a new stream of conn and
// reads the whole answer: the reply and, for status 0, the result. For
// the hub's own deliveries (queued messages, the outbox), whose bodies it
// holds, rather than relays.
func exchangeCall(ctx context.Context, conn transport.Conn, hdr *wire.CallHeader, body []byte, deadline time.Time) (*wire.CallReply, []byte, error) {
	ctx, cancel := context.WithDeadline(ctx, deadline)
	defer cancel()
	framed, err := session.FrameBody(body)
	if err != nil {
		return nil, nil, err
	}
	out, err := openCallStream(ctx, conn, hdr, deadline, framed)
	if err != nil {
		return nil, nil, err
	}
	stop := context.AfterFunc(ctx, out.Reset)
	defer stop()
	fail := func(err error) (*wire.CallReply, []byte, error) {
		out.Reset()
		return nil, nil, err
	}
	fr := transport.NewFrameReader(out, wire.CallChunk+16)
	var rep wire.CallReply
	if err := fr.ReadFrame(&rep); err != nil {
		return fail(err)
	}
	var res []byte
	if rep.Status == wire.CallOK {
		if res, err = session.ReadBody(fr, wire.MaxCallBody); err != nil {
			return fail(err)
		}
	}
	out.Close()
	return &rep, res, nil
}

// openCallStream opens a call stream on conn and writes its headers and
// framed, the body's frames if known (in the same packet).
func openCallStream(ctx context.Context, conn transport.Conn, hdr *wire.CallHeader, deadline time.Time, framed []byte) (transport.Stream, error) {
	out, err := conn.OpenStream(ctx)
	if err != nil {
		return nil, err
	}
	out.SetDeadline(deadline)
	if err := session.OpenCallFramed(out, hdr, framed); err != nil {
		out.Reset()
		return nil, err
	}
	return out, nil
}

// copyBufs are splice's copy buffers: a relayed call would otherwise
// allocate two fresh ones, which at thousands of calls a second is most of
// the hub's garbage.
var copyBufs = sync.Pool{New: func() any { b := make([]byte, 32<<10); return &b }}

// onlyReader hides a stream's WriterTo so io.CopyBuffer uses the buffer.
type onlyReader struct{ r io.Reader }

func (o onlyReader) Read(p []byte) (int, error) { return o.r.Read(p) }

// splice copies a and b into each other until both directions end,
// counting the bytes each way; a failure either way resets both, so a
// cancelled or expired exchange ends at both ends.
func (rt *router) splice(a, b transport.Stream, aToB, bToA *atomic.Uint64, check func() error) {
	pump := func(dst, src transport.Stream, n *atomic.Uint64, total prometheus.Counter) {
		buf := copyBufs.Get().(*[]byte)
		_, err := io.CopyBuffer(countingWriter{dst, n, total, check}, onlyReader{src}, *buf)
		copyBufs.Put(buf)
		if err == nil {
			err = dst.Close() // src ended its direction: end dst's
		}
		if err != nil {
			a.Reset()
			b.Reset()
		}
	}
	done := make(chan struct{})
	session.Go(func() {
		pump(b, a, aToB, rt.h.counters.request)
		close(done)
	})
	pump(a, b, bToA, rt.h.counters.response)
	<-done
}

// serveHosted delivers a call to a service an application on the hub's
// host serves, after the hub's own policy check (and, from a friend zone,
// the check of the calling device's signature).
func (rt *router) serveHosted(st transport.Stream, hdr *wire.CallHeader, deadline time.Time) {
	rules := rt.h.calls.Get(rt.h.state, rt.h.log).Rules
	req := policy.Request{FromZone: hdr.FromZone, FromZoneID: string(rt.h.zone.ID), FromDevice: hdr.FromDevice, FromApp: hdr.FromApp,
		ToDevice: hdr.ToDevice, ToService: hdr.ToService, Method: hdr.Method, SameZone: true}
	var opts services.ServeOpts
	if hdr.FromZoneID != "" && hdr.FromZoneID != rt.h.zone.ID.Compact() {
		f := rt.h.friends.get(hdr.FromZoneID)
		if f == nil {
			rt.refuse(st, wire.CallDenied, fmt.Sprintf("zone %s is not a friend of zone %q", hdr.FromZoneID, rt.h.zone.Name))
			return
		}
		req.FromZone, req.FromZoneID, req.SameZone = f.Petname, hdr.FromZoneID, false
		leaf := rt.h.cert.Load()
		self := certs.Identity{Zone: rt.h.zone.ID, Device: certs.HubDevice}
		opts = services.EnvelopeOpts(rt.envelopes, hdr, f.entry(), self, envelope.Signer{Key: leaf.PrivateKey.(ed25519.PrivateKey), Cert: leaf.Leaf}, rt.h.cfg.Now, rt.h.log)
	}
	if d := policy.Decide(rules, req); !d.Allow {
		rt.refuse(st, wire.CallDenied, "denied by the hub's policy: "+d.Reason)
		return
	}
	if hdr.Kind == wire.CallStream {
		services.ServeStream(st, rt.h.services, hdr, deadline, opts, fmt.Sprintf("device %q", hdr.FromDevice))
		return
	}
	services.ServeCall(st, rt.h.services, hdr, deadline, opts)
}

// queueMessage keeps a message for later: it answers the sender once the
// message is stored (and, for a device online, once the first attempt to
// deliver it has told whether it arrived).
func (rt *router) queueMessage(st transport.Stream, hdr *wire.CallHeader, deadline time.Time) {
	if !rt.h.reg.paired(hdr.ToDevice) {
		rt.refuse(st, wire.CallNotFound, fmt.Sprintf("no device %q in zone %q", hdr.ToDevice, rt.h.zone.Name))
		return
	}
	if hdr.Token != "" || rt.h.tokens.needed(hdr.ToDevice, hdr.ToService) {
		rt.refuse(st, wire.CallBadRequest, fmt.Sprintf("service %s/%s takes a service token, and messages kept for later carry none: send without a time to live while the device is online", hdr.ToDevice, hdr.ToService))
		return
	}
	msg, ok := readKept(st, hdr, rt.h.cfg.Now())
	if !ok {
		return
	}
	var done chan bool
	key := deliveryKey(hdr.ToDevice, msg.sender(), hdr.ID)
	if rt.h.reg.online(hdr.ToDevice) {
		done = rt.h.wakes.watchDelivery(key)
		defer rt.h.wakes.unwatchDelivery(key)
	}
	seq, err := rt.h.mail.Put(hdr.ToDevice, msg)
	if err != nil {
		if errors.Is(err, errQueueFull) {
			raise := "raise pzh serve --queue-limit/--queue-mib"
			if errors.Is(err, errZoneQueueFull) {
				raise = "ask the zone's provider for a higher limit (pzh provider zone limits)"
			}
			rt.refuse(st, wire.CallQueueFull, fmt.Sprintf("%v; try again later, or %s", err, raise))
		} else {
			rt.h.log.Error("queue a message", "device", hdr.ToDevice, "err", err)
			rt.refuse(st, wire.CallUnavailable, "the hub could not store the message: "+stores.ExplainRemote(err))
		}
		return
	}
	if !rt.h.reg.paired(hdr.ToDevice) { // revoked meanwhile: its queue is gone
		rt.h.mail.Remove(hdr.ToDevice, seq)
		rt.refuse(st, wire.CallNotFound, fmt.Sprintf("device %q was revoked", hdr.ToDevice))
		return
	}
	rt.h.wakes.markNewMail(hdr.ToDevice)
	rt.h.changes.Bump()
	// Wake after the message is stored: if the session closed meanwhile,
	// this pings; if it is up, it does nothing.
	rt.h.wakes.wake(hdr.ToDevice)
	delivered := false
	if done != nil {
		rt.h.wakes.kickCourier(hdr.ToDevice)
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
