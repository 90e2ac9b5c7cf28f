package hub

import (
	"time"

	"github.com/pzone/pzone/zone/session"

	"github.com/pzone/pzone/transport"
	"github.com/pzone/pzone/zone/wire"
)

// FriendCall is a call from a friend zone on its way through the hub to a
// device of this zone, as Config.FriendCallHook sees it: after the hub
// checked and routed it, before it is relayed. It exists so that tests can
// build a hub that misbehaves (alters, replays or answers such calls) from
// the real one, and show that devices catch it; pzh never sets the hook.
type FriendCall struct {
	// Header is the call as the hub will relay it; a hook may change it.
	Header *wire.CallHeader

	st       transport.Stream
	target   *hubSession
	deadline time.Time
}

// ReadBody reads the call's request body from the caller.
func (c *FriendCall) ReadBody() ([]byte, error) {
	return session.ReadBody(transport.NewFrameReader(c.st, wire.CallChunk+16), wire.MaxCallBody)
}

// Deliver sends Header and body to the target device as a call of its
// own and returns its reply and result.
func (c *FriendCall) Deliver(body []byte) (*wire.CallReply, []byte, error) {
	return exchangeCall(c.target.syncCtx, c.target.conn, c.Header, body, c.deadline)
}

// Answer answers the caller with rep and result, and ends the call.
func (c *FriendCall) Answer(rep *wire.CallReply, result []byte) {
	if transport.WriteFrame(c.st, rep) != nil || session.WriteBody(c.st, result, true) != nil {
		c.st.Reset()
	}
}

// Refuse answers the caller with a failure.
func (c *FriendCall) Refuse(status wire.CallStatus, msg string) {
	session.RefuseCall(c.st, status, msg)
}

// Reset cuts the call.
func (c *FriendCall) Reset() { c.st.Reset() }
