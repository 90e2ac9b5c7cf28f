package hub

import (
	"crypto/ed25519"
	"crypto/rand"
	"errors"
	"testing"

	"github.com/pzone/pzone/certs"
)

func testZoneID(t *testing.T) certs.ZoneID {
	t.Helper()
	pub, _, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	id, err := certs.ZoneIDFromKey(pub)
	if err != nil {
		t.Fatal(err)
	}
	return id
}

// TestFriendsNamesAndLookups: a friend is found by petname or by zone ID
// in any spelling; petnames that would be ambiguous are refused.
func TestFriendsNamesAndLookups(t *testing.T) {
	alice, bob := testZoneID(t), testZoneID(t)
	h := &Hub{zone: &ZoneInfo{Name: "home", ID: testZoneID(t)}}
	h.friends = &friends{h: h, byZone: map[string]*FriendRecord{alice.Compact(): {Petname: "alice", ZoneID: alice}}}
	fs := h.friends

	if f := fs.named("alice"); f == nil || f.ZoneID != alice {
		t.Fatal("not found by petname")
	}
	if f := fs.named(alice.Compact()); f == nil || f.Petname != "alice" {
		t.Fatal("not found by compact zone ID")
	}
	if fs.named(string(bob)) != nil || fs.get(bob.Compact()) != nil {
		t.Fatal("a stranger was found")
	}
	if !fs.knownZone(alice.Compact()) || !fs.knownZone(h.zone.ID.Compact()) || fs.knownZone(bob.Compact()) {
		t.Fatal("knownZone: want this zone and alice's, not bob's")
	}
	if fs.petname(bob.Compact()) != bob.Compact() || fs.petname(alice.Compact()) != "alice" {
		t.Fatal("petname")
	}
	for _, bad := range []string{"home", "alice", bob.Compact(), "no spaces"} {
		if err := fs.checkPetname(bad, bob); !errors.Is(err, errBadFriend) {
			t.Errorf("petname %q for bob: %v, want refused", bad, err)
		}
	}
	if err := fs.checkPetname("alice", alice); err != nil {
		t.Errorf("alice keeping her own name: %v", err)
	}
	if err := fs.checkPetname("bob", bob); err != nil {
		t.Errorf("a new name: %v", err)
	}
	if fs.count() != 1 || len(fs.zones()) != 1 {
		t.Fatal("count/zones")
	}
}
