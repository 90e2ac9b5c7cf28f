package transport

import (
	"net"
	"net/netip"
	"slices"
	"sync/atomic"
	"time"
)

// How the TCP listener keeps handshake slots for real clients when it is
// flooded with connections that never finish a handshake (slowloris: an
// attacker connects and sends nothing, or a few bytes, and waits).
//
// The accept loop does not wait for silent clients. When every slot is
// taken, the newcomer gets the slot of the oldest pending handshake whose
// client has sent nothing yet. A real client sends its ClientHello the
// moment TCP connects and finishes in a few round trips, so it is almost
// never the one evicted, while idle sockets are churned out as fast as new
// ones arrive. A handshake whose client has spoken is never evicted: in a
// reconnect storm every slot holds a real device waiting for the CPU, and
// cutting one only makes it come back; then the loop waits for a slot, as
// it always did, and the budget bounds the wait. Under pressure a single
// source can hold only a few slots, and new handshakes get a shorter
// budget.
//
// There is no separate deadline for the ClientHello's arrival: eviction
// already prefers silent connections, so such a deadline would only free
// slots nobody is waiting for, and it would have to allow for a lossy link
// retransmitting the first segment anyway.
const (
	// maxPendingHandshakes bounds TLS handshakes in progress plus finished
	// connections waiting for Accept, so a flood costs a fixed amount of
	// memory and descriptors (a handshake's goroutine and buffers are a few
	// tens of KiB). 128 is far more than a personal zone's devices ever
	// have in flight at once, even all reconnecting after a hub restart,
	// which the listener absorbs in bursts of round-trip length.
	maxPendingHandshakes = 128

	// maxHandshakesPerSource is the most pending handshakes one source
	// (an IPv4 address or an IPv6 /64, what one household or one attacker
	// typically has) may hold while the listener is under pressure; the
	// next one evicts that source's oldest silent one, or is closed if it
	// has none. Several devices behind one NAT reconnect together when the
	// uplink returns, one TCP handshake each; 8 covers a household's. It
	// keeps one source to a sixteenth of the slots. Without pressure there
	// is no cap: many devices behind one address (a provider's NAT, or a
	// benchmark on loopback) reconnecting at once are served as they come.
	maxHandshakesPerSource = 8

	// pressureThreshold is how many handshakes in progress count as
	// pressure: half the slots, far above what legitimate reconnects keep
	// in flight, yet early enough that the short budget applies well
	// before slots run out.
	pressureThreshold = maxPendingHandshakes / 2

	// pressureHandshakeTimeout is the budget of a handshake started under
	// pressure, instead of Config.HandshakeTimeout. A handshake over a slow
	// mobile link takes well under 2 s (see DefaultHandshakeTimeout); the
	// longer default only helps when packets are lost, which matters less
	// than freeing descriptors during a flood.
	pressureHandshakeTimeout = 2 * time.Second

	// shedLogInterval spaces the debug notes about shed handshakes: one
	// per interval during a flood of thousands per second, enough to see
	// that it goes on.
	shedLogInterval = 10 * time.Second
)

// pendingHandshake is a TCP connection whose TLS handshake is in progress.
type pendingHandshake struct {
	counted *countConn // the raw connection, counting bytes from the start
	src     netip.Prefix
}

// silent reports that the client has sent nothing yet: an idle socket, or
// one whose ClientHello is still on its way. One whose ClientHello waits
// in the kernel, its handshake not yet run (many clients at once on a
// busy hub, a restart's reconnect storm), is not: evicting it would only
// make a real client retry.
func (h *pendingHandshake) silent() bool {
	return h.counted.recv.Load() == 0 && unreadBytes(h.counted.Conn) == 0
}

// sourceOf is the source a connection from a counts against: its IPv4
// address, or the /64 of its IPv6 address (one subscriber's usual
// allocation, so an attacker cannot pick a fresh address per connection).
// Other kinds of address have no source and no per-source limit.
func sourceOf(a net.Addr) netip.Prefix {
	ta, ok := a.(*net.TCPAddr)
	if !ok {
		return netip.Prefix{}
	}
	ip := ta.AddrPort().Addr().Unmap().WithZone("")
	bits := 64
	if ip.Is4() {
		bits = 32
	}
	p, err := ip.Prefix(bits)
	if err != nil {
		return netip.Prefix{}
	}
	return p
}

// handshakeTable holds the handshakes in progress, oldest first, and how
// many each source has. It does no I/O; the listener's mutex guards it.
// It holds at most maxPendingHandshakes entries, so linear scans are
// cheaper than any index.
type handshakeTable struct {
	order     []*pendingHandshake
	perSource map[netip.Prefix]int
}

func (t *handshakeTable) len() int { return len(t.order) }

func (t *handshakeTable) count(src netip.Prefix) int { return t.perSource[src] }

func (t *handshakeTable) add(h *pendingHandshake) {
	t.order = append(t.order, h)
	if h.src.IsValid() {
		if t.perSource == nil {
			t.perSource = make(map[netip.Prefix]int)
		}
		t.perSource[h.src]++
	}
}

// remove takes h out of the table, reporting false if it was not there
// (it had been evicted).
func (t *handshakeTable) remove(h *pendingHandshake) bool {
	i := slices.Index(t.order, h)
	if i < 0 {
		return false
	}
	t.order = slices.Delete(t.order, i, i+1)
	if h.src.IsValid() {
		if n := t.perSource[h.src] - 1; n > 0 {
			t.perSource[h.src] = n
		} else {
			delete(t.perSource, h.src)
		}
	}
	return true
}

// victim picks the handshake to give up for a newcomer: among those of
// src (any source if src is the zero Prefix), the oldest whose client has
// sent nothing. Nil if there is none.
func (t *handshakeTable) victim(src netip.Prefix) *pendingHandshake {
	for _, h := range t.order {
		if (!src.IsValid() || h.src == src) && h.silent() {
			return h
		}
	}
	return nil
}

// shedCounts counts handshakes the listener gave up to protect the
// others, since it started.
type shedCounts struct {
	forRoom    atomic.Uint64 // evicted because every slot was taken
	sameSource atomic.Uint64 // evicted (or refused) because their source had maxHandshakesPerSource
	pressured  atomic.Uint64 // started under pressure with the short budget, and failed

	lastLog    atomic.Int64  // time.Time.UnixNano of the last note; 0 before the first
	lastLogged atomic.Uint64 // total at the last note
}

func (s *shedCounts) total() uint64 {
	return s.forRoom.Load() + s.sameSource.Load() + s.pressured.Load()
}

// report notes the counts at debug level: at most once per
// shedLogInterval, or (final) once more if they changed since the last note.
func (s *shedCounts) report(cfg Config, final bool) {
	now := time.Now().UnixNano()
	last := s.lastLog.Load()
	total := s.total()
	if final {
		if total == s.lastLogged.Load() {
			return
		}
	} else if last != 0 && now-last < int64(shedLogInterval) {
		return
	}
	if !s.lastLog.CompareAndSwap(last, now) {
		return // another goroutine is noting them
	}
	s.lastLogged.Store(total)
	cfg.debug("transport: tcp listener shedding handshakes under load (totals since listening)",
		"evicted_for_room", s.forRoom.Load(),
		"evicted_same_source", s.sameSource.Load(),
		"failed_with_short_budget", s.pressured.Load())
}
