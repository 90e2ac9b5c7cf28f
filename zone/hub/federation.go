package hub

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"sync/atomic"
	"time"

	"github.com/pzone/pzone/zone/services"
	"github.com/pzone/pzone/zone/session"

	"github.com/pzone/pzone/certs"
	"github.com/pzone/pzone/transport"
	"github.com/pzone/pzone/zone/policy"
	"github.com/pzone/pzone/zone/wire"
)

// Calls between zones: a device's call to PETNAME/DEVICE/SERVICE goes to
// its own hub, which checks its zone's policy for the outgoing call and
// forwards it over the friend's link; the friend's hub checks its policy
// for the incoming call and delivers it as it would one of its own
// devices' (with store-and-forward and wakeup); the serving device checks
// its policy and the caller's signature. Hubs only relay: the signatures
// (envelope.go) are the devices'.

// ---- the caller's hub ----

// forwardCall sends a call from one of this zone's devices (hdr's From*
// set from its session) to the friend zone hdr.ToZone.
func (rt *router) forwardCall(st transport.Stream, hdr *wire.CallHeader, slot *callSlot) {
	f := rt.h.friends.named(hdr.ToZone)
	if f == nil {
		rt.refuse(st, wire.CallNotFound, fmt.Sprintf("zone %q is not a friend of zone %q (pzh friends lists them)", hdr.ToZone, rt.h.zone.Name))
		return
	}
	if hdr.Envelope == nil {
		rt.refuse(st, wire.CallBadRequest, "a call to another zone must be signed by the calling device: update pzp")
		return
	}
	req := policy.Request{FromZone: rt.h.zone.Name, FromZoneID: string(rt.h.zone.ID), FromDevice: hdr.FromDevice, FromApp: hdr.FromApp,
		ToZone: f.Petname, ToZoneID: string(f.ZoneID), ToDevice: hdr.ToDevice, ToService: hdr.ToService, Method: hdr.Method, SameZone: true}
	if d := policy.Decide(rt.h.calls.Get(rt.h.state, rt.h.log).Rules, req); !d.Allow {
		rt.refuse(st, wire.CallDenied, fmt.Sprintf("denied by zone %q's policy for calls out: %s", rt.h.zone.Name, d.Reason))
		return
	}
	hdr.ToZone = f.ZoneID.Compact()
	deadline := time.Now().Add(wire.CallTimeout(hdr))
	st.SetDeadline(deadline)
	l := rt.h.links.liveLink(hdr.ToZone)
	later := hdr.Kind == wire.CallMessage && hdr.TTLMs > 0
	// Behind messages kept before (for any destination: the outbox
	// keeps each destination's order and passes the others on).
	if l == nil || later && rt.h.mail.Stat(outboxKey(hdr.ToZone)).n > 0 {
		if later {
			// Kept here until the link is back (behind any kept before).
			rt.h.links.queueForFriend(st, hdr, f)
			return
		}
		rt.refuse(st, wire.CallOffline, fmt.Sprintf("the hub of friend zone %q is not linked (pzh friends on the hub says why); try again later, or send with a time to live (--ttl)", f.Petname))
		return
	}
	if why := slot.toWait(linkCaller(hdr.ToZone), deadline, l.ctx.Done()); why != "" {
		rt.refuse(st, wire.CallUnavailable, why)
		return
	}
	defer l.use()()
	ctx, cancel := context.WithDeadline(l.ctx, deadline)
	defer cancel()
	framed, sent := replayed(st)
	out, err := openCallStream(ctx, l.conn, hdr, deadline, framed)
	if err != nil {
		if later {
			rt.h.links.queueForFriend(st, hdr, f)
			return
		}
		rt.refuse(st, wire.CallOffline, fmt.Sprintf("the hub of friend zone %q cannot be reached: %v", f.Petname, err))
		return
	}
	l.calls.Add(1)
	rt.h.changes.Bump()
	if later {
		rt.forwardLater(st, out, hdr, f, l, deadline, sent)
		return
	}
	sent()
	if hdr.Kind == wire.CallStream {
		rt.relayStream(st, out, slot, fmt.Sprintf("device %q", hdr.FromDevice), fmt.Sprintf("the hub of zone %q", f.Petname), nil, nil)
		return
	}
	var in, back atomic.Uint64
	rt.splice(st, out, &in, &back, func() error { return nil })
}

// maxLaterReply bounds the answer to a message for later: a reply frame
// (its envelope included), and no result.
const maxLaterReply = 64 << 10

// forwardLater waits for the friend's hub's answer to a message for
// later that went out on link l, and passes it on. If the link itself
// breaks before a whole answer came, the message is kept here for the
// link's return instead (st still reads its body from the start until
// sent is called): the sender asked for delivery later, not for an error.
// The friend may then have taken it already and see it twice, with one
// ID. A friend that refuses or resets it on a live link, or does not
// answer in time, is answered as any call.
func (rt *router) forwardLater(st, out transport.Stream, hdr *wire.CallHeader, f *FriendRecord, l *hubLink, deadline time.Time, sent func()) {
	// Room before the sender's deadline to keep the message and say so.
	keep := min(time.Until(deadline)/10, time.Second)
	out.SetReadDeadline(deadline.Add(-keep))
	answer, err := io.ReadAll(io.LimitReader(out, maxLaterReply+1))
	var rep wire.CallReply
	whole := len(answer) <= maxLaterReply && transport.NewFrameReader(bytes.NewReader(answer), maxLaterReply).ReadFrame(&rep) == nil
	if !whole {
		out.Reset()
		gone := l.ctx.Err() != nil || !l.live()
		select {
		case <-l.conn.Done():
			gone = true
		default:
		}
		switch {
		case gone:
			rt.h.log.Info("message for a friend zone kept: the link broke before its answer", "friend", f.Petname, "id", hdr.ID)
			st.SetWriteDeadline(time.Now().Add(wire.StreamTimeout))
			rt.h.links.queueForFriend(st, hdr, f)
		case len(answer) > maxLaterReply:
			rt.refuse(st, wire.CallFailed, fmt.Sprintf("the hub of friend zone %q answered with more than %d bytes", f.Petname, maxLaterReply))
		default:
			rt.refuse(st, wire.CallUnavailable, fmt.Sprintf("the hub of friend zone %q broke off the message: %v", f.Petname, err))
		}
		return
	}
	sent()
	out.Close()
	if _, err := st.Write(answer); err != nil {
		st.Reset()
		return
	}
	st.Close()
}

// ---- the hoster's hub ----

// handleLinkStream serves a stream a friend's hub opened on the link.
func (rt *router) handleLinkStream(l *hubLink, st transport.Stream) {
	st.SetDeadline(time.Now().Add(wire.StreamTimeout))
	fr := transport.NewFrameReader(st, wire.MaxCallHeader)
	var hdr wire.StreamHeader
	if err := fr.ReadFrame(&hdr); err != nil {
		st.Reset()
		return
	}
	switch hdr.Kind {
	case wire.StreamCall:
		rt.receiveCall(l, st, fr)
	case wire.StreamDiscover:
		rt.answerDiscover(l, st, fr)
	default:
		rt.h.log.Info("unknown stream kind on a friend link", "friend", rt.h.friends.petname(l.zone), "kind", hdr.Kind)
		st.Reset()
	}
}

// receiveCall takes a call a friend zone's device made, over its link.
// The link is one caller: its zone's calls in flight share its slots.
func (rt *router) receiveCall(l *hubLink, st transport.Stream, fr *transport.FrameReader) {
	st, hdr, slot, ok := rt.admitCall(st, fr, linkCaller(l.zone), l.ctx.Done())
	if !ok {
		return
	}
	defer slot.release()
	f := rt.h.friends.get(l.zone)
	switch {
	case f == nil:
		rt.refuse(st, wire.CallDenied, fmt.Sprintf("zone %s is not a friend of zone %q", l.zone, rt.h.zone.Name))
		return
	case hdr.FromZoneID != l.zone:
		// A hub speaks for its own zone only: calls do not transit.
		rt.h.log.Warn("call over a friend link claims another zone", "friend", f.Petname, "claims", hdr.FromZoneID)
		rt.refuse(st, wire.CallBadRequest, "a call over this link must come from the linked zone")
		return
	case hdr.Envelope == nil:
		rt.refuse(st, wire.CallBadRequest, "a call from another zone must be signed by the calling device")
		return
	case hdr.ToZone != "" && hdr.ToZone != rt.h.zone.ID.Compact():
		rt.refuse(st, wire.CallNotFound, "calls do not transit: this hub serves only its own zone")
		return
	}
	hdr.FromZone, hdr.ToZone, hdr.QueuedMs = f.Petname, "", 0
	req := policy.Request{FromZone: f.Petname, FromZoneID: string(f.ZoneID), FromDevice: hdr.FromDevice, FromApp: hdr.FromApp,
		ToDevice: hdr.ToDevice, ToService: hdr.ToService, Method: hdr.Method}
	if d := policy.Decide(rt.h.calls.Get(rt.h.state, rt.h.log).Rules, req); !d.Allow {
		rt.refuse(st, wire.CallDenied, fmt.Sprintf("denied by zone %q's policy: %s", rt.h.zone.Name, d.Reason))
		return
	}
	l.calls.Add(1)
	rt.h.changes.Bump()
	rt.routeCall(st, hdr, l.closed, f.Petname+"/"+hdr.FromDevice, slot)
}

// ---- discovery ----

// Discovery limits, with why.
const (
	// maxDiscovered bounds the services one listing carries: below the
	// CBOR decoder's array limit, so a full listing still decodes.
	maxDiscovered = 1000
)

// handleDiscover answers a device's request for a friend zone's services
// by asking that zone's hub.
func (rt *router) handleDiscover(s *hubSession, st transport.Stream, fr *transport.FrameReader) {
	var req wire.DiscoverRequest
	if err := fr.ReadFrame(&req); err != nil {
		st.Reset()
		return
	}
	answer := func(r *wire.DiscoverResponse) { reply(st, r) }
	if req.FromApp != "" && wire.ValidateServiceName(req.FromApp) != nil {
		answer(&wire.DiscoverResponse{Status: wire.CallBadRequest, Message: "bad app name"})
		return
	}
	f := rt.h.friends.named(req.Zone)
	if f == nil {
		answer(&wire.DiscoverResponse{Status: wire.CallNotFound, Message: fmt.Sprintf("zone %q is not a friend of zone %q (pzh friends lists them)", req.Zone, rt.h.zone.Name)})
		return
	}
	l := rt.h.links.liveLink(f.ZoneID.Compact())
	if l == nil {
		answer(&wire.DiscoverResponse{Status: wire.CallOffline, Message: fmt.Sprintf("the hub of friend zone %q is not linked (pzh friends on the hub says why); try again later", f.Petname)})
		return
	}
	defer l.use()()
	ctx, cancel := context.WithTimeout(l.ctx, wire.StreamTimeout)
	defer cancel()
	var resp wire.DiscoverResponse
	if err := session.Exchange(ctx, l.conn, wire.StreamDiscover, &wire.DiscoverRequest{FromDevice: s.device, FromApp: req.FromApp}, &resp, wire.MaxDiscoverFrame); err != nil {
		answer(&wire.DiscoverResponse{Status: wire.CallUnavailable, Message: fmt.Sprintf("the hub of friend zone %q did not answer: %v", f.Petname, err)})
		return
	}
	if len(resp.Services) > maxDiscovered {
		resp.Services = resp.Services[:maxDiscovered]
	}
	answer(&resp)
}

// answerDiscover lists, for a friend's device, the services of this zone
// that this zone's policy lets it call.
func (rt *router) answerDiscover(l *hubLink, st transport.Stream, fr *transport.FrameReader) {
	var req wire.DiscoverRequest
	if err := fr.ReadFrame(&req); err != nil {
		st.Reset()
		return
	}
	f := rt.h.friends.get(l.zone)
	if f == nil {
		reply(st, &wire.DiscoverResponse{Status: wire.CallDenied, Message: fmt.Sprintf("zone %s is not a friend of zone %q", l.zone, rt.h.zone.Name)})
		return
	}
	if certs.ValidateName("device", req.FromDevice) != nil || req.FromApp != "" && wire.ValidateServiceName(req.FromApp) != nil {
		reply(st, &wire.DiscoverResponse{Status: wire.CallBadRequest, Message: "bad device or app name"})
		return
	}
	rules := rt.h.calls.Get(rt.h.state, rt.h.log).Rules
	var out []wire.DiscoveredService
	for _, v := range services.ListServices(rt.h.state) {
		r := policy.Request{FromZone: f.Petname, FromZoneID: string(f.ZoneID), FromDevice: req.FromDevice, FromApp: req.FromApp, ToDevice: v.Device, ToService: v.Service}
		methods, ok := allowedMethods(rules, r, v.Methods)
		if ok && len(out) < maxDiscovered {
			out = append(out, wire.DiscoveredService{Device: v.Device, App: v.App, Service: v.Service, Description: v.Description, Methods: methods, TokenRequired: v.TokenRequired})
		}
	}
	reply(st, &wire.DiscoverResponse{Services: out})
}

// allowedMethods decides whether r may use a service with methods: for a
// service that lists its methods, the ones rules allow (some must be);
// for one that lists none, a call without a method.
func allowedMethods(rules []policy.Rule, r policy.Request, methods []string) ([]string, bool) {
	if len(methods) == 0 {
		return nil, policy.Decide(rules, r).Allow
	}
	var ok []string
	for _, m := range methods {
		r.Method = m
		if policy.Decide(rules, r).Allow {
			ok = append(ok, m)
		}
	}
	return ok, len(ok) > 0
}
