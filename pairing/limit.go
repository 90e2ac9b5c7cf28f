package pairing

import (
	"net/netip"
	"sync"
	"time"
)

// Limiter rate-limits failed pairing attempts with token buckets: Burst
// failures at once, then one per Refill, for each source and for each
// invite. A source is an IPv4 address or an IPv6 /64 (one subscriber's
// share, which an attacker rotates within freely); the invite bucket
// counts wrong proofs for one invite from anywhere, so spreading a spray
// over many addresses does not escape the limit. With 256-bit secrets
// guessing is hopeless anyway; the limit keeps a misbehaving client from
// burning the hub's CPU and filling its logs.
//
// The limit must not lock out the honest: the hub checks the proof of a
// request over the limit all the same (it is cheap) and lets a valid one
// through, so neither a neighbour behind the same NAT nor an attacker
// hammering an invite keeps its owner from pairing. Zero fields mean the
// defaults.
type Limiter struct {
	Burst  int
	Refill time.Duration
	// MaxTracked bounds memory under a spray of source addresses; when
	// full, fully recovered entries are dropped, then the oldest.
	MaxTracked int

	mu      sync.Mutex
	buckets map[limitKey]*bucket
}

// limitKey names a bucket: a source prefix, or an invite id.
type limitKey struct {
	src    netip.Prefix
	invite string
}

// sourceBits is how much of an IPv6 address names one source: a /64 is
// what one subscriber is given, so its addresses are one attacker's.
const sourceBits = 64

// Source is the prefix a source address is limited as: the address itself
// for IPv4 (4-in-6 included), its /64 for IPv6.
func Source(addr netip.Addr) netip.Prefix {
	addr = addr.Unmap()
	if addr.Is4() {
		return netip.PrefixFrom(addr, 32)
	}
	p, _ := addr.WithZone("").Prefix(sourceBits)
	return p
}

type bucket struct {
	tokens float64
	at     time.Time
}

// Default limiter settings: 5 failures, then one more every 12 s (5 a minute).
const (
	DefaultLimitBurst  = 5
	DefaultLimitRefill = 12 * time.Second
	DefaultMaxTracked  = 10000
)

// NewLimiter returns a limiter with the default settings.
func NewLimiter() *Limiter {
	return &Limiter{Burst: DefaultLimitBurst, Refill: DefaultLimitRefill, MaxTracked: DefaultMaxTracked}
}

func (l *Limiter) settings() (burst int, refill time.Duration, max int) {
	burst, refill, max = l.Burst, l.Refill, l.MaxTracked
	if burst < 1 {
		burst = DefaultLimitBurst
	}
	if refill <= 0 {
		refill = DefaultLimitRefill
	}
	if max < 1 {
		max = DefaultMaxTracked
	}
	return
}

func (l *Limiter) level(b *bucket, now time.Time) float64 {
	burst, refill, _ := l.settings()
	t := b.tokens + float64(now.Sub(b.at))/float64(refill)
	if t > float64(burst) {
		t = float64(burst)
	}
	return t
}

// Allow reports whether addr may attempt now; if not, how long until it may.
func (l *Limiter) Allow(addr netip.Addr, now time.Time) (bool, time.Duration) {
	return l.AllowInvite(addr, "", now)
}

// AllowInvite reports whether addr may attempt invite now (invite "":
// the source alone); if not, how long until it may.
func (l *Limiter) AllowInvite(addr netip.Addr, invite string, now time.Time) (bool, time.Duration) {
	l.mu.Lock()
	defer l.mu.Unlock()
	wait := l.wait(limitKey{src: Source(addr)}, now)
	if invite != "" {
		wait = max(wait, l.wait(limitKey{invite: invite}, now))
	}
	return wait == 0, wait
}

// wait is how long until k's bucket allows an attempt.
func (l *Limiter) wait(k limitKey, now time.Time) time.Duration {
	b := l.buckets[k]
	if b == nil {
		return 0
	}
	t := l.level(b, now)
	if t >= 1 {
		return 0
	}
	_, refill, _ := l.settings()
	return max(time.Duration((1-t)*float64(refill)), time.Nanosecond)
}

// Fail records a failed attempt from addr.
func (l *Limiter) Fail(addr netip.Addr, now time.Time) { l.FailInvite(addr, "", now) }

// FailInvite records a failed attempt from addr at invite (invite "": one
// that names no invite that exists).
func (l *Limiter) FailInvite(addr netip.Addr, invite string, now time.Time) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.take(limitKey{src: Source(addr)}, now)
	if invite != "" {
		l.take(limitKey{invite: invite}, now)
	}
}

func (l *Limiter) take(k limitKey, now time.Time) {
	if l.buckets == nil {
		l.buckets = make(map[limitKey]*bucket)
	}
	b := l.buckets[k]
	if b == nil {
		l.makeRoom(now)
		burst, _, _ := l.settings()
		b = &bucket{tokens: float64(burst), at: now}
		l.buckets[k] = b
	}
	b.tokens = l.level(b, now) - 1
	if b.tokens < 0 {
		b.tokens = 0
	}
	b.at = now
}

func (l *Limiter) makeRoom(now time.Time) {
	burst, _, max := l.settings()
	if len(l.buckets) < max {
		return
	}
	var oldest limitKey
	var oldestAt time.Time
	for a, b := range l.buckets {
		if l.level(b, now) >= float64(burst) {
			delete(l.buckets, a)
			continue
		}
		if oldestAt.IsZero() || b.at.Before(oldestAt) {
			oldest, oldestAt = a, b.at
		}
	}
	if len(l.buckets) >= max {
		delete(l.buckets, oldest)
	}
}
