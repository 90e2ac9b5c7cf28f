package pairing

import (
	"bytes"
	"errors"
	"strings"
	"testing"
	"time"
)

// testNow is a fixed clock reading, in a zone other than UTC so that
// NewInvite's conversion shows.
var testNow = time.Date(2025, 3, 14, 15, 9, 26, 0, time.FixedZone("UTC+2", 2*60*60))

func TestNewInviteDefaults(t *testing.T) {
	inv, secret, err := NewInvite(Template{Device: "phone"}, testNow)
	if err != nil {
		t.Fatal(err)
	}
	if len(secret) != SecretSize {
		t.Errorf("secret is %d bytes, want %d", len(secret), SecretSize)
	}
	if v := Verifier(secret); !bytes.Equal(inv.Verifier, v[:]) {
		t.Errorf("Verifier = %x, want Verifier(secret) = %x", inv.Verifier, v)
	}
	if id, err := NormalizeInviteID(inv.ID); err != nil || id != inv.ID {
		t.Errorf("invite id %q is not in normal form: NormalizeInviteID = %q, %v", inv.ID, id, err)
	}
	want := Invite{
		ID:           inv.ID,
		Device:       "phone",
		Verifier:     inv.Verifier,
		Created:      testNow.UTC(),
		Expires:      testNow.Add(15 * time.Minute).UTC(),
		Uses:         1,
		UsesLeft:     1,
		CertLifetime: 90 * 24 * time.Hour,
	}
	if inv.ID != want.ID || inv.Device != want.Device || !inv.Created.Equal(want.Created) || !inv.Expires.Equal(want.Expires) ||
		inv.Uses != want.Uses || inv.UsesLeft != want.UsesLeft || inv.CertLifetime != want.CertLifetime ||
		inv.Cancelled || inv.Devices != nil {
		t.Errorf("NewInvite = %+v, want %+v", *inv, want)
	}
	if inv.Created.Location() != time.UTC || inv.Expires.Location() != time.UTC {
		t.Errorf("times are not UTC: created %v, expires %v", inv.Created, inv.Expires)
	}
	if err := inv.Usable(testNow); err != nil {
		t.Errorf("a new invite is not usable: %v", err)
	}
}

func TestNewInviteKeepsTemplate(t *testing.T) {
	tmpl := Template{Device: "tv", TTL: time.Hour, Uses: 3, CertLifetime: time.Minute}
	inv, _, err := NewInvite(tmpl, testNow)
	if err != nil {
		t.Fatal(err)
	}
	if !inv.Expires.Equal(testNow.Add(time.Hour)) || inv.Uses != 3 || inv.UsesLeft != 3 || inv.CertLifetime != time.Minute {
		t.Errorf("NewInvite(%+v) = %+v", tmpl, *inv)
	}
}

func TestNewInviteRefusesBadTemplate(t *testing.T) {
	inv, secret, err := NewInvite(Template{Device: "phone", Uses: MaxInviteUses + 1}, testNow)
	if err == nil || inv != nil || secret != nil {
		t.Fatalf("NewInvite with too many uses = %+v, %x, %v; want only an error", inv, secret, err)
	}
}

func TestTemplateValidate(t *testing.T) {
	ok := Template{Device: "phone"}.WithDefaults()
	with := func(f func(*Template)) Template {
		t := ok
		f(&t)
		return t
	}
	tests := []struct {
		name    string
		tmpl    Template
		wantErr string // "" for valid
	}{
		{"defaults", ok, ""},
		{"ttl 0", with(func(t *Template) { t.TTL = 0 }), "invite ttl"},
		{"ttl negative", with(func(t *Template) { t.TTL = -time.Minute }), "invite ttl"},
		{"ttl 1ns", with(func(t *Template) { t.TTL = 1 }), ""},
		{"ttl 7 days", with(func(t *Template) { t.TTL = 7 * 24 * time.Hour }), ""},
		{"ttl over 7 days", with(func(t *Template) { t.TTL = MaxInviteTTL + 1 }), "invite ttl"},
		{"uses 0", with(func(t *Template) { t.Uses = 0 }), "invite uses"},
		{"uses negative", with(func(t *Template) { t.Uses = -1 }), "invite uses"},
		{"uses 1000", with(func(t *Template) { t.Uses = 1000 }), ""},
		{"uses 1001", with(func(t *Template) { t.Uses = 1001 }), "invite uses"},
		{"cert lifetime 0", with(func(t *Template) { t.CertLifetime = 0 }), "certificate lifetime"},
		{"cert lifetime under 30s", with(func(t *Template) { t.CertLifetime = 30*time.Second - 1 }), "certificate lifetime"},
		{"cert lifetime 30s", with(func(t *Template) { t.CertLifetime = 30 * time.Second }), ""},
		{"cert lifetime 2 years", with(func(t *Template) { t.CertLifetime = 2 * 365 * 24 * time.Hour }), ""},
		{"cert lifetime over 2 years", with(func(t *Template) { t.CertLifetime = MaxCertLifetime + 1 }), "certificate lifetime"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := tt.tmpl.Validate()
			switch {
			case tt.wantErr == "" && err != nil:
				t.Fatalf("Validate(%+v) = %v, want nil", tt.tmpl, err)
			case tt.wantErr != "" && (err == nil || !strings.Contains(err.Error(), tt.wantErr)):
				t.Fatalf("Validate(%+v) = %v, want an error about %s", tt.tmpl, err, tt.wantErr)
			}
		})
	}
}

func TestTemplateWithDefaults(t *testing.T) {
	got := Template{Device: "phone"}.WithDefaults()
	want := Template{Device: "phone", TTL: DefaultInviteTTL, Uses: 1, CertLifetime: DefaultCertLifetime}
	if got != want {
		t.Errorf("WithDefaults = %+v, want %+v", got, want)
	}
	// Set fields, even invalid ones, are left for Validate to judge.
	set := Template{TTL: -1, Uses: -1, CertLifetime: -1}
	if got := set.WithDefaults(); got != set {
		t.Errorf("WithDefaults changed set fields: %+v", got)
	}
}

func TestInviteUsable(t *testing.T) {
	expires := testNow.Add(time.Hour)
	tests := []struct {
		name string
		inv  Invite
		now  time.Time
		want error
	}{
		{"ok", Invite{Expires: expires, Uses: 1, UsesLeft: 1}, testNow, nil},
		{"ok a moment before expiry", Invite{Expires: expires, Uses: 1, UsesLeft: 1}, expires.Add(-1), nil},
		{"ok with uses left", Invite{Expires: expires, Uses: 3, UsesLeft: 1}, testNow, nil},
		{"cancelled", Invite{Expires: expires, Uses: 1, UsesLeft: 1, Cancelled: true}, testNow, ErrInviteCancelled},
		{"used up", Invite{Expires: expires, Uses: 1, UsesLeft: 0}, testNow, ErrInviteUsedUp},
		{"uses left negative", Invite{Expires: expires, Uses: 1, UsesLeft: -1}, testNow, ErrInviteUsedUp},
		{"exactly at expiry", Invite{Expires: expires, Uses: 1, UsesLeft: 1}, expires, ErrInviteExpired},
		{"after expiry", Invite{Expires: expires, Uses: 1, UsesLeft: 1}, expires.Add(time.Second), ErrInviteExpired},
		{"expiry in another time zone", Invite{Expires: expires.UTC(), Uses: 1, UsesLeft: 1}, expires, ErrInviteExpired},
		// A cancelled invite says so first: it is what the operator did.
		{"cancelled, used up and expired", Invite{Expires: expires, Cancelled: true}, expires, ErrInviteCancelled},
		{"used up and expired", Invite{Expires: expires, Uses: 1}, expires, ErrInviteUsedUp},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if err := tt.inv.Usable(tt.now); !errors.Is(err, tt.want) || (tt.want == nil) != (err == nil) {
				t.Fatalf("Usable = %v, want %v", err, tt.want)
			}
		})
	}
}

func TestDeviceForUse(t *testing.T) {
	inv, _, err := NewInvite(Template{Device: "phone", Uses: 3}, testNow)
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"phone", "phone-2", "phone-3"} {
		if got := inv.DeviceForUse(); got != want {
			t.Fatalf("with %d of %d uses left: DeviceForUse = %q, want %q", inv.UsesLeft, inv.Uses, got, want)
		}
		inv.UsesLeft--
	}
	if err := inv.Usable(testNow); !errors.Is(err, ErrInviteUsedUp) {
		t.Fatalf("after 3 uses: Usable = %v, want ErrInviteUsedUp", err)
	}
}

func TestNormalizeInviteID(t *testing.T) {
	tests := []struct {
		in, want string // want "" for an error
	}{
		{"abcd2345", "abcd2345"},
		{"ABCD2345", "abcd2345"},
		{"AbCd2345", "abcd2345"},
		{"  abcd2345\n", "abcd2345"},
		{"\tQRST6777 ", "qrst6777"},
		{"", ""},
		{"   ", ""},
		{"abcd234", ""},
		{"abcd23456", ""},
		{"abcd 345", ""},
		{"abcd-345", ""},
		{"abcd2340", ""}, // 0, 1, 8 and 9 are not base32
		{"abcd2341", ""},
		{"abcd2348", ""},
		{"abcd2349", ""},
		{"abcdé234", ""},
		{"abc\x00d234", ""},
	}
	for _, tt := range tests {
		got, err := NormalizeInviteID(tt.in)
		switch {
		case tt.want == "" && err == nil:
			t.Errorf("NormalizeInviteID(%q) = %q, want an error", tt.in, got)
		case tt.want != "" && (err != nil || got != tt.want):
			t.Errorf("NormalizeInviteID(%q) = %q, %v; want %q", tt.in, got, err, tt.want)
		}
	}
}

func TestVerifier(t *testing.T) {
	a, b := testSecret(1), testSecret(2)
	if Verifier(a) != Verifier(bytes.Clone(a)) {
		t.Error("Verifier is not deterministic")
	}
	if Verifier(a) == Verifier(b) {
		t.Error("different secrets give the same verifier")
	}
	if v := Verifier(a); bytes.Equal(v[:], a) {
		t.Error("the verifier is the secret")
	}
}

func TestInviteIDsUnique(t *testing.T) {
	const n = 1000
	seen := make(map[string]bool, n)
	for range n {
		inv, secret, err := NewInvite(Template{Device: "phone"}, testNow)
		if err != nil {
			t.Fatal(err)
		}
		if seen[inv.ID] {
			t.Fatalf("invite id %q repeated within %d invites", inv.ID, len(seen)+1)
		}
		seen[inv.ID] = true
		if !validInviteID(inv.ID) {
			t.Fatalf("NewInvite made invalid id %q", inv.ID)
		}
		if bytes.Equal(secret, make([]byte, SecretSize)) {
			t.Fatal("all-zero secret")
		}
	}
}
