package certs

import (
	"crypto"
	"crypto/ed25519"
	"crypto/sha256"
	"crypto/x509"
	"encoding/base32"
	"fmt"
	"strings"
)

// ZoneID is the fingerprint of a zone CA's public key in its display form:
// SHA-256 over the SubjectPublicKeyInfo DER, the first 20 bytes (160 bits)
// in RFC 4648 base32 (no padding, upper case), followed by one Luhn mod 32
// check character, written in groups of four separated by '-':
// "ABCD-EFGH-IJKL-MNOP-QRST-UVWX-YZ23-4567-C" (the check character alone
// in the last group).
type ZoneID string

const (
	// zoneIDAlphabet is the RFC 4648 base32 alphabet; a character's index
	// is its code point for the Luhn mod 32 check.
	zoneIDAlphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZ234567"
	// zoneIDHashBytes is how much of the SHA-256 is kept: 160 bits is out
	// of reach of second-preimage search and is exactly 32 base32
	// characters, so no padding and no wasted bits.
	zoneIDHashBytes = 20
	// zoneIDBodyLen is the number of base32 characters before the check
	// character.
	zoneIDBodyLen = zoneIDHashBytes * 8 / 5
	// zoneIDCompactLen is the length of a zone ID without separators.
	zoneIDCompactLen = zoneIDBodyLen + 1
	// zoneIDGroup is the size of the groups of the display form: four
	// characters at a time are easy to read aloud and compare.
	zoneIDGroup = 4
)

// ZoneIDFromKey computes the zone ID of a CA public key.
func ZoneIDFromKey(pub crypto.PublicKey) (ZoneID, error) {
	if k, ok := pub.(ed25519.PublicKey); ok && len(k) != ed25519.PublicKeySize {
		return "", fmt.Errorf("zone ID: Ed25519 public key has %d bytes, want %d", len(k), ed25519.PublicKeySize)
	}
	spki, err := x509.MarshalPKIXPublicKey(pub)
	if err != nil {
		return "", fmt.Errorf("zone ID: %w", err)
	}
	sum := sha256.Sum256(spki)
	body := base32.StdEncoding.WithPadding(base32.NoPadding).EncodeToString(sum[:zoneIDHashBytes])
	return displayZoneID(body + string(luhnCheck(body))), nil
}

// ParseZoneID accepts a zone ID as typed by a person: case-insensitive,
// '-' and spaces ignored. It rejects a wrong length, characters outside
// the base32 alphabet, and a check character that does not match, with
// an error saying which.
func ParseZoneID(s string) (ZoneID, error) {
	var b strings.Builder
	pos := 0
	for _, r := range s {
		pos++
		if r == '-' || r == ' ' {
			continue
		}
		if 'a' <= r && r <= 'z' {
			r -= 'a' - 'A'
		}
		if !strings.ContainsRune(zoneIDAlphabet, r) {
			return "", fmt.Errorf("%w: character %d is %q; zone IDs use only letters and the digits 2-7%s",
				ErrBadZoneID, pos, r, confusableHint(r))
		}
		b.WriteRune(r)
	}
	c := b.String()
	if len(c) != zoneIDCompactLen {
		return "", fmt.Errorf("%w: it has %d characters, want %d (not counting '-' and spaces)",
			ErrBadZoneID, len(c), zoneIDCompactLen)
	}
	if luhnCheck(c[:zoneIDBodyLen]) != c[zoneIDBodyLen] {
		return "", fmt.Errorf("%w: check character does not match: mistyped?", ErrBadZoneID)
	}
	return displayZoneID(c), nil
}

// confusableHint suggests the letter a person probably meant when they
// typed a digit that base32 leaves out.
func confusableHint(r rune) string {
	switch r {
	case '0':
		return " (the letter O?)"
	case '1':
		return " (the letter I or L?)"
	case '8':
		return " (the letter B?)"
	}
	return ""
}

// Compact is the zone ID without separators (upper case), as used in node
// URIs and tokens.
func (z ZoneID) Compact() string {
	return strings.ToUpper(strings.ReplaceAll(string(z), "-", ""))
}

// displayZoneID groups a compact zone ID (body and check character) for
// display.
func displayZoneID(compact string) ZoneID {
	var b strings.Builder
	for i := 0; i < zoneIDBodyLen; i += zoneIDGroup {
		b.WriteString(compact[i : i+zoneIDGroup])
		b.WriteByte('-')
	}
	b.WriteString(compact[zoneIDBodyLen:])
	return ZoneID(b.String())
}

// luhnCheck computes the Luhn mod N check character (N = 32) of body,
// which must consist of characters of zoneIDAlphabet. Luhn mod N catches
// every single-character substitution and most adjacent transpositions,
// the typos people make reading an ID aloud or copying it by hand.
func luhnCheck(body string) byte {
	const n = len(zoneIDAlphabet)
	factor, sum := 2, 0
	for i := len(body) - 1; i >= 0; i-- {
		addend := factor * strings.IndexByte(zoneIDAlphabet, body[i])
		if factor == 2 {
			factor = 1
		} else {
			factor = 2
		}
		sum += addend/n + addend%n
	}
	return zoneIDAlphabet[(n-sum%n)%n]
}

// FirstZoneID is the compact form of the first of zs that is a zone ID, or
// "" if none is: names that may be a zone's name or its ID (a policy
// rule's WHO, an address's zone) resolve to an ID this way.
func FirstZoneID(zs ...string) string {
	for _, z := range zs {
		if id, err := ParseZoneID(z); z != "" && err == nil {
			return id.Compact()
		}
	}
	return ""
}
