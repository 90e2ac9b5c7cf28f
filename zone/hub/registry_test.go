package hub

import (
	"testing"
	"time"

	"github.com/pzone/pzone/zone/localapi"
	"github.com/pzone/pzone/zone/wire"
)

// Once shutdown has begun, no session is registered: shutdown would never
// close it.
func TestRegisterRefusedDuringShutdown(t *testing.T) {
	rg := &registry{sessions: map[string]*hubSession{}, closing: true}
	if _, refused := rg.register(&hubSession{device: "phone"}); refused != wire.ReasonShutdown {
		t.Fatal("registered a session after shutdown began")
	}
	if len(rg.sessions) != 0 {
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
			rg := &registry{sessions: map[string]*hubSession{}, devices: map[string]*DeviceRecord{}, revoked: tc.revoked, changes: &localapi.Notifier{}}
			if tc.rec != nil {
				rg.devices[tc.rec.Name] = tc.rec
			}
			s := &hubSession{device: "phone", serial: serial}
			if _, refused := rg.register(s); refused != tc.want {
				t.Fatalf("register: %v, want %v", refused, tc.want)
			}
			if registered := rg.sessions["phone"] == s; registered != (tc.want == wire.ReasonNone) {
				t.Fatalf("session in the table: %v", registered)
			}
		})
	}
}

// TestRegistryShutdownOrder: close hands over the live sessions once, and
// nothing is counted in (whileOpen) after it.
func TestRegistryShutdownOrder(t *testing.T) {
	rg := &registry{sessions: map[string]*hubSession{}, devices: map[string]*DeviceRecord{"phone": {Name: "phone", Serials: []string{"01"}}}, revoked: map[string]bool{}, changes: &localapi.Notifier{}}
	s := &hubSession{device: "phone", serial: "01"}
	if _, refused := rg.register(s); refused != wire.ReasonNone {
		t.Fatal(refused)
	}
	n := 0
	if !rg.whileOpen(func() { n++ }) || n != 1 {
		t.Fatal("whileOpen before shutdown did not run")
	}
	live, first := rg.close()
	if !first || len(live) != 1 || live[0] != s {
		t.Fatalf("close: %v sessions, first %v", len(live), first)
	}
	if _, first := rg.close(); first {
		t.Fatal("second close reported first")
	}
	if rg.whileOpen(func() { n++ }) || n != 1 {
		t.Fatal("whileOpen ran after shutdown began")
	}
	if paired, online := rg.counts(); paired != 1 || online != 1 {
		t.Fatalf("counts: %d paired, %d online", paired, online)
	}
}
