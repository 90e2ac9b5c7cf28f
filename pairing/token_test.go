package pairing

import (
	"bytes"
	"crypto/sha256"
	"errors"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/pzone/pzone/certs"
	"github.com/pzone/pzone/transport"
)

// testInviteID is a well-formed invite id, as NewInvite makes them.
const testInviteID = "abcd2345"

// b32Alphabet is the token body's alphabet (RFC 4648 base32).
const b32Alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZ234567"

func testZoneID(t testing.TB) certs.ZoneID {
	t.Helper()
	ca, err := certs.NewCA("home", time.Now())
	if err != nil {
		t.Fatal(err)
	}
	return ca.ZoneID
}

// testSecret is SecretSize bytes that differ from one call to the next
// (by seed), so mixed-up secrets show.
func testSecret(seed byte) []byte {
	s := make([]byte, SecretSize)
	for i := range s {
		s[i] = seed + byte(i)
	}
	return s
}

// testAddrs returns n hub addresses of assorted shapes.
func testAddrs(n int) []string {
	shapes := []string{"127.0.0.1:4433", "[::1]:4433", "hub.example.net:4433", "[fe80::1%eth0]:65535", "192.0.2.7:1"}
	out := make([]string, n)
	for i := range out {
		out[i] = fmt.Sprintf("%s%d", shapes[i%len(shapes)], i)
	}
	return out
}

func newTestToken(zone certs.ZoneID, nAddrs int) *Token {
	return &Token{Addrs: testAddrs(nAddrs), Zone: zone, InviteID: testInviteID, Secret: testSecret(byte(nAddrs))}
}

// wireOf is the tokenWire String would encode for tok.
func wireOf(tok *Token) tokenWire {
	return tokenWire{Addrs: tok.Addrs, Zone: tok.Zone.Compact(), InviteID: tok.InviteID, Secret: tok.Secret}
}

// encodeBody wraps a token body the way String does: prefix, base32, and
// a correct checksum, so only ParseToken's checks after the checksum can
// refuse it.
func encodeBody(body []byte) string {
	sum := sha256.Sum256(body)
	return TokenPrefix + tokenEncoding.EncodeToString(append(slices.Clip(body), sum[:checksumSize]...))
}

func encodeWire(t testing.TB, w tokenWire) string {
	t.Helper()
	body, err := transport.Marshal(w)
	if err != nil {
		t.Fatal(err)
	}
	return encodeBody(body)
}

func equalTokens(a, b *Token) bool {
	return slices.Equal(a.Addrs, b.Addrs) && a.Zone == b.Zone && a.InviteID == b.InviteID && bytes.Equal(a.Secret, b.Secret)
}

func TestTokenRoundTrip(t *testing.T) {
	zone := testZoneID(t)
	for n := 1; n <= maxTokenAddrs; n++ {
		t.Run(fmt.Sprintf("%d addrs", n), func(t *testing.T) {
			tok := newTestToken(zone, n)
			s := tok.String()
			if s != encodeWire(t, wireOf(tok)) {
				t.Fatalf("String and the test's encoder disagree; fix encodeWire")
			}
			body, ok := strings.CutPrefix(s, TokenPrefix)
			if !ok {
				t.Fatalf("token %q does not start with %s", s, TokenPrefix)
			}
			if i := strings.IndexFunc(body, func(r rune) bool { return !strings.ContainsRune(b32Alphabet, r) }); i >= 0 {
				t.Fatalf("token body has %q at %d: not QR alphanumeric upper-case base32", body[i], i)
			}
			if len(s) > maxTokenLen {
				t.Fatalf("token is %d characters, above maxTokenLen %d", len(s), maxTokenLen)
			}
			for _, in := range []string{s, strings.ToLower(s), " \t" + s + "\r\n", "\n" + strings.ToLower(s) + "  "} {
				got, err := ParseToken(in)
				if err != nil {
					t.Fatalf("ParseToken(%q): %v", in, err)
				}
				if !equalTokens(got, tok) {
					t.Fatalf("ParseToken(%q) = %+v, want %+v", in, got, tok)
				}
			}
		})
	}
}

// TestParseTokenAccepts covers inputs that are not what String writes but
// must still parse, to a canonical token.
func TestParseTokenAccepts(t *testing.T) {
	zone := testZoneID(t)
	tok := newTestToken(zone, 1)
	longAddr := strings.Repeat("a", maxAddrLen-len(":1")) + ":1"
	tests := []struct {
		name string
		in   string
		want *Token
	}{
		{"whitespace does not count towards the length limit",
			strings.Repeat(" ", maxTokenLen) + tok.String() + strings.Repeat("\n", maxTokenLen), tok},
		{"line breaks inside, as from a wrapped terminal line",
			tok.String()[:30] + "\r\n" + tok.String()[30:60] + "\n" + tok.String()[60:], tok},
		{"zone in display form, lower case",
			encodeWire(t, tokenWire{Addrs: tok.Addrs, Zone: strings.ToLower(string(zone)), InviteID: tok.InviteID, Secret: tok.Secret}), tok},
		{"address of the maximum length",
			encodeWire(t, tokenWire{Addrs: []string{longAddr}, Zone: zone.Compact(), InviteID: tok.InviteID, Secret: tok.Secret}),
			&Token{Addrs: []string{longAddr}, Zone: zone, InviteID: tok.InviteID, Secret: tok.Secret}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := ParseToken(tt.in)
			if err != nil {
				t.Fatalf("ParseToken: %v", err)
			}
			if !equalTokens(got, tt.want) {
				t.Fatalf("ParseToken = %+v, want %+v", got, tt.want)
			}
		})
	}
}

func TestParseTokenRejects(t *testing.T) {
	zone := testZoneID(t)
	tok := newTestToken(zone, 2)
	valid := tok.String()
	body := strings.TrimPrefix(valid, TokenPrefix)
	// with returns the valid token's wire form changed by f.
	with := func(f func(w *tokenWire)) string {
		w := wireOf(tok)
		f(&w)
		return encodeWire(t, w)
	}
	marshal := func(v any) []byte {
		b, err := transport.Marshal(v)
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	badSum := func(body []byte) string {
		sum := sha256.Sum256(body)
		sum[0] ^= 1
		return TokenPrefix + tokenEncoding.EncodeToString(append(body, sum[:checksumSize]...))
	}
	otherZone := testZoneID(t).Compact()
	badCheck := otherZone[:len(otherZone)-1] + string(b32Alphabet[(strings.IndexByte(b32Alphabet, otherZone[len(otherZone)-1])+1)%32])

	tests := []struct {
		name, in string
		why      string // in the error, to show which check refused it
	}{
		{"empty", "", "should start with"},
		{"only white space", " \t\r\n", "should start with"},
		{"wrong prefix", "XYZ1" + body, "should start with"},
		{"prefix cut short", "PZ", "should start with"},
		{"body without prefix", body, "should start with"},
		{"other version", "PZI2" + body, "different pzone version"},
		{"other version, lower case", "pzi9" + strings.ToLower(body), "different pzone version"},
		{"prefix alone", TokenPrefix, "not valid base32"},
		{"checksum alone", TokenPrefix + body[len(body)-7:], "not valid base32"},
		{"not base32", TokenPrefix + body[:10] + "1" + body[11:], "not valid base32"},
		{"padding", valid + "=", "not valid base32"},
		{"white space inside", valid[:20] + " " + valid[20:], "not valid base32"},
		{"too long", valid + strings.Repeat("A", maxTokenLen), "too long"},
		{"too long by one", TokenPrefix + strings.Repeat("A", maxTokenLen-len(TokenPrefix)+1), "too long"},
		{"checksum mismatch", badSum(marshal(wireOf(tok))), "checksum"},
		{"not CBOR", encodeBody([]byte{0xff, 0x00, 0x01}), "damaged"},
		{"CBOR map, not array", encodeBody(marshal(map[string]any{"Addrs": tok.Addrs})), "damaged"},
		{"array of 3", encodeBody(marshal([]any{tok.Addrs, zone.Compact(), tok.InviteID})), "damaged"},
		{"array of 5", encodeBody(marshal([]any{tok.Addrs, zone.Compact(), tok.InviteID, tok.Secret, 1})), "damaged"},
		{"trailing bytes", encodeBody(append(marshal(wireOf(tok)), 0x00)), "damaged"},
		{"addrs of wrong type", encodeBody(marshal([]any{"127.0.0.1:1", zone.Compact(), tok.InviteID, tok.Secret})), "damaged"},
		{"empty zone", with(func(w *tokenWire) { w.Zone = "" }), "zone ID"},
		{"zone of wrong length", with(func(w *tokenWire) { w.Zone = w.Zone[:20] }), "zone ID"},
		{"zone check character wrong", with(func(w *tokenWire) { w.Zone = badCheck }), "zone ID"},
		{"no addrs (nil)", with(func(w *tokenWire) { w.Addrs = nil }), "0 hub addresses"},
		{"no addrs (empty)", with(func(w *tokenWire) { w.Addrs = []string{} }), "0 hub addresses"},
		{"9 addrs", with(func(w *tokenWire) { w.Addrs = testAddrs(maxTokenAddrs + 1) }), "9 hub addresses"},
		{"empty addr", with(func(w *tokenWire) { w.Addrs = []string{"127.0.0.1:1", ""} }), "bad hub address"},
		{"over-long addr", with(func(w *tokenWire) { w.Addrs = []string{strings.Repeat("a", maxAddrLen-1) + ":1"} }), "bad hub address"},
		{"empty invite id", with(func(w *tokenWire) { w.InviteID = "" }), "bad invite id"},
		{"invite id too short", with(func(w *tokenWire) { w.InviteID = "abcd234" }), "bad invite id"},
		{"invite id too long", with(func(w *tokenWire) { w.InviteID = "abcd23456" }), "bad invite id"},
		{"invite id with 0", with(func(w *tokenWire) { w.InviteID = "abcd2340" }), "bad invite id"},
		{"invite id with 1", with(func(w *tokenWire) { w.InviteID = "1bcd2345" }), "bad invite id"},
		{"invite id with 8", with(func(w *tokenWire) { w.InviteID = "abcd8345" }), "bad invite id"},
		{"invite id with dash", with(func(w *tokenWire) { w.InviteID = "abcd-345" }), "bad invite id"},
		{"invite id non-ASCII", with(func(w *tokenWire) { w.InviteID = "abcdé23" }), "bad invite id"},
		// The hub checks the proof against the lower-case id, so an
		// upper-case one could never pair.
		{"invite id upper case", with(func(w *tokenWire) { w.InviteID = "ABCD2345" }), "bad invite id"},
		{"no secret", with(func(w *tokenWire) { w.Secret = nil }), "secret is 0 bytes"},
		{"secret too short", with(func(w *tokenWire) { w.Secret = w.Secret[:SecretSize-1] }), "secret is 31 bytes"},
		{"secret too long", with(func(w *tokenWire) { w.Secret = append(slices.Clip(w.Secret), 0) }), "secret is 33 bytes"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := ParseToken(tt.in)
			if !errors.Is(err, ErrBadToken) {
				t.Fatalf("ParseToken(%.60q…) = %+v, %v; want ErrBadToken", tt.in, got, err)
			}
			if got != nil {
				t.Errorf("ParseToken returned a token with its error: %+v", got)
			}
			if !strings.Contains(err.Error(), tt.why) {
				t.Errorf("error %q does not say %q", err, tt.why)
			}
		})
	}
}

// TestParseTokenDamage changes a valid token the ways copying goes wrong:
// every truncation, and every character of the body replaced by another
// base32 character. All must be caught.
func TestParseTokenDamage(t *testing.T) {
	zone := testZoneID(t)
	for n := 1; n <= maxTokenAddrs; n++ {
		valid := newTestToken(zone, n).String()
		t.Run(fmt.Sprintf("%d addrs/truncated", n), func(t *testing.T) {
			for cut := 0; cut < len(valid); cut++ {
				if _, err := ParseToken(valid[:cut]); !errors.Is(err, ErrBadToken) {
					t.Fatalf("token cut to %d of %d characters: err = %v, want ErrBadToken", cut, len(valid), err)
				}
			}
		})
		t.Run(fmt.Sprintf("%d addrs/character changed", n), func(t *testing.T) {
			damaged := []byte(valid)
			for i := len(TokenPrefix); i < len(valid); i++ {
				orig := strings.IndexByte(b32Alphabet, valid[i])
				// Flipping the lowest bit is the change least likely to be
				// seen; the last character, which holds the final bits and
				// possibly unused ones, gets every other character.
				alts := []int{orig ^ 1}
				if i == len(valid)-1 {
					alts = alts[:0]
					for a := range len(b32Alphabet) {
						if a != orig {
							alts = append(alts, a)
						}
					}
				}
				for _, a := range alts {
					damaged[i] = b32Alphabet[a]
					if tok, err := ParseToken(string(damaged)); !errors.Is(err, ErrBadToken) {
						t.Fatalf("character %d changed from %c to %c: ParseToken = %+v, %v; want ErrBadToken",
							i, valid[i], damaged[i], tok, err)
					}
				}
				damaged[i] = valid[i]
			}
		})
	}
}

// FuzzParseToken: ParseToken must never panic, must refuse with
// ErrBadToken, and whatever it accepts must survive re-encoding.
func FuzzParseToken(f *testing.F) {
	zone := testZoneID(f)
	for n := 1; n <= maxTokenAddrs; n++ {
		s := newTestToken(zone, n).String()
		f.Add(s)
		f.Add(strings.ToLower(s))
		f.Add(s[:len(s)/2])
	}
	f.Add("")
	f.Add(TokenPrefix)
	f.Add("PZI2AAAA")
	f.Add(" " + TokenPrefix + "AEBAG ")
	f.Fuzz(checkParse)
}

// FuzzTokenBody fuzzes the CBOR body under a correct checksum, which
// mutations of a whole token seldom produce, so that the field checks
// behind the checksum are explored too.
func FuzzTokenBody(f *testing.F) {
	zone := testZoneID(f)
	for n := 1; n <= maxTokenAddrs; n++ {
		body, err := transport.Marshal(wireOf(newTestToken(zone, n)))
		if err != nil {
			f.Fatal(err)
		}
		f.Add(body)
	}
	f.Add([]byte{})
	f.Add([]byte{0x84, 0x80, 0x60, 0x60, 0x40}) // [[], "", "", h'']
	f.Fuzz(func(t *testing.T, body []byte) {
		checkParse(t, encodeBody(body))
	})
}

func checkParse(t *testing.T, s string) {
	tok, err := ParseToken(s)
	if err != nil {
		if !errors.Is(err, ErrBadToken) {
			t.Fatalf("ParseToken(%q): error %v does not wrap ErrBadToken", s, err)
		}
		if tok != nil {
			t.Fatalf("ParseToken(%q) returned a token with its error", s)
		}
		return
	}
	if n := len(tok.Addrs); n < 1 || n > maxTokenAddrs || len(tok.Secret) != SecretSize || !validInviteID(tok.InviteID) {
		t.Fatalf("ParseToken(%q) accepted an out-of-bounds token %+v", s, tok)
	}
	again := tok.String()
	tok2, err := ParseToken(again)
	if err != nil {
		t.Fatalf("ParseToken(%q) accepted %+v, whose encoding %q does not parse: %v", s, tok, again, err)
	}
	if !equalTokens(tok, tok2) {
		t.Fatalf("re-encoding changed the token: %+v became %+v", tok, tok2)
	}
	if again != tok2.String() {
		t.Fatalf("encoding is not stable: %q then %q", again, tok2.String())
	}
}
