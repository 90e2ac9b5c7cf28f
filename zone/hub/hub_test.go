package hub

import (
	"errors"
	"os"
	"testing"
	"time"

	"github.com/pzone/pzone/certs"
	"github.com/pzone/pzone/zone/api"
	"github.com/pzone/pzone/zone/wire"
)

func TestInitZoneRefusesExisting(t *testing.T) {
	dir := t.TempDir()
	if _, err := InitZone(dir, "alice", []string{"127.0.0.1:7443"}, time.Now()); err != nil {
		t.Fatal(err)
	}
	if _, err := InitZone(dir, "bob", []string{"127.0.0.1:7443"}, time.Now()); !errors.Is(err, ErrZoneExists) {
		t.Fatalf("second init: %v", err)
	}
	fi, err := os.Stat(api.SocketPath(dir, HubDBName))
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode().Perm() != 0o600 {
		t.Errorf("store mode %v, want 0600 (it holds the CA key)", fi.Mode().Perm())
	}
	if _, err := certs.ParseZoneID(""); err == nil {
		t.Error("empty zone id parsed")
	}
}

func TestRetryWindowAfterShutdown(t *testing.T) {
	for _, tc := range []struct {
		sessions int
		want     time.Duration
	}{
		{0, minRetryWindow}, {1, minRetryWindow}, {2000, 2 * time.Second}, {10000, 10 * time.Second}, {1 << 30, wire.MaxRetryWindow},
	} {
		if got := retryWindow(tc.sessions); got != tc.want {
			t.Errorf("retryWindow(%d) = %v, want %v", tc.sessions, got, tc.want)
		}
	}
}

// Once shutdown has begun, no session is registered: shutdown would never
// close it.
func TestRegisterRefusedDuringShutdown(t *testing.T) {
	h := &Hub{sessions: map[string]*hubSession{}, closing: true}
	if _, refused := h.register(&hubSession{device: "phone"}); refused != wire.ReasonShutdown {
		t.Fatal("registered a session after shutdown began")
	}
	if len(h.sessions) != 0 {
		t.Fatal("session table changed")
	}
}

// A device revoked after its session was admitted but before it was
// registered is refused at registration: the revocation looked for a
// session to close before this one was in the table. (The window cannot
// be hit from outside a running hub, so register is called directly.)
func TestRegisterRefusedWhenRevoked(t *testing.T) {
	const serial = "0a0b"
	for _, tc := range []struct {
		name    string
		rec     *DeviceRecord
		revoked map[string]bool
		want    wire.CloseReason
	}{
		{"in good standing", &DeviceRecord{Name: "phone", Serials: []string{serial}}, nil, wire.ReasonNone},
		{"device revoked", &DeviceRecord{Name: "phone", Serials: []string{serial}, Revoked: true, RevokedAt: time.Now()}, nil, wire.ReasonRevoked},
		{"certificate revoked", &DeviceRecord{Name: "phone", Serials: []string{serial}}, map[string]bool{serial: true}, wire.ReasonRevoked},
		{"record gone", nil, nil, wire.ReasonRevoked},
	} {
		t.Run(tc.name, func(t *testing.T) {
			h := &Hub{sessions: map[string]*hubSession{}, devices: map[string]*DeviceRecord{}, revoked: tc.revoked}
			if tc.rec != nil {
				h.devices[tc.rec.Name] = tc.rec
			}
			s := &hubSession{device: "phone", serial: serial}
			if _, refused := h.register(s); refused != tc.want {
				t.Fatalf("register: %v, want %v", refused, tc.want)
			}
			if registered := h.sessions["phone"] == s; registered != (tc.want == wire.ReasonNone) {
				t.Fatalf("session in the table: %v", registered)
			}
		})
	}
}
