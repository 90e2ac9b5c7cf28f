package hub

import (
	"fmt"

	"github.com/pzone/pzone/transport"
	"github.com/pzone/pzone/zone/session"
	"github.com/pzone/pzone/zone/wire"
)

// Byte streams between applications, through the hub: a stream opens like
// a call (CallKind CallStream, no body) and is routed like one, with the
// same checks; once the serving device accepts, the call slot is given
// back and the hub forwards the stream's frames (session.Pipe), counting
// them into the binding, whose end (the operator, a revoked or offline
// device, a service token's limits) cuts the stream with its reason.

// relayStream finishes opening a stream whose header went out on out: the
// serving side's reply goes back to the opener on st and, once accepted,
// the frames both ways until the stream is over. fromName and toName say
// who is at each end, for the reason one breaks off; b and r, if set,
// are the binding it runs on and its place in it.
func (rt *router) relayStream(st, out transport.Stream, slot *callSlot, fromName, toName string, b *binding, r *relay) {
	var rep wire.CallReply
	if err := transport.NewFrameReader(out, wire.MaxCallHeader).ReadFrame(&rep); err != nil {
		out.Reset()
		rt.refuse(st, wire.CallUnavailable, fmt.Sprintf("%s broke off the stream before accepting it", toName))
		return
	}
	if err := transport.WriteFrame(st, &rep); err != nil {
		out.Reset()
		st.Reset()
		return
	}
	if rep.Status != wire.CallOK {
		out.Reset()
		st.Close()
		return
	}
	slot.release() // open now: it holds no call slot while it lasts
	p := &session.Pipe{A: session.StreamEnd(fromName, st), B: session.StreamEnd(toName, out)}
	// Every stream's bytes count in the hub's totals; one under a binding
	// (within this zone) counts in it too, and is cut at its limits.
	p.Count = func(aToB bool, n int) *wire.CallError {
		if aToB {
			rt.h.counters.request.Add(float64(n))
		} else {
			rt.h.counters.response.Add(float64(n))
		}
		if b == nil {
			return nil
		}
		if aToB {
			b.in.Add(uint64(n))
		} else {
			b.out.Add(uint64(n))
		}
		if why := b.over(); why != "" {
			rt.h.bindings.end(b, why, rt.h.cfg.Now()) // cuts r's pipe, and any other on b
			return bindingCut(why)
		}
		return nil
	}
	if r != nil {
		r.setPipe(p)
	}
	if cut := p.Run(); cut != nil {
		rt.h.log.Debug("stream cut", "from", fromName, "to", toName, "reason", cut.Message)
	}
}
