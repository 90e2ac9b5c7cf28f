package mgmt

import (
	"crypto/rand"
	"crypto/subtle"
	"encoding/base64"
	"errors"
	"fmt"
	"strings"
	"unicode/utf8"

	"golang.org/x/crypto/argon2"
)

// HashParams are argon2id's costs (RFC 9106). A stored hash carries the
// ones it was made with, so changing them affects new passwords only.
type HashParams struct {
	Time      uint32 // passes over the memory
	MemoryKiB uint32
	Threads   uint8
}

// DefaultHashParams is RFC 9106's second recommended setting (3 passes
// over 64 MiB), for machines where its first (2 GiB) is too much: about
// 0.1 s on one of this project's 2-core machines. Logins hash one or two at
// a time (Manager), so a flood of them costs time, not memory.
var DefaultHashParams = HashParams{Time: 3, MemoryKiB: 64 << 10, Threads: 4}

// Password limits. The longest is what argon2 gets in one go; past it a
// password is surely pasted by mistake.
const (
	MinPasswordLen = 10
	MaxPasswordLen = 1024
	saltLen        = 16
	keyLen         = 32
)

// CheckPassword says what is wrong with a new password, if anything.
func CheckPassword(pw string) error {
	switch n := utf8.RuneCountInString(pw); {
	case !utf8.ValidString(pw):
		return errors.New("the password is not valid UTF-8")
	case n < MinPasswordLen:
		return fmt.Errorf("the password has %d characters; use at least %d (a few words make a good one)", n, MinPasswordLen)
	case len(pw) > MaxPasswordLen:
		return fmt.Errorf("the password is longer than %d bytes", MaxPasswordLen)
	}
	return nil
}

// hashPassword returns pw's hash in the PHC string format
// ($argon2id$v=19$m=…,t=…,p=…$salt$key, unpadded base64).
func hashPassword(pw string, p HashParams) (string, error) {
	salt := make([]byte, saltLen)
	if _, err := rand.Read(salt); err != nil {
		return "", err
	}
	key := argon2.IDKey([]byte(pw), salt, p.Time, p.MemoryKiB, p.Threads, keyLen)
	b64 := base64.RawStdEncoding
	return fmt.Sprintf("$argon2id$v=%d$m=%d,t=%d,p=%d$%s$%s", argon2.Version, p.MemoryKiB, p.Time, p.Threads, b64.EncodeToString(salt), b64.EncodeToString(key)), nil
}

// Bounds on the costs a stored hash may ask for: a damaged or planted
// record must not make one login take minutes or gigabytes.
const (
	maxHashTime      = 64
	maxHashMemoryKiB = 1 << 20
)

// checkPassword reports whether pw matches the PHC-format hash.
func checkPassword(hash, pw string) (bool, error) {
	parts := strings.Split(hash, "$")
	if len(parts) != 6 || parts[0] != "" || parts[1] != "argon2id" {
		return false, errors.New("not an argon2id hash")
	}
	var v int
	if _, err := fmt.Sscanf(parts[2], "v=%d", &v); err != nil || v != argon2.Version {
		return false, fmt.Errorf("argon2 version %q", parts[2])
	}
	var p HashParams
	if _, err := fmt.Sscanf(parts[3], "m=%d,t=%d,p=%d", &p.MemoryKiB, &p.Time, &p.Threads); err != nil {
		return false, fmt.Errorf("argon2 parameters %q", parts[3])
	}
	if p.Time < 1 || p.Time > maxHashTime || p.MemoryKiB < 8 || p.MemoryKiB > maxHashMemoryKiB || p.Threads < 1 {
		return false, fmt.Errorf("argon2 parameters %q out of range", parts[3])
	}
	b64 := base64.RawStdEncoding
	salt, err := b64.DecodeString(parts[4])
	if err != nil || len(salt) < 8 {
		return false, errors.New("argon2 salt")
	}
	want, err := b64.DecodeString(parts[5])
	if err != nil || len(want) < 16 || len(want) > 64 {
		return false, errors.New("argon2 key")
	}
	got := argon2.IDKey([]byte(pw), salt, p.Time, p.MemoryKiB, p.Threads, uint32(len(want)))
	return subtle.ConstantTimeCompare(got, want) == 1, nil
}
