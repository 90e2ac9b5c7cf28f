package zone

import (
	"errors"
	"testing"
	"time"

	zsync "github.com/pzone/pzone/sync"
	"github.com/pzone/pzone/transport"
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
	id := peerCert(t, hub.pair(t, clock, "phone", 0))
	sess, err := DialSession(testCtx(t), id, transport.ModeAuto)
	if err != nil {
		t.Fatal(err)
	}
	defer sess.Close()
	st, err := sess.Conn().OpenStream(testCtx(t))
	if err != nil {
		t.Fatal(err)
	}
	for _, m := range []any{&StreamHeader{Kind: StreamSync}, &zsync.Msg{Type: zsync.MsgHello, Version: zsync.ProtocolVersion}} {
		if err := transport.WriteFrame(st, m); err != nil {
			t.Fatal(err)
		}
	}
	var start zsync.Msg
	if err := transport.NewFrameReader(st, 1<<20).ReadFrame(&start); err != nil || start.Type != zsync.MsgStart {
		t.Fatalf("start: %+v %v", start, err)
	}
	if _, err := st.Write([]byte{0x03, 0xff, 0xfe, 0xfd}); err != nil {
		t.Fatal(err)
	}
	select {
	case <-sess.Conn().Done():
	case <-time.After(20 * time.Second):
		t.Fatal("the hub kept a session that sent a malformed sync frame")
	}
	var rc *transport.RemoteCloseError
	if !errors.As(sess.Conn().Err(), &rc) || CloseReason(rc.Code) != ReasonProtocol {
		t.Fatalf("session ended with %v, want a protocol error", sess.Conn().Err())
	}
}
