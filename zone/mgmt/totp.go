package mgmt

import (
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base32"
	"encoding/hex"
	"strings"
	"time"

	"github.com/pquerna/otp"
	"github.com/pquerna/otp/totp"
)

// TOTP as RFC 6238 and every authenticator app have it: HMAC-SHA1, 6
// digits, 30 s steps, a 160-bit secret. A code is taken from the step
// before, the current one and the one after (a phone's clock a little
// off, a code typed as its step ends), and never a second time: an
// operator's last step used is kept, and a code of that step or an
// earlier one is refused.
const (
	TOTPDigits = 6
	totpPeriod = 30
	totpSkew   = 1
	totpSecret = 20
)

var totpOpts = totp.ValidateOpts{Period: totpPeriod, Skew: totpSkew, Digits: otp.DigitsSix, Algorithm: otp.AlgorithmSHA1}

// newTOTP makes a secret for account at issuer and the otpauth:// URI an
// authenticator app reads (from a QR code, or typed).
func newTOTP(issuer, account string) (secret, uri string, err error) {
	key, err := totp.Generate(totp.GenerateOpts{Issuer: issuer, AccountName: account, Period: totpPeriod,
		SecretSize: totpSecret, Digits: otp.DigitsSix, Algorithm: otp.AlgorithmSHA1})
	if err != nil {
		return "", "", err
	}
	return key.Secret(), key.URL(), nil
}

// TOTPCode is the code for secret at t: what an authenticator app shows.
func TOTPCode(secret string, t time.Time) (string, error) {
	return totp.GenerateCodeCustom(secret, t, totpOpts)
}

// totpStep is the step of t.
func totpStep(t time.Time) int64 { return t.Unix() / totpPeriod }

// checkTOTP returns the step whose code code is, among those the skew
// allows around now and after lastUsed; 0 when it is none of them.
func checkTOTP(secret, code string, now time.Time, lastUsed int64) int64 {
	if len(code) != TOTPDigits {
		return 0
	}
	cur := totpStep(now)
	for s := cur - totpSkew; s <= cur+totpSkew; s++ {
		if s <= lastUsed {
			continue
		}
		want, err := totp.GenerateCodeCustom(secret, time.Unix(s*totpPeriod, 0), totpOpts)
		if err == nil && subtle.ConstantTimeCompare([]byte(want), []byte(code)) == 1 {
			return s
		}
	}
	return 0
}

// Recovery codes stand in for a TOTP code once each, when the phone is
// lost: ten of them, each 16 characters of base32 (80 bits), shown in
// groups of four.
const (
	recoveryCodes   = 10
	recoveryCodeLen = 16
)

var recoveryEnc = base32.StdEncoding.WithPadding(base32.NoPadding)

// newRecoveryCodes returns fresh codes, as shown, and their hashes.
func newRecoveryCodes() (codes, hashes []string, err error) {
	for range recoveryCodes {
		b := make([]byte, recoveryCodeLen*5/8)
		if _, err := rand.Read(b); err != nil {
			return nil, nil, err
		}
		c := strings.ToLower(recoveryEnc.EncodeToString(b))
		codes = append(codes, c[0:4]+"-"+c[4:8]+"-"+c[8:12]+"-"+c[12:16])
		hashes = append(hashes, recoveryHash(c))
	}
	return codes, hashes, nil
}

// normalRecovery is a recovery code as typed, without its dashes and
// spaces, in lower case; "" when it cannot be one.
func normalRecovery(s string) string {
	s = strings.ToLower(strings.NewReplacer("-", "", " ", "").Replace(s))
	if len(s) != recoveryCodeLen {
		return ""
	}
	if _, err := recoveryEnc.DecodeString(strings.ToUpper(s)); err != nil {
		return ""
	}
	return s
}

func recoveryHash(normal string) string {
	h := sha256.Sum256([]byte("pzone recovery code\x00" + normal))
	return hex.EncodeToString(h[:])
}
