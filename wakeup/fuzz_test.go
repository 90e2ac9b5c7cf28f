package wakeup

import (
	"bytes"
	"testing"
	"time"
)

// fuzzSecret is fixed so that the fuzzer can learn to reach the tag check.
var fuzzSecret = Secret{
	ID:  [IDSize]byte{0: 0x11, 15: 0xee},
	Key: [KeySize]byte{0: 0x42, 31: 0x24},
}

func addSeeds(f *testing.F) {
	valid := Seal(fuzzSecret, t0)
	f.Add(valid)
	f.Add(Seal(fuzzSecret, t0.Add(-time.Hour)))
	f.Add([]byte{})
	f.Add(valid[:PingSize-1])
	f.Add(append(bytes.Clone(valid), 0))
	f.Add(make([]byte, 1500))
}

func FuzzParse(f *testing.F) {
	addSeeds(f)
	f.Fuzz(func(t *testing.T, b []byte) {
		p, err := Parse(b)
		if err != nil {
			return
		}
		if len(b) != PingSize || b[0] != Version {
			t.Fatalf("Parse accepted %d bytes starting %#x", len(b), b[0])
		}
		// The fields are b's, so sealing with b's id under any key
		// reproduces everything but the tag.
		again := Seal(Secret{ID: p.ID}, p.Time)
		if !bytes.Equal(again[:PingSize-TagSize], b[:PingSize-TagSize]) {
			t.Fatalf("re-sealed header %x, want %x", again[:PingSize-TagSize], b[:PingSize-TagSize])
		}
		if !bytes.Equal(p.Tag[:], b[PingSize-TagSize:]) {
			t.Fatalf("Tag %x, want %x", p.Tag, b[PingSize-TagSize:])
		}
	})
}

func FuzzCheck(f *testing.F) {
	addSeeds(f)
	f.Fuzz(func(t *testing.T, b []byte) {
		v := NewVerifier(0, func() time.Time { return t0 })
		v.SetSecret(fuzzSecret)
		got := v.Check(b)
		if got > Replayed {
			t.Fatalf("Check returned unknown verdict %v", got)
		}
		if got != Accepted {
			return
		}
		p, err := Parse(b)
		if err != nil {
			t.Fatalf("accepted input does not parse: %v", err)
		}
		if want := Seal(fuzzSecret, p.Time); !bytes.Equal(b, want) {
			t.Fatalf("accepted %x, want exactly Seal(secret, %v) = %x", b, p.Time, want)
		}
		if again := v.Check(b); again != Replayed {
			t.Fatalf("second Check of an accepted ping = %v, want replayed", again)
		}
	})
}
