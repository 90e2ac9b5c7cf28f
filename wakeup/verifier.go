package wakeup

import (
	"crypto/hmac"
	"crypto/subtle"
	"fmt"
	"sync"
	"sync/atomic"
	"time"
)

// Verdict is what a Verifier decided about one datagram. Every verdict but
// Accepted means: drop it, send nothing back.
type Verdict uint8

// Verdicts, in the order Check tests for them.
const (
	// Accepted: a fresh, authentic, first-seen ping; wake up.
	Accepted Verdict = iota
	// Malformed: wrong length or unknown version (see Parse).
	Malformed
	// Forged: no secret is set, or the id or tag does not match it.
	Forged
	// Stale: authentic, but stamped outside the freshness window.
	Stale
	// Replayed: authentic and fresh, but already accepted (or the replay
	// cache is full).
	Replayed
)

// String returns the verdict's lower-case name, as used in Counters' JSON.
func (v Verdict) String() string {
	switch v {
	case Accepted:
		return "accepted"
	case Malformed:
		return "malformed"
	case Forged:
		return "forged"
	case Stale:
		return "stale"
	case Replayed:
		return "replayed"
	}
	return fmt.Sprintf("Verdict(%d)", uint8(v))
}

// Counters count a Verifier's verdicts since it was made. The JSON field
// names are stable and always present.
type Counters struct {
	Accepted  uint64 `json:"accepted"`
	Malformed uint64 `json:"malformed"`
	Forged    uint64 `json:"forged"`
	Stale     uint64 `json:"stale"`
	Replayed  uint64 `json:"replayed"`
}

// Verifier checks pings against the current session's secret. It is safe
// for concurrent use.
type Verifier struct {
	window time.Duration
	now    func() time.Time

	// counts is indexed by Verdict; atomic so that malformed datagrams
	// never take the lock.
	counts [Replayed + 1]atomic.Uint64

	mu     sync.Mutex
	secret Secret        // zero: none set, everything is Forged
	offset time.Duration // hub clock minus device clock
	// seen holds the unix-ms stamps accepted under secret. A valid tag is
	// unique per stamp under one key, so the stamp identifies the ping.
	seen map[int64]struct{}
	// floor is the highest prune cutoff used under secret: stamps before
	// it may have been forgotten, so they are Stale even if the clock (or
	// the offset) has since moved back.
	floor    time.Time
	floorSet bool
}

// NewVerifier returns a Verifier with no secret set, which rejects every
// ping as Forged until SetSecret. window is the freshness window each way
// (DefaultWindow if window <= 0); now is the device's clock (time.Now if nil).
func NewVerifier(window time.Duration, now func() time.Time) *Verifier {
	if window <= 0 {
		window = DefaultWindow
	}
	if now == nil {
		now = time.Now
	}
	return &Verifier{window: window, now: now, seen: make(map[int64]struct{})}
}

// SetSecret replaces the secret, for a new session, and clears the replay
// cache: the old session's pings are Forged from now on. Setting the zero
// Secret leaves none set.
func (v *Verifier) SetSecret(s Secret) {
	v.mu.Lock()
	defer v.mu.Unlock()
	v.secret = s
	clear(v.seen)
	v.floor, v.floorSet = time.Time{}, false
}

// Secret returns the current secret, the zero Secret if none is set.
func (v *Verifier) Secret() Secret {
	v.mu.Lock()
	defer v.mu.Unlock()
	return v.secret
}

// SetOffset sets the hub's clock minus this device's clock, as learned
// during the session: ping stamps are compared with now()+d.
//
// Stamps that the replay cache may have forgotten stay Stale under this
// secret even if now()+d moves back, so lowering the offset by more than
// the window mid-session rejects the hub's pings until its clock passes the
// old cutoff; learn the offset before pings are expected, or SetSecret.
func (v *Verifier) SetOffset(d time.Duration) {
	v.mu.Lock()
	defer v.mu.Unlock()
	v.offset = d
}

// Check decides what to do with one received datagram b and counts the
// verdict. It tests, in order: that b parses (else Malformed); that a secret
// is set and b's id and tag match it (else Forged); that b's stamp is within
// the window of now()+offset (else Stale); and that b was not accepted
// before under this secret (else Replayed).
func (v *Verifier) Check(b []byte) Verdict {
	verdict := v.check(b)
	v.counts[verdict].Add(1)
	return verdict
}

func (v *Verifier) check(b []byte) Verdict {
	p, err := Parse(b)
	if err != nil {
		return Malformed
	}

	v.mu.Lock()
	defer v.mu.Unlock()

	if v.secret.IsZero() ||
		subtle.ConstantTimeCompare(p.ID[:], v.secret.ID[:]) != 1 ||
		!hmac.Equal(p.Tag[:], tag(&v.secret.Key, b[:signedSize])) {
		return Forged
	}

	ref := v.now().Add(v.offset)
	// Sub saturates instead of overflowing, so absurd stamps are simply
	// very stale.
	if d := p.Time.Sub(ref); d < -v.window || d > v.window ||
		(v.floorSet && p.Time.Before(v.floor)) {
		return Stale
	}

	stamp := p.Time.UnixMilli()
	if _, ok := v.seen[stamp]; ok {
		return Replayed
	}
	v.prune(ref.Add(-v.window))
	if len(v.seen) >= maxReplay {
		return Replayed
	}
	v.seen[stamp] = struct{}{}
	return Accepted
}

// prune forgets stamps before cutoff (or before an earlier, later cutoff),
// which Check now rejects as Stale anyway. It runs only for authentic
// pings, so its cost, at most maxReplay steps, is the hub's to cause.
func (v *Verifier) prune(cutoff time.Time) {
	if !v.floorSet || cutoff.After(v.floor) {
		v.floor, v.floorSet = cutoff, true
	}
	for stamp := range v.seen {
		if time.UnixMilli(stamp).Before(v.floor) {
			delete(v.seen, stamp)
		}
	}
}

// Counters returns the verdict counts so far.
func (v *Verifier) Counters() Counters {
	return Counters{
		Accepted:  v.counts[Accepted].Load(),
		Malformed: v.counts[Malformed].Load(),
		Forged:    v.counts[Forged].Load(),
		Stale:     v.counts[Stale].Load(),
		Replayed:  v.counts[Replayed].Load(),
	}
}
