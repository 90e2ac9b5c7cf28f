// Package pairing enrols a device into a zone with a one-time invite: the
// invite token people copy from hub to device, the proof of the invite
// secret bound to the TLS connection, the invite records and rate limits
// the hub keeps, and the client side of the exchange.
//
// It is not for running the hub: the hub's session runtime (package zone)
// stores invites and serves the exchange using the types here.
package pairing

import (
	"bytes"
	"crypto/sha256"
	"encoding/base32"
	"errors"
	"fmt"
	"strings"

	"github.com/pzone/pzone/certs"
	"github.com/pzone/pzone/transport"
)

// TokenPrefix starts every invite token; the digit is the token format
// version. Upper case only, so a token fits QR alphanumeric mode.
const TokenPrefix = "PZI1"

// SecretSize is the invite secret length: 256 bits, far past guessing even
// without the rate limit.
const SecretSize = 32

// Token bounds, so a parser never trusts sizes it is handed.
const (
	maxTokenLen   = 2048 // a token with 8 long addresses stays well below
	maxTokenAddrs = 8
	maxAddrLen    = 255
	checksumSize  = 4 // catches copy/paste damage; security comes from the secret
)

// tokenEncoding is base32 without padding: case-insensitive when typed,
// QR alphanumeric-friendly.
var tokenEncoding = base32.StdEncoding.WithPadding(base32.NoPadding)

// Token is what an invite hands to a device: where the hub is, which zone
// to expect, which invite and its secret.
type Token struct {
	Addrs    []string     // hub addresses, host:port, tried in order
	Zone     certs.ZoneID // pins the hub: its CA must have this ID
	InviteID string
	Secret   []byte
}

type tokenWire struct {
	_        struct{} `cbor:",toarray"`
	Addrs    []string
	Zone     string // compact zone ID
	InviteID string
	Secret   []byte
}

// tokenKind is what tells device invites and friend invites apart: their
// prefix, and how errors name them.
type tokenKind struct {
	prefix  string // with the format version digit
	family  string // the prefix without the version
	err     error  // wrapped by every parse failure
	printer string // the command that prints such tokens
	user    string // the command that takes them
}

var (
	deviceTokens = tokenKind{prefix: TokenPrefix, family: "PZI", err: ErrBadToken, printer: "pzh invite", user: "pzp"}
	friendTokens = tokenKind{prefix: FriendTokenPrefix, family: "PZF", err: ErrBadFriendToken, printer: "pzh friend invite", user: "pzh"}
)

// String encodes the token as one line: TokenPrefix + base32(CBOR body +
// 4-byte SHA-256 checksum).
func (t *Token) String() string { return t.encode(deviceTokens) }

func (t *Token) encode(k tokenKind) string {
	body, err := transport.Marshal(tokenWire{Addrs: t.Addrs, Zone: t.Zone.Compact(), InviteID: t.InviteID, Secret: t.Secret})
	if err != nil {
		panic("pairing: encode token: " + err.Error()) // only plain strings and bytes: cannot fail
	}
	sum := sha256.Sum256(body)
	return k.prefix + tokenEncoding.EncodeToString(append(body, sum[:checksumSize]...))
}

// ErrBadToken is wrapped by every ParseToken failure.
var ErrBadToken = errors.New("invalid invite token")

// ParseToken decodes a token as a person pasted it: surrounding white space
// and case do not matter.
func ParseToken(s string) (*Token, error) { return parseToken(s, deviceTokens) }

func parseToken(s string, k tokenKind) (*Token, error) {
	s = strings.ToUpper(strings.TrimSpace(s))
	if len(s) > maxTokenLen {
		return nil, fmt.Errorf("%w: too long (%d characters)", k.err, len(s))
	}
	rest, ok := strings.CutPrefix(s, k.prefix)
	if !ok {
		if strings.HasPrefix(s, k.family) {
			return nil, fmt.Errorf("%w: made by a different pzone version (want %s…): update %s or ask for a new invite", k.err, k.prefix, k.user)
		}
		for _, other := range []tokenKind{deviceTokens, friendTokens} {
			if other.prefix != k.prefix && strings.HasPrefix(s, other.prefix) {
				return nil, fmt.Errorf("%w: this is a token of %s, not of %s", k.err, other.printer, k.printer)
			}
		}
		return nil, fmt.Errorf("%w: it should start with %s; copy the whole line %s printed", k.err, k.prefix, k.printer)
	}
	raw, err := tokenEncoding.DecodeString(rest)
	if err != nil || len(raw) <= checksumSize {
		return nil, fmt.Errorf("%w: damaged (not valid base32); copy it again", k.err)
	}
	// The decoder ignores the unused low bits of the last character, so a
	// changed last character can decode to the same bytes; only the
	// spelling String writes is valid (line breaks, which the decoder
	// skips, aside).
	if tokenEncoding.EncodeToString(raw) != strings.NewReplacer("\r", "", "\n", "").Replace(rest) {
		return nil, fmt.Errorf("%w: damaged (last character changed); copy it again", k.err)
	}
	body, sum := raw[:len(raw)-checksumSize], raw[len(raw)-checksumSize:]
	want := sha256.Sum256(body)
	if !bytes.Equal(sum, want[:checksumSize]) {
		return nil, fmt.Errorf("%w: damaged (checksum mismatch); copy it again", k.err)
	}
	var w tokenWire
	if err := transport.Unmarshal(body, &w); err != nil {
		return nil, fmt.Errorf("%w: damaged (%v)", k.err, err)
	}
	zone, err := certs.ParseZoneID(w.Zone)
	if err != nil {
		return nil, fmt.Errorf("%w: %v", k.err, err)
	}
	if len(w.Addrs) == 0 || len(w.Addrs) > maxTokenAddrs {
		return nil, fmt.Errorf("%w: it names %d hub addresses (want 1 to %d)", k.err, len(w.Addrs), maxTokenAddrs)
	}
	for _, a := range w.Addrs {
		if len(a) == 0 || len(a) > maxAddrLen {
			return nil, fmt.Errorf("%w: bad hub address", k.err)
		}
	}
	if !validInviteID(w.InviteID) {
		return nil, fmt.Errorf("%w: bad invite id", k.err)
	}
	if len(w.Secret) != SecretSize {
		return nil, fmt.Errorf("%w: secret is %d bytes (want %d)", k.err, len(w.Secret), SecretSize)
	}
	return &Token{Addrs: w.Addrs, Zone: zone, InviteID: w.InviteID, Secret: w.Secret}, nil
}
