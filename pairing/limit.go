package pairing

import (
	"net/netip"
	"sync"
	"time"
)

// Limiter rate-limits failed pairing attempts per source address with a
// token bucket: Burst failures at once, then one per Refill. With 256-bit
// secrets guessing is hopeless anyway; the limit keeps a misbehaving client
// from burning the hub's CPU on handshakes and logs. Zero fields mean the
// defaults.
type Limiter struct {
	Burst  int
	Refill time.Duration
	// MaxTracked bounds memory under a spray of source addresses; when
	// full, fully recovered entries are dropped, then the oldest.
	MaxTracked int

	mu      sync.Mutex
	buckets map[netip.Addr]*bucket
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
	l.mu.Lock()
	defer l.mu.Unlock()
	b := l.buckets[addr.Unmap()]
	if b == nil {
		return true, 0
	}
	t := l.level(b, now)
	if t >= 1 {
		return true, 0
	}
	_, refill, _ := l.settings()
	return false, time.Duration((1 - t) * float64(refill))
}

// Fail records a failed attempt from addr.
func (l *Limiter) Fail(addr netip.Addr, now time.Time) {
	l.mu.Lock()
	defer l.mu.Unlock()
	addr = addr.Unmap()
	if l.buckets == nil {
		l.buckets = make(map[netip.Addr]*bucket)
	}
	b := l.buckets[addr]
	if b == nil {
		l.makeRoom(now)
		burst, _, _ := l.settings()
		b = &bucket{tokens: float64(burst), at: now}
		l.buckets[addr] = b
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
	var oldest netip.Addr
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
