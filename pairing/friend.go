package pairing

import (
	"crypto/tls"
	"errors"
	"time"
)

// Friend invites federate two zones: one hub prints a friend token, the
// other hub redeems it over ALPN pz-friend/1. The token has the invite
// token's shape (hub addresses, zone ID, invite id, secret) under its own
// prefix, so neither kind can be mistaken for the other. The redeeming hub
// pins the inviting hub to the token's zone ID; the inviting hub learns
// the redeeming zone from the CA certificate in its TLS chain, which the
// proof binds to the secret. See docs/PROTOCOL.md, "Friends".

// FriendTokenPrefix starts every friend token; the digit is the format
// version.
const FriendTokenPrefix = "PZF1"

// ErrBadFriendToken is wrapped by every ParseFriendToken failure.
var ErrBadFriendToken = errors.New("invalid friend token")

// FriendString encodes t as a friend token.
func (t *Token) FriendString() string { return t.encode(friendTokens) }

// ParseFriendToken decodes a friend token as a person pasted it.
func ParseFriendToken(s string) (*Token, error) { return parseToken(s, friendTokens) }

// Friend invite bounds, with why.
const (
	// DefaultFriendTTL: a friend token goes from one person to another,
	// often by message, and may wait a day before the other hub's owner
	// gets to it.
	DefaultFriendTTL = 24 * time.Hour
	// MaxFriendTTL: like a device invite, it is a bearer credential.
	MaxFriendTTL = MaxInviteTTL
)

// FriendExporterLabel is the TLS exporter label of the friend proof: a
// label of its own, so a device pairing proof can never pass for one.
const FriendExporterLabel = "EXPORTER-pzone-friend-v1"

// FriendProof is HMAC-SHA256(Verifier(secret), exporter(FriendExporterLabel,
// inviteID)) for the connection cs.
func FriendProof(cs tls.ConnectionState, inviteID string, verifier []byte) ([]byte, error) {
	return proof(cs, FriendExporterLabel, inviteID, verifier)
}

// CheckFriendProof reports whether p is right for this connection, in
// constant time.
func CheckFriendProof(cs tls.ConnectionState, inviteID string, verifier, p []byte) bool {
	return checkProof(cs, FriendExporterLabel, inviteID, verifier, p)
}

// FriendRequest redeems a friend invite: the redeeming hub opens one
// stream, writes it, and reads one FriendResponse.
type FriendRequest struct {
	Version  uint     `cbor:"1,keyasint"` // FriendProtocolVersion
	InviteID string   `cbor:"2,keyasint"`
	Proof    []byte   `cbor:"3,keyasint"` // see FriendProof
	Zone     string   `cbor:"4,keyasint"` // the redeeming zone's name
	HubAddrs []string `cbor:"5,keyasint"` // where the redeeming hub listens
}

// FriendResponse is the inviting hub's answer: Error set, or the rest.
type FriendResponse struct {
	Error    *Error   `cbor:"1,keyasint,omitempty"`
	Zone     string   `cbor:"2,keyasint,omitempty"` // the inviting zone's name
	HubAddrs []string `cbor:"3,keyasint,omitempty"`
}

// FriendProtocolVersion is the version of FriendRequest/FriendResponse.
const FriendProtocolVersion = 1
