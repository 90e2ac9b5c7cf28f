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
	// phys is the latest physical time (ms) this clock has read: unlike
	// wall, versions seen from others do not move it.
	phys uint64
}

// physical returns the latest physical time the clock has read, now
// included.
func (c *clock) physical() uint64 {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.readPhys()
}

func (c *clock) readPhys() uint64 {
	c.phys = max(c.phys, uint64(c.now().UnixMilli()))
	return c.phys
}

// next returns the version of a new local edit.
func (c *clock) next(node string) Version {
	c.mu.Lock()
	defer c.mu.Unlock()
	if pt := c.readPhys(); pt > c.wall {
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

func (c *clock) state() (wall uint64, logical uint32, phys uint64) {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.wall, c.logical, c.phys
}
