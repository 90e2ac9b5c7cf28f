package pairing

import (
	"crypto/hmac"
	"crypto/sha256"
	"crypto/tls"
	"fmt"
)

// ExporterLabel is the TLS exporter label (RFC 8446 §7.5) of the pairing
// proof. The exported value is unique to one TLS connection, so a proof
// observed or relayed elsewhere is worthless.
const ExporterLabel = "EXPORTER-pzone-pairing-v1"

// ProofSize is the HMAC-SHA256 output length.
const ProofSize = sha256.Size

// Proof computes HMAC-SHA256(Verifier(secret), exporter(label, inviteID))
// for the connection cs.
func Proof(cs tls.ConnectionState, inviteID string, verifier []byte) ([]byte, error) {
	return proof(cs, ExporterLabel, inviteID, verifier)
}

// CheckProof reports whether proof is right for this connection, in
// constant time.
func CheckProof(cs tls.ConnectionState, inviteID string, verifier, proof []byte) bool {
	return checkProof(cs, ExporterLabel, inviteID, verifier, proof)
}

func proof(cs tls.ConnectionState, label, inviteID string, verifier []byte) ([]byte, error) {
	ekm, err := cs.ExportKeyingMaterial(label, []byte(inviteID), 32)
	if err != nil {
		return nil, fmt.Errorf("derive pairing binding: %w", err)
	}
	m := hmac.New(sha256.New, verifier)
	m.Write(ekm)
	return m.Sum(nil), nil
}

func checkProof(cs tls.ConnectionState, label, inviteID string, verifier, p []byte) bool {
	want, err := proof(cs, label, inviteID, verifier)
	return err == nil && hmac.Equal(want, p)
}
