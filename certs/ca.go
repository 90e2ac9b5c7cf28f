package certs

import (
	"bytes"
	"crypto"
	"crypto/ed25519"
	"crypto/rand"
	"crypto/sha256"
	"crypto/x509"
	"crypto/x509/pkix"
	"errors"
	"fmt"
	"math/big"
	"net/url"
	"time"
)

// CA is a zone certificate authority: a self-signed Ed25519 certificate
// and its key.
type CA struct {
	Cert   *x509.Certificate
	Key    ed25519.PrivateKey
	ZoneID ZoneID
}

// CALifetime is how long a new zone CA is valid. The zone ID derives from
// the key alone, so a later re-issue with the same key keeps the ID.
const CALifetime = 20 * 365 * 24 * time.Hour

// ClockSkew is how far certificates are backdated, so a device whose clock
// runs a little behind the hub's accepts a fresh certificate.
const ClockSkew = 5 * time.Minute

// serialBits is the size of certificate serial numbers: random 128 bits
// never collide in practice and stay well inside RFC 5280's 20 octets.
const serialBits = 128

// caCommonNamePrefix starts the subject common name of every zone CA.
const caCommonNamePrefix = "pzone zone "

// NewCA creates a zone CA named for zoneName, valid from now (minus a
// small backdate for clock skew) for CALifetime.
func NewCA(zoneName string, now time.Time) (*CA, error) {
	if err := ValidateName("zone", zoneName); err != nil {
		return nil, err
	}
	pub, key, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		return nil, fmt.Errorf("new zone CA: generate key: %w", err)
	}
	serial, err := randomSerial()
	if err != nil {
		return nil, fmt.Errorf("new zone CA: %w", err)
	}
	tmpl := &x509.Certificate{
		SerialNumber:          serial,
		Subject:               pkix.Name{CommonName: caCommonNamePrefix + zoneName},
		NotBefore:             now.Add(-ClockSkew),
		NotAfter:              now.Add(CALifetime),
		IsCA:                  true,
		BasicConstraintsValid: true,
		// Zone CAs sign node certificates directly; there are no
		// intermediates.
		MaxPathLen:     0,
		MaxPathLenZero: true,
		KeyUsage:       x509.KeyUsageCertSign | x509.KeyUsageCRLSign,
		SubjectKeyId:   subjectKeyID(pub),
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, pub, key)
	if err != nil {
		return nil, fmt.Errorf("new zone CA: %w", err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, fmt.Errorf("new zone CA: %w", err)
	}
	zone, err := ZoneIDFromKey(pub)
	if err != nil {
		return nil, fmt.Errorf("new zone CA: %w", err)
	}
	return &CA{Cert: cert, Key: key, ZoneID: zone}, nil
}

// LoadCA rebuilds a CA from its certificate and PKCS#8 key DER, checking
// that they match.
func LoadCA(certDER, keyDER []byte) (*CA, error) {
	cert, err := x509.ParseCertificate(certDER)
	if err != nil {
		return nil, fmt.Errorf("load zone CA: certificate: %w", err)
	}
	if !cert.IsCA || !cert.BasicConstraintsValid {
		return nil, fmt.Errorf("load zone CA: certificate %q is not a CA certificate", cert.Subject.CommonName)
	}
	pub, ok := cert.PublicKey.(ed25519.PublicKey)
	if !ok {
		return nil, fmt.Errorf("load zone CA: certificate key is %s, want Ed25519", cert.PublicKeyAlgorithm)
	}
	if err := cert.CheckSignatureFrom(cert); err != nil {
		return nil, fmt.Errorf("load zone CA: certificate is not self-signed: %w", err)
	}
	parsed, err := x509.ParsePKCS8PrivateKey(keyDER)
	if err != nil {
		return nil, fmt.Errorf("load zone CA: key is not PKCS#8: %w", err)
	}
	key, ok := parsed.(ed25519.PrivateKey)
	if !ok {
		return nil, fmt.Errorf("load zone CA: key is %T, want Ed25519", parsed)
	}
	if !bytes.Equal(key.Public().(ed25519.PublicKey), pub) {
		return nil, errors.New("load zone CA: key does not match the certificate")
	}
	zone, err := ZoneIDFromKey(pub)
	if err != nil {
		return nil, fmt.Errorf("load zone CA: %w", err)
	}
	return &CA{Cert: cert, Key: key, ZoneID: zone}, nil
}

// Sign issues a node certificate for pub naming device in this zone,
// valid from now (backdated by ClockSkew) until now+lifetime. It sets a
// random 128-bit serial, the URI SAN, key usage digitalSignature, and
// extended key usages client and server auth.
func (ca *CA) Sign(pub crypto.PublicKey, device string, now time.Time, lifetime time.Duration) (*x509.Certificate, error) {
	edPub, ok := pub.(ed25519.PublicKey)
	if !ok {
		return nil, fmt.Errorf("sign certificate for %q: key is %T, want Ed25519", device, pub)
	}
	if len(edPub) != ed25519.PublicKeySize {
		return nil, fmt.Errorf("sign certificate for %q: Ed25519 key has %d bytes, want %d", device, len(edPub), ed25519.PublicKeySize)
	}
	if err := ValidateName("device", device); err != nil {
		return nil, err
	}
	if lifetime <= 0 {
		return nil, fmt.Errorf("sign certificate for %q: lifetime %v is not positive", device, lifetime)
	}
	serial, err := randomSerial()
	if err != nil {
		return nil, fmt.Errorf("sign certificate for %q: %w", device, err)
	}
	// A CA assembled by hand with a zone ID that is not its key's would
	// issue certificates that never verify; refuse rather than do that.
	if zone, err := ZoneIDFromKey(ca.Cert.PublicKey); err != nil || zone != ca.ZoneID {
		return nil, fmt.Errorf("sign certificate for %q: CA zone ID %q does not match its certificate", device, ca.ZoneID)
	}
	id := Identity{Zone: ca.ZoneID, Device: device}
	uri, err := url.Parse(id.URI())
	if err != nil {
		return nil, fmt.Errorf("sign certificate for %q: %w", device, err)
	}
	tmpl := &x509.Certificate{
		SerialNumber:          serial,
		Subject:               pkix.Name{CommonName: device},
		NotBefore:             now.Add(-ClockSkew),
		NotAfter:              now.Add(lifetime),
		BasicConstraintsValid: true,
		IsCA:                  false,
		KeyUsage:              x509.KeyUsageDigitalSignature,
		ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth, x509.ExtKeyUsageServerAuth},
		URIs:                  []*url.URL{uri},
		AuthorityKeyId:        ca.Cert.SubjectKeyId,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.Cert, edPub, ca.Key)
	if err != nil {
		return nil, fmt.Errorf("sign certificate for %q: %w", device, err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, fmt.Errorf("sign certificate for %q: %w", device, err)
	}
	return cert, nil
}

// NewKey generates an Ed25519 node key.
func NewKey() (ed25519.PrivateKey, error) {
	_, key, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		return nil, fmt.Errorf("generate node key: %w", err)
	}
	return key, nil
}

// NewCSR makes a certificate request signed by key. It names nothing: the
// hub decides the device name.
func NewCSR(key ed25519.PrivateKey) ([]byte, error) {
	if len(key) != ed25519.PrivateKeySize {
		return nil, fmt.Errorf("certificate request: Ed25519 key has %d bytes, want %d", len(key), ed25519.PrivateKeySize)
	}
	der, err := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{}, key)
	if err != nil {
		return nil, fmt.Errorf("certificate request: %w", err)
	}
	return der, nil
}

// ParseCSR checks a request's self-signature and returns its Ed25519
// public key; any other key type is refused.
func ParseCSR(der []byte) (ed25519.PublicKey, error) {
	csr, err := x509.ParseCertificateRequest(der)
	if err != nil {
		return nil, fmt.Errorf("certificate request: %w", err)
	}
	pub, ok := csr.PublicKey.(ed25519.PublicKey)
	if !ok {
		return nil, fmt.Errorf("certificate request: key is %s, want Ed25519", csr.PublicKeyAlgorithm)
	}
	if err := csr.CheckSignature(); err != nil {
		return nil, fmt.Errorf("certificate request: bad signature: %w", err)
	}
	return pub, nil
}

// randomSerial returns a random positive serial number of serialBits.
func randomSerial() (*big.Int, error) {
	b := make([]byte, serialBits/8)
	for {
		if _, err := rand.Read(b); err != nil {
			return nil, fmt.Errorf("serial number: %w", err)
		}
		// Zero is not a valid serial (RFC 5280 wants it positive).
		if n := new(big.Int).SetBytes(b); n.Sign() > 0 {
			return n, nil
		}
	}
}

// subjectKeyID is RFC 7093 method 1: the leftmost 160 bits of the SHA-256
// of the subjectPublicKey bit string, which for Ed25519 is the raw key.
func subjectKeyID(pub ed25519.PublicKey) []byte {
	sum := sha256.Sum256(pub)
	return sum[:20]
}
