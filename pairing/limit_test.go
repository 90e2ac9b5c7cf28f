package pairing

import (
	"fmt"
	"net/netip"
	"slices"
	"sync"
	"testing"
	"time"
)

var (
	addrA = netip.MustParseAddr("192.0.2.1")
	addrB = netip.MustParseAddr("192.0.2.2")
	addrC = netip.MustParseAddr("2001:db8::3")
)

// checkLimiter checks the limiter's bound on tracked addresses when the
// test ends, whatever the test did to it.
func checkLimiter(t *testing.T, l *Limiter) *Limiter {
	t.Cleanup(func() {
		l.mu.Lock()
		defer l.mu.Unlock()
		if len(l.buckets) > l.MaxTracked {
			t.Errorf("limiter tracks %d addresses, above MaxTracked %d", len(l.buckets), l.MaxTracked)
		}
	})
	return l
}

// failN records n failures from addr at now, each allowed first.
func failN(t *testing.T, l *Limiter, addr netip.Addr, now time.Time, n int) {
	t.Helper()
	for i := range n {
		if ok, wait := l.Allow(addr, now); !ok {
			t.Fatalf("attempt %d from %v refused (retry after %v), want allowed", i+1, addr, wait)
		}
		l.Fail(addr, now)
	}
}

func wantRefused(t *testing.T, l *Limiter, addr netip.Addr, now time.Time, retry time.Duration) {
	t.Helper()
	ok, wait := l.Allow(addr, now)
	if ok {
		t.Fatalf("%v allowed at %v, want refused", addr, now.Sub(testNow))
	}
	// The wait comes from float arithmetic: allow a microsecond either way.
	if d := wait - retry; d < -time.Microsecond || d > time.Microsecond {
		t.Fatalf("%v refused at %v with retry after %v, want %v", addr, now.Sub(testNow), wait, retry)
	}
}

func wantAllowed(t *testing.T, l *Limiter, addr netip.Addr, now time.Time) {
	t.Helper()
	if ok, wait := l.Allow(addr, now); !ok || wait != 0 {
		t.Fatalf("%v at %v: Allow = %v, %v; want allowed", addr, now.Sub(testNow), ok, wait)
	}
}

func TestLimiterBurstThenRefused(t *testing.T) {
	l := checkLimiter(t, NewLimiter())
	failN(t, l, addrA, testNow, DefaultLimitBurst)
	wantRefused(t, l, addrA, testNow, 12*time.Second)
	wantRefused(t, l, addrA, testNow.Add(3*time.Second), 9*time.Second)
	wantRefused(t, l, addrA, testNow.Add(12*time.Second-time.Millisecond), time.Millisecond)
	// Refused attempts are not failures: asking again does not push the
	// retry time out.
	wantRefused(t, l, addrA, testNow, 12*time.Second)
}

func TestLimiterRefill(t *testing.T) {
	l := checkLimiter(t, NewLimiter())
	now := testNow
	failN(t, l, addrA, now, DefaultLimitBurst)
	// One attempt per Refill from then on, whatever the attempt does.
	for i := range 5 {
		now = now.Add(DefaultLimitRefill)
		failN(t, l, addrA, now, 1)
		wantRefused(t, l, addrA, now, DefaultLimitRefill)
		if t.Failed() {
			t.Fatalf("after refill %d", i+1)
		}
	}
	// Half a refill later still refused; two and a half refills later,
	// two attempts.
	wantRefused(t, l, addrA, now.Add(DefaultLimitRefill/2), DefaultLimitRefill/2)
	now = now.Add(5 * DefaultLimitRefill / 2)
	failN(t, l, addrA, now, 2)
	wantRefused(t, l, addrA, now, DefaultLimitRefill/2)
	// Quiet for long enough, the full burst is back, and no more.
	now = now.Add(time.Hour)
	failN(t, l, addrA, now, DefaultLimitBurst)
	wantRefused(t, l, addrA, now, DefaultLimitRefill)
}

func TestLimiterPerAddress(t *testing.T) {
	tests := []struct {
		name       string
		fail, same netip.Addr // failures from fail are counted against same
		other      netip.Addr // and not against other
	}{
		{"IPv4", addrA, addrA, addrB},
		// A source is an IPv6 /64 (TestLimiterIPv6Prefix): the other is in
		// another one.
		{"IPv6", addrC, addrC, netip.MustParseAddr("2001:db8:0:1::4")},
		{"IPv4-mapped counts as IPv4", netip.MustParseAddr("::ffff:192.0.2.1"), addrA, addrB},
		{"IPv4 counts as IPv4-mapped", addrA, netip.MustParseAddr("::ffff:192.0.2.1"), netip.MustParseAddr("::ffff:192.0.2.2")},
		{"IPv4-mapped is not IPv6", netip.MustParseAddr("::ffff:192.0.2.1"), addrA, netip.MustParseAddr("::192.0.2.1")},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			l := checkLimiter(t, NewLimiter())
			failN(t, l, tt.fail, testNow, DefaultLimitBurst)
			wantRefused(t, l, tt.fail, testNow, DefaultLimitRefill)
			wantRefused(t, l, tt.same, testNow, DefaultLimitRefill)
			wantAllowed(t, l, tt.other, testNow)
			if len(l.buckets) != 1 {
				t.Fatalf("limiter tracks %d addresses, want 1", len(l.buckets))
			}
		})
	}
}

func TestLimiterMaxTracked(t *testing.T) {
	const maxTracked = 4
	l := checkLimiter(t, &Limiter{Burst: DefaultLimitBurst, Refill: DefaultLimitRefill, MaxTracked: maxTracked})
	now := testNow
	for i := range 300 {
		addr := netip.AddrFrom4([4]byte{10, 0, byte(i >> 8), byte(i)})
		if i%3 == 0 {
			addr = netip.AddrFrom16([16]byte{0x20, 0x01, 0x0d, 0xb8, 14: byte(i >> 8), 15: byte(i)})
		}
		l.Fail(addr, now)
		if n := len(l.buckets); n > maxTracked {
			t.Fatalf("after %d addresses: %d tracked, above MaxTracked %d", i+1, n, maxTracked)
		}
		if i%7 == 0 {
			now = now.Add(time.Second)
		}
	}
}

func TestLimiterEviction(t *testing.T) {
	l := checkLimiter(t, &Limiter{Burst: DefaultLimitBurst, Refill: DefaultLimitRefill, MaxTracked: 3})
	d := netip.MustParseAddr("192.0.2.4")
	// Three exhausted addresses, A the longest ago.
	failN(t, l, addrA, testNow, DefaultLimitBurst)
	failN(t, l, addrB, testNow.Add(time.Second), DefaultLimitBurst)
	failN(t, l, addrC, testNow.Add(2*time.Second), DefaultLimitBurst)
	// A fourth pushes out the oldest; the others stay limited.
	now := testNow.Add(3 * time.Second)
	l.Fail(d, now)
	wantTracked(t, l, addrB, addrC, d)
	wantAllowed(t, l, addrA, now)
	wantRefused(t, l, addrB, now, DefaultLimitRefill-2*time.Second)
	wantRefused(t, l, addrC, now, DefaultLimitRefill-time.Second)

	// B has just recovered fully, and D, with one failure, long before:
	// both make room for A, and C, a second short of full, stays.
	now = testNow.Add(time.Second + DefaultLimitBurst*DefaultLimitRefill)
	l.Fail(addrA, now)
	wantTracked(t, l, addrA, addrC)
}

func wantTracked(t *testing.T, l *Limiter, want ...netip.Addr) {
	t.Helper()
	var got []netip.Addr
	for k := range l.buckets {
		got = append(got, k.src.Addr())
	}
	for i, a := range want {
		want[i] = Source(a).Addr()
	}
	slices.SortFunc(got, netip.Addr.Compare)
	slices.SortFunc(want, netip.Addr.Compare)
	if !slices.Equal(got, want) {
		t.Fatalf("tracked %v, want %v", got, want)
	}
}

// TestLimiterConcurrent is for the race detector.
func TestLimiterConcurrent(t *testing.T) {
	l := checkLimiter(t, &Limiter{Burst: DefaultLimitBurst, Refill: DefaultLimitRefill, MaxTracked: 8})
	var wg sync.WaitGroup
	for g := range 8 {
		wg.Go(func() {
			for i := range 200 {
				addr := netip.MustParseAddr(fmt.Sprintf("10.0.%d.%d", g, i%16))
				now := testNow.Add(time.Duration(i) * time.Second)
				if ok, _ := l.Allow(addr, now); ok {
					l.Fail(addr, now)
				}
			}
		})
	}
	wg.Wait()
}

// An IPv6 source is its /64: rotating addresses within it does not reset
// the limit; another /64 is another source. IPv4 in IPv6 is IPv4.
func TestLimiterIPv6Prefix(t *testing.T) {
	l := checkLimiter(t, NewLimiter())
	failN(t, l, netip.MustParseAddr("2001:db8:1:2::1"), testNow, DefaultLimitBurst)
	wantRefused(t, l, netip.MustParseAddr("2001:db8:1:2:ffff:ffff:ffff:fffe"), testNow, DefaultLimitRefill)
	wantAllowed(t, l, netip.MustParseAddr("2001:db8:1:3::1"), testNow)
	failN(t, l, netip.MustParseAddr("::ffff:192.0.2.9"), testNow, DefaultLimitBurst)
	wantRefused(t, l, netip.MustParseAddr("192.0.2.9"), testNow, DefaultLimitRefill)
	wantAllowed(t, l, netip.MustParseAddr("192.0.2.10"), testNow)
	if got := Source(netip.MustParseAddr("fe80::1%eth0")); got.String() != "fe80::/64" {
		t.Errorf("link-local source %v", got)
	}
}

// Wrong proofs for one invite from many sources exhaust that invite's
// bucket (not the others'), while each source has failed once.
func TestLimiterPerInvite(t *testing.T) {
	l := checkLimiter(t, NewLimiter())
	for i := range DefaultLimitBurst {
		src := netip.AddrFrom4([4]byte{198, 51, 100, byte(i + 1)})
		if ok, _ := l.AllowInvite(src, "inv1", testNow); !ok {
			t.Fatalf("attempt %d refused", i+1)
		}
		l.FailInvite(src, "inv1", testNow)
	}
	fresh := netip.MustParseAddr("203.0.113.1")
	if ok, wait := l.AllowInvite(fresh, "inv1", testNow); ok || wait != DefaultLimitRefill {
		t.Fatalf("a new source at a sprayed invite: %v, %v; want refused for %v", ok, wait, DefaultLimitRefill)
	}
	if ok, _ := l.AllowInvite(fresh, "inv2", testNow); !ok {
		t.Fatal("another invite refused")
	}
	if ok, _ := l.Allow(netip.AddrFrom4([4]byte{198, 51, 100, 1}), testNow); !ok {
		t.Fatal("a source with one failure refused")
	}
}
