package pairing

import (
	"crypto/rand"
	"crypto/sha256"
	"encoding/base32"
	"errors"
	"fmt"
	"strings"
	"time"
)

// Invite template bounds and defaults, with why.
const (
	// DefaultInviteTTL: long enough to walk to the device and paste the
	// token, short enough that a token left in a chat log soon goes stale.
	DefaultInviteTTL = 15 * time.Minute
	// MaxInviteTTL: an invite is a bearer credential; a week covers posting
	// a device to someone.
	MaxInviteTTL = 7 * 24 * time.Hour
	// DefaultCertLifetime is the device certificate lifetime; it renews
	// itself at 2/3 of it over the live session.
	DefaultCertLifetime = 90 * 24 * time.Hour
	// MinCertLifetime keeps renewal traffic sane (it renews at 2/3).
	MinCertLifetime = 30 * time.Second
	// MaxCertLifetime: short-lived certificates are the point of renewal.
	MaxCertLifetime = 2 * 365 * 24 * time.Hour
	// MaxInviteUses bounds a lot invite (e.g. a family's devices).
	MaxInviteUses = 1000
	// inviteIDBytes: 40 bits in 8 base32 characters, easy to type into
	// pzh invite cancel; uniqueness is checked at creation.
	inviteIDBytes = 5
)

// Invite is the hub's record of an invite. It never holds the secret, only
// Verifier = SHA-256 over a label and the secret.
type Invite struct {
	ID           string        `cbor:"1,keyasint"`
	Device       string        `cbor:"2,keyasint"`
	Verifier     []byte        `cbor:"3,keyasint"`
	Created      time.Time     `cbor:"4,keyasint"`
	Expires      time.Time     `cbor:"5,keyasint"`
	Uses         int           `cbor:"6,keyasint"` // total allowed
	UsesLeft     int           `cbor:"7,keyasint"` // decremented on each redemption
	CertLifetime time.Duration `cbor:"8,keyasint"`
	Cancelled    bool          `cbor:"9,keyasint"`
	Devices      []string      `cbor:"10,keyasint,omitempty"` // devices paired with it
	// A code invite (pzh invite --code) also holds its short code: the
	// number that names it among open code invites, and the secret words
	// in the clear, which the hub needs for CPace (a balanced PAKE: both
	// ends hold the password). WrongCodes counts failed key
	// confirmations; at MaxWrongCodes the invite is burned.
	CodeNumber uint32 `cbor:"11,keyasint,omitempty"`
	CodeSecret []byte `cbor:"12,keyasint,omitempty"`
	WrongCodes int    `cbor:"13,keyasint,omitempty"`
}

// Template is what the hub operator asks for.
type Template struct {
	Device       string
	TTL          time.Duration
	Uses         int
	CertLifetime time.Duration
}

// WithDefaults fills zero fields.
func (t Template) WithDefaults() Template {
	if t.TTL == 0 {
		t.TTL = DefaultInviteTTL
	}
	if t.Uses == 0 {
		t.Uses = 1
	}
	if t.CertLifetime == 0 {
		t.CertLifetime = DefaultCertLifetime
	}
	return t
}

// Validate checks the template's bounds (device names are checked by the
// caller with certs.ValidateName).
func (t Template) Validate() error {
	switch {
	case t.TTL <= 0 || t.TTL > MaxInviteTTL:
		return fmt.Errorf("invite ttl %v out of range: use more than 0 and at most %v", t.TTL, MaxInviteTTL)
	case t.Uses < 1 || t.Uses > MaxInviteUses:
		return fmt.Errorf("invite uses %d out of range: use 1 to %d", t.Uses, MaxInviteUses)
	case t.CertLifetime < MinCertLifetime || t.CertLifetime > MaxCertLifetime:
		return fmt.Errorf("certificate lifetime %v out of range: use %v to %v", t.CertLifetime, MinCertLifetime, MaxCertLifetime)
	}
	return nil
}

// NewInvite makes an invite record and the secret for its token.
func NewInvite(t Template, now time.Time) (*Invite, []byte, error) {
	t = t.WithDefaults()
	if err := t.Validate(); err != nil {
		return nil, nil, err
	}
	secret := make([]byte, SecretSize)
	idb := make([]byte, inviteIDBytes)
	if _, err := rand.Read(secret); err != nil {
		return nil, nil, err
	}
	if _, err := rand.Read(idb); err != nil {
		return nil, nil, err
	}
	v := Verifier(secret)
	return &Invite{
		ID:           strings.ToLower(base32.StdEncoding.EncodeToString(idb)),
		Device:       t.Device,
		Verifier:     v[:],
		Created:      now.UTC(),
		Expires:      now.Add(t.TTL).UTC(),
		Uses:         t.Uses,
		UsesLeft:     t.Uses,
		CertLifetime: t.CertLifetime,
	}, secret, nil
}

// validInviteID accepts the form NewInvite makes: lower case only, since
// the hub checks the proof against the lower-case id.
func validInviteID(id string) bool {
	if len(id) != 8 {
		return false
	}
	for _, c := range id {
		if !(c >= 'a' && c <= 'z' || c >= '2' && c <= '7') {
			return false
		}
	}
	return true
}

// NormalizeInviteID lower-cases an id typed by a person and checks its form.
func NormalizeInviteID(id string) (string, error) {
	id = strings.ToLower(strings.TrimSpace(id))
	if !validInviteID(id) {
		return "", fmt.Errorf("invalid invite id %q: ids are 8 characters, as pzh invites lists them", id)
	}
	return id, nil
}

// Invite states a redemption can fail on, after the proof checked out.
var (
	ErrInviteExpired   = errors.New("invite expired")
	ErrInviteUsedUp    = errors.New("invite already used")
	ErrInviteCancelled = errors.New("invite cancelled")
	ErrInviteBurned    = errors.New("invite burned by wrong codes")
)

// Usable reports why the invite cannot be redeemed at now, or nil.
func (inv *Invite) Usable(now time.Time) error {
	switch {
	case inv.Cancelled:
		return ErrInviteCancelled
	case inv.CodeNumber != 0 && inv.WrongCodes >= MaxWrongCodes:
		return ErrInviteBurned
	case inv.UsesLeft <= 0:
		return ErrInviteUsedUp
	case !now.Before(inv.Expires):
		return ErrInviteExpired
	}
	return nil
}

// DeviceForUse names the device paired by the next use: the template's
// name for the first, then name-2, name-3, … for a multi-use invite.
func (inv *Invite) DeviceForUse() string {
	n := inv.Uses - inv.UsesLeft + 1
	if n <= 1 {
		return inv.Device
	}
	return fmt.Sprintf("%s-%d", inv.Device, n)
}

// verifierLabel domain-separates the stored hash from any other use of
// the secret.
const verifierLabel = "pzone invite verifier v1\x00"

// Verifier is what the hub stores for a secret, and the HMAC key of the
// pairing proof.
func Verifier(secret []byte) [32]byte {
	return sha256.Sum256(append([]byte(verifierLabel), secret...))
}
