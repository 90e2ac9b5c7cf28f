// Package wire is the vocabulary the hub and the devices speak: the
// session protocol's stream kinds and control messages, close reasons,
// renewal and unpairing, and calls: addresses (DEVICE/SERVICE and
// FRIEND/DEVICE/SERVICE), the call header and reply, statuses and limits.
// It holds types, constants and the checks of what arrives; no goroutines,
// no I/O, no daemon state. docs/PROTOCOL.md is its prose.
package wire

import (
	"fmt"
	"strings"
	"unicode"
)

// SessionVersion is the version of the session protocol carried in Hello.
// History: 1 — control stream, heartbeats, renewal, unpair, sync stream,
// call streams; 2 — wake registration (MsgWake, MsgWakeOK), Welcome's hub
// time, Close reason sleep, delivery later (CallHeader.TTLMs). A peer sends
// MsgWake only to a hub that answered Welcome with version 2 or later;
// 3 — calls to friend zones (CallHeader.ToZone, FromZoneID, Envelope;
// CallReply.Envelope), StreamDiscover.
const SessionVersion = 3

// FederationVersion is the first session version whose hubs forward calls
// to friend zones: a device sends none to an older hub.
const FederationVersion = 3

// StreamKind says what a stream carries; it is the first frame on every
// stream of a session (a StreamHeader).
type StreamKind uint8

const (
	// StreamControl is the first stream a peer opens: Hello, Welcome,
	// Ping/Pong and Close frames.
	StreamControl StreamKind = 1
	// StreamRenew carries one RenewRequest and one RenewResponse.
	StreamRenew StreamKind = 2
	// StreamUnpair carries one UnpairRequest and one UnpairResponse.
	StreamUnpair StreamKind = 3
	// StreamSync carries the zone state synchronisation protocol (package
	// sync) for the life of the session; a peer opens one after Welcome.
	StreamSync StreamKind = 4
	// StreamCall carries one call or message between applications
	// (calls.go); the peer opens it to the hub, and the hub to the target
	// device.
	StreamCall StreamKind = 5
	// StreamDiscover carries one listing of a friend zone's services: a
	// device asks its hub, and the hub asks the friend's (federation.go).
	StreamDiscover StreamKind = 6
)

// StreamHeader opens every stream.
type StreamHeader struct {
	Kind StreamKind `cbor:"1,keyasint"`
}

// MsgType is the type of a control-stream frame.
type MsgType uint8

const (
	MsgHello   MsgType = 1 // peer → hub, first frame after the header
	MsgWelcome MsgType = 2 // hub → peer, the session is admitted
	MsgPing    MsgType = 3 // peer → hub, heartbeat
	MsgPong    MsgType = 4 // hub → peer, answers a Ping with its Seq
	MsgClose   MsgType = 5 // either way: the session ends, with a reason
	MsgWake    MsgType = 6 // peer → hub: how to wake this device once it sleeps
	MsgWakeOK  MsgType = 7 // hub → peer: registration kept, with the endpoint the hub will ping
	MsgAddrs   MsgType = 8 // hub ↔ hub on a link (link version 2): the sender's public addresses, HubAddrs
)

// Control is one control-stream frame. Which fields are set depends on
// Type; unknown fields are ignored so that later versions can add some.
type Control struct {
	Type MsgType `cbor:"1,keyasint"`
	// Hello
	Version  uint   `cbor:"2,keyasint,omitempty"`
	Software string `cbor:"3,keyasint,omitempty"`
	// Ping / Pong
	Seq   uint64 `cbor:"4,keyasint,omitempty"`
	RTTus uint64 `cbor:"5,keyasint,omitempty"` // Ping: the peer's last measured round trip, µs
	// Welcome
	SessionID   string `cbor:"6,keyasint,omitempty"`
	HeartbeatMs uint64 `cbor:"7,keyasint,omitempty"` // how often the peer must ping
	RenewOnly   bool   `cbor:"8,keyasint,omitempty"` // certificate expired: renew, then reconnect
	// Close
	Reason  CloseReason `cbor:"9,keyasint,omitempty"`
	Message string      `cbor:"10,keyasint,omitempty"`
	// Pad is ignored. Over QUIC a Ping carries PingPad bytes of it so its
	// packet is long enough (over 42 bytes) for a restarted hub to answer
	// it with a stateless reset.
	Pad []byte `cbor:"11,keyasint,omitempty"`
	// Close with reason shutdown: reconnect at a uniformly random moment
	// within this many ms, so that a hub restarting under thousands of
	// devices is not hit by all of them at once.
	RetryWindowMs uint64 `cbor:"12,keyasint,omitempty"`
	// Wake: the UDP port the device listens on for wake pings (the hub
	// pings the address it observes: over QUIC the session's own, which
	// is that socket; over TCP the session's IP with this port), and this
	// session's wake secret. WakeMethod names another waker (a push
	// service) with WakeEndpoint its device address; empty means UDP.
	WakePort     uint16 `cbor:"13,keyasint,omitempty"`
	WakeID       []byte `cbor:"14,keyasint,omitempty"`
	WakeKey      []byte `cbor:"15,keyasint,omitempty"`
	WakeMethod   string `cbor:"16,keyasint,omitempty"`
	WakeEndpoint string `cbor:"17,keyasint,omitempty"` // WakeOK: the endpoint the hub recorded
	// Welcome: the hub's clock, unix ms, so a device can check the
	// freshness of wake pings against the hub's time rather than its own.
	TimeMs int64 `cbor:"18,keyasint,omitempty"`
	// Addrs: where the sending hub listens now (1–8 HOST:PORT).
	HubAddrs []string `cbor:"19,keyasint,omitempty"`
}

// PingPad is the padding a Ping carries over QUIC (see Control.Pad).
const PingPad = 10

// CloseReason says why a session ended. The same number is the QUIC
// application error code of the close, so a peer learns the reason even if
// the Close frame is lost.
type CloseReason uint8

const (
	ReasonNone     CloseReason = 0
	ReasonShutdown CloseReason = 1  // the closing side is stopping
	ReasonRevoked  CloseReason = 2  // the device was revoked: do not retry
	ReasonReplaced CloseReason = 3  // a newer session of this device took over: do not retry
	ReasonTimeout  CloseReason = 4  // heartbeats stopped
	ReasonLogout   CloseReason = 5  // reserved for management sessions
	ReasonUnpaired CloseReason = 6  // the device unpaired itself: do not retry
	ReasonProtocol CloseReason = 7  // the other side broke the protocol
	ReasonRenewed  CloseReason = 8  // renewal-only session done: reconnect now with the new certificate
	ReasonQuota    CloseReason = 9  // reserved for service tokens
	ReasonExpired  CloseReason = 10 // certificate expired past the grace period: pair again
	ReasonUnknown  CloseReason = 11 // the hub does not know this device: pair again
	ReasonSleep    CloseReason = 12 // the device goes to sleep: wake it with a ping when something waits
	// ReasonUnfriended ends a hub-to-hub link: the closing zone removed
	// the other from its friends, which removes it too.
	ReasonUnfriended CloseReason = 13
)

var reasonNames = map[CloseReason]string{
	ReasonNone: "none", ReasonShutdown: "shutdown", ReasonRevoked: "revoked",
	ReasonReplaced: "replaced", ReasonTimeout: "timeout", ReasonLogout: "logout",
	ReasonUnpaired: "unpaired", ReasonProtocol: "protocol error", ReasonRenewed: "renewed",
	ReasonQuota: "quota", ReasonExpired: "expired", ReasonUnknown: "unknown device", ReasonSleep: "sleep", ReasonUnfriended: "unfriended",
}

func (r CloseReason) String() string {
	if s, ok := reasonNames[r]; ok {
		return s
	}
	return fmt.Sprintf("reason %d", uint8(r))
}

// Final reports whether a peer must stop rather than reconnect.
func (r CloseReason) Final() bool {
	switch r {
	case ReasonRevoked, ReasonReplaced, ReasonUnpaired, ReasonExpired, ReasonUnknown:
		return true
	}
	return false
}

// RenewRequest asks for a fresh certificate for a new key.
type RenewRequest struct {
	CSR []byte `cbor:"1,keyasint"`
}

// RenewResponse carries the new certificate or an error.
type RenewResponse struct {
	Cert  []byte `cbor:"1,keyasint,omitempty"`
	Error string `cbor:"2,keyasint,omitempty"`
}

// UnpairRequest asks the hub to forget this device.
type UnpairRequest struct{}

// UnpairResponse confirms it.
type UnpairResponse struct {
	Error string `cbor:"1,keyasint,omitempty"`
}

// EndError is a session end after which the device must not reconnect:
// revoked, replaced by another pzp, unpaired, expired past grace.
type EndError struct {
	Reason  CloseReason
	Message string
}

func (e *EndError) Error() string {
	hint := ""
	switch e.Reason {
	case ReasonRevoked:
		hint = "; this device can no longer connect: pair it again with a new invite"
	case ReasonReplaced:
		hint = "; another pzp with this device's credentials took over the session"
	}
	if e.Message == "" {
		return fmt.Sprintf("session ended: %s%s", e.Reason, hint)
	}
	return fmt.Sprintf("session ended: %s: %s%s", e.Reason, e.Message, hint)
}

// maxSoftware bounds the Software text of a Hello kept and shown.
const maxSoftware = 64

// CleanSoftware is a Hello's Software text as a hub or device keeps and
// shows it: printable characters only, at most maxSoftware bytes; "" is
// "unknown".
func CleanSoftware(s string) string {
	s = strings.Map(func(r rune) rune {
		if unicode.IsPrint(r) {
			return r
		}
		return -1
	}, s)
	if len(s) > maxSoftware {
		s = strings.ToValidUTF8(s[:maxSoftware], "")
	}
	if s == "" {
		return "unknown"
	}
	return s
}
