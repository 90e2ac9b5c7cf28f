package envelope

import (
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/pzone/pzone/certs"
	"github.com/pzone/pzone/transport"
)

// envelopeFixture is two zones, each with a device, as envelopes see them.
type envelopeFixture struct {
	alice, bob     *certs.CA
	phone, laptop  Signer
	phoneID, lapID certs.Identity
	now            time.Time
}

func newEnvelopeFixture(t testing.TB) *envelopeFixture {
	t.Helper()
	f := &envelopeFixture{now: time.Now()}
	mk := func(name, device string) (*certs.CA, Signer, certs.Identity) {
		ca, err := certs.NewCA(name, f.now.Add(-time.Hour))
		if err != nil {
			t.Fatal(err)
		}
		key, err := certs.NewKey()
		if err != nil {
			t.Fatal(err)
		}
		cert, err := ca.Sign(key.Public(), device, f.now.Add(-time.Hour), 24*time.Hour)
		if err != nil {
			t.Fatal(err)
		}
		id, _ := certs.ZoneIDFromKey(ca.Cert.PublicKey)
		return ca, Signer{Key: key, Cert: cert}, certs.Identity{Zone: id, Device: device}
	}
	f.alice, f.phone, f.phoneID = mk("alice", "phone")
	f.bob, f.laptop, f.lapID = mk("bob", "laptop")
	return f
}

// call is a signed call from alice's phone to bob's laptop.
func (f *envelopeFixture) call(t testing.TB, id string, body []byte, at time.Time) *Call {
	t.Helper()
	hdr := &Call{ID: id, Kind: 1, FromZoneID: f.phoneID.Zone.Compact(), FromDevice: "phone", FromApp: "notes",
		ToDevice: "laptop", ToService: "files", Method: "get"}
	env, err := f.phone.SignCall(hdr, f.lapID.Zone.Compact(), at, body)
	if err != nil {
		t.Fatal(err)
	}
	hdr.Envelope = env
	return hdr
}

func TestEnvelopeCall(t *testing.T) {
	f := newEnvelopeFixture(t)
	body := []byte(`{"path":"/a"}`)
	for _, tc := range []struct {
		name    string
		mutate  func(h *Call, body *[]byte)
		at      time.Duration // signed this long before now
		verdict Verdict
		err     string
	}{
		{name: "genuine"},
		{name: "body altered", mutate: func(h *Call, b *[]byte) { *b = []byte(`{"path":"/b"}`) }, verdict: Forged, err: "does not match"},
		{name: "app altered", mutate: func(h *Call, _ *[]byte) { h.FromApp = "evil" }, verdict: Forged, err: "does not match"},
		{name: "method altered", mutate: func(h *Call, _ *[]byte) { h.Method = "delete" }, verdict: Forged},
		{name: "service altered", mutate: func(h *Call, _ *[]byte) { h.ToService = "keys" }, verdict: Forged},
		{name: "ttl stretched", mutate: func(h *Call, _ *[]byte) { h.TTLMs = 1 << 30 }, verdict: Forged},
		{name: "device claimed", mutate: func(h *Call, _ *[]byte) { h.FromDevice = "tablet" }, verdict: Forged, err: "not \"tablet\""},
		{name: "stamp moved", mutate: func(h *Call, _ *[]byte) { h.Envelope.TimeMs++ }, verdict: Forged},
		{name: "signature cut", mutate: func(h *Call, _ *[]byte) { h.Envelope.Sig = h.Envelope.Sig[:10] }, verdict: Forged},
		{name: "no envelope", mutate: func(h *Call, _ *[]byte) { h.Envelope = nil }, verdict: Forged, err: "no signature"},
		{name: "other zone's certificate", mutate: func(h *Call, _ *[]byte) { h.Envelope.Cert = f.laptop.Cert.Raw }, verdict: Forged, err: "certificate"},
		{name: "stale", at: Window + time.Minute, verdict: Stale, err: "apart"},
		{name: "from the future", at: -Window - time.Minute, verdict: Stale},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := NewChecker()
			b := body
			hdr := f.call(t, "id-"+tc.name, b, f.now.Add(-tc.at))
			if tc.mutate != nil {
				tc.mutate(hdr, &b)
			}
			_, seen, v, err := c.CheckCall(hdr, f.alice.Cert, f.lapID, b, f.now)
			if seen || v != tc.verdict || (err == nil) != (tc.verdict == OK) {
				t.Fatalf("seen %v verdict %v err %v; want verdict %v", seen, v, err, tc.verdict)
			}
			if tc.err != "" && !strings.Contains(err.Error(), tc.err) {
				t.Fatalf("error %q, want one containing %q", err, tc.err)
			}
		})
	}
	// Checked against the wrong zone's CA, or for another recipient zone.
	c := NewChecker()
	hdr := f.call(t, "x", body, f.now)
	if _, _, v, _ := c.CheckCall(hdr, f.bob.Cert, f.lapID, body, f.now); v != Forged {
		t.Fatalf("checked against bob's CA: verdict %v", v)
	}
	if _, _, v, _ := c.CheckCall(hdr, f.alice.Cert, f.phoneID, body, f.now); v != Forged {
		t.Fatalf("delivered to another zone: verdict %v", v)
	}
}

func TestEnvelopeReplay(t *testing.T) {
	f := newEnvelopeFixture(t)
	c := NewChecker()
	hdr := f.call(t, "once", nil, f.now)
	key, seen, v, err := c.CheckCall(hdr, f.alice.Cert, f.lapID, nil, f.now)
	if err != nil || seen || v != OK {
		t.Fatalf("first: %v %v %v", seen, v, err)
	}
	if _, seen, v, err := c.CheckCall(hdr, f.alice.Cert, f.lapID, nil, f.now.Add(time.Second)); !seen || v != Replayed || err == nil {
		t.Fatalf("replay: seen %v verdict %v err %v", seen, v, err)
	}
	// A queued message that could not be delivered is forgotten, so the
	// hub's next attempt gets through.
	c.Forget(key)
	if _, seen, _, err := c.CheckCall(hdr, f.alice.Cert, f.lapID, nil, f.now); seen || err != nil {
		t.Fatalf("after forget: seen %v err %v", seen, err)
	}
	// Overflow: the cache starts afresh and refuses what it can no longer
	// tell apart.
	c = NewChecker()
	for i := range replayCacheSize - 1 {
		c.seen["k"+strconv.Itoa(i)] = seenEnvelope{exp: f.now.Add(time.Hour).UnixMilli()}
	}
	c.seen["long"] = seenEnvelope{exp: f.now.Add(time.Hour).UnixMilli(), long: true}
	old := f.call(t, "old", nil, f.now.Add(-time.Second))
	if _, _, _, err := c.CheckCall(old, f.alice.Cert, f.lapID, nil, f.now); err != nil {
		t.Fatalf("at overflow: %v", err)
	}
	// The message for later is kept, the short-lived ones forgotten.
	if _, kept := c.seen["long"]; len(c.seen) != 2 || !kept || c.floor != f.now.Add(Window).UnixMilli() {
		t.Fatalf("after overflow: %d entries, floor %d", len(c.seen), c.floor)
	}
	older := f.call(t, "older", nil, f.now.Add(-2*time.Second))
	if _, _, v, _ := c.CheckCall(older, f.alice.Cert, f.lapID, nil, f.now); v != Replayed {
		t.Fatalf("below the floor: verdict %v", v)
	}
}

func TestEnvelopeQueuedLongTTL(t *testing.T) {
	f := newEnvelopeFixture(t)
	c := NewChecker()
	hdr := &Call{ID: "q", Kind: 2, FromZoneID: f.phoneID.Zone.Compact(), FromDevice: "phone", ToDevice: "laptop", ToService: "inbox", TTLMs: uint64((2 * time.Hour) / time.Millisecond)}
	env, _ := f.phone.SignCall(hdr, f.lapID.Zone.Compact(), f.now, []byte(`"hi"`))
	hdr.Envelope = env
	// Delivered an hour later: within its time to live.
	if _, _, v, err := c.CheckCall(hdr, f.alice.Cert, f.lapID, []byte(`"hi"`), f.now.Add(time.Hour)); v != OK {
		t.Fatalf("queued an hour: verdict %v, %v", v, err)
	}
	if _, _, v, _ := NewChecker().CheckCall(hdr, f.alice.Cert, f.lapID, []byte(`"hi"`), f.now.Add(3*time.Hour)); v != Stale {
		t.Fatalf("past its time to live: verdict %v", v)
	}
}

func TestEnvelopeReply(t *testing.T) {
	f := newEnvelopeFixture(t)
	res := []byte(`{"ok":true}`)
	env, err := f.laptop.SignReply("c1", f.lapID, f.phoneID, f.now, res)
	if err != nil {
		t.Fatal(err)
	}
	if v, err := NewChecker().CheckReply(env, f.bob.Cert, "c1", f.lapID, f.phoneID, res, f.now); v != OK {
		t.Fatalf("genuine: %v %v", v, err)
	}
	for name, check := range map[string]func() (Verdict, error){
		"result altered": func() (Verdict, error) {
			return NewChecker().CheckReply(env, f.bob.Cert, "c1", f.lapID, f.phoneID, []byte(`{"ok":false}`), f.now)
		},
		"another call": func() (Verdict, error) {
			return NewChecker().CheckReply(env, f.bob.Cert, "c2", f.lapID, f.phoneID, res, f.now)
		},
		"another device": func() (Verdict, error) {
			return NewChecker().CheckReply(env, f.bob.Cert, "c1", certs.Identity{Zone: f.lapID.Zone, Device: "desk"}, f.phoneID, res, f.now)
		},
		"unsigned": func() (Verdict, error) {
			return NewChecker().CheckReply(nil, f.bob.Cert, "c1", f.lapID, f.phoneID, res, f.now)
		},
	} {
		if v, err := check(); v != Forged || err == nil {
			t.Errorf("%s: verdict %v err %v", name, v, err)
		}
	}
	if v, _ := NewChecker().CheckReply(env, f.bob.Cert, "c1", f.lapID, f.phoneID, res, f.now.Add(Window+time.Minute)); v != Stale {
		t.Errorf("late answer: verdict %v", v)
	}
}

// FuzzEnvelope feeds arbitrary call headers (as a hub might relay them)
// to the check: it must never panic, and what it accepts must be exactly
// what the phone signed.
func FuzzEnvelope(f *testing.F) {
	fx := newEnvelopeFixture(f)
	body := []byte(`"x"`)
	genuine := fx.call(f, "seed", body, fx.now)
	seed, _ := transport.Marshal(genuine)
	f.Add(seed, body)
	f.Add([]byte{0xa1, 0x10, 0xa0}, []byte{})
	f.Fuzz(func(t *testing.T, raw, b []byte) {
		var hdr Call
		if transport.Unmarshal(raw, &hdr) != nil {
			return
		}
		_, _, v, err := NewChecker().CheckCall(&hdr, fx.alice.Cert, fx.lapID, b, fx.now)
		if err == nil && v == OK {
			want, _ := callContent(genuine, fx.lapID.Zone.Compact(), genuine.Envelope.TimeMs, body)
			got, _ := callContent(&hdr, fx.lapID.Zone.Compact(), hdr.Envelope.TimeMs, b)
			if string(want) != string(got) {
				t.Fatalf("accepted a call the phone never signed: %+v", hdr)
			}
		}
	})
}

// memEnvelopes is an Store in memory.
type memEnvelopes map[string]int64

func (m memEnvelopes) SaveEnvelope(k string, exp int64) error { m[k] = exp; return nil }
func (m memEnvelopes) ForgetEnvelope(k string) error          { delete(m, k); return nil }

func TestEnvelopeQueuedSurviveRestart(t *testing.T) {
	f := newEnvelopeFixture(t)
	store := memEnvelopes{}
	c := NewChecker()
	c.Store = store
	hdr := &Call{ID: "q", Kind: 2, FromZoneID: f.phoneID.Zone.Compact(), FromDevice: "phone", ToDevice: "laptop", ToService: "inbox", TTLMs: uint64((24 * time.Hour) / time.Millisecond)}
	hdr.Envelope, _ = f.phone.SignCall(hdr, f.lapID.Zone.Compact(), f.now, nil)
	if _, _, _, err := c.CheckCall(hdr, f.alice.Cert, f.lapID, nil, f.now); err != nil {
		t.Fatal(err)
	}
	// A call without a time to live is not written down: its window is short.
	call := f.call(t, "c", nil, f.now)
	if _, _, _, err := c.CheckCall(call, f.alice.Cert, f.lapID, nil, f.now); err != nil {
		t.Fatal(err)
	}
	if len(store) != 1 {
		t.Fatalf("store holds %v", store)
	}
	// A new checker (the device restarted) that remembers refuses it.
	again := NewChecker()
	again.Remember(store)
	if _, seen, v, _ := again.CheckCall(hdr, f.alice.Cert, f.lapID, nil, f.now.Add(time.Hour)); !seen || v != Replayed {
		t.Fatalf("after a restart: seen %v verdict %v", seen, v)
	}
}

func TestEnvelopeCertCache(t *testing.T) {
	f := newEnvelopeFixture(t)
	c := NewChecker()
	if _, _, _, err := c.CheckCall(f.call(t, "a", nil, f.now), f.alice.Cert, f.lapID, nil, f.now); err != nil {
		t.Fatal(err)
	}
	if len(c.certs) != 1 {
		t.Fatalf("%d certificates remembered", len(c.certs))
	}
	// Remembered, but past its time at the stamp: refused all the same.
	late := f.now.Add(30 * time.Hour)
	if _, _, v, err := c.CheckCall(f.call(t, "b", nil, late), f.alice.Cert, f.lapID, nil, late); v != Forged || err == nil || !strings.Contains(err.Error(), "expired") {
		t.Fatalf("expired certificate: verdict %v, %v", v, err)
	}
	// Against another CA, the same certificate is checked afresh, and fails.
	if _, _, v, _ := c.CheckCall(f.call(t, "c", nil, f.now), f.bob.Cert, f.lapID, nil, f.now); v != Forged {
		t.Fatalf("other CA: verdict %v", v)
	}
}
