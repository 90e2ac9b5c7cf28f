package services

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"time"

	"github.com/pzone/pzone/certs"
	"github.com/pzone/pzone/transport"
	"github.com/pzone/pzone/zone/envelope"
	"github.com/pzone/pzone/zone/session"
	"github.com/pzone/pzone/zone/wire"
)

// ServeOpts adapt ServeCall to where the call came from.
type ServeOpts struct {
	// check, if set, vets the request body before delivery: skip answers
	// the call as done without delivering it (a repeat already
	// delivered), cerr refuses it.
	check func(body []byte) (skip bool, cerr *wire.CallError)
	// onDelivered runs once the application has the call or message;
	// onFailed when it could not be delivered, and why.
	OnDelivered func()
	onFailed    func(*wire.CallError)
	// seal, if set, signs the result.
	seal func(result []byte) *wire.Envelope
}

// ServeCall reads a call's request from st, hands it to the application
// serving it on this node, and writes the answer. The caller keeps its side
// open until it has the answer: its end before then is a cancellation,
// which reaches the application.
func ServeCall(st transport.Stream, sh *Host, hdr *wire.CallHeader, deadline time.Time, o ServeOpts) {
	ctx, cancel := context.WithDeadline(context.Background(), deadline)
	defer cancel()
	st.SetDeadline(deadline)
	// A caller that sends no body must not keep the stream (and with it
	// one of the caller's streams this node accepts) until its deadline.
	body, err := session.ReadRequest(st, transport.NewFrameReader(st, wire.CallChunk+16), wire.DefaultCallBodyWait, deadline, nil)
	var ne net.Error
	if errors.As(err, &ne) && ne.Timeout() {
		st.Reset()
		return
	}
	if err != nil {
		session.RefuseCall(st, wire.CallBadRequest, "request body: "+err.Error())
		return
	}
	var result []byte
	var cerr *wire.CallError
	skip := false
	if o.check != nil {
		skip, cerr = o.check(body)
		if cerr != nil {
			session.RefuseCall(st, cerr.Status, cerr.Message)
			return
		}
	}
	if !skip {
		go func() {
			var b [1]byte
			if _, err := st.Read(b[:]); err != nil && !errors.Is(err, io.EOF) {
				cancel()
			}
		}()
		result, cerr = sh.Deliver(ctx, hdr, body)
		if cerr != nil {
			if o.onFailed != nil {
				o.onFailed(cerr)
			}
			session.RefuseCall(st, cerr.Status, cerr.Message)
			return
		}
		if o.OnDelivered != nil {
			o.OnDelivered()
		}
	}
	rep := &wire.CallReply{}
	if o.seal != nil {
		rep.Envelope = o.seal(result)
	}
	if session.WriteReply(st, rep, result) != nil {
		st.Reset()
	}
}

// EnvelopeOpts are ServeCall's options for a call from friend zone f to
// this node self: the caller's signature is checked before delivery, a
// queued message redelivered is confirmed without delivering it twice,
// and the result is signed with s.
func EnvelopeOpts(c *envelope.Checker, hdr *wire.CallHeader, f *wire.Friend, self certs.Identity, s envelope.Signer, now func() time.Time, log *slog.Logger) ServeOpts {
	var key string
	caller := certs.Identity{Zone: f.ID, Device: hdr.FromDevice}
	return ServeOpts{
		check: func(body []byte) (bool, *wire.CallError) {
			k, seen, v, err := c.CheckCall(EnvCall(hdr), f.CA, self, body, now())
			if seen && (hdr.QueuedMs != 0 || hdr.Kind == wire.CallMessage && hdr.TTLMs > 0) {
				// A message for later delivered before, whose confirmation
				// was lost on the way back: confirmed again, not delivered.
				return true, nil
			}
			if v == envelope.OK && err != nil { // it checked out, but could not be recorded
				log.Error("remember an envelope", "err", err)
				return false, &wire.CallError{Status: wire.CallUnavailable, Message: "the device could not record the message; try again"}
			}
			c.Count(v)
			if err != nil {
				log.Warn("envelope refused", "from", f.Petname+"/"+hdr.FromDevice, "id", hdr.ID, "verdict", v, "err", err)
				return false, &wire.CallError{Status: wire.CallDenied, Message: fmt.Sprintf("refused by %s: the envelope from zone %q does not check out: %v", self.Device, f.Petname, err)}
			}
			key = k
			return false, nil
		},
		onFailed: func(cerr *wire.CallError) {
			// A message for later is tried again (by the hub's queue or
			// the sender hub's outbox); one that timed out still waits
			// in the application's event buffer, and may reach it yet:
			// that one is not forgotten.
			if (hdr.QueuedMs != 0 || hdr.Kind == wire.CallMessage && hdr.TTLMs > 0) && key != "" && cerr.Status != wire.CallDeadline {
				c.Forget(key)
			}
		},
		seal: func(result []byte) *wire.Envelope {
			env, err := s.SignReply(hdr.ID, self, caller, now(), result)
			if err != nil {
				log.Warn("sign an answer", "err", err)
				return nil
			}
			return env
		},
	}
}

// EnvCall is what the envelope of hdr covers.
func EnvCall(hdr *wire.CallHeader) *envelope.Call {
	return &envelope.Call{ID: hdr.ID, Kind: uint8(hdr.Kind), FromZoneID: hdr.FromZoneID, FromDevice: hdr.FromDevice, FromApp: hdr.FromApp,
		ToDevice: hdr.ToDevice, ToService: hdr.ToService, Method: hdr.Method, TTLMs: hdr.TTLMs, Envelope: hdr.Envelope}
}
