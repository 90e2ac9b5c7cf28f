package hub

import (
	"fmt"
	"sync"
	"time"

	"github.com/pzone/pzone/zone/wire"
)

// Calls in flight through the hub are bounded per caller and per target,
// so that one device (or one friend zone) cannot starve the calls others
// make: without the bounds a caller could hold every one of a target's
// streams with calls it never finishes. A caller is a device of this zone
// (its name) or a friend zone's link (linkCaller); a target is a device
// of this zone, the hub's own services (certs.HubDevice), or a friend zone
// a call is forwarded to (linkCaller again).

// Call-slot defaults, with why.
const (
	// DefaultCallsPerCaller bounds one caller's calls in flight through
	// the hub, to all targets together: applications rarely have more than
	// a handful open, and each one costs the hub a goroutine and up to
	// wire.MaxCallBody of buffered request while its body arrives.
	DefaultCallsPerCaller = 64
	// DefaultCallBytesPerCaller bounds the request bodies the hub holds in
	// memory for one caller's calls at once (it reads each whole before
	// passing it on): sixteen of the largest, so an application with many
	// large calls open is slowed to that, while a caller cannot make the
	// hub hold 64 × 1 MiB.
	DefaultCallBytesPerCaller = 16 * wire.MaxCallBody
	// slotWait is how long a call over a bound waits for a slot before it
	// is refused. The hub gives a slot back only after it has passed on
	// the reply's last bytes, so a caller that keeps exactly N calls going
	// (the next one sent as the last one's reply arrives) may for a moment
	// seem to hold more than N: such a call must wait its turn, not fail.
	// A caller really over the bound is refused after the wait.
	slotWait = 2 * time.Second
)

// deviceCaller names a device of this zone as a caller or target;
// linkCaller a friend zone (by compact ID). The names appear in refusals.
func deviceCaller(device string) string { return fmt.Sprintf("device %q", device) }
func linkCaller(zoneID string) string   { return "friend zone " + zoneID }

// callSlots counts the calls in flight by caller, by target and by the
// pair of the two.
type callSlots struct {
	perCaller, perTarget, perPair int
	bytesPerCaller                int
	wait                          time.Duration // Config.CallSlotWait

	mu      sync.Mutex
	callers map[string]int
	bytes   map[string]int // of bodies held, by caller
	targets map[string]int
	pairs   map[[2]string]int
	// freed is closed, and replaced, whenever a slot is given back: the
	// calls waiting for one look again.
	freed chan struct{}
}

func newCallSlots(perCaller, perTarget int, wait time.Duration) *callSlots {
	return &callSlots{perCaller: perCaller, perTarget: perTarget, perPair: max(1, perTarget/wire.CallTargetShare),
		bytesPerCaller: DefaultCallBytesPerCaller, wait: wait, callers: map[string]int{}, bytes: map[string]int{}, targets: map[string]int{}, pairs: map[[2]string]int{}, freed: make(chan struct{})}
}

// callSlot is one call's hold on the slots: its caller's, once enter
// succeeded, and its target's once to succeeded. release gives both back.
type callSlot struct {
	s              *callSlots
	caller, target string
	held           int // bytes of the request body counted against the caller
	released       bool
}

// overBudget refuses a call whose body would take its caller over the
// bytes the hub holds for it.
type overBudget struct {
	caller string
	limit  int
}

func (e *overBudget) Error() string {
	return fmt.Sprintf("too much call data held for %s (at most %d MiB of request bodies in flight through the hub); try again when some calls have finished", e.caller, e.limit>>20)
}

// hold counts got bytes of the call's body against its caller, as it
// arrives: one more frame of the largest size must fit (ReadRequest calls
// it before each frame), or the call is refused.
func (c *callSlot) hold(got int) error {
	s := c.s
	s.mu.Lock()
	defer s.mu.Unlock()
	if c.released {
		return nil
	}
	next := got + wire.CallChunk
	if s.bytes[c.caller]-c.held+next > s.bytesPerCaller {
		return &overBudget{caller: c.caller, limit: s.bytesPerCaller}
	}
	s.bytes[c.caller] += next - c.held
	c.held = next
	return nil
}

// await retries try, which reports why it cannot take a slot ("" when it
// took one), as slots are given back, for at most s.wait and not past
// until, nor once gone closes (Config.CallSlotWait); it returns try's last answer.
func (s *callSlots) await(until time.Time, gone <-chan struct{}, try func() string) string {
	why := try()
	if why == "" {
		return ""
	}
	t := time.NewTimer(min(s.wait, time.Until(until)))
	defer t.Stop()
	for {
		s.mu.Lock()
		freed := s.freed
		s.mu.Unlock()
		// A slot given back between try and here closed an older freed:
		// look again before waiting on this one.
		if why = try(); why == "" {
			return ""
		}
		select {
		case <-freed:
		case <-t.C:
			return why
		case <-gone:
			return why
		}
	}
}

// enterWait is enter, waiting (await) for a slot.
func (s *callSlots) enterWait(caller string, until time.Time, gone <-chan struct{}) (*callSlot, string) {
	var slot *callSlot
	why := s.await(until, gone, func() (why string) {
		slot, why = s.enter(caller)
		return why
	})
	return slot, why
}

// toWait is to, waiting (await) for a slot.
func (c *callSlot) toWait(target string, until time.Time, gone <-chan struct{}) string {
	return c.s.await(until, gone, func() string { return c.to(target) })
}

// enter takes a slot for a call from caller, or says why not.
func (s *callSlots) enter(caller string) (*callSlot, string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.callers[caller] >= s.perCaller {
		return nil, fmt.Sprintf("too many calls in flight from %s (at most %d through the hub); try again when some have finished", caller, s.perCaller)
	}
	s.callers[caller]++
	return &callSlot{s: s, caller: caller}, ""
}

// to takes a slot at target for the call, or says why not. A call takes
// at most one target slot.
func (c *callSlot) to(target string) string {
	s := c.s
	s.mu.Lock()
	defer s.mu.Unlock()
	if c.released || c.target != "" {
		return ""
	}
	pair := [2]string{c.caller, target}
	switch {
	case s.targets[target] >= s.perTarget:
		return fmt.Sprintf("%s has too many calls in flight (at most %d); try again later", target, s.perTarget)
	case s.pairs[pair] >= s.perPair:
		return fmt.Sprintf("%s has too many calls in flight from %s (at most %d from one caller); try again when some have finished", target, c.caller, s.perPair)
	}
	s.targets[target]++
	s.pairs[pair]++
	c.target = target
	return ""
}

// release gives back the call's slots; more calls are harmless.
func (c *callSlot) release() {
	s := c.s
	s.mu.Lock()
	defer s.mu.Unlock()
	if c.released {
		return
	}
	c.released = true
	dec(s.callers, c.caller)
	if c.held > 0 {
		if s.bytes[c.caller] -= c.held; s.bytes[c.caller] <= 0 {
			delete(s.bytes, c.caller)
		}
	}
	if c.target != "" {
		dec(s.targets, c.target)
		dec(s.pairs, [2]string{c.caller, c.target})
	}
	close(s.freed)
	s.freed = make(chan struct{})
}

func dec[K comparable](m map[K]int, k K) {
	if m[k] <= 1 {
		delete(m, k)
		return
	}
	m[k]--
}
