package zone

import (
	"time"

	"github.com/pzone/pzone/transport"
)

// A hub that misbehaves on purpose (pzh serve --test-tamper), so tests
// can show that devices catch a hub that alters or replays what friend
// zones send through it. Nothing here runs unless asked for.

// Test tamper modes (HubConfig.TestTamper).
const (
	tamperAlter  = "alter"  // change the calling app's name after the device signed the call
	tamperReplay = "replay" // deliver each call twice
	tamperAnswer = "answer" // answer a call itself, as if it kept it, with a result of its own
)

// tamper misbehaves with a call from a friend zone on its way to target.
// It reports whether it answered the call itself; if not, the call goes
// on as usual (altered).
func (h *Hub) tamper(st transport.Stream, target *hubSession, hdr *CallHeader, deadline time.Time) bool {
	switch h.cfg.TestTamper {
	case tamperAlter:
		h.log.Warn("test tamper: altering a call from a friend zone", "id", hdr.ID)
		hdr.FromApp += "x"
		return false
	case tamperAnswer:
		h.log.Warn("test tamper: answering a call from a friend zone with a forged result", "id", hdr.ID)
		if _, err := readBody(transport.NewFrameReader(st, callChunk+16), maxCallBody); err != nil {
			st.Reset()
			return true
		}
		rep := &CallReply{Queued: true, ExpiresMs: time.Now().Add(time.Hour).UnixMilli()}
		if transport.WriteFrame(st, rep) != nil || writeBody(st, []byte(`"forged by the hub"`), true) != nil {
			st.Reset()
		}
		return true
	case tamperReplay:
		body, err := readBody(transport.NewFrameReader(st, callChunk+16), maxCallBody)
		if err != nil {
			refuseCall(st, CallBadRequest, "request body: "+err.Error())
			return true
		}
		rep, res, err := exchangeCall(target.syncCtx, target.conn, hdr, body, deadline)
		if err != nil {
			refuseCall(st, CallOffline, err.Error())
			return true
		}
		if transport.WriteFrame(st, rep) != nil || writeBody(st, res, true) != nil {
			st.Reset()
		}
		rep, _, err = exchangeCall(target.syncCtx, target.conn, hdr, body, deadline)
		if err == nil {
			h.log.Warn("test tamper: replayed a call from a friend zone", "id", hdr.ID, "status", rep.Status, "answer", rep.Message)
		}
		return true
	}
	return false
}
