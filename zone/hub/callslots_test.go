package hub

import (
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/pzone/pzone/zone/wire"
)

// The call-slot table: per caller, per target, and per caller at one
// target; a refusal takes nothing, a release gives everything back.
func TestCallSlots(t *testing.T) {
	s := newCallSlots(3, 8, slotWait) // a caller may hold 2 of a target's 8
	a1, _ := s.enter("a")
	a2, _ := s.enter("a")
	a3, _ := s.enter("a")
	if a, why := s.enter("a"); a != nil || why == "" {
		t.Fatalf("a fourth call from a: %v %q, want refused", a, why)
	}
	if why := a1.to("t"); why != "" {
		t.Fatal(why)
	}
	if why := a2.to("t"); why != "" {
		t.Fatal(why)
	}
	if why := a3.to("t"); why == "" {
		t.Fatal("a third call from a to t was let through, past its share")
	}
	if why := a3.to("u"); why != "" {
		t.Fatalf("a's call to another target: %s", why)
	}
	// Other callers fill t up to its limit, then are refused.
	var others []*callSlot
	for i := range 6 {
		c, why := s.enter(fmt.Sprint("c", i/2))
		if c == nil {
			t.Fatal(why)
		}
		if why := c.to("t"); why != "" {
			t.Fatalf("call %d to t: %s", i, why)
		}
		others = append(others, c)
	}
	d, _ := s.enter("d")
	if why := d.to("t"); why == "" {
		t.Fatal("a call to a full target was let through")
	}
	a1.release()
	a1.release() // twice is once
	if why := d.to("t"); why != "" {
		t.Fatalf("after a release: %s", why)
	}
	for _, c := range append(others, a2, a3, d) {
		c.release()
	}
	if len(s.callers)+len(s.targets)+len(s.pairs) != 0 {
		t.Fatalf("left after every release: %v %v %v", s.callers, s.targets, s.pairs)
	}
}

// The request bodies the hub holds for one caller are bounded in bytes,
// and given back when its calls end.
func TestCallSlotBytes(t *testing.T) {
	s := newCallSlots(64, 192, slotWait)
	s.bytesPerCaller = 4 * wire.CallChunk
	a1, _ := s.enter("a")
	a2, _ := s.enter("a")
	b1, _ := s.enter("b")
	for _, got := range []int{0, wire.CallChunk, 2 * wire.CallChunk} { // a1 holds 3 chunks
		if err := a1.hold(got); err != nil {
			t.Fatalf("a1 at %d bytes: %v", got, err)
		}
	}
	if err := a2.hold(0); err != nil {
		t.Fatalf("a2's first chunk: %v", err)
	}
	var over *overBudget
	if err := a2.hold(wire.CallChunk); !errors.As(err, &over) || !strings.Contains(err.Error(), "held for a (at most") {
		t.Fatalf("a2 past a's budget: %v, want overBudget naming the caller", err)
	}
	if err := b1.hold(3 * wire.CallChunk); err != nil {
		t.Fatalf("another caller is not charged for a's calls: %v", err)
	}
	a1.release()
	if err := a2.hold(wire.CallChunk); err != nil {
		t.Fatalf("after a1 ended: %v", err)
	}
	a2.release()
	b1.release()
	if len(s.bytes) != 0 {
		t.Fatalf("bytes left counted after every call ended: %v", s.bytes)
	}
}

// A call over a bound waits for a slot: one given back lets it in (the
// hub gives slots back a moment after the caller has its reply), and
// without one it is refused once the wait is over.
func TestCallSlotWait(t *testing.T) {
	s := newCallSlots(2, 100, slotWait)
	a, _ := s.enter("a")
	if b, _ := s.enter("a"); b == nil {
		t.Fatal("second slot refused")
	}
	got := make(chan string, 1)
	go func() {
		slot, why := s.enterWait("a", time.Now().Add(time.Minute), nil)
		if slot != nil {
			why = "entered"
		}
		got <- why
	}()
	// The waiter may look before or after the release: either way it
	// must enter.
	a.release()
	if why := <-got; why != "entered" {
		t.Fatalf("a call waiting for a slot given back: %s", why)
	}

	s.wait = time.Millisecond
	if slot, why := s.enterWait("a", time.Now().Add(time.Minute), nil); slot != nil || !strings.Contains(why, "too many calls in flight") {
		t.Fatalf("over the bound with no slot given back: %v %q", slot, why)
	}
	gone := make(chan struct{})
	close(gone)
	s.wait = time.Hour
	if slot, _ := s.enterWait("a", time.Now().Add(time.Hour), gone); slot != nil {
		t.Fatal("a call whose caller has gone entered")
	}
}
