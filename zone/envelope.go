package zone

import (
	"fmt"
	"log/slog"
	"time"

	"github.com/pzone/pzone/certs"
	"github.com/pzone/pzone/zone/envelope"
	"github.com/pzone/pzone/zone/wire"
)

// envelopeOpts are serveCall's options for a call from friend zone f to
// this node self: the caller's signature is checked before delivery, a
// queued message redelivered is confirmed without delivering it twice,
// and the result is signed with s.
func envelopeOpts(c *envelope.Checker, hdr *wire.CallHeader, f *friendEntry, self certs.Identity, s envelope.Signer, now func() time.Time, log *slog.Logger) serveOpts {
	var key string
	caller := certs.Identity{Zone: f.id, Device: hdr.FromDevice}
	return serveOpts{
		check: func(body []byte) (bool, *wire.CallError) {
			k, seen, v, err := c.CheckCall(envCall(hdr), f.ca, self, body, now())
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
				log.Warn("envelope refused", "from", f.petname+"/"+hdr.FromDevice, "id", hdr.ID, "verdict", v, "err", err)
				return false, &wire.CallError{Status: wire.CallDenied, Message: fmt.Sprintf("refused by %s: the envelope from zone %q does not check out: %v", self.Device, f.petname, err)}
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

// envCall is what the envelope of hdr covers.
func envCall(hdr *wire.CallHeader) *envelope.Call {
	return &envelope.Call{ID: hdr.ID, Kind: uint8(hdr.Kind), FromZoneID: hdr.FromZoneID, FromDevice: hdr.FromDevice, FromApp: hdr.FromApp,
		ToDevice: hdr.ToDevice, ToService: hdr.ToService, Method: hdr.Method, TTLMs: hdr.TTLMs, Envelope: hdr.Envelope}
}
