package certs

import (
	"testing"
	"time"
)

func TestServerNames(t *testing.T) {
	ca, err := NewCA("home", time.Now())
	if err != nil {
		t.Fatal(err)
	}
	name := ServerName(ca.ZoneID)
	if len(name) > 253 || len(name) < len(serverNameSuffix)+zoneIDCompactLen {
		t.Fatalf("server name %q", name)
	}
	z, _, code, ok := ParseServerName(name)
	if !ok || code || z != ca.ZoneID {
		t.Fatalf("ParseServerName(%q) = %q, %v, %v; want %q", name, z, code, ok, ca.ZoneID)
	}
	// Upper case is the same name (SNI is case-insensitive).
	if z, _, _, ok := ParseServerName(ca.ZoneID.Compact() + ".PZONE.INVALID"); !ok || z != ca.ZoneID {
		t.Fatalf("upper case: %q, %v", z, ok)
	}
	if _, n, code, ok := ParseServerName(CodeServerName(4711)); !ok || !code || n != 4711 {
		t.Fatalf("code name: %d, %v, %v", n, code, ok)
	}
	for _, bad := range []string{"", LegacyServerName, "pzone.invalid", ".pzone.invalid",
		name[:10] + serverNameSuffix,         // short
		"a" + name,                           // long
		name[:5] + other(name[5]) + name[6:], // check character fails
		"n0" + codeNameSuffix, "n" + codeNameSuffix, "n01" + codeNameSuffix, "nx" + codeNameSuffix,
		"n99999999999" + codeNameSuffix, "7" + codeNameSuffix,
	} {
		if _, _, _, ok := ParseServerName(bad); ok {
			t.Errorf("ParseServerName(%q) accepted", bad)
		}
	}
}

func FuzzParseServerName(f *testing.F) {
	f.Add("aaaa.pzone.invalid")
	f.Add("n12.code.pzone.invalid")
	f.Fuzz(func(t *testing.T, s string) {
		z, n, code, ok := ParseServerName(s)
		if !ok {
			return
		}
		if code {
			if CodeServerName(n) == "" || n == 0 {
				t.Fatal("code name without number")
			}
			return
		}
		if _, err := ParseZoneID(string(z)); err != nil {
			t.Fatalf("accepted %q as zone %q: %v", s, z, err)
		}
	})
}

// other is a base32 character other than c.
func other(c byte) string {
	if c == 'a' {
		return "b"
	}
	return "a"
}
