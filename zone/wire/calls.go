package wire

import (
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/pzone/pzone/certs"
)

// Calls and messages between applications (docs/PROTOCOL.md, "Calls").
// Each exchange is one StreamCall stream: the caller's peer opens it to
// the hub with a CallHeader and the request body, the hub authenticates
// the sender, opens a stream to the target device, and from then on
// copies bytes both ways without reading them; the target's peer answers
// with a CallReply and the result. A call to a service on the caller's
// own device never leaves it.

// CallKind says whether an exchange expects a result.
type CallKind uint8

const (
	CallRequest CallKind = 1 // a call: the service's result comes back
	CallMessage CallKind = 2 // a one-way message: only its delivery is confirmed
)

// CallHeader opens a call stream, after the StreamHeader. Fields From*
// are set by the hub from the authenticated session (a device's own
// values are overwritten), except FromApp, which the sending device
// vouches for.
type CallHeader struct {
	ID         string   `cbor:"1,keyasint"`
	Kind       CallKind `cbor:"2,keyasint"`
	FromZone   string   `cbor:"3,keyasint,omitempty"`
	FromDevice string   `cbor:"4,keyasint,omitempty"`
	FromApp    string   `cbor:"5,keyasint,omitempty"`
	ToDevice   string   `cbor:"6,keyasint"`
	ToService  string   `cbor:"7,keyasint"`
	Method     string   `cbor:"8,keyasint,omitempty"`
	// TimeoutMs is the time left for the whole exchange; each hop
	// measures its own deadline from it, so clocks need not agree.
	TimeoutMs uint64 `cbor:"9,keyasint"`
	// Token is the service token the caller presents (ID.SECRET); the hub
	// checks it and forwards only its ID, as TokenID.
	Token   string `cbor:"10,keyasint,omitempty"`
	TokenID string `cbor:"11,keyasint,omitempty"`
	// TTLMs asks for delivery later: a message for a device that is away
	// is kept at the hub this long (and the device woken); a call waits
	// this long for the device to come back.
	TTLMs uint64 `cbor:"12,keyasint,omitempty"`
	// QueuedMs, from the hub only: the message waited in the hub's queue,
	// kept since this time (unix ms). It may arrive twice (the hub lost
	// the confirmation); the device drops a repeat of a recent ID.
	QueuedMs int64 `cbor:"13,keyasint,omitempty"`
	// ToZone names the service's zone when it is not the caller's own: a
	// friend's compact zone ID (or petname, as the caller's zone knows
	// it). Only the caller's hub reads it; it forwards the call to that
	// friend's hub.
	ToZone string `cbor:"14,keyasint,omitempty"`
	// FromZoneID is the caller's compact zone ID. Hubs set it: on a call
	// from a friend zone it is that zone's, proven by the link the call
	// came over; empty or this zone's own means a call from within.
	FromZoneID string `cbor:"15,keyasint,omitempty"`
	// Envelope is the calling device's signature over the call, on every
	// call that crosses zones (envelope.go).
	Envelope *Envelope `cbor:"16,keyasint,omitempty"`
}

// CallStatus is the outcome in a CallReply.
type CallStatus uint8

const (
	CallOK          CallStatus = 0
	CallNotFound    CallStatus = 1 // no such device or service
	CallOffline     CallStatus = 2 // the device is not connected, or the service is not running
	CallDenied      CallStatus = 3 // policy refused it; Message names the rule or default
	CallDeadline    CallStatus = 4 // the deadline passed
	CallFailed      CallStatus = 5 // the service answered with an error (Message)
	CallBadRequest  CallStatus = 6 // malformed header or body
	CallUnavailable CallStatus = 7 // the node is shutting down or overloaded
	CallQueueFull   CallStatus = 8 // delivery later: the device's queue at the hub is full
)

var callStatusNames = map[CallStatus]string{
	CallOK: "ok", CallNotFound: "not found", CallOffline: "offline", CallDenied: "denied",
	CallDeadline: "deadline exceeded", CallFailed: "failed", CallBadRequest: "bad request", CallUnavailable: "unavailable",
	CallQueueFull: "queue full",
}

func (s CallStatus) String() string {
	if n, ok := callStatusNames[s]; ok {
		return n
	}
	return fmt.Sprintf("status %d", uint8(s))
}

// CallReply is the first frame the caller reads back: the outcome, then
// (CallOK) the result as data frames until the stream's end.
type CallReply struct {
	Status  CallStatus `cbor:"1,keyasint,omitempty"`
	Message string     `cbor:"2,keyasint,omitempty"`
	// Queued: a message sent for later is kept at the hub, not yet
	// delivered, until ExpiresMs (unix ms).
	Queued    bool  `cbor:"3,keyasint,omitempty"`
	ExpiresMs int64 `cbor:"4,keyasint,omitempty"`
	// Envelope is the serving device's signature over the result, on a
	// call that crossed zones (absent on failures, which hubs may say).
	Envelope *Envelope `cbor:"5,keyasint,omitempty"`
}

// CallError is a call that did not succeed, with the status that says why.
type CallError struct {
	Status  CallStatus
	Message string
}

func (e *CallError) Error() string {
	if e.Message == "" {
		return e.Status.String()
	}
	return e.Message
}

// Call limits, with why.
const (
	// DefaultCallTimeout applies when a caller gives none.
	DefaultCallTimeout = 30 * time.Second
	// MaxCallTimeout bounds what a caller may ask: longer exchanges are
	// bulk transfers or subscriptions, not calls.
	MaxCallTimeout = 10 * time.Minute
	// MaxCallHeader: names and an id.
	MaxCallHeader = 4 << 10
	// MaxCallBody bounds a call's request or result, held in memory at
	// both ends and at the hub (the local API's own limit): bulk data
	// belongs on a stream, not in a call.
	MaxCallBody = 1 << 20
	// CallChunk is the largest data frame a sender writes.
	CallChunk = 64 << 10
	// DefaultCallBodyWait is how long a call's request body may take, after
	// its header, beyond the time CallBodyRate allows for what has arrived:
	// every sender writes the body right behind the header, so this is a
	// round trip or two on a poor link, with room to spare.
	DefaultCallBodyWait = 5 * time.Second
	// CallBodyRate (bytes a second) is the slowest a request body may
	// arrive once it flows: 32 kbit/s, a poor mobile link, so a large body
	// from a slow but honest sender is not cut (1 MiB may take 4 min 21 s),
	// while one that stalls is.
	CallBodyRate = 4 << 10
)

func NewCallID() string {
	b := make([]byte, 8)
	rand.Read(b)
	return hex.EncodeToString(b)
}

// Addr is where a call goes: a service on a device of a zone.
type Addr struct {
	Zone    string // empty: the caller's own zone
	Device  string
	Service string
}

func (a Addr) String() string {
	if a.Zone != "" {
		return a.Zone + "/" + a.Device + "/" + a.Service
	}
	return a.Device + "/" + a.Service
}

// ParseAddr reads DEVICE/SERVICE or ZONE/DEVICE/SERVICE.
func ParseAddr(s string) (Addr, error) {
	parts := strings.Split(s, "/")
	var a Addr
	switch len(parts) {
	case 2:
		a = Addr{Device: parts[0], Service: parts[1]}
	case 3:
		a = Addr{Zone: parts[0], Device: parts[1], Service: parts[2]}
	default:
		return Addr{}, fmt.Errorf("address %q: want DEVICE/SERVICE or ZONE/DEVICE/SERVICE", s)
	}
	if a.Zone != "" {
		if err := certs.ValidateName("zone", a.Zone); err != nil {
			return Addr{}, fmt.Errorf("address %q: %w", s, err)
		}
	}
	if err := certs.ValidateName("device", a.Device); err != nil {
		return Addr{}, fmt.Errorf("address %q: %w", s, err)
	}
	if err := ValidateServiceName(a.Service); err != nil {
		return Addr{}, fmt.Errorf("address %q: %w", s, err)
	}
	return a, nil
}

// ValidateServiceName checks a service, app or method name: 1-64 of
// lower-case letters, digits, '-', '_' and '.'.
func ValidateServiceName(s string) error {
	if s == "" || len(s) > 64 {
		return fmt.Errorf("invalid name %q: use 1-64 lower-case letters, digits, '-', '_' or '.'", s)
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !('a' <= c && c <= 'z' || '0' <= c && c <= '9' || c == '-' || c == '_' || c == '.') {
			return fmt.Errorf("invalid name %q: use 1-64 lower-case letters, digits, '-', '_' or '.'", s)
		}
	}
	return nil
}

// CheckCallHeader validates what a peer or the hub received.
func CheckCallHeader(h *CallHeader) error {
	if h.Kind != CallRequest && h.Kind != CallMessage && h.Kind != CallStream {
		return fmt.Errorf("unknown call kind %d", h.Kind)
	}
	if h.ID == "" || len(h.ID) > 64 {
		return errors.New("bad call id")
	}
	if err := certs.ValidateName("device", h.ToDevice); err != nil {
		return err
	}
	if err := ValidateServiceName(h.ToService); err != nil {
		return err
	}
	if h.Method != "" {
		if err := ValidateServiceName(h.Method); err != nil {
			return fmt.Errorf("method: %w", err)
		}
	}
	if h.FromApp != "" {
		if err := ValidateServiceName(h.FromApp); err != nil {
			return fmt.Errorf("app: %w", err)
		}
	}
	if h.ToZone != "" {
		if _, err := certs.ParseZoneID(h.ToZone); err != nil && certs.ValidateName("zone", h.ToZone) != nil {
			return fmt.Errorf("zone %q: neither a zone name nor a zone ID", h.ToZone)
		}
	}
	if h.FromZoneID != "" {
		if id, err := certs.ParseZoneID(h.FromZoneID); err != nil || id.Compact() != h.FromZoneID {
			return errors.New("bad caller zone ID")
		}
	}
	if h.TTLMs > uint64(MaxTTL/time.Millisecond) {
		return fmt.Errorf("time to live %v: at most %v", time.Duration(h.TTLMs)*time.Millisecond, MaxTTL)
	}
	return nil
}

// CallTimeout is the time an exchange may take, from its header.
func CallTimeout(h *CallHeader) time.Duration {
	d := time.Duration(h.TimeoutMs) * time.Millisecond
	if d <= 0 {
		return DefaultCallTimeout
	}
	return min(d, MaxCallTimeout)
}

// MaxTTL is the longest a sender may ask a message to wait.
const MaxTTL = 30 * 24 * time.Hour

// Envelope is a signature on a call, a message or an answer.
type Envelope struct {
	// Cert is the signer's node certificate (DER), issued by its zone CA.
	Cert []byte `cbor:"1,keyasint"`
	// TimeMs is when it was signed, unix ms, by the signer's clock.
	TimeMs int64 `cbor:"2,keyasint"`
	// Sig is the Ed25519 signature over the signed content.
	Sig []byte `cbor:"3,keyasint"`
}

const (
	// DefaultCallsPerTarget bounds the calls in flight to one target: below
	// the streams a device accepts (transport.DefaultMaxIncomingStreams,
	// 256), so that the hub's own deliveries to it (queued messages, the
	// couriers) always find a stream.
	DefaultCallsPerTarget = 192
	// CallTargetShare: one caller may hold at most this fraction (1/N) of
	// a target's calls, so it takes N callers each at its limit to fill a
	// target. With the defaults, 48: also below the 64 a friend's hub
	// allows this zone's link, so one device cannot take all of it.
	CallTargetShare = 4
	// StreamsPerSession bounds the byte streams open at once on one
	// device's session, each way: those it opens to the hub and those the
	// hub opens to it. An open stream holds a transport stream for as
	// long as it lasts, but no call slot, so without this bound long-lived
	// streams (a forward's connections, say) could take every stream the
	// session carries and leave calls none. DefaultCallsPerTarget plus
	// this stays below the streams a device accepts
	// (transport.DefaultMaxIncomingStreams, 512), leaving 64 for the hub's
	// own deliveries and the session's sync and renewal streams.
	StreamsPerSession = 256
)
