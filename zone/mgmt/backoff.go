package mgmt

import (
	"sync"
	"time"
)

// The back-off of failed logins and MFA answers, kept per account and per
// source address apart: an attacker guessing one account from many
// addresses is slowed by the first, one guessing many accounts from one
// address by the second. The first few failures cost nothing (a person
// mistyping); each one after doubles the wait, up to backoffMax. A
// success clears the account's and the address's counts; a key that
// failed nothing for backoffForget is forgotten.
const (
	backoffFree    = 3
	backoffBase    = time.Second
	backoffMax     = 15 * time.Minute
	backoffForget  = time.Hour
	backoffTracked = 10000 // keys held at most; past it the stalest goes
)

type failState struct {
	count int
	last  time.Time // of the last failure
	until time.Time // no attempt before this
}

type backoff struct {
	mu sync.Mutex
	m  map[string]*failState
}

// wait is how long key must wait before its next attempt, 0 if none.
func (b *backoff) wait(key string, now time.Time) time.Duration {
	b.mu.Lock()
	defer b.mu.Unlock()
	f := b.m[key]
	if f == nil || !now.Before(f.until) {
		return 0
	}
	return f.until.Sub(now)
}

// fail counts a failure of key.
func (b *backoff) fail(key string, now time.Time) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.m == nil {
		b.m = map[string]*failState{}
	}
	f := b.m[key]
	if f != nil && now.Sub(f.last) > backoffForget {
		f = nil
	}
	if f == nil {
		if len(b.m) >= backoffTracked && !b.evict(now) {
			return // every key held is waiting: a flood, which the keys it holds already slow
		}
		f = &failState{}
		b.m[key] = f
	}
	f.count++
	f.last = now
	if n := f.count - backoffFree; n > 0 {
		d := backoffMax
		if n < 20 && backoffBase<<(n-1) < backoffMax {
			d = backoffBase << (n - 1)
		}
		f.until = now.Add(d)
	}
}

// clear forgets key's failures.
func (b *backoff) clear(key string) {
	b.mu.Lock()
	delete(b.m, key)
	b.mu.Unlock()
}

// evict drops the forgotten keys, or else the stalest one that is not
// waiting (so that a flood of new keys cannot free an account being
// guessed); false if there is none. b.mu is held.
func (b *backoff) evict(now time.Time) bool {
	var stalest string
	var at time.Time
	for k, f := range b.m {
		if now.Sub(f.last) > backoffForget {
			delete(b.m, k)
			continue
		}
		if now.Before(f.until) {
			continue
		}
		if stalest == "" || f.last.Before(at) {
			stalest, at = k, f.last
		}
	}
	if len(b.m) < backoffTracked {
		return true
	}
	if stalest == "" {
		return false
	}
	delete(b.m, stalest)
	return true
}
