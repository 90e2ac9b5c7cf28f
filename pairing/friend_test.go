package pairing

import (
	"bytes"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/pzone/pzone/certs"
)

func friendTestZone(t testing.TB) certs.ZoneID {
	ca, err := certs.NewCA("z", time.Now())
	if err != nil {
		t.Fatal(err)
	}
	id, err := certs.ZoneIDFromKey(ca.Cert.PublicKey)
	if err != nil {
		t.Fatal(err)
	}
	return id
}

func TestFriendToken(t *testing.T) {
	tok := &Token{Addrs: []string{"hub.example.net:7443"}, Zone: friendTestZone(t), InviteID: "abcdefgh", Secret: bytes.Repeat([]byte{7}, SecretSize)}
	s := tok.FriendString()
	if !strings.HasPrefix(s, FriendTokenPrefix) {
		t.Fatalf("friend token %q lacks its prefix", s)
	}
	got, err := ParseFriendToken(" " + strings.ToLower(s) + "\n")
	if err != nil || got.InviteID != tok.InviteID || !bytes.Equal(got.Secret, tok.Secret) || got.Zone != tok.Zone {
		t.Fatalf("round trip: %+v, %v", got, err)
	}
	// Neither kind passes for the other, and the error says which it is.
	if _, err := ParseToken(s); !errors.Is(err, ErrBadToken) || !strings.Contains(err.Error(), "token of pzh friend invite") {
		t.Fatalf("friend token as invite: %v", err)
	}
	if _, err := ParseFriendToken(tok.String()); !errors.Is(err, ErrBadFriendToken) || !strings.Contains(err.Error(), "token of pzh invite") {
		t.Fatalf("invite as friend token: %v", err)
	}
	if _, err := ParseFriendToken("PZF9AAAA"); err == nil || !strings.Contains(err.Error(), "different pzone version") {
		t.Fatalf("future version: %v", err)
	}
}

func FuzzParseFriendToken(f *testing.F) {
	tok := &Token{Addrs: []string{"127.0.0.1:7443"}, Zone: friendTestZone(f), InviteID: "abcdefgh", Secret: make([]byte, SecretSize)}
	f.Add(tok.FriendString())
	f.Add("PZF1")
	f.Fuzz(func(t *testing.T, s string) {
		got, err := ParseFriendToken(s)
		if err != nil {
			return
		}
		if again, err := ParseFriendToken(got.FriendString()); err != nil || again.InviteID != got.InviteID {
			t.Fatalf("re-encoded token does not parse back: %v", err)
		}
	})
}
