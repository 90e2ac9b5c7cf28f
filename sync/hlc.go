package sync

import (
	"math"
	gosync "sync"
	"time"
)

// clock is a hybrid logical clock: it follows physical time, never goes
// backwards, and moves past every version it has seen, so an edit made
// after seeing another always gets the greater version even when the
// physical clocks of the two nodes disagree.
type clock struct {
	mu      gosync.Mutex
	now     func() time.Time
	wall    uint64 // ms
	logical uint32
}

// next returns the version of a new local edit.
func (c *clock) next(node string) Version {
	c.mu.Lock()
	defer c.mu.Unlock()
	if pt := uint64(c.now().UnixMilli()); pt > c.wall {
		c.wall, c.logical = pt, 0
	} else if c.logical == math.MaxUint32 {
		// The counter is spent (a version seen from a device can carry
		// any counter): take the next millisecond rather than wrap.
		c.wall, c.logical = c.wall+1, 0
	} else {
		c.logical++
	}
	return Version{Wall: c.wall, Logical: c.logical, Node: node}
}

// observe moves the clock past v.
func (c *clock) observe(v Version) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if v.Wall > c.wall || v.Wall == c.wall && v.Logical > c.logical {
		c.wall, c.logical = v.Wall, v.Logical
	}
}

func (c *clock) state() (uint64, uint32) {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.wall, c.logical
}
