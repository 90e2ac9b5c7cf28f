package sync

import (
	"math"
	"testing"
	"time"
)

// The clock only moves forward: past every reading it gave and every
// version it saw, whatever physical time does.
func TestClockMonotonic(t *testing.T) {
	fc := newFakeClock()
	c := clock{now: fc.Now}
	base := uint64(fc.Now().UnixMilli())
	last := c.next("n")
	check := func(what string) {
		t.Helper()
		v := c.next("n")
		if v.Compare(last) <= 0 {
			t.Fatalf("%s: %v after %v", what, v, last)
		}
		last = v
	}
	check("same millisecond")
	fc.Add(time.Second)
	check("time moved on")
	fc.Add(-time.Hour)
	check("time went back")
	c.observe(Version{Wall: base + 60_000, Logical: 7, Node: "other"})
	if v := c.next("n"); v.Wall != base+60_000 || v.Logical != 8 {
		t.Fatalf("after observing a later version: %v", v)
	} else {
		last = v
	}
	// A version whose counter is spent (pushed by a device; nothing
	// bounds it): the next reading must still be later.
	seen := Version{Wall: base + 120_000, Logical: math.MaxUint32, Node: "other"}
	c.observe(seen)
	if v := c.next("n"); v.Compare(seen) <= 0 {
		t.Fatalf("after observing %v the clock gave %v", seen, v)
	} else {
		last = v
	}
	check("after the spent counter")
}
