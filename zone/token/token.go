// Package token is the logic of service tokens: the records of templates,
// tokens and their usage, making and parsing tokens, and the limits a new
// binding of a token may use, computed from the token and what its earlier
// bindings used. It is pure logic: where the records are kept and how a
// binding is cut is the hub's.
package token

import (
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base32"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"
)

// Service tokens, after the token-template model: the hub's operator
// defines templates of limits, issues tokens from them (singly or in named
// lots), and an application presents a token when it calls a service that
// requires one. The limits a binding may use are computed once, when it is
// made, from the token and what earlier bindings of it used; the hub's
// relay enforces them by counting bytes and with a timer, and ends the
// binding with the reason when one is reached.
//
// Templates, tokens and their usage are records in the zone state's tokens
// bucket (hub-only): template/NAME, token/ID and usage/ID. A token record
// holds only a hash of the token's secret, since every device holds the
// bucket.

// Duration is a time.Duration written in JSON as text ("90m"), 0 = none.
type Duration time.Duration

func (d Duration) MarshalJSON() ([]byte, error) {
	if d == 0 {
		return []byte(`""`), nil
	}
	return json.Marshal(time.Duration(d).String())
}

func (d *Duration) UnmarshalJSON(b []byte) error {
	var s string
	if err := json.Unmarshal(b, &s); err != nil {
		return err
	}
	if s == "" {
		*d = 0
		return nil
	}
	v, err := time.ParseDuration(s)
	if err != nil || v < 0 {
		return fmt.Errorf("bad duration %q", s)
	}
	*d = Duration(v)
	return nil
}

// Limits are what a token allows; zero means no limit.
type Limits struct {
	MaxBytesIn    int64 `json:"max_bytes_in,omitempty"`    // towards the service, over all bindings
	MaxBytesOut   int64 `json:"max_bytes_out,omitempty"`   // back to the application
	MaxBytesTotal int64 `json:"max_bytes_total,omitempty"` // both ways
	// MaxBinding bounds one binding; MaxUsage the sum of all bindings'
	// durations; MaxWall the time from first use; MaxAge the time from
	// issue.
	MaxBinding Duration `json:"max_binding,omitempty"`
	MaxUsage   Duration `json:"max_usage,omitempty"`
	MaxWall    Duration `json:"max_wall,omitempty"`
	MaxAge     Duration `json:"max_age,omitempty"`
	// SingleUse: one binding only.
	SingleUse bool `json:"single_use,omitempty"`
	// Devices where the token is valid (callers); empty means any device
	// of the zone.
	Devices []string `json:"devices,omitempty"`
}

// Template is a tokens/template/NAME record.
type Template struct {
	Name    string    `json:"name"`
	Created time.Time `json:"created"`
	Limits
}

// Token is a tokens/token/ID record. Its limits are the template's at
// issue, so changing a template does not change tokens already given out.
type Token struct {
	ID         string    `json:"id"`
	Template   string    `json:"template"`
	Lot        string    `json:"lot,omitempty"`
	Issued     time.Time `json:"issued"`
	Revoked    bool      `json:"revoked,omitempty"`
	SecretHash string    `json:"secret_hash"` // hex SHA-256 of the secret
	Limits
}

// Usage is a tokens/usage/ID record: what the token's ended bindings
// used.
type Usage struct {
	BytesIn  int64     `json:"bytes_in"`
	BytesOut int64     `json:"bytes_out"`
	Used     Duration  `json:"used"`
	FirstUse time.Time `json:"first_use,omitzero"`
	Bindings int       `json:"bindings"`
}

// Keys in the tokens bucket.
const (
	KeyTemplate = "template/"
	KeyToken    = "token/"
	KeyUsage    = "usage/"
)

var b32 = base32.StdEncoding.WithPadding(base32.NoPadding)

// New makes a token of tpl: the record to store, and the token an
// application presents (ID.SECRET), shown once.
func New(tpl *Template, lot string, now time.Time) (*Token, string) {
	id := make([]byte, 5)
	secret := make([]byte, 20)
	rand.Read(id)
	rand.Read(secret)
	t := &Token{ID: strings.ToLower(b32.EncodeToString(id)), Template: tpl.Name, Lot: lot, Issued: now.UTC(),
		SecretHash: hashSecret(strings.ToLower(b32.EncodeToString(secret))), Limits: tpl.Limits}
	return t, t.ID + "." + strings.ToLower(b32.EncodeToString(secret))
}

func hashSecret(s string) string {
	h := sha256.Sum256([]byte(s))
	return hex.EncodeToString(h[:])
}

// Split parses a presented token into its ID and secret.
func Split(s string) (id, secret string, err error) {
	id, secret, ok := strings.Cut(s, ".")
	if !ok || len(id) != 8 || len(secret) != 32 {
		return "", "", errors.New("malformed token: want ID.SECRET as pzh tokens issue printed it")
	}
	return id, secret, nil
}

// Matches reports whether secret is this token's.
func (t *Token) Matches(secret string) bool {
	return subtle.ConstantTimeCompare([]byte(hashSecret(secret)), []byte(t.SecretHash)) == 1
}

// Grant is the limits of one binding, computed once at bind time;
// a zero byte limit means none, a zero deadline none.
type Grant struct {
	BytesIn, BytesOut, BytesTotal int64
	Deadline                      time.Time
	// Expiry says why the deadline is what it is: "duration" (the
	// binding's own, or what is left of the token's usage time) or
	// "expired" (the token's age or time from first use).
	Expiry string
}

// ErrRefused is a token that may not make a binding now.
var ErrRefused = errors.New("token refused")

// Grant computes what a new binding by device may use of t, given what
// its earlier bindings used, at now.
func (t *Token) Grant(u Usage, device string, now time.Time) (Grant, error) {
	refuse := func(format string, args ...any) (Grant, error) {
		return Grant{}, fmt.Errorf("%w: token %s %s", ErrRefused, t.ID, fmt.Sprintf(format, args...))
	}
	switch {
	case t.Revoked:
		return refuse("was revoked")
	case len(t.Devices) > 0 && !slices.Contains(t.Devices, device):
		return refuse("is not valid on device %q", device)
	case t.SingleUse && u.Bindings > 0:
		return refuse("was for a single use, and has been used")
	}
	var l Grant
	remaining := func(max, used int64, what string) (int64, error) {
		if max == 0 {
			return 0, nil
		}
		if used >= max {
			return 0, fmt.Errorf("%w: token %s has used its %d bytes %s", ErrRefused, t.ID, max, what)
		}
		return max - used, nil
	}
	var err error
	if l.BytesIn, err = remaining(t.MaxBytesIn, u.BytesIn, "in"); err != nil {
		return Grant{}, err
	}
	if l.BytesOut, err = remaining(t.MaxBytesOut, u.BytesOut, "out"); err != nil {
		return Grant{}, err
	}
	if l.BytesTotal, err = remaining(t.MaxBytesTotal, u.BytesIn+u.BytesOut, "in all"); err != nil {
		return Grant{}, err
	}
	until := func(at time.Time, why string) {
		if l.Deadline.IsZero() || at.Before(l.Deadline) {
			l.Deadline, l.Expiry = at, why
		}
	}
	if t.MaxAge > 0 {
		end := t.Issued.Add(time.Duration(t.MaxAge))
		if !now.Before(end) {
			return refuse("expired on %s", end.Format(time.RFC3339))
		}
		until(end, "expired")
	}
	if t.MaxWall > 0 && !u.FirstUse.IsZero() {
		end := u.FirstUse.Add(time.Duration(t.MaxWall))
		if !now.Before(end) {
			return refuse("expired on %s, %v after its first use", end.Format(time.RFC3339), time.Duration(t.MaxWall))
		}
		until(end, "expired")
	} else if t.MaxWall > 0 {
		until(now.Add(time.Duration(t.MaxWall)), "expired")
	}
	if t.MaxUsage > 0 {
		left := time.Duration(t.MaxUsage) - time.Duration(u.Used)
		if left <= 0 {
			return refuse("has used its %v of use", time.Duration(t.MaxUsage))
		}
		until(now.Add(left), "duration")
	}
	if t.MaxBinding > 0 {
		until(now.Add(time.Duration(t.MaxBinding)), "duration")
	}
	return l, nil
}
