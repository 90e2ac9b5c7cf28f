package zone

import (
	"context"
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
		rep, res, err := h.exchangeCall(target, hdr, body, deadline)
		if err != nil {
			refuseCall(st, CallOffline, err.Error())
			return true
		}
		if transport.WriteFrame(st, rep) != nil || writeBody(st, res, true) != nil {
			st.Reset()
		}
		rep, _, err = h.exchangeCall(target, hdr, body, deadline)
		if err == nil {
			h.log.Warn("test tamper: replayed a call from a friend zone", "id", hdr.ID, "status", rep.Status, "answer", rep.Message)
		}
		return true
	}
	return false
}

// exchangeCall sends one call to a device and reads its whole answer.
func (h *Hub) exchangeCall(target *hubSession, hdr *CallHeader, body []byte, deadline time.Time) (*CallReply, []byte, error) {
	ctx, cancel := context.WithDeadline(target.syncCtx, deadline)
	defer cancel()
	out, err := openCallStream(ctx, target.conn, hdr, deadline)
	if err != nil {
		return nil, nil, err
	}
	defer out.Reset()
	if err := writeBody(out, body, false); err != nil {
		return nil, nil, err
	}
	fr := transport.NewFrameReader(out, callChunk+16)
	var rep CallReply
	if err := fr.ReadFrame(&rep); err != nil {
		return nil, nil, err
	}
	var res []byte
	if rep.Status == CallOK {
		if res, err = readBody(fr, maxCallBody); err != nil {
			return nil, nil, err
		}
	}
	out.Close()
	return &rep, res, nil
}
