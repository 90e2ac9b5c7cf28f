package zone

import (
	"testing"
	"time"
)

// Regression tests for defects found in review.

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
		want    CloseReason
	}{
		{"in good standing", &DeviceRecord{Name: "phone", Serials: []string{serial}}, nil, ReasonNone},
		{"device revoked", &DeviceRecord{Name: "phone", Serials: []string{serial}, Revoked: true, RevokedAt: time.Now()}, nil, ReasonRevoked},
		{"certificate revoked", &DeviceRecord{Name: "phone", Serials: []string{serial}}, map[string]bool{serial: true}, ReasonRevoked},
		{"record gone", nil, nil, ReasonRevoked},
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
			if registered := h.sessions["phone"] == s; registered != (tc.want == ReasonNone) {
				t.Fatalf("session in the table: %v", registered)
			}
		})
	}
}

// A frame on the sync stream that is not a message (a valid length
// prefix, then bytes that are not CBOR) is a protocol error: the hub
// closes the session saying so, rather than dropping the stream and
// keeping a session whose device is broken.
func TestMalformedSyncFrameClosesSession(t *testing.T) {
	clock := &testClock{}
	hub := startHub(t, clock, nil)
	raw, _ := openRawSync(t, hub.pair(t, clock, "phone", 0))
	if _, err := raw.st.Write([]byte{0x03, 0xff, 0xfe, 0xfd}); err != nil {
		t.Fatal(err)
	}
	raw.wantProtocolClose(t)
}
