package certs

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"encoding/pem"
	"strings"
	"testing"
)

func TestPEMRoundTrip(t *testing.T) {
	ca := newTestCA(t, "home", testNow)

	certPEM := EncodeCertPEM(ca.Cert.Raw)
	if !strings.HasPrefix(string(certPEM), "-----BEGIN CERTIFICATE-----\n") {
		t.Errorf("certificate PEM starts %q", certPEM[:30])
	}
	cert, err := ParseCertPEM(certPEM)
	if err != nil {
		t.Fatalf("ParseCertPEM: %v", err)
	}
	if !cert.Equal(ca.Cert) {
		t.Error("certificate changed in the round trip")
	}

	keyPEM := EncodeKeyPEM(ca.Key)
	if !strings.HasPrefix(string(keyPEM), "-----BEGIN PRIVATE KEY-----\n") {
		t.Errorf("key PEM starts %q", keyPEM[:30])
	}
	key, err := ParseKeyPEM(keyPEM)
	if err != nil {
		t.Fatalf("ParseKeyPEM: %v", err)
	}
	if !key.Equal(ca.Key) {
		t.Error("key changed in the round trip")
	}

	// What is written can be loaded back as the CA.
	block, _ := pem.Decode(keyPEM)
	loaded, err := LoadCA(cert.Raw, block.Bytes)
	if err != nil {
		t.Fatalf("LoadCA from PEM: %v", err)
	}
	if loaded.ZoneID != ca.ZoneID {
		t.Errorf("zone ID %q, want %q", loaded.ZoneID, ca.ZoneID)
	}

	// Text around the block, and further blocks, are ignored.
	withJunk := append([]byte("a comment\n"), certPEM...)
	withJunk = append(withJunk, keyPEM...)
	withJunk = append(withJunk, "trailing garbage"...)
	if got, err := ParseCertPEM(withJunk); err != nil || !got.Equal(ca.Cert) {
		t.Errorf("ParseCertPEM with surrounding text: %v", err)
	}
	if got, err := ParseKeyPEM(append(keyPEM, "trailing"...)); err != nil || !got.Equal(ca.Key) {
		t.Errorf("ParseKeyPEM with trailing text: %v", err)
	}
}

func TestPEMErrors(t *testing.T) {
	ca := newTestCA(t, "home", testNow)
	certPEM := EncodeCertPEM(ca.Cert.Raw)
	keyPEM := EncodeKeyPEM(ca.Key)
	ecKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	ecDER, err := x509.MarshalPKCS8PrivateKey(ecKey)
	if err != nil {
		t.Fatal(err)
	}
	ecPEM := pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: ecDER})
	junkCert := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: []byte("junk")})
	junkKey := pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: []byte("junk")})
	ecBlock := pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: []byte("junk")})

	certTests := []struct {
		name string
		in   []byte
		want string
	}{
		{"empty", nil, `parse certificate PEM: no PEM block found, want CERTIFICATE`},
		{"DER not PEM", ca.Cert.Raw, "no PEM block found"},
		{"key instead", keyPEM, `parse certificate PEM: PEM block is "PRIVATE KEY", want "CERTIFICATE"`},
		{"bad DER", junkCert, "parse certificate PEM: x509:"},
	}
	for _, tt := range certTests {
		t.Run("cert "+tt.name, func(t *testing.T) {
			_, err := ParseCertPEM(tt.in)
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("ParseCertPEM error %v, want %q", err, tt.want)
			}
		})
	}
	keyTests := []struct {
		name string
		in   []byte
		want string
	}{
		{"empty", nil, `parse key PEM: no PEM block found, want PRIVATE KEY`},
		{"certificate instead", certPEM, `PEM block is "CERTIFICATE", want "PRIVATE KEY"`},
		{"SEC 1 block", ecBlock, `PEM block is "EC PRIVATE KEY", want "PRIVATE KEY"`},
		{"bad DER", junkKey, "parse key PEM: not a PKCS#8 key"},
		{"ECDSA key", ecPEM, "key is *ecdsa.PrivateKey, want Ed25519"},
	}
	for _, tt := range keyTests {
		t.Run("key "+tt.name, func(t *testing.T) {
			_, err := ParseKeyPEM(tt.in)
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("ParseKeyPEM error %v, want %q", err, tt.want)
			}
		})
	}
}

func TestEncodeKeyPEMPanicsOnBadKey(t *testing.T) {
	defer func() {
		if recover() == nil {
			t.Error("EncodeKeyPEM of a 3-byte key did not panic")
		}
	}()
	EncodeKeyPEM([]byte{1, 2, 3})
}
