package certs

import (
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"errors"
	"strings"
	"testing"
)

// goldenZoneID is the zone ID of the Ed25519 key with the all-zero seed.
// It pins the derivation (SPKI DER, SHA-256, 20 bytes, base32, Luhn mod
// 32, grouping): changing any step changes every zone in existence.
const goldenZoneID ZoneID = "GOPC-76IX-MMCQ-PNVE-EO24-4CCO-FBOR-7JS5-E"

func zeroSeedKey() ed25519.PrivateKey {
	return ed25519.NewKeyFromSeed(make([]byte, ed25519.SeedSize))
}

func TestZoneIDGolden(t *testing.T) {
	got, err := ZoneIDFromKey(zeroSeedKey().Public())
	if err != nil {
		t.Fatal(err)
	}
	if got != goldenZoneID {
		t.Fatalf("ZoneIDFromKey(zero seed) = %q, want %q", got, goldenZoneID)
	}
	if c := got.Compact(); c != "GOPC76IXMMCQPNVEEO244CCOFBOR7JS5E" {
		t.Errorf("Compact() = %q", c)
	}
}

func randomZoneID(t testing.TB) ZoneID {
	t.Helper()
	pub, _, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	z, err := ZoneIDFromKey(pub)
	if err != nil {
		t.Fatal(err)
	}
	return z
}

func TestZoneIDRoundTrip(t *testing.T) {
	for range 50 {
		z := randomZoneID(t)
		if len(z) != 41 || len(z.Compact()) != 33 {
			t.Fatalf("zone ID %q has the wrong shape", z)
		}
		for _, s := range []string{string(z), z.Compact()} {
			got, err := ParseZoneID(s)
			if err != nil {
				t.Fatalf("ParseZoneID(%q): %v", s, err)
			}
			if got != z {
				t.Fatalf("ParseZoneID(%q) = %q, want %q", s, got, z)
			}
		}
	}
}

func TestZoneIDFromKeyTypes(t *testing.T) {
	ec, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := ZoneIDFromKey(&ec.PublicKey); err != nil {
		t.Errorf("ECDSA key: %v", err)
	}
	if _, err := ZoneIDFromKey(ed25519.PublicKey{1, 2, 3}); err == nil {
		t.Error("short Ed25519 key accepted")
	}
	if _, err := ZoneIDFromKey("not a key"); err == nil {
		t.Error("string accepted as a key")
	}
}

// Every single-character substitution, at every position including the
// check character itself, must be caught.
func TestZoneIDDetectsEverySingleTypo(t *testing.T) {
	for _, z := range []ZoneID{goldenZoneID, randomZoneID(t), randomZoneID(t)} {
		c := z.Compact()
		for pos := range len(c) {
			for _, r := range zoneIDAlphabet {
				if byte(r) == c[pos] {
					continue
				}
				typo := c[:pos] + string(r) + c[pos+1:]
				_, err := ParseZoneID(typo)
				if !errors.Is(err, ErrBadZoneID) {
					t.Fatalf("typo %q of %q at position %d: err = %v, want ErrBadZoneID", typo, c, pos, err)
				}
				if !strings.Contains(err.Error(), "check character does not match") {
					t.Fatalf("typo %q: error %q does not blame the check character", typo, err)
				}
			}
		}
	}
}

func TestParseZoneIDTolerant(t *testing.T) {
	c := goldenZoneID.Compact()
	for _, in := range []string{
		string(goldenZoneID),
		c,
		strings.ToLower(string(goldenZoneID)),
		strings.ToLower(c),
		"gopc 76ix mmcq pnve eo24 4cco fbor 7js5 e",
		"  GoPc-76Ix-MMCQ-pnve--EO24 - 4CCO-FBOR-7JS5-E  ",
		"GOPC76IX-MMCQPNVE-EO244CCO-FBOR7JS5-E",
	} {
		got, err := ParseZoneID(in)
		if err != nil {
			t.Errorf("ParseZoneID(%q): %v", in, err)
			continue
		}
		if got != goldenZoneID {
			t.Errorf("ParseZoneID(%q) = %q, want %q", in, got, goldenZoneID)
		}
	}
}

func TestParseZoneIDErrors(t *testing.T) {
	c := goldenZoneID.Compact()
	tests := []struct {
		name, in, want string
	}{
		{"empty", "", "0 characters, want 33"},
		{"only separators", "- - -", "0 characters, want 33"},
		{"one short", c[:32], "32 characters, want 33"},
		{"check char missing", string(goldenZoneID[:len(goldenZoneID)-2]), "32 characters, want 33"},
		{"one long", c + "A", "34 characters, want 33"},
		{"doubled", c + c, "66 characters, want 33"},
		{"digit zero", "0" + c[1:], `character 1 is '0'; zone IDs use only letters and the digits 2-7 (the letter O?)`},
		{"digit one", "GOPC-" + "1" + c[5:], `character 6 is '1'; zone IDs use only letters and the digits 2-7 (the letter I or L?)`},
		{"digit eight", c[:32] + "8", `character 33 is '8'; zone IDs use only letters and the digits 2-7 (the letter B?)`},
		{"digit nine", "9" + c[1:], `character 1 is '9'; zone IDs use only letters and the digits 2-7`},
		{"punctuation", c[:10] + "_" + c[11:], `character 11 is '_'`},
		{"non-ASCII", "É" + c[1:], `character 1 is 'É'`},
		{"invalid UTF-8", "\xff" + c[1:], `character 1 is '�'`},
		{"tab", c[:4] + "\t" + c[4:], `character 5 is '\t'`},
		{"check char wrong", c[:32] + "A", "check character does not match: mistyped?"},
		{"adjacent swap", c[1:2] + c[0:1] + c[2:], "check character does not match"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := ParseZoneID(tt.in)
			if err == nil {
				t.Fatalf("ParseZoneID(%q) = %q, want error", tt.in, got)
			}
			if !errors.Is(err, ErrBadZoneID) {
				t.Errorf("error %v does not wrap ErrBadZoneID", err)
			}
			if !strings.Contains(err.Error(), tt.want) {
				t.Errorf("error %q does not contain %q", err, tt.want)
			}
		})
	}
}

func TestCompact(t *testing.T) {
	tests := []struct {
		in   ZoneID
		want string
	}{
		{goldenZoneID, "GOPC76IXMMCQPNVEEO244CCOFBOR7JS5E"},
		{"gopc-76ix", "GOPC76IX"},
		{"", ""},
	}
	for _, tt := range tests {
		if got := tt.in.Compact(); got != tt.want {
			t.Errorf("%q.Compact() = %q, want %q", tt.in, got, tt.want)
		}
	}
}

func FuzzParseZoneID(f *testing.F) {
	f.Add(string(goldenZoneID))
	f.Add(goldenZoneID.Compact())
	f.Add(strings.ToLower(string(goldenZoneID)))
	f.Add("gopc 76ix mmcq pnve eo24 4cco fbor 7js5 a")
	f.Add("")
	f.Add("0000-0000")
	f.Add("\xff\xfe")
	f.Fuzz(func(t *testing.T, s string) {
		z, err := ParseZoneID(s)
		if err != nil {
			if !errors.Is(err, ErrBadZoneID) {
				t.Fatalf("ParseZoneID(%q): error %v does not wrap ErrBadZoneID", s, err)
			}
			return
		}
		again, err := ParseZoneID(string(z))
		if err != nil {
			t.Fatalf("ParseZoneID(%q) = %q, which does not re-parse: %v", s, z, err)
		}
		if again != z {
			t.Fatalf("ParseZoneID(%q) = %q, re-parses to %q", s, z, again)
		}
		if again, err := ParseZoneID(z.Compact()); err != nil || again != z {
			t.Fatalf("compact form %q of %q re-parses to %q, %v", z.Compact(), z, again, err)
		}
	})
}
