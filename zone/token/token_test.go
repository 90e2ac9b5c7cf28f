package token

import (
	"encoding/json"
	"errors"
	"strings"
	"testing"
	"time"
)

func TestNewAndSplit(t *testing.T) {
	now := time.Date(2026, 12, 5, 10, 0, 0, 0, time.UTC)
	tok, presented := New(&Template{Name: "t", Limits: Limits{MaxBytesIn: 10}}, "lot", now)
	id, secret, err := Split(presented)
	if err != nil {
		t.Fatal(err)
	}
	other := secret[:31] + "a"
	if other == secret {
		other = secret[:31] + "b" // the last letter was already "a"
	}
	if id != tok.ID || !tok.Matches(secret) || tok.Matches(other) {
		t.Fatalf("token %+v does not match its own secret, or matches another", tok)
	}
	if strings.Contains(tok.SecretHash, secret) || tok.MaxBytesIn != 10 || tok.Lot != "lot" {
		t.Fatalf("record %+v", tok)
	}
	for _, bad := range []string{"", "abc", "abcdefgh.short", strings.Repeat("a", 41)} {
		if _, _, err := Split(bad); err == nil {
			t.Errorf("Split(%q) took it", bad)
		}
	}
}

func TestGrant(t *testing.T) {
	issued := time.Date(2026, 12, 1, 0, 0, 0, 0, time.UTC)
	now := issued.Add(48 * time.Hour)
	tok := func(l Limits) *Token { return &Token{ID: "abcdefgh", Issued: issued, Limits: l} }
	for _, c := range []struct {
		name   string
		t      *Token
		u      Usage
		device string
		refuse string // part of the error, "" if granted
		want   Grant
	}{
		{name: "no limits", t: tok(Limits{}), want: Grant{}},
		{name: "revoked", t: &Token{ID: "x", Revoked: true}, refuse: "was revoked"},
		{name: "other device", t: tok(Limits{Devices: []string{"phone"}}), device: "laptop", refuse: `not valid on device "laptop"`},
		{name: "its device", t: tok(Limits{Devices: []string{"phone"}}), device: "phone"},
		{name: "single use used", t: tok(Limits{SingleUse: true}), u: Usage{Bindings: 1}, refuse: "single use"},
		{name: "bytes left", t: tok(Limits{MaxBytesIn: 100, MaxBytesTotal: 150}), u: Usage{BytesIn: 40, BytesOut: 20},
			want: Grant{BytesIn: 60, BytesTotal: 90}},
		{name: "bytes used up", t: tok(Limits{MaxBytesOut: 10}), u: Usage{BytesOut: 10}, refuse: "used its 10 bytes out"},
		{name: "too old", t: tok(Limits{MaxAge: Duration(24 * time.Hour)}), refuse: "expired on"},
		{name: "age and binding: the sooner wins", t: tok(Limits{MaxAge: Duration(49 * time.Hour), MaxBinding: Duration(2 * time.Hour)}),
			want: Grant{Deadline: issued.Add(49 * time.Hour), Expiry: "expired"}},
		{name: "usage left", t: tok(Limits{MaxUsage: Duration(time.Hour)}), u: Usage{Used: Duration(45 * time.Minute)},
			want: Grant{Deadline: now.Add(15 * time.Minute), Expiry: "duration"}},
		{name: "usage spent", t: tok(Limits{MaxUsage: Duration(time.Hour)}), u: Usage{Used: Duration(time.Hour)}, refuse: "used its 1h0m0s of use"},
		{name: "wall from first use", t: tok(Limits{MaxWall: Duration(time.Hour)}), u: Usage{FirstUse: now.Add(-90 * time.Minute)}, refuse: "after its first use"},
		{name: "wall not started", t: tok(Limits{MaxWall: Duration(time.Hour)}), want: Grant{Deadline: now.Add(time.Hour), Expiry: "expired"}},
	} {
		g, err := c.t.Grant(c.u, c.device, now)
		switch {
		case c.refuse != "":
			if !errors.Is(err, ErrRefused) || !strings.Contains(err.Error(), c.refuse) {
				t.Errorf("%s: %v, want refused with %q", c.name, err, c.refuse)
			}
		case err != nil:
			t.Errorf("%s: %v", c.name, err)
		case g != c.want:
			t.Errorf("%s: %+v, want %+v", c.name, g, c.want)
		}
	}
}

func TestDurationJSON(t *testing.T) {
	var l Limits
	if err := json.Unmarshal([]byte(`{"max_binding":"90m","max_age":""}`), &l); err != nil || time.Duration(l.MaxBinding) != 90*time.Minute || l.MaxAge != 0 {
		t.Fatalf("%+v %v", l, err)
	}
	if err := json.Unmarshal([]byte(`{"max_binding":"-1s"}`), &l); err == nil {
		t.Fatal("a negative duration was taken")
	}
	b, _ := json.Marshal(Limits{MaxWall: Duration(time.Minute)})
	if string(b) != `{"max_wall":"1m0s"}` {
		t.Fatalf("%s", b)
	}
}
