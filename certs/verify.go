package certs

import (
	"crypto/ed25519"
	"crypto/x509"
	"errors"
	"fmt"
	"slices"
	"time"
)

// Verified is the result of a successful Verify.
type Verified struct {
	Identity Identity
	Cert     *x509.Certificate // the leaf
	// Expired is true when the leaf is past NotAfter but within the grace
	// period Verify was given: fit only for renewal.
	Expired bool
}

// Verify checks that chain[0] (DER, as TLS hands it over) was issued by
// ca, is a node certificate (URI SAN in ca's zone, Ed25519, client/server
// auth) and is valid at now. A leaf past NotAfter by less than grace
// verifies with Expired set; past that, or not yet valid, is an error
// wrapping ErrExpired / ErrNotYetValid. Intermediates are not used: zone
// CAs sign leaves directly.
//
// The CA certificate itself must be valid at now, with no grace: a zone
// whose CA has expired needs a new CA certificate, not renewals.
func Verify(ca *x509.Certificate, chain [][]byte, now time.Time, grace time.Duration) (*Verified, error) {
	if ca == nil {
		return nil, errors.New("verify certificate: no zone CA certificate given")
	}
	if len(chain) == 0 {
		return nil, errors.New("verify certificate: the peer presented no certificate")
	}
	zone, err := ZoneIDFromKey(ca.PublicKey)
	if err != nil {
		return nil, fmt.Errorf("verify certificate: zone CA: %w", err)
	}
	leaf, err := x509.ParseCertificate(chain[0])
	if err != nil {
		return nil, fmt.Errorf("verify certificate: %w", err)
	}
	name := leaf.Subject.CommonName

	// Authenticity first: nothing else the certificate says means anything
	// until the zone CA's signature over it checks out.
	if err := leaf.CheckSignatureFrom(ca); err != nil {
		return nil, &certError{
			msg:  fmt.Sprintf("certificate %q was not issued by zone %s: %v", name, zone, err),
			kind: ErrWrongZone,
		}
	}
	if leaf.IsCA {
		return nil, fmt.Errorf("certificate %q is a CA certificate, not a node certificate", name)
	}
	if len(leaf.UnhandledCriticalExtensions) > 0 {
		return nil, fmt.Errorf("certificate %q has unsupported critical extensions %v", name, leaf.UnhandledCriticalExtensions)
	}
	if _, ok := leaf.PublicKey.(ed25519.PublicKey); !ok {
		return nil, fmt.Errorf("certificate %q key is %s, want Ed25519", name, leaf.PublicKeyAlgorithm)
	}
	id, err := IdentityFromCert(leaf)
	if err != nil {
		return nil, fmt.Errorf("verify certificate: %w", err)
	}
	if id.Zone != zone {
		return nil, &certError{
			msg:  fmt.Sprintf("certificate for %s names zone %s, but it was checked against zone %s", id.Device, id.Zone, zone),
			kind: ErrWrongZone,
		}
	}
	if leaf.KeyUsage&x509.KeyUsageDigitalSignature == 0 {
		return nil, fmt.Errorf("certificate for %s does not allow digital signatures", id.Device)
	}
	if !slices.Contains(leaf.ExtKeyUsage, x509.ExtKeyUsageClientAuth) &&
		!slices.Contains(leaf.ExtKeyUsage, x509.ExtKeyUsageServerAuth) {
		return nil, fmt.Errorf("certificate for %s allows neither client nor server authentication", id.Device)
	}

	if now.Before(ca.NotBefore) {
		return nil, &certError{
			msg:  fmt.Sprintf("zone CA certificate is not valid until %s (in %s): check this device's clock", formatTime(ca.NotBefore), humanDuration(ca.NotBefore.Sub(now))),
			kind: ErrNotYetValid,
		}
	}
	if now.After(ca.NotAfter) {
		return nil, &certError{
			msg:  fmt.Sprintf("zone CA certificate expired %s ago (%s): the hub must re-issue it", humanDuration(now.Sub(ca.NotAfter)), formatTime(ca.NotAfter)),
			kind: ErrExpired,
		}
	}
	if now.Before(leaf.NotBefore) {
		return nil, &certError{
			msg:  fmt.Sprintf("certificate for %s is not valid until %s (in %s): check the clocks", id.Device, formatTime(leaf.NotBefore), humanDuration(leaf.NotBefore.Sub(now))),
			kind: ErrNotYetValid,
		}
	}
	v := &Verified{Identity: id, Cert: leaf}
	if now.After(leaf.NotAfter) {
		late := now.Sub(leaf.NotAfter)
		if late > max(grace, 0) {
			msg := fmt.Sprintf("certificate for %s expired %s ago (%s)", id.Device, humanDuration(late), formatTime(leaf.NotAfter))
			if grace > 0 {
				msg += fmt.Sprintf(", past the %s allowed for renewal", humanDuration(grace))
			}
			if id.Device != HubDevice {
				msg += ": pair the device again"
			}
			return nil, &certError{msg: msg, kind: ErrExpired}
		}
		v.Expired = true
	}
	return v, nil
}

// certError is an error that reads as its own message but matches one of
// the sentinel errors with errors.Is, so users see one sentence instead of
// a sentence followed by the sentinel's text.
type certError struct {
	msg  string
	kind error
}

func (e *certError) Error() string { return e.msg }
func (e *certError) Unwrap() error { return e.kind }

// formatTime shows a certificate time to a person: minutes are precise
// enough, and UTC avoids guessing the reader's time zone.
func formatTime(t time.Time) string {
	return t.UTC().Format("2006-01-02 15:04 UTC")
}

// humanDuration rounds d down to its largest whole unit: "3 days",
// "1 hour", "40 seconds".
func humanDuration(d time.Duration) string {
	const day = 24 * time.Hour
	unit := func(n time.Duration, word string) string {
		if n == 1 {
			return "1 " + word
		}
		return fmt.Sprintf("%d %ss", n, word)
	}
	switch {
	case d >= day:
		return unit(d/day, "day")
	case d >= time.Hour:
		return unit(d/time.Hour, "hour")
	case d >= time.Minute:
		return unit(d/time.Minute, "minute")
	default:
		return unit(max(d/time.Second, 0), "second")
	}
}

// VerifyHubChain checks the chain a hub presents, [hub certificate, zone
// CA, ...]: a self-signed zone CA, and a hub certificate (pz://ZONE/hub)
// it issued, valid at now. It returns the CA and its zone ID; whether
// that is the zone the caller wants (a pin, a friend) is the caller's
// check.
func VerifyHubChain(raw [][]byte, now time.Time) (*x509.Certificate, ZoneID, error) {
	if len(raw) < 2 {
		said := ""
		if len(raw) == 1 {
			if c, err := x509.ParseCertificate(raw[0]); err == nil && c.Subject.CommonName != "" {
				said = fmt.Sprintf(" (its certificate says %q)", c.Subject.CommonName)
			}
		}
		return nil, "", fmt.Errorf("the server sent no zone CA certificate%s: it is no pzone hub, or a provider that serves no such zone", said)
	}
	ca, err := x509.ParseCertificate(raw[1])
	if err != nil {
		return nil, "", fmt.Errorf("hub's CA certificate: %w", err)
	}
	zone, err := ZoneIDFromKey(ca.PublicKey)
	if err != nil {
		return nil, "", fmt.Errorf("hub's CA certificate: %w", err)
	}
	if !ca.IsCA || ca.CheckSignatureFrom(ca) != nil {
		return nil, "", errors.New("hub's CA certificate is not self-signed, or not a CA")
	}
	v, err := Verify(ca, raw[:1], now, 0)
	if err != nil {
		return nil, "", fmt.Errorf("hub certificate: %w", err)
	}
	if v.Identity.Device != HubDevice {
		return nil, "", fmt.Errorf("peer presented device %q's certificate, not the hub's", v.Identity.Device)
	}
	return ca, zone, nil
}
