package wakeup

import (
	"bytes"
	"encoding/binary"
	"encoding/json"
	"errors"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// t0 is a millisecond-aligned instant, so stamps and the clock agree exactly.
var t0 = time.Date(2025, 6, 1, 12, 0, 0, 0, time.UTC)

// fakeClock is a clock the tests move by hand; safe for concurrent use.
type fakeClock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *fakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *fakeClock) Set(t time.Time) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.t = t
}

func (c *fakeClock) Advance(d time.Duration) { c.Set(c.Now().Add(d)) }

func testSecret(t *testing.T) Secret {
	t.Helper()
	s, err := NewSecret()
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// newTestVerifier returns a Verifier with secret s, DefaultWindow, and a
// fake clock at t0. On cleanup it checks the replay cache's invariants:
// within its bound, and never holding more than was accepted.
func newTestVerifier(t *testing.T, s Secret) (*Verifier, *fakeClock) {
	t.Helper()
	clk := &fakeClock{t: t0}
	v := NewVerifier(0, clk.Now)
	v.SetSecret(s)
	t.Cleanup(func() {
		v.mu.Lock()
		n := len(v.seen)
		v.mu.Unlock()
		if n > maxReplay || uint64(n) > v.Counters().Accepted {
			t.Errorf("replay cache holds %d entries; bound %d, accepted %d", n, maxReplay, v.Counters().Accepted)
		}
	})
	return v, clk
}

func expect(t *testing.T, v *Verifier, b []byte, want Verdict) {
	t.Helper()
	if got := v.Check(b); got != want {
		t.Errorf("Check = %v, want %v", got, want)
	}
}

func flip(b []byte, i int) []byte {
	c := bytes.Clone(b)
	c[i] ^= 0x01
	return c
}

func TestVersionTopBitsClear(t *testing.T) {
	if Version&0xC0 != 0 {
		t.Fatalf("Version %#x has a top bit set; QUIC would claim the datagram", Version)
	}
}

func TestSealParseRoundTrip(t *testing.T) {
	s := testSecret(t)
	at := t0.Add(1234567 * time.Microsecond) // truncated to 1.234 s
	b := Seal(s, at)
	if len(b) != PingSize || PingSize != 41 {
		t.Fatalf("len(Seal) = %d, PingSize = %d; want 41", len(b), PingSize)
	}
	if b[0] != Version {
		t.Errorf("first byte %#x, want Version %#x", b[0], Version)
	}
	p, err := Parse(b)
	if err != nil {
		t.Fatalf("Parse(Seal): %v", err)
	}
	if p.ID != s.ID {
		t.Errorf("ID = %x, want %x", p.ID, s.ID)
	}
	if want := at.Truncate(time.Millisecond); !p.Time.Equal(want) {
		t.Errorf("Time = %v, want %v", p.Time, want)
	}
	if !bytes.Equal(p.Tag[:], b[PingSize-TagSize:]) {
		t.Errorf("Tag = %x, want the last %d bytes %x", p.Tag, TagSize, b[PingSize-TagSize:])
	}
	if got := binary.BigEndian.Uint64(b[1+IDSize:]); got != uint64(at.UnixMilli()) {
		t.Errorf("stamp = %d, want %d", got, at.UnixMilli())
	}
	if again := Seal(s, p.Time); !bytes.Equal(again, b) {
		t.Errorf("Seal(Parse(b).Time) = %x, want %x", again, b)
	}
}

func TestSealDiffersByKeyAndTime(t *testing.T) {
	s := testSecret(t)
	other := s
	other.Key[0] ^= 1
	a, b, c := Seal(s, t0), Seal(other, t0), Seal(s, t0.Add(time.Millisecond))
	if bytes.Equal(a[PingSize-TagSize:], b[PingSize-TagSize:]) ||
		bytes.Equal(a[PingSize-TagSize:], c[PingSize-TagSize:]) {
		t.Fatal("tags collide across keys or stamps")
	}
}

func TestParseErrors(t *testing.T) {
	valid := Seal(Secret{}, t0)
	withVersion := func(v byte) []byte { b := bytes.Clone(valid); b[0] = v; return b }
	tests := []struct {
		name    string
		in      []byte
		want    error
		wantMsg string
	}{
		{"nil", nil, ErrTruncated, "wake ping truncated: 0 bytes, want 41"},
		{"empty", []byte{}, ErrTruncated, "wake ping truncated: 0 bytes, want 41"},
		{"1 byte", []byte{Version}, ErrTruncated, "wake ping truncated: 1 bytes, want 41"},
		{"12 bytes", valid[:12], ErrTruncated, "wake ping truncated: 12 bytes, want 41"},
		{"40 bytes", valid[:40], ErrTruncated, "wake ping truncated: 40 bytes, want 41"},
		{"42 bytes", append(bytes.Clone(valid), 0), ErrOversized, "wake ping oversized: 42 bytes, want 41"},
		{"1500 bytes", make([]byte, 1500), ErrOversized, "wake ping oversized: 1500 bytes, want 41"},
		{"version 0", withVersion(0), ErrVersion, "wake ping has an unknown version: 0, want 1"},
		{"version 2", withVersion(2), ErrVersion, "wake ping has an unknown version: 2, want 1"},
		{"version 0x41", withVersion(0x41), ErrVersion, "wake ping has an unknown version: 65, want 1"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := Parse(tt.in)
			if !errors.Is(err, tt.want) {
				t.Fatalf("Parse error = %v, want %v", err, tt.want)
			}
			if err.Error() != tt.wantMsg {
				t.Errorf("message %q, want %q", err, tt.wantMsg)
			}
		})
	}
}

func TestSecret(t *testing.T) {
	if !(Secret{}).IsZero() {
		t.Error("zero Secret is not IsZero")
	}
	a, b := testSecret(t), testSecret(t)
	if a.IsZero() || b.IsZero() {
		t.Error("NewSecret returned a zero Secret")
	}
	if a == b {
		t.Error("two NewSecret calls returned the same Secret")
	}
}

func TestVerdictString(t *testing.T) {
	want := map[Verdict]string{
		Accepted: "accepted", Malformed: "malformed", Forged: "forged",
		Stale: "stale", Replayed: "replayed", 200: "Verdict(200)",
	}
	for v, s := range want {
		if v.String() != s {
			t.Errorf("Verdict(%d).String() = %q, want %q", uint8(v), v.String(), s)
		}
	}
}

// TestCheckVerdicts checks each single-datagram case on a fresh Verifier
// whose clock reads t0, and that exactly that verdict was counted.
func TestCheckVerdicts(t *testing.T) {
	s := testSecret(t)
	otherKey := s
	otherKey.Key[5] ^= 0x80
	otherID := s
	otherID.ID[0] ^= 0x80
	ping := Seal(s, t0)
	w := DefaultWindow
	randomTag := bytes.Clone(ping)
	copy(randomTag[PingSize-TagSize:], bytes.Repeat([]byte{0xa5}, TagSize))
	withVersion := func(v byte) []byte { b := bytes.Clone(ping); b[0] = v; return b }

	tests := []struct {
		name      string
		in        []byte
		noSecret  bool
		want      Verdict
		wantCount Counters
	}{
		{"accepted", ping, false, Accepted, Counters{Accepted: 1}},
		{"accepted just sealed", Seal(s, t0.Add(-time.Millisecond)), false, Accepted, Counters{Accepted: 1}},
		{"window edge past", Seal(s, t0.Add(-w)), false, Accepted, Counters{Accepted: 1}},
		{"window edge future", Seal(s, t0.Add(w)), false, Accepted, Counters{Accepted: 1}},

		{"empty", nil, false, Malformed, Counters{Malformed: 1}},
		{"1 byte", []byte{Version}, false, Malformed, Counters{Malformed: 1}},
		{"40 bytes", ping[:40], false, Malformed, Counters{Malformed: 1}},
		{"42 bytes", append(bytes.Clone(ping), 0), false, Malformed, Counters{Malformed: 1}},
		{"1500 bytes", append(bytes.Clone(ping), make([]byte, 1500-PingSize)...), false, Malformed, Counters{Malformed: 1}},
		{"version 0", withVersion(0), false, Malformed, Counters{Malformed: 1}},
		{"version 2", withVersion(2), false, Malformed, Counters{Malformed: 1}},
		{"version 0x41", withVersion(0x41), false, Malformed, Counters{Malformed: 1}},
		{"malformed without secret", nil, true, Malformed, Counters{Malformed: 1}},

		{"random tag", randomTag, false, Forged, Counters{Forged: 1}},
		{"flipped id bit", flip(ping, 1), false, Forged, Counters{Forged: 1}},
		{"flipped time bit", flip(ping, PingSize-TagSize-1), false, Forged, Counters{Forged: 1}},
		{"flipped tag bit", flip(ping, PingSize-1), false, Forged, Counters{Forged: 1}},
		{"other key same id", Seal(otherKey, t0), false, Forged, Counters{Forged: 1}},
		{"other id, valid tag for it", Seal(otherID, t0), false, Forged, Counters{Forged: 1}},
		{"no secret set", ping, true, Forged, Counters{Forged: 1}},
		{"zero secret ping, no secret set", Seal(Secret{}, t0), true, Forged, Counters{Forged: 1}},

		{"too old", Seal(s, t0.Add(-w-time.Millisecond)), false, Stale, Counters{Stale: 1}},
		{"too far in future", Seal(s, t0.Add(w+time.Millisecond)), false, Stale, Counters{Stale: 1}},
		{"epoch", Seal(s, time.UnixMilli(0)), false, Stale, Counters{Stale: 1}},
		{"far past", Seal(s, time.UnixMilli(-1<<63)), false, Stale, Counters{Stale: 1}},
		{"far future", Seal(s, time.UnixMilli(1<<63-1)), false, Stale, Counters{Stale: 1}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			v, _ := newTestVerifier(t, s)
			if tt.noSecret {
				v.SetSecret(Secret{})
			}
			expect(t, v, tt.in, tt.want)
			if got := v.Counters(); got != tt.wantCount {
				t.Errorf("Counters = %+v, want %+v", got, tt.wantCount)
			}
		})
	}
}

func TestReplayed(t *testing.T) {
	s := testSecret(t)
	v, clk := newTestVerifier(t, s)
	ping := Seal(s, t0)
	expect(t, v, ping, Accepted)
	expect(t, v, ping, Replayed)
	clk.Advance(DefaultWindow) // still just fresh, still remembered
	expect(t, v, ping, Replayed)
	clk.Advance(time.Millisecond)
	expect(t, v, ping, Stale)
	want := Counters{Accepted: 1, Replayed: 2, Stale: 1}
	if got := v.Counters(); got != want {
		t.Errorf("Counters = %+v, want %+v", got, want)
	}
}

func TestOffset(t *testing.T) {
	s := testSecret(t)
	v, _ := newTestVerifier(t, s)
	hubNow := t0.Add(time.Hour) // the hub's clock runs an hour ahead
	expect(t, v, Seal(s, hubNow), Stale)
	v.SetOffset(time.Hour)
	expect(t, v, Seal(s, hubNow), Accepted)
	expect(t, v, Seal(s, t0), Stale)

	v, _ = newTestVerifier(t, s)
	v.SetOffset(-time.Hour) // the hub's clock runs an hour behind
	expect(t, v, Seal(s, t0.Add(-time.Hour)), Accepted)
	expect(t, v, Seal(s, t0), Stale)
}

func TestWindow(t *testing.T) {
	s := testSecret(t)
	clk := &fakeClock{t: t0}
	v := NewVerifier(time.Second, clk.Now)
	v.SetSecret(s)
	expect(t, v, Seal(s, t0.Add(time.Second)), Accepted)
	expect(t, v, Seal(s, t0.Add(-time.Second)), Accepted)
	expect(t, v, Seal(s, t0.Add(1001*time.Millisecond)), Stale)
	expect(t, v, Seal(s, t0.Add(-1001*time.Millisecond)), Stale)
	if NewVerifier(-1, nil).window != DefaultWindow {
		t.Error("negative window is not DefaultWindow")
	}
}

func TestRealClock(t *testing.T) {
	s := testSecret(t)
	v := NewVerifier(0, nil)
	v.SetSecret(s)
	expect(t, v, Seal(s, time.Now()), Accepted)
}

func TestSetSecretRotation(t *testing.T) {
	old, next := testSecret(t), testSecret(t)
	v, _ := newTestVerifier(t, old)
	if v.Secret() != old {
		t.Fatal("Secret() is not the secret set")
	}
	oldPing := Seal(old, t0)
	expect(t, v, oldPing, Accepted)

	v.SetSecret(next)
	if v.Secret() != next {
		t.Fatal("Secret() is not the rotated secret")
	}
	if n := len(v.seen); n != 0 {
		t.Errorf("replay cache holds %d entries after rotation, want 0", n)
	}
	expect(t, v, oldPing, Forged)
	// The same stamp under the new key is a different, first-seen ping.
	expect(t, v, Seal(next, t0), Accepted)
	expect(t, v, Seal(next, t0), Replayed)
	want := Counters{Accepted: 2, Forged: 1, Replayed: 1}
	if got := v.Counters(); got != want {
		t.Errorf("Counters = %+v, want %+v", got, want)
	}
}

func TestPruneKeepsCacheSmall(t *testing.T) {
	s := testSecret(t)
	v, clk := newTestVerifier(t, s)
	const step = 250 * time.Millisecond
	// At most the stamps within one window of the newest can remain.
	bound := int(DefaultWindow/step) + 1
	for i := range 2000 {
		expect(t, v, Seal(s, clk.Now()), Accepted)
		if n := len(v.seen); n > bound {
			t.Fatalf("after %d pings the replay cache holds %d entries, want <= %d", i+1, n, bound)
		}
		clk.Advance(step)
	}
	if got := v.Counters(); got != (Counters{Accepted: 2000}) {
		t.Errorf("Counters = %+v, want 2000 accepted", got)
	}
}

// TestClockStepBack checks that a ping whose entry was pruned cannot be
// replayed after the device's clock (or the offset) moves back.
func TestClockStepBack(t *testing.T) {
	s := testSecret(t)
	v, clk := newTestVerifier(t, s)
	first := Seal(s, t0)
	expect(t, v, first, Accepted)
	clk.Advance(time.Minute)
	expect(t, v, Seal(s, clk.Now()), Accepted) // prunes first's entry
	if _, ok := v.seen[t0.UnixMilli()]; ok {
		t.Fatal("first ping's entry was not pruned")
	}
	clk.Set(t0)
	expect(t, v, first, Stale)
	v.SetOffset(-time.Minute)
	clk.Set(t0.Add(time.Minute))
	expect(t, v, first, Stale)
}

func TestCacheFull(t *testing.T) {
	s := testSecret(t)
	v, _ := newTestVerifier(t, s)
	start := t0.Add(-DefaultWindow)
	for i := range maxReplay {
		if got := v.Check(Seal(s, start.Add(time.Duration(i)*time.Millisecond))); got != Accepted {
			t.Fatalf("ping %d: Check = %v, want accepted", i, got)
		}
	}
	expect(t, v, Seal(s, t0), Replayed)
	expect(t, v, Seal(s, t0.Add(DefaultWindow)), Replayed)
	if n := len(v.seen); n != maxReplay {
		t.Errorf("replay cache holds %d entries, want %d", n, maxReplay)
	}
	want := Counters{Accepted: maxReplay, Replayed: 2}
	if got := v.Counters(); got != want {
		t.Errorf("Counters = %+v, want %+v", got, want)
	}
}

func TestCountersJSON(t *testing.T) {
	got, err := json.Marshal(Counters{Accepted: 1, Stale: 3})
	if err != nil {
		t.Fatal(err)
	}
	const want = `{"accepted":1,"malformed":0,"forged":0,"stale":3,"replayed":0}`
	if string(got) != want {
		t.Errorf("JSON = %s, want %s", got, want)
	}
}

func TestCountersMatch(t *testing.T) {
	s := testSecret(t)
	v, _ := newTestVerifier(t, s)
	inputs := []struct {
		b []byte
		v Verdict
	}{
		{Seal(s, t0), Accepted},
		{Seal(s, t0), Replayed},
		{Seal(s, t0.Add(time.Second)), Accepted},
		{nil, Malformed},
		{make([]byte, 1500), Malformed},
		{flip(Seal(s, t0), 3), Forged},
		{Seal(s, t0.Add(-time.Hour)), Stale},
	}
	for _, in := range inputs {
		expect(t, v, in.b, in.v)
	}
	want := Counters{Accepted: 2, Malformed: 2, Forged: 1, Stale: 1, Replayed: 1}
	if got := v.Counters(); got != want {
		t.Errorf("Counters = %+v, want %+v", got, want)
	}
}

// TestConcurrentCheck has many goroutines check the same distinct valid
// pings, each in its own order, while others rotate nothing but read
// counters and adjust the offset; every ping must be accepted exactly once.
func TestConcurrentCheck(t *testing.T) {
	s := testSecret(t)
	v, _ := newTestVerifier(t, s)
	const pings, workers = 2000, 16
	sealed := make([][]byte, pings)
	for i := range sealed {
		sealed[i] = Seal(s, t0.Add(time.Duration(i-pings/2)*time.Millisecond))
	}
	accepted := make([]atomic.Int32, pings)
	var wg sync.WaitGroup
	for w := range workers {
		wg.Go(func() {
			for j := range pings {
				i := (j*7 + w*131) % pings // 7 is coprime to 2000: a permutation
				switch got := v.Check(sealed[i]); got {
				case Accepted:
					accepted[i].Add(1)
				case Replayed:
				default:
					t.Errorf("ping %d: Check = %v, want accepted or replayed", i, got)
				}
			}
		})
	}
	wg.Go(func() {
		for range 1000 {
			_ = v.Counters()
			v.SetOffset(0)
			_ = v.Secret()
		}
	})
	wg.Wait()
	for i := range accepted {
		if n := accepted[i].Load(); n != 1 {
			t.Errorf("ping %d accepted %d times, want once", i, n)
		}
	}
	want := Counters{Accepted: pings, Replayed: pings * (workers - 1)}
	if got := v.Counters(); got != want {
		t.Errorf("Counters = %+v, want %+v", got, want)
	}
}

func TestParseErrorMessagesAreClear(t *testing.T) {
	_, err := Parse([]byte{1, 2})
	if err == nil || !strings.Contains(err.Error(), "want 41") {
		t.Errorf("Parse error %v does not say the size wanted", err)
	}
}
