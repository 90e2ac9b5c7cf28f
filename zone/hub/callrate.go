package hub

import (
	"fmt"
	"sync"
	"time"
)

// callRate bounds the calls a zone's hub admits per second, over all its
// callers (a provider's limit, Config.CallsPerSecond): a token bucket
// holding a second's worth, so a burst of that size passes at once.
type callRate struct {
	perSec float64
	now    func() time.Time

	mu     sync.Mutex
	tokens float64
	last   time.Time
}

func newCallRate(perSec int, now func() time.Time) *callRate {
	if perSec <= 0 {
		return nil
	}
	return &callRate{perSec: float64(perSec), now: now, tokens: float64(perSec), last: now()}
}

// admit takes a token, or says why not. A nil callRate admits all.
func (c *callRate) admit(zone string) (ok bool, why string) {
	if c == nil {
		return true, ""
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	now := c.now()
	if d := now.Sub(c.last); d > 0 {
		c.tokens = min(c.perSec, c.tokens+d.Seconds()*c.perSec)
	}
	c.last = now
	if c.tokens < 1 {
		return false, fmt.Sprintf("zone %q is at its provider's limit of %g calls per second: try again in a moment, or ask the provider for a higher limit", zone, c.perSec)
	}
	c.tokens--
	return true, ""
}
