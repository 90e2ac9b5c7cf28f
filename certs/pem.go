package certs

import (
	"crypto/ed25519"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
)

// PEM block types.
const (
	pemCertType = "CERTIFICATE"
	pemKeyType  = "PRIVATE KEY" // PKCS#8
)

// EncodeCertPEM wraps certificate DER in a "CERTIFICATE" PEM block.
func EncodeCertPEM(der []byte) []byte {
	return pem.EncodeToMemory(&pem.Block{Type: pemCertType, Bytes: der})
}

// EncodeKeyPEM encodes key as PKCS#8 in a "PRIVATE KEY" PEM block. It
// panics if key is not a well-formed Ed25519 key (64 bytes), which only a
// programming error produces.
func EncodeKeyPEM(key ed25519.PrivateKey) []byte {
	if len(key) != ed25519.PrivateKeySize {
		panic(fmt.Sprintf("certs: EncodeKeyPEM: Ed25519 key has %d bytes, want %d", len(key), ed25519.PrivateKeySize))
	}
	der, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		panic("certs: EncodeKeyPEM: " + err.Error())
	}
	return pem.EncodeToMemory(&pem.Block{Type: pemKeyType, Bytes: der})
}

// ParseCertPEM parses the first PEM block of b, which must be a
// "CERTIFICATE". Anything after that block is ignored.
func ParseCertPEM(b []byte) (*x509.Certificate, error) {
	der, err := decodePEM(b, pemCertType)
	if err != nil {
		return nil, fmt.Errorf("parse certificate PEM: %w", err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, fmt.Errorf("parse certificate PEM: %w", err)
	}
	return cert, nil
}

// ParseKeyPEM parses the first PEM block of b, which must be a PKCS#8
// "PRIVATE KEY" holding an Ed25519 key. Anything after that block is
// ignored.
func ParseKeyPEM(b []byte) (ed25519.PrivateKey, error) {
	der, err := decodePEM(b, pemKeyType)
	if err != nil {
		return nil, fmt.Errorf("parse key PEM: %w", err)
	}
	parsed, err := x509.ParsePKCS8PrivateKey(der)
	if err != nil {
		return nil, fmt.Errorf("parse key PEM: not a PKCS#8 key: %w", err)
	}
	key, ok := parsed.(ed25519.PrivateKey)
	if !ok {
		return nil, fmt.Errorf("parse key PEM: key is %T, want Ed25519", parsed)
	}
	return key, nil
}

// decodePEM returns the bytes of the first PEM block of b, which must be
// of type typ.
func decodePEM(b []byte, typ string) ([]byte, error) {
	block, _ := pem.Decode(b)
	if block == nil {
		return nil, errors.New("no PEM block found, want " + typ)
	}
	if block.Type != typ {
		return nil, fmt.Errorf("PEM block is %q, want %q", block.Type, typ)
	}
	return block.Bytes, nil
}
