// Package wakeup wakes a sleeping device (pzp) from its hub (pzh) with a
// tiny authenticated UDP datagram, the wake ping.
//
// A sleeping device holds no connection to its hub, so the hub cannot push
// anything to it. Instead, while the device is still connected it sets up a
// per-session [Secret] with the hub over TLS; to wake it the hub sends one
// [Seal]ed ping to the address it last observed for the device, and the
// device, on receiving a ping its [Verifier] accepts, reconnects over the
// ordinary authenticated transport. The ping carries no command: it only
// says "connect now", so everything that matters still happens over TLS.
//
// # Wire format
//
// A ping is exactly [PingSize] (41) bytes:
//
//	version   1 byte   = Version (1)
//	wake id  16 bytes  Secret.ID, random per session
//	stamp     8 bytes  unix milliseconds, big-endian uint64
//	tag      16 bytes  HMAC-SHA256(Secret.Key, the 25 bytes above), truncated
//
// The ping names nothing: no zone, device, sender or content. The wake id
// is random per session, so an on-path observer learns only that something
// was woken, and cannot link sessions to each other.
//
// The device's UDP socket is shared with QUIC. quic-go hands the
// application any datagram whose first byte has its top two bits clear (no
// long-header bit, no fixed bit) as a non-QUIC packet, so every version of
// this format must keep those two bits zero; a future version is 2, 3, ...
// up to 0x3f.
//
// # Threat model
//
// Anyone can send datagrams to the device's port. A [Verifier] drops, without
// any reply (a reply would make the device a reflector and reveal that it is
// awake), and counts:
//   - truncated or oversized datagrams, or unknown versions ([Malformed]);
//   - pings without a valid tag for the current session's id and key
//     ([Forged]), including any ping arriving before a secret is set;
//   - pings whose stamp is outside the freshness window around the hub's
//     clock ([Stale]), so a captured ping is useless after the window;
//   - a second copy of a ping already accepted within the window
//     ([Replayed]).
//
// The worst an attacker who can capture and resend pings achieves is one
// extra wake-up per genuine ping within the window, and only if it beats the
// original. Waking is cheap and idempotent, which is why a 128-bit tag and a
// window of seconds suffice.
//
// What this package is not: it does not deliver the secret (the session
// does, over TLS), decide when to wake a device, or reconnect after a wake.
package wakeup

import (
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/binary"
	"fmt"
	"time"
)

// Sizes and version of the wire format described in the package doc.
const (
	// Version is the wire format version. Its top two bits must be zero
	// so that QUIC, which shares the socket, passes the datagram on as a
	// non-QUIC packet (see the package doc).
	Version byte = 1

	// IDSize is the length of a wake id: 128 random bits make collisions
	// between sessions negligible and ids unguessable.
	IDSize = 16

	// KeySize is the HMAC-SHA256 key length, the hash's output size, which
	// is all the strength HMAC-SHA256 can use.
	KeySize = 32

	// TagSize is the truncated tag length: 128 bits leaves forgery at
	// 2^-128 per try, while keeping the ping small.
	TagSize = 16

	// stampSize is the length of the unix-millisecond stamp.
	stampSize = 8

	// signedSize is how many leading bytes the tag covers.
	signedSize = 1 + IDSize + stampSize

	// PingSize is the exact length of a ping: 41 bytes.
	PingSize = signedSize + TagSize

	// DefaultWindow is how far a stamp may be from the hub's clock, each
	// way. The clock offset between hub and device is corrected separately
	// (Verifier.SetOffset), so the window need only cover one network
	// round trip plus scheduling delays on a busy or just-woken device;
	// 30 s does that with room to spare while keeping a captured ping
	// replayable for no more than that.
	DefaultWindow = 30 * time.Second

	// maxReplay bounds the replay cache. Only pings with a valid tag enter
	// it, so only the hub can fill it; a hub sending more than 4096 pings
	// within one window (over 130 a second at the default) is
	// misbehaving, and refusing the surplus costs nothing but wake-ups.
	maxReplay = 4096
)

// Secret is one session's wake id and key.
type Secret struct {
	ID  [IDSize]byte
	Key [KeySize]byte
}

// NewSecret returns a fresh random Secret from crypto/rand.
func NewSecret() (Secret, error) {
	var s Secret
	if _, err := rand.Read(s.ID[:]); err != nil {
		return Secret{}, fmt.Errorf("generate wake id: %w", err)
	}
	if _, err := rand.Read(s.Key[:]); err != nil {
		return Secret{}, fmt.Errorf("generate wake key: %w", err)
	}
	return s, nil
}

// IsZero reports whether s is the zero Secret, that is, not set up.
func (s Secret) IsZero() bool {
	return s == Secret{}
}

// Seal returns the ping for s stamped at t (t truncated to milliseconds).
func Seal(s Secret, t time.Time) []byte {
	b := make([]byte, PingSize)
	b[0] = Version
	copy(b[1:], s.ID[:])
	binary.BigEndian.PutUint64(b[1+IDSize:], uint64(t.UnixMilli()))
	copy(b[signedSize:], tag(&s.Key, b[:signedSize]))
	return b
}

// tag computes the truncated HMAC-SHA256 of signed under key.
func tag(key *[KeySize]byte, signed []byte) []byte {
	m := hmac.New(sha256.New, key[:])
	m.Write(signed)
	return m.Sum(nil)[:TagSize]
}

// Ping is a parsed, not yet verified, ping.
type Ping struct {
	ID   [IDSize]byte
	Time time.Time // from the unix millisecond stamp
	Tag  [TagSize]byte
}

// Parse checks b's length (empty or short: ErrTruncated; long:
// ErrOversized), then its version (ErrVersion), and returns its fields.
// It does not verify the tag. It never panics, whatever b holds.
func Parse(b []byte) (Ping, error) {
	switch {
	case len(b) < PingSize:
		return Ping{}, fmt.Errorf("%w: %d bytes, want %d", ErrTruncated, len(b), PingSize)
	case len(b) > PingSize:
		return Ping{}, fmt.Errorf("%w: %d bytes, want %d", ErrOversized, len(b), PingSize)
	case b[0] != Version:
		return Ping{}, fmt.Errorf("%w: %d, want %d", ErrVersion, b[0], Version)
	}
	var p Ping
	copy(p.ID[:], b[1:])
	// The stamp is read as a two's-complement int64 so that every stamp,
	// however absurd, maps to a time that Seal writes back unchanged.
	p.Time = time.UnixMilli(int64(binary.BigEndian.Uint64(b[1+IDSize:])))
	copy(p.Tag[:], b[signedSize:])
	return p, nil
}
