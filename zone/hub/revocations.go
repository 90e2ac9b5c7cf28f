package hub

import (
	"bytes"
	"crypto/ed25519"
	"errors"
	"fmt"
	"slices"
	"strings"

	"github.com/pzone/pzone/certs"
	zsync "github.com/pzone/pzone/sync"
	"github.com/pzone/pzone/transport"
	"github.com/pzone/pzone/zone/wire"
)

// A revocation in the zone state (certs/revoked/SERIAL) carries the zone
// CA's signature over a revocationClaim, so that a hub restored from a
// backup older than the revocation can take it back from any device
// that holds it (sync's Witness and Vouch) and revoke the device again,
// rather than let it back in.
type revocationClaim struct {
	Purpose string `cbor:"1,keyasint"` // revocationPurpose: the signature means nothing else
	ZoneID  string `cbor:"2,keyasint"`
	Serial  string `cbor:"3,keyasint"`
	Device  string `cbor:"4,keyasint"`
	At      int64  `cbor:"5,keyasint"` // Unix seconds
	Reason  string `cbor:"6,keyasint"`
}

const revocationPurpose = "pz-revocation/1"

func revocationSigned(zone certs.ZoneID, serial string, r *Revocation) ([]byte, error) {
	claim, err := transport.Marshal(&revocationClaim{Purpose: revocationPurpose, ZoneID: zone.Compact(), Serial: serial,
		Device: r.Device, At: r.At.Unix(), Reason: r.Reason})
	return append([]byte(revocationPurpose+"\x00"), claim...), err
}

// signRevocation is the zone CA's signature of r, the revocation of
// certificate serial.
func signRevocation(ca *certs.CA, serial string, r *Revocation) ([]byte, error) {
	msg, err := revocationSigned(ca.ZoneID, serial, r)
	if err != nil {
		return nil, err
	}
	return ed25519.Sign(ca.Key, msg), nil
}

// vouch decides a record of the hub's that a device pushed back (sync's
// Options.Vouch): only a revocation this zone's CA signed is taken; its
// device, if this hub has it paired and not revoked, is revoked again.
func (h *Hub) vouch(device string, r zsync.Record) error {
	serial, ok := strings.CutPrefix(r.Key, wire.CertKeyRevokedPrefix)
	if r.Bucket != zsync.BucketCerts || !ok || r.Deleted {
		return fmt.Errorf("edit stamped by node %q, not by device %q", r.Version.Node, device)
	}
	var rv Revocation
	if err := transport.Unmarshal(r.Value, &rv); err != nil {
		return fmt.Errorf("revocation of %s: unreadable: %v", serial, err)
	}
	// Exactly what the hub wrote: nothing added beside the signed fields.
	if canon, err := transport.Marshal(&rv); err != nil || !bytes.Equal(canon, r.Value) {
		return fmt.Errorf("revocation of %s: not as the hub wrote it", serial)
	}
	msg, err := revocationSigned(h.ca.ZoneID, serial, &rv)
	if err != nil || !ed25519.Verify(h.ca.Key.Public().(ed25519.PublicKey), msg, rv.Sig) {
		return fmt.Errorf("revocation of %s: not signed by this zone's CA", serial)
	}
	_, rec := h.reg.lookup(rv.Device)
	if rec == nil || rec.Revoked || !slices.Contains(rec.Serials, serial) {
		return nil // nothing here to revoke: kept in the zone state all the same
	}
	h.log.Warn("device revoked again: its revocation is newer than this hub's store (restored from a backup)", "device", rv.Device, "reported_by", device, "revoked_at", rv.At)
	if _, err := h.revoke(rv.Device, rv.Reason, wire.ReasonRevoked); err != nil && !errors.Is(err, ErrAlreadyDone) {
		return fmt.Errorf("revoke %s again: %v", rv.Device, err)
	}
	return nil
}
