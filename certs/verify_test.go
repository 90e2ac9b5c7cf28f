package certs

import (
	"bytes"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/asn1"
	"errors"
	"math/big"
	"net/url"
	"strings"
	"testing"
	"time"
)

// leafLifetime is the lifetime of the node certificates in these tests.
const leafLifetime = 24 * time.Hour

// testGrace is the renewal grace period these tests verify with.
const testGrace = 48 * time.Hour

// craftLeaf issues a certificate the way Sign does, then lets edit change
// the template: for certificates Sign refuses to make.
func craftLeaf(t testing.TB, signer *CA, pub crypto.PublicKey, edit func(*x509.Certificate)) []byte {
	t.Helper()
	uri, err := url.Parse(Identity{Zone: signer.ZoneID, Device: "phone"}.URI())
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(42),
		Subject:               pkix.Name{CommonName: "phone"},
		NotBefore:             testNow.Add(-ClockSkew),
		NotAfter:              testNow.Add(leafLifetime),
		BasicConstraintsValid: true,
		KeyUsage:              x509.KeyUsageDigitalSignature,
		ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth, x509.ExtKeyUsageServerAuth},
		URIs:                  []*url.URL{uri},
	}
	if edit != nil {
		edit(tmpl)
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, signer.Cert, pub, signer.Key)
	if err != nil {
		t.Fatal(err)
	}
	return der
}

func TestVerify(t *testing.T) {
	ca := newTestCA(t, "home", testNow)
	other := newTestCA(t, "other", testNow)
	key := newTestKey(t)
	sign := func(ca *CA, device string, now time.Time) []byte {
		t.Helper()
		c, err := ca.Sign(key.Public(), device, now, leafLifetime)
		if err != nil {
			t.Fatal(err)
		}
		return c.Raw
	}
	leaf := sign(ca, "phone", testNow)
	notAfter := testNow.Add(leafLifetime)

	tampered := bytes.Clone(leaf)
	tampered[len(tampered)-1] ^= 1

	ecKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}

	// A CA whose certificate ran out an hour before testNow, and a leaf it
	// signed that is still within its own validity.
	oldCA := newTestCA(t, "home", testNow.Add(-CALifetime-time.Hour))
	oldCALeaf := sign(oldCA, "phone", testNow.Add(-2*time.Hour))

	// A CA that is not valid until after testNow.
	futureCA := newTestCA(t, "home", testNow.Add(time.Hour))
	futureCALeaf := sign(futureCA, "phone", testNow.Add(time.Hour))

	tests := []struct {
		name    string
		ca      *x509.Certificate
		chain   [][]byte
		now     time.Time
		grace   time.Duration
		want    Identity // checked when wantErr is ""
		expired bool
		wantIs  error  // errors.Is target, if any
		wantErr string // substring of the error; "" for success
	}{
		{
			name: "good", ca: ca.Cert, chain: [][]byte{leaf}, now: testNow.Add(time.Hour), grace: testGrace,
			want: Identity{ca.ZoneID, "phone"},
		},
		{
			name: "good hub", ca: ca.Cert, chain: [][]byte{sign(ca, HubDevice, testNow)}, now: testNow, grace: testGrace,
			want: Identity{ca.ZoneID, HubDevice},
		},
		{
			name: "backdated for clock skew", ca: ca.Cert, chain: [][]byte{leaf}, now: testNow.Add(-ClockSkew), grace: testGrace,
			want: Identity{ca.ZoneID, "phone"},
		},
		{
			name: "extra certificates ignored", ca: ca.Cert, chain: [][]byte{leaf, other.Cert.Raw, []byte("junk")}, now: testNow, grace: testGrace,
			want: Identity{ca.ZoneID, "phone"},
		},
		{
			name: "server auth only", ca: ca.Cert, now: testNow, grace: testGrace,
			chain: [][]byte{craftLeaf(t, ca, key.Public(), func(c *x509.Certificate) {
				c.ExtKeyUsage = []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}
			})},
			want: Identity{ca.ZoneID, "phone"},
		},
		{
			name: "at NotAfter exactly", ca: ca.Cert, chain: [][]byte{leaf}, now: notAfter, grace: 0,
			want: Identity{ca.ZoneID, "phone"},
		},
		{
			name: "expired within grace", ca: ca.Cert, chain: [][]byte{leaf}, now: notAfter.Add(time.Hour), grace: testGrace,
			want: Identity{ca.ZoneID, "phone"}, expired: true,
		},
		{
			name: "expired at the end of grace", ca: ca.Cert, chain: [][]byte{leaf}, now: notAfter.Add(testGrace), grace: testGrace,
			want: Identity{ca.ZoneID, "phone"}, expired: true,
		},
		{
			name: "expired beyond grace", ca: ca.Cert, chain: [][]byte{leaf}, now: notAfter.Add(3*24*time.Hour + 2*time.Hour), grace: testGrace,
			wantIs:  ErrExpired,
			wantErr: "certificate for phone expired 3 days ago (2026-11-22 10:00 UTC), past the 2 days allowed for renewal: pair the device again",
		},
		{
			name: "expired by a second beyond grace", ca: ca.Cert, chain: [][]byte{leaf}, now: notAfter.Add(testGrace + time.Second), grace: testGrace,
			wantIs: ErrExpired, wantErr: "expired 2 days ago",
		},
		{
			name: "expired without grace", ca: ca.Cert, chain: [][]byte{leaf}, now: notAfter.Add(time.Minute), grace: 0,
			wantIs: ErrExpired, wantErr: "certificate for phone expired 1 minute ago (2026-11-22 10:00 UTC): pair the device again",
		},
		{
			name: "expired with negative grace", ca: ca.Cert, chain: [][]byte{leaf}, now: notAfter.Add(time.Second), grace: -time.Hour,
			wantIs: ErrExpired, wantErr: "expired 1 second ago",
		},
		{
			name: "hub expired", ca: ca.Cert, chain: [][]byte{sign(ca, HubDevice, testNow)}, now: notAfter.Add(5 * time.Hour), grace: 0,
			wantIs: ErrExpired, wantErr: "certificate for hub expired 5 hours ago (2026-11-22 10:00 UTC)",
		},
		{
			name: "not yet valid", ca: ca.Cert, chain: [][]byte{sign(ca, "phone", testNow.Add(2*time.Hour))}, now: testNow.Add(time.Hour), grace: testGrace,
			wantIs:  ErrNotYetValid,
			wantErr: "certificate for phone is not valid until 2026-11-21 11:55 UTC (in 55 minutes): check the clocks",
		},
		{
			name: "other zone's CA", ca: other.Cert, chain: [][]byte{leaf}, now: testNow, grace: testGrace,
			wantIs: ErrWrongZone, wantErr: `certificate "phone" was not issued by zone ` + string(other.ZoneID),
		},
		{
			name: "signed by another CA, naming this zone", ca: ca.Cert, now: testNow, grace: testGrace,
			chain: [][]byte{craftLeaf(t, other, key.Public(), func(c *x509.Certificate) {
				c.URIs[0], _ = url.Parse(Identity{Zone: ca.ZoneID, Device: "phone"}.URI())
			})},
			wantIs: ErrWrongZone, wantErr: "was not issued by zone",
		},
		{
			name: "signed by this CA, naming another zone", ca: ca.Cert, now: testNow, grace: testGrace,
			chain: [][]byte{craftLeaf(t, ca, key.Public(), func(c *x509.Certificate) {
				c.URIs[0], _ = url.Parse(Identity{Zone: other.ZoneID, Device: "phone"}.URI())
			})},
			wantIs: ErrWrongZone, wantErr: "certificate for phone names zone " + string(other.ZoneID),
		},
		{
			name: "tampered signature", ca: ca.Cert, chain: [][]byte{tampered}, now: testNow, grace: testGrace,
			wantIs: ErrWrongZone, wantErr: "was not issued by zone",
		},
		{
			name: "CA certificate as leaf", ca: ca.Cert, chain: [][]byte{ca.Cert.Raw}, now: testNow, grace: testGrace,
			wantErr: "is a CA certificate, not a node certificate",
		},
		{
			name: "ECDSA leaf", ca: ca.Cert, now: testNow, grace: testGrace,
			chain:   [][]byte{craftLeaf(t, ca, &ecKey.PublicKey, nil)},
			wantErr: `certificate "phone" key is ECDSA, want Ed25519`,
		},
		{
			name: "no URI", ca: ca.Cert, now: testNow, grace: testGrace,
			chain:   [][]byte{craftLeaf(t, ca, key.Public(), func(c *x509.Certificate) { c.URIs = nil })},
			wantErr: "names no pz:// URI",
		},
		{
			name: "code signing only", ca: ca.Cert, now: testNow, grace: testGrace,
			chain: [][]byte{craftLeaf(t, ca, key.Public(), func(c *x509.Certificate) {
				c.ExtKeyUsage = []x509.ExtKeyUsage{x509.ExtKeyUsageCodeSigning}
			})},
			wantErr: "allows neither client nor server authentication",
		},
		{
			name: "no extended key usage", ca: ca.Cert, now: testNow, grace: testGrace,
			chain:   [][]byte{craftLeaf(t, ca, key.Public(), func(c *x509.Certificate) { c.ExtKeyUsage = nil })},
			wantErr: "allows neither client nor server authentication",
		},
		{
			name: "no digital signature", ca: ca.Cert, now: testNow, grace: testGrace,
			chain: [][]byte{craftLeaf(t, ca, key.Public(), func(c *x509.Certificate) {
				c.KeyUsage = x509.KeyUsageKeyEncipherment
			})},
			wantErr: "does not allow digital signatures",
		},
		{
			name: "unknown critical extension", ca: ca.Cert, now: testNow, grace: testGrace,
			chain: [][]byte{craftLeaf(t, ca, key.Public(), func(c *x509.Certificate) {
				c.ExtraExtensions = []pkix.Extension{{Id: asn1.ObjectIdentifier{1, 3, 6, 1, 4, 1, 99999, 1}, Critical: true, Value: []byte{5, 0}}}
			})},
			wantErr: "unsupported critical extensions",
		},
		{
			name: "zone CA expired", ca: oldCA.Cert, chain: [][]byte{oldCALeaf}, now: testNow, grace: testGrace,
			wantIs: ErrExpired, wantErr: "zone CA certificate expired 1 hour ago",
		},
		{
			name: "zone CA not yet valid", ca: futureCA.Cert, chain: [][]byte{futureCALeaf}, now: testNow, grace: testGrace,
			wantIs: ErrNotYetValid, wantErr: "zone CA certificate is not valid until 2026-11-21 10:55 UTC (in 55 minutes)",
		},
		{
			name: "empty chain", ca: ca.Cert, chain: nil, now: testNow, grace: testGrace,
			wantErr: "presented no certificate",
		},
		{
			name: "garbage", ca: ca.Cert, chain: [][]byte{[]byte("junk")}, now: testNow, grace: testGrace,
			wantErr: "verify certificate: x509:",
		},
		{
			name: "no CA", ca: nil, chain: [][]byte{leaf}, now: testNow, grace: testGrace,
			wantErr: "no zone CA certificate",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			v, err := Verify(tt.ca, tt.chain, tt.now, tt.grace)
			if tt.wantErr != "" {
				if err == nil {
					t.Fatalf("Verify succeeded: %+v", v)
				}
				if !strings.Contains(err.Error(), tt.wantErr) {
					t.Errorf("error %q does not contain %q", err, tt.wantErr)
				}
				if tt.wantIs != nil && !errors.Is(err, tt.wantIs) {
					t.Errorf("error %q is not %v", err, tt.wantIs)
				}
				for _, sentinel := range []error{ErrExpired, ErrNotYetValid, ErrWrongZone} {
					if sentinel != tt.wantIs && errors.Is(err, sentinel) {
						t.Errorf("error %q is also %v", err, sentinel)
					}
				}
				return
			}
			if err != nil {
				t.Fatalf("Verify: %v", err)
			}
			if v.Identity != tt.want {
				t.Errorf("Identity = %v, want %v", v.Identity, tt.want)
			}
			if v.Expired != tt.expired {
				t.Errorf("Expired = %v, want %v", v.Expired, tt.expired)
			}
			if !bytes.Equal(v.Cert.Raw, tt.chain[0]) {
				t.Error("Cert is not the leaf")
			}
		})
	}
}

func TestHumanDuration(t *testing.T) {
	tests := []struct {
		d    time.Duration
		want string
	}{
		{0, "0 seconds"},
		{-time.Second, "0 seconds"},
		{time.Second, "1 second"},
		{59 * time.Second, "59 seconds"},
		{time.Minute, "1 minute"},
		{90 * time.Minute, "1 hour"},
		{2 * time.Hour, "2 hours"},
		{36 * time.Hour, "1 day"},
		{3*24*time.Hour + 23*time.Hour, "3 days"},
		{400 * 24 * time.Hour, "400 days"},
	}
	for _, tt := range tests {
		if got := humanDuration(tt.d); got != tt.want {
			t.Errorf("humanDuration(%v) = %q, want %q", tt.d, got, tt.want)
		}
	}
}
