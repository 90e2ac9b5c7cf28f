package pairing

import (
	"bytes"
	"crypto/tls"
	"testing"

	"github.com/pzone/pzone/transport"
)

var testModes = []transport.Mode{transport.ModeQUIC, transport.ModeTCP}

func TestProof(t *testing.T) {
	for _, mode := range testModes {
		t.Run(string(mode), func(t *testing.T) {
			z := newTestZone(t)
			ln := listenHub(t, z.hub)
			clientA, serverA := connect(t, z, ln, mode)
			clientB, serverB := connect(t, z, ln, mode)

			secret := testSecret(1)
			v := Verifier(secret)
			otherV := Verifier(testSecret(2))
			proof, err := Proof(clientA.ConnectionState(), testInviteID, v[:])
			if err != nil {
				t.Fatal(err)
			}
			if len(proof) != ProofSize {
				t.Fatalf("proof is %d bytes, want %d", len(proof), ProofSize)
			}
			if hub, err := Proof(serverA.ConnectionState(), testInviteID, v[:]); err != nil || !bytes.Equal(hub, proof) {
				t.Fatalf("the hub's end derives %x, %v; the device's %x", hub, err, proof)
			}
			if onB, err := Proof(clientB.ConnectionState(), testInviteID, v[:]); err != nil || bytes.Equal(onB, proof) {
				t.Fatalf("proofs on two connections: %x and %x, %v; want them different", proof, onB, err)
			}
			flipped := bytes.Clone(proof)
			flipped[ProofSize-1] ^= 1

			tests := []struct {
				name     string
				cs       tls.ConnectionState // the hub's end
				inviteID string
				verifier []byte
				proof    []byte
				want     bool
			}{
				{"right", serverA.ConnectionState(), testInviteID, v[:], proof, true},
				{"relayed to another connection", serverB.ConnectionState(), testInviteID, v[:], proof, false},
				{"wrong verifier", serverA.ConnectionState(), testInviteID, otherV[:], proof, false},
				{"secret for verifier", serverA.ConnectionState(), testInviteID, secret, proof, false},
				{"other invite", serverA.ConnectionState(), "bcde3456", v[:], proof, false},
				{"one bit changed", serverA.ConnectionState(), testInviteID, v[:], flipped, false},
				{"truncated", serverA.ConnectionState(), testInviteID, v[:], proof[:ProofSize-1], false},
				{"extended", serverA.ConnectionState(), testInviteID, v[:], append(bytes.Clone(proof), 0), false},
				{"empty", serverA.ConnectionState(), testInviteID, v[:], nil, false},
			}
			for _, tt := range tests {
				t.Run(tt.name, func(t *testing.T) {
					if got := CheckProof(tt.cs, tt.inviteID, tt.verifier, tt.proof); got != tt.want {
						t.Fatalf("CheckProof = %v, want %v", got, tt.want)
					}
				})
			}
		})
	}
}
