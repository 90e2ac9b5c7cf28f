package stores

import (
	"strings"
	"testing"
	"time"

	"github.com/pzone/pzone/certs"
)

// A device accepts a new zone-state epoch only with the zone CA's
// signature over exactly that epoch of exactly this zone.
func TestEpochProof(t *testing.T) {
	now := time.Now()
	ca, err := certs.NewCA("alice", now)
	if err != nil {
		t.Fatal(err)
	}
	other, err := certs.NewCA("alice", now) // same name, another key
	if err != nil {
		t.Fatal(err)
	}
	proof, err := SignEpoch(ca, "e1", now)
	if err != nil {
		t.Fatal(err)
	}
	if err := VerifyEpochProof(ca.Cert, ca.ZoneID, "e1", proof); err != nil {
		t.Fatalf("a good proof refused: %v", err)
	}
	forged, _ := SignEpoch(other, "e1", now)
	flipped := append([]byte(nil), proof...)
	flipped[len(flipped)-1] ^= 1
	for _, tc := range []struct {
		name, epoch, want string
		proof             []byte
		zone              certs.ZoneID
	}{
		{"none", "e1", "sent no reset", nil, ca.ZoneID},
		{"other epoch", "e2", "for another zone state", proof, ca.ZoneID},
		{"other zone's CA", "e1", "not signed by the zone CA", forged, ca.ZoneID},
		{"claims another zone", "e1", "for another zone state", proof, other.ZoneID},
		{"altered", "e1", "", flipped, ca.ZoneID},
		{"garbage", "e1", "unreadable", []byte{0xff, 0x00, 0x13}, ca.ZoneID},
		{"too large", "e1", "too large", make([]byte, MaxEpochProof+1), ca.ZoneID},
	} {
		err := VerifyEpochProof(ca.Cert, tc.zone, tc.epoch, tc.proof)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: got %v, want an error with %q", tc.name, err, tc.want)
		}
	}
}
