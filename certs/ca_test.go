package certs

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"math/big"
	"slices"
	"strings"
	"testing"
	"time"
)

// testNow is the fixed clock of these tests.
var testNow = time.Date(2026, 11, 21, 10, 0, 0, 0, time.UTC)

func newTestCA(t testing.TB, name string, now time.Time) *CA {
	t.Helper()
	ca, err := NewCA(name, now)
	if err != nil {
		t.Fatalf("NewCA(%q): %v", name, err)
	}
	return ca
}

func newTestKey(t testing.TB) ed25519.PrivateKey {
	t.Helper()
	key, err := NewKey()
	if err != nil {
		t.Fatal(err)
	}
	return key
}

func TestNewCA(t *testing.T) {
	ca := newTestCA(t, "home", testNow)
	c := ca.Cert
	if !c.IsCA || !c.BasicConstraintsValid || c.MaxPathLen != 0 || !c.MaxPathLenZero {
		t.Errorf("basic constraints: IsCA=%v valid=%v maxPathLen=%d zero=%v", c.IsCA, c.BasicConstraintsValid, c.MaxPathLen, c.MaxPathLenZero)
	}
	if want := x509.KeyUsageCertSign | x509.KeyUsageCRLSign; c.KeyUsage != want {
		t.Errorf("KeyUsage = %v, want %v", c.KeyUsage, want)
	}
	if c.Subject.CommonName != "pzone zone home" {
		t.Errorf("CommonName = %q", c.Subject.CommonName)
	}
	if !c.NotBefore.Equal(testNow.Add(-ClockSkew)) || !c.NotAfter.Equal(testNow.Add(CALifetime)) {
		t.Errorf("validity %v .. %v", c.NotBefore, c.NotAfter)
	}
	if c.SerialNumber.Sign() <= 0 || c.SerialNumber.BitLen() > 128 {
		t.Errorf("serial %v is not a positive 128-bit number", c.SerialNumber)
	}
	if len(c.SubjectKeyId) == 0 {
		t.Error("no SubjectKeyId")
	}
	if c.SignatureAlgorithm != x509.PureEd25519 {
		t.Errorf("SignatureAlgorithm = %v", c.SignatureAlgorithm)
	}
	if err := c.CheckSignatureFrom(c); err != nil {
		t.Errorf("not self-signed: %v", err)
	}
	want, err := ZoneIDFromKey(ca.Key.Public())
	if err != nil {
		t.Fatal(err)
	}
	if ca.ZoneID != want {
		t.Errorf("ZoneID = %q, want %q", ca.ZoneID, want)
	}
	if other := newTestCA(t, "home", testNow); other.ZoneID == ca.ZoneID || other.Cert.SerialNumber.Cmp(c.SerialNumber) == 0 {
		t.Error("two CAs share a zone ID or serial")
	}
	if _, err := NewCA("Home Zone", testNow); err == nil || !strings.Contains(err.Error(), "invalid zone name") {
		t.Errorf("NewCA with a bad name: %v", err)
	}
}

func marshalKey(t testing.TB, key any) []byte {
	t.Helper()
	der, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	return der
}

func TestLoadCA(t *testing.T) {
	ca := newTestCA(t, "home", testNow)
	other := newTestCA(t, "other", testNow)
	leafKey := newTestKey(t)
	leaf, err := ca.Sign(leafKey.Public(), "phone", testNow, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	ecKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}

	loaded, err := LoadCA(ca.Cert.Raw, marshalKey(t, ca.Key))
	if err != nil {
		t.Fatalf("LoadCA: %v", err)
	}
	if loaded.ZoneID != ca.ZoneID || !loaded.Key.Equal(ca.Key) || !loaded.Cert.Equal(ca.Cert) {
		t.Errorf("LoadCA gave %+v, want %+v", loaded, ca)
	}

	tests := []struct {
		name          string
		cert, key     []byte
		wantErrSubstr string
	}{
		{"key of another CA", ca.Cert.Raw, marshalKey(t, other.Key), "key does not match"},
		{"leaf as CA", leaf.Raw, marshalKey(t, leafKey), "not a CA certificate"},
		{"ECDSA key", ca.Cert.Raw, marshalKey(t, ecKey), "want Ed25519"},
		{"garbage cert", []byte("nope"), marshalKey(t, ca.Key), "certificate"},
		{"garbage key", ca.Cert.Raw, []byte("nope"), "key is not PKCS#8"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := LoadCA(tt.cert, tt.key)
			if err == nil {
				t.Fatal("LoadCA succeeded")
			}
			if !strings.Contains(err.Error(), tt.wantErrSubstr) {
				t.Fatalf("error %q does not contain %q", err, tt.wantErrSubstr)
			}
		})
	}
}

func TestSign(t *testing.T) {
	ca := newTestCA(t, "home", testNow)
	key := newTestKey(t)
	for _, device := range []string{"phone", HubDevice} {
		c, err := ca.Sign(key.Public(), device, testNow, 24*time.Hour)
		if err != nil {
			t.Fatalf("Sign(%q): %v", device, err)
		}
		id, err := IdentityFromCert(c)
		if err != nil {
			t.Fatalf("IdentityFromCert: %v", err)
		}
		if want := (Identity{Zone: ca.ZoneID, Device: device}); id != want {
			t.Errorf("identity %v, want %v", id, want)
		}
		if c.Subject.CommonName != device {
			t.Errorf("CommonName = %q", c.Subject.CommonName)
		}
		if c.IsCA {
			t.Error("leaf is a CA")
		}
		if c.KeyUsage != x509.KeyUsageDigitalSignature {
			t.Errorf("KeyUsage = %v", c.KeyUsage)
		}
		if !slices.Equal(c.ExtKeyUsage, []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth, x509.ExtKeyUsageServerAuth}) {
			t.Errorf("ExtKeyUsage = %v", c.ExtKeyUsage)
		}
		if !bytes.Equal(c.AuthorityKeyId, ca.Cert.SubjectKeyId) {
			t.Errorf("AuthorityKeyId %x, CA SubjectKeyId %x", c.AuthorityKeyId, ca.Cert.SubjectKeyId)
		}
		if !c.NotBefore.Equal(testNow.Add(-ClockSkew)) || !c.NotAfter.Equal(testNow.Add(24*time.Hour)) {
			t.Errorf("validity %v .. %v", c.NotBefore, c.NotAfter)
		}
		if c.SerialNumber.Sign() <= 0 || c.SerialNumber.BitLen() > 128 {
			t.Errorf("serial %v", c.SerialNumber)
		}
		if !key.Public().(ed25519.PublicKey).Equal(c.PublicKey) {
			t.Error("certificate names the wrong key")
		}
		if err := c.CheckSignatureFrom(ca.Cert); err != nil {
			t.Errorf("not signed by the CA: %v", err)
		}
	}
}

func TestSignRefuses(t *testing.T) {
	ca := newTestCA(t, "home", testNow)
	key := newTestKey(t)
	ecKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	badZone := *ca
	badZone.ZoneID = goldenZoneID
	tests := []struct {
		name     string
		ca       *CA
		pub      any
		device   string
		lifetime time.Duration
		want     string
	}{
		{"ECDSA key", ca, &ecKey.PublicKey, "phone", time.Hour, "want Ed25519"},
		{"Ed25519 pointer", ca, new(key.Public().(ed25519.PublicKey)), "phone", time.Hour, "want Ed25519"},
		{"short key", ca, ed25519.PublicKey{1, 2, 3}, "phone", time.Hour, "3 bytes"},
		{"bad device", ca, key.Public(), "My Phone", time.Hour, "invalid device name"},
		{"empty device", ca, key.Public(), "", time.Hour, "invalid device name"},
		{"zero lifetime", ca, key.Public(), "phone", 0, "not positive"},
		{"negative lifetime", ca, key.Public(), "phone", -time.Hour, "not positive"},
		{"CA zone ID not its key's", &badZone, key.Public(), "phone", time.Hour, "does not match its certificate"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := tt.ca.Sign(tt.pub, tt.device, testNow, tt.lifetime)
			if err == nil {
				t.Fatal("Sign succeeded")
			}
			if !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("error %q does not contain %q", err, tt.want)
			}
		})
	}
}

func TestRandomSerial(t *testing.T) {
	limit := new(big.Int).Lsh(big.NewInt(1), 128)
	seen := map[string]bool{}
	for range 100 {
		n, err := randomSerial()
		if err != nil {
			t.Fatal(err)
		}
		if n.Sign() <= 0 || n.Cmp(limit) >= 0 {
			t.Fatalf("serial %v out of range", n)
		}
		if seen[n.String()] {
			t.Fatalf("serial %v repeated", n)
		}
		seen[n.String()] = true
	}
}

func TestCSR(t *testing.T) {
	key := newTestKey(t)
	der, err := NewCSR(key)
	if err != nil {
		t.Fatal(err)
	}
	csr, err := x509.ParseCertificateRequest(der)
	if err != nil {
		t.Fatal(err)
	}
	if len(csr.Subject.Names) != 0 || len(csr.URIs) != 0 || len(csr.DNSNames) != 0 {
		t.Errorf("request names something: %+v %v %v", csr.Subject, csr.URIs, csr.DNSNames)
	}
	pub, err := ParseCSR(der)
	if err != nil {
		t.Fatalf("ParseCSR: %v", err)
	}
	if !pub.Equal(key.Public()) {
		t.Error("ParseCSR returned the wrong key")
	}

	if _, err := NewCSR(ed25519.PrivateKey{1, 2, 3}); err == nil {
		t.Error("NewCSR accepted a short key")
	}

	ecKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	ecCSR, err := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{}, ecKey)
	if err != nil {
		t.Fatal(err)
	}
	// Flip a bit of the signature, the last bytes of the DER.
	tampered := bytes.Clone(der)
	tampered[len(tampered)-1] ^= 1

	tests := []struct {
		name string
		der  []byte
		want string
	}{
		{"ECDSA", ecCSR, "key is ECDSA, want Ed25519"},
		{"tampered signature", tampered, "signature"},
		{"garbage", []byte("nope"), "certificate request"},
		{"empty", nil, "certificate request"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := ParseCSR(tt.der)
			if err == nil {
				t.Fatal("ParseCSR succeeded")
			}
			if !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("error %q does not contain %q", err, tt.want)
			}
		})
	}
}
