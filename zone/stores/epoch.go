package stores

import (
	"crypto/ed25519"
	"crypto/x509"
	"errors"
	"fmt"
	"path/filepath"
	"time"

	"github.com/pzone/pzone/storefile/kv"

	"github.com/pzone/pzone/certs"
	"github.com/pzone/pzone/storefile"
	"github.com/pzone/pzone/transport"
)

// KeyMadePrefix + file name: the anchor saw that store made.
const KeyMadePrefix = "made/"

func MarkMade(db kv.DB, name string) error {
	return db.Update(func(tx kv.Tx) error {
		v, _ := time.Now().UTC().MarshalText()
		return tx.Bucket(BucketMeta).Put([]byte(KeyMadePrefix+name), v)
	})
}

func WasMade(db kv.DB, name string) bool {
	made := false
	db.View(func(tx kv.Tx) error {
		made = tx.Bucket(BucketMeta).Get([]byte(KeyMadePrefix+name)) != nil
		return nil
	})
	return made
}

// StoreError adds what to do to storefile's refusal of a store. prog is
// the daemon ("pzh", "pzp"), keeps says what the file holds, reset how
// to do without it (empty: nothing can rebuild it).
func StoreError(err error, prog, keeps, reset string) error {
	var se *storefile.Error
	if !errors.As(err, &se) {
		return err
	}
	switch se.Kind {
	case storefile.ErrInUse:
		return fmt.Errorf("%w: another %s is running with this data directory; stop it first, or talk to it through its socket", err, prog)
	case storefile.ErrUnsafe:
		return err
	}
	how := fmt.Sprintf("restore %s from a backup (it holds %s)", filepath.Base(se.Path), keeps)
	if reset != "" {
		how += ", or " + reset
	} else {
		how += "; nothing else can rebuild it"
	}
	if se.Kind == storefile.ErrMissing {
		return fmt.Errorf("%w, but this data directory had one: %s was not started; %s", err, prog, how)
	}
	return fmt.Errorf("%w; %s was not started and the file was left as it is: %s", err, prog, how)
}

// The proof of an epoch is the zone CA's signature over an epochClaim:
// only the hub holds the CA key, and it signs an epoch only when it made
// that zone state itself (first run, or a reset its operator asked for),
// so a device that sees another epoch than it synced with knows whether
// its zone replaced the state on purpose.
type epochClaim struct {
	Purpose string `cbor:"1,keyasint"` // epochPurpose: the signature means nothing else
	ZoneID  string `cbor:"2,keyasint"`
	Epoch   string `cbor:"3,keyasint"`
	At      int64  `cbor:"4,keyasint"` // Unix seconds; informative
}

type epochProof struct {
	Claim []byte `cbor:"1,keyasint"` // CBOR epochClaim
	Sig   []byte `cbor:"2,keyasint"` // Ed25519 by the zone CA over "pz-epoch/1\x00" + Claim
}

const epochPurpose = "pz-epoch/1"

// MaxEpochProof bounds the proof a device decodes: a claim is under 200
// bytes, a signature 64.
const MaxEpochProof = 1024

func SignEpoch(ca *certs.CA, epoch string, now time.Time) ([]byte, error) {
	claim, err := transport.Marshal(&epochClaim{Purpose: epochPurpose, ZoneID: ca.ZoneID.Compact(), Epoch: epoch, At: now.Unix()})
	if err != nil {
		return nil, err
	}
	sig := ed25519.Sign(ca.Key, epochSigned(claim))
	return transport.Marshal(&epochProof{Claim: claim, Sig: sig})
}

func epochSigned(claim []byte) []byte { return append([]byte(epochPurpose+"\x00"), claim...) }

// VerifyEpochProof checks proof against the zone CA: nil if it proves
// that epoch is this zone's chosen zone state.
func VerifyEpochProof(ca *x509.Certificate, zoneID certs.ZoneID, epoch string, proof []byte) error {
	if proof == nil {
		return errors.New("the hub sent no reset signed by the zone")
	}
	if len(proof) > MaxEpochProof {
		return errors.New("the hub's signed reset is too large")
	}
	var p epochProof
	if err := transport.Unmarshal(proof, &p); err != nil {
		return fmt.Errorf("the hub's signed reset is unreadable: %v", err)
	}
	pub, ok := ca.PublicKey.(ed25519.PublicKey)
	if !ok || !ed25519.Verify(pub, epochSigned(p.Claim), p.Sig) {
		return errors.New("the hub's reset is not signed by the zone CA")
	}
	var c epochClaim
	if err := transport.Unmarshal(p.Claim, &c); err != nil {
		return fmt.Errorf("the hub's signed reset is unreadable: %v", err)
	}
	if c.Purpose != epochPurpose || c.ZoneID != zoneID.Compact() || c.Epoch != epoch {
		return errors.New("the hub's signed reset is for another zone state")
	}
	return nil
}
