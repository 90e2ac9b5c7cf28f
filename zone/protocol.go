// Package zone runs a personal zone: the hub runtime (pzh serve) that
// accepts device sessions, redeems invites, renews and revokes
// certificates, and answers its admin socket; and the peer runtime (pzp run)
// that keeps one session with its hub. The session protocol spoken between
// them is defined here and in docs/PROTOCOL.md.
//
// It is not for transport mechanics (package transport) or PKI primitives
// (package certs).
package zone

import (
	"errors"
	"fmt"
	"os"
	"time"

	"github.com/pzone/pzone/transport"
)

// SessionVersion is the version of the session protocol carried in Hello.
// History: 1 — control stream, heartbeats, renewal, unpair, sync stream,
// call streams; 2 — wake registration (MsgWake, MsgWakeOK), Welcome's hub
// time, Close reason sleep, delivery later (CallHeader.TTLMs). A peer sends
// MsgWake only to a hub that answered Welcome with version 2 or later;
// 3 — calls to friend zones (CallHeader.ToZone, FromZoneID, Envelope;
// CallReply.Envelope), StreamDiscover.
const SessionVersion = 3

// federationVersion is the first session version whose hubs forward calls
// to friend zones: a device sends none to an older hub.
const federationVersion = 3

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
	// Pad is ignored. Over QUIC a Ping carries pingPad bytes of it so its
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
}

// pingPad is the padding a Ping carries over QUIC (see Control.Pad).
const pingPad = 10

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

// final reports whether a peer must stop rather than reconnect.
func (r CloseReason) final() bool {
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

// Session timing, with why.
const (
	// DefaultHeartbeat is how often a peer pings. It trades how fast a
	// silently dead link is noticed (DeadAfter: 4.5 min) against idle
	// traffic: one ping/pong exchange costs ~110 B over QUIC and ~130 B
	// over TCP (measured by make bench), so 90 s keeps an idle session
	// under 100 B/min, and inside the 2 min that RFC 4787 requires NATs
	// to keep a UDP mapping. A hub that restarts or shuts down is noticed
	// at once regardless (Close frame, TCP reset).
	DefaultHeartbeat = 90 * time.Second
	// MinHeartbeat keeps a misconfigured hub from flooding its devices.
	MinHeartbeat = 100 * time.Millisecond
	// MaxHeartbeat keeps DeadAfter below transportIdle, so the session
	// layer, which can say why, always notices a dead link first.
	MaxHeartbeat = 3 * time.Minute
	// transportIdle is the QUIC/TCP idle timeout of sessions on both
	// sides: a backstop above DeadAfter(MaxHeartbeat).
	transportIdle = 10 * time.Minute
	// helloTimeout bounds how long an authenticated connection may sit
	// without saying Hello.
	helloTimeout = 10 * time.Second
	// closeLinger is how long a side that sent Close waits for the other to
	// hang up, so the frame is read before the connection is torn down.
	closeLinger = 500 * time.Millisecond
	// streamTimeout bounds a one-shot exchange (renew, unpair).
	streamTimeout = 15 * time.Second
	// maxControlFrame: control frames are a few dozen bytes.
	maxControlFrame = 4 << 10
	// maxRequestFrame: one CSR or certificate.
	maxRequestFrame = 16 << 10
)

// Reconnect spreading after a hub shutdown, with why.
const (
	// restartRate is the handshake rate a restarting hub plans for: the
	// benchmark measures 1,200–1,900 sessions/s on 2 cores, so 1,000/s
	// leaves headroom on smaller hosts.
	restartRate = 1000
	// minRetryWindow: below this the jitter of the normal backoff suffices.
	minRetryWindow = time.Second
	// maxRetryWindow bounds what a hub may ask devices to wait.
	maxRetryWindow = 5 * time.Minute
)

// retryWindow is the reconnect window a hub with n sessions announces.
func retryWindow(n int) time.Duration {
	w := time.Duration(n) * time.Second / restartRate
	return min(max(w, minRetryWindow), maxRetryWindow)
}

// DeadAfter is how long without a frame from the other side before a
// session is declared dead: three missed heartbeats.
func DeadAfter(heartbeat time.Duration) time.Duration { return 3 * heartbeat }

// readControl reads the next frame of a control stream of conn into c.
// The other side counts as gone once dead passes with nothing at all
// arriving on the connection, not merely no control frame: a session busy
// with calls or sync whose heartbeat runs late (a loaded host, a GC pause)
// is not cut for it. An idle session sends only heartbeats, so for it the
// two are the same.
func readControl(conn transport.Conn, ctrl transport.Stream, fr *transport.FrameReader, dead time.Duration, c *Control) error {
	for {
		seen := conn.Stats().BytesReceived
		ctrl.SetReadDeadline(time.Now().Add(dead))
		err := fr.ReadFrame(c)
		// Only a deadline between frames leaves fr in step to wait again.
		if err == nil || !errors.Is(err, os.ErrDeadlineExceeded) || conn.Stats().BytesReceived == seen {
			return err
		}
	}
}

// SoftwareVersion is sent in Hello and shown by status commands.
const SoftwareVersion = "pzone/0.1"
