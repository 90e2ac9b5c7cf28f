package zone

import (
	"crypto/ed25519"
	"crypto/x509"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"time"

	bolt "go.etcd.io/bbolt"

	"github.com/pzone/pzone/certs"
	"github.com/pzone/pzone/storefile"
	zsync "github.com/pzone/pzone/sync"
	"github.com/pzone/pzone/transport"
)

// Each daemon has one anchor store (pzh.db, pzp.db) made when the zone or
// the pairing is; the others (sync.db, mailbox.db) are made by the first
// run. The anchor records each one it saw made, so that one that goes
// missing later is reported as lost, never made again in silence. The
// hub's anchor also records the epoch of its zone state: a zone state
// that is new, or another's, is refused at start, and every epoch a hub
// serves carries a proof signed by the zone CA, which devices require
// before they give up their copies for it.

// keyMadePfx + file name: the anchor saw that store made.
const keyMadePfx = "made/"

// keyStateEpoch: the hub's zone-state epoch and its proof (stateEpoch).
var keyStateEpoch = []byte("state-epoch")

// stateEpoch is what the hub's anchor records of its zone state.
type stateEpoch struct {
	Epoch string `cbor:"1,keyasint"`
	Proof []byte `cbor:"2,keyasint"`
}

func markMade(db *bolt.DB, name string) error {
	return db.Update(func(tx *bolt.Tx) error {
		v, _ := time.Now().UTC().MarshalText()
		return tx.Bucket(bucketMeta).Put([]byte(keyMadePfx+name), v)
	})
}

func wasMade(db *bolt.DB, name string) bool {
	made := false
	db.View(func(tx *bolt.Tx) error {
		made = tx.Bucket(bucketMeta).Get([]byte(keyMadePfx+name)) != nil
		return nil
	})
	return made
}

// storeError adds what to do to storefile's refusal of a store. prog is
// the daemon ("pzh", "pzp"), keeps says what the file holds, reset how
// to do without it (empty: nothing can rebuild it).
func storeError(err error, prog, keeps, reset string) error {
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

const (
	keepsZoneState   = "the zone state: policy rules, service tokens, app and user data"
	keepsMailbox     = "messages queued for devices and friends, and wake registrations"
	resetZoneStateH  = "start it over with pzh serve --reset-zone-state (policy rules, tokens and app data are lost; devices drop their copies)"
	resetMailboxH    = "start it over with pzh serve --reset-mailbox (the queued messages are lost)"
	resetDeviceState = "start it over with pzp run --reset-zone-state (it is fetched again from the hub; edits not yet pushed are lost)"
	rePairDevice     = "move it away and pair this device again (pzp pair with a new invite; revoke the old one with pzh revoke)"
)

// openHubState opens the hub's zone state, refusing one that is missing,
// damaged, new or another zone's unless cfg.ResetZoneState asks to start
// it over, and returns the proof of its epoch that devices are sent.
func openHubState(cfg *HubConfig, store *hubStore, ca *certs.CA) (*zsync.Store, error) {
	path := filepath.Join(cfg.DataDir, zsync.FileName)
	rec, err := store.stateEpoch()
	if err != nil {
		return nil, err
	}
	opts := zsync.Options{Now: cfg.Now, Logger: cfg.Logger.With("part", "sync"), TombstoneRetention: cfg.TombstoneRetention,
		DeviceQuota: cfg.DeviceQuota, ZoneQuota: cfg.ZoneQuota}
	if cfg.ResetZoneState {
		aside, err := storefile.MoveAside(path, cfg.Now())
		if err != nil {
			return nil, fmt.Errorf("move the old zone state aside: %w", err)
		}
		cfg.Logger.Warn("starting a new zone state, as asked (--reset-zone-state): devices will drop their copies", "old", aside)
		rec = nil
	} else {
		exists, err := storefile.Exists(path)
		if err != nil {
			return nil, err
		}
		had := rec != nil || wasMade(store.db, zsync.FileName)
		if !had && !exists {
			// A hub from before the anchor recorded its zone state: it
			// had one if it has paired a device or made a friend.
			if had, err = store.hasMembers(); err != nil {
				return nil, err
			}
		}
		opts.MustExist = had
	}
	st, err := zsync.OpenHub(path, opts)
	if err != nil {
		return nil, storeError(err, "pzh", keepsZoneState, resetZoneStateH)
	}
	epoch := st.Epoch()
	if rec != nil && rec.Epoch != epoch {
		st.Close()
		return nil, fmt.Errorf("%s holds another zone state (epoch %s) than this hub served (epoch %s): pzh was not started. Put back this hub's own %s (from a backup), or %s",
			path, epoch, rec.Epoch, zsync.FileName, resetZoneStateH)
	}
	if rec == nil || !checkEpochProof(ca.Cert, ca.ZoneID, epoch, rec.Proof) {
		// A zone state made now (first run, or the reset asked for), or
		// one a hub from before this check kept: this hub vouches for it.
		proof, err := signEpoch(ca, epoch, cfg.Now())
		if err == nil {
			rec = &stateEpoch{Epoch: epoch, Proof: proof}
			err = store.setStateEpoch(rec)
		}
		if err != nil {
			st.Close()
			return nil, fmt.Errorf("record the zone state's epoch in %s: %w", HubDBName, err)
		}
	}
	st.SetEpochProof(rec.Proof)
	return st, nil
}

// openHubMailbox opens mailbox.db, which must exist once made.
func openHubMailbox(cfg *HubConfig, store *hubStore) (*mailbox, error) {
	path := filepath.Join(cfg.DataDir, MailboxDBName)
	create := !wasMade(store.db, MailboxDBName)
	if cfg.ResetMailbox {
		aside, err := storefile.MoveAside(path, cfg.Now())
		if err != nil {
			return nil, fmt.Errorf("move the old mailbox aside: %w", err)
		}
		cfg.Logger.Warn("starting a new mailbox, as asked (--reset-mailbox): queued messages are lost", "old", aside)
		create = true
	}
	// create without the mark: the first run, or a hub from before the
	// anchor recorded it, whose file is opened as it is.
	m, err := openMailbox(path, create, cfg.QueueLimit, cfg.QueueBytes)
	if err != nil {
		return nil, storeError(err, "pzh", keepsMailbox, resetMailboxH)
	}
	if create {
		if err := markMade(store.db, MailboxDBName); err != nil {
			m.Close()
			return nil, fmt.Errorf("record the mailbox in %s: %w", HubDBName, err)
		}
	}
	return m, nil
}

func (s *hubStore) stateEpoch() (*stateEpoch, error) {
	var rec stateEpoch
	err := s.db.View(func(tx *bolt.Tx) error { return getCBOR(tx.Bucket(bucketMeta), keyStateEpoch, &rec) })
	if errors.Is(err, errNotFound) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("read %s: %w", HubDBName, err)
	}
	return &rec, nil
}

func (s *hubStore) setStateEpoch(rec *stateEpoch) error {
	return s.db.Update(func(tx *bolt.Tx) error {
		m := tx.Bucket(bucketMeta)
		if err := putCBOR(m, keyStateEpoch, rec); err != nil {
			return err
		}
		v, _ := time.Now().UTC().MarshalText()
		return m.Put([]byte(keyMadePfx+zsync.FileName), v)
	})
}

// hasMembers reports whether the zone has ever paired a device or made a
// friend, which leaves records in its zone state.
func (s *hubStore) hasMembers() (bool, error) {
	var n int
	err := s.db.View(func(tx *bolt.Tx) error {
		for _, b := range [][]byte{bucketDevices, bucketFriends} {
			if bk := tx.Bucket(b); bk != nil {
				n += bk.Stats().KeyN
			}
		}
		return nil
	})
	return n > 0, err
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

// maxEpochProof bounds the proof a device decodes: a claim is under 200
// bytes, a signature 64.
const maxEpochProof = 1024

func signEpoch(ca *certs.CA, epoch string, now time.Time) ([]byte, error) {
	claim, err := transport.Marshal(&epochClaim{Purpose: epochPurpose, ZoneID: ca.ZoneID.Compact(), Epoch: epoch, At: now.Unix()})
	if err != nil {
		return nil, err
	}
	sig := ed25519.Sign(ca.Key, epochSigned(claim))
	return transport.Marshal(&epochProof{Claim: claim, Sig: sig})
}

func epochSigned(claim []byte) []byte { return append([]byte(epochPurpose+"\x00"), claim...) }

// verifyEpochProof checks proof against the zone CA: nil if it proves
// that epoch is this zone's chosen zone state.
func verifyEpochProof(ca *x509.Certificate, zoneID certs.ZoneID, epoch string, proof []byte) error {
	if proof == nil {
		return errors.New("the hub sent no reset signed by the zone")
	}
	if len(proof) > maxEpochProof {
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

func checkEpochProof(ca *x509.Certificate, zoneID certs.ZoneID, epoch string, proof []byte) bool {
	return verifyEpochProof(ca, zoneID, epoch, proof) == nil
}

// openPeerState opens the device's copy of the zone state: made by the
// first run after pairing, and required from then on unless
// cfg.ResetZoneState starts it over.
func openPeerState(cfg *PeerConfig, store *peerStore, id *Identity, opts zsync.Options) (*zsync.Store, error) {
	path := filepath.Join(cfg.DataDir, zsync.FileName)
	opts.MustExist = wasMade(store.db, zsync.FileName)
	if cfg.ResetZoneState {
		aside, err := storefile.MoveAside(path, cfg.Now())
		if err != nil {
			return nil, fmt.Errorf("move the old zone state aside: %w", err)
		}
		if aside != "" {
			cfg.Logger.Warn("starting this device's zone state over, as asked (--reset-zone-state)", "old", aside)
		}
		opts.MustExist = false
	}
	opts.CheckEpoch = func(epoch string, proof []byte) error {
		return verifyEpochProof(id.CA, id.ZoneID, epoch, proof)
	}
	made := false
	if !opts.MustExist {
		exists, err := storefile.Exists(path)
		if err != nil {
			return nil, err
		}
		made = !exists
	}
	st, err := zsync.OpenPeer(path, opts)
	if err != nil {
		return nil, storeError(err, "pzp", "this device's copy of the zone state and its edits not yet pushed", resetDeviceState)
	}
	if !opts.MustExist {
		// Made now, or kept by a pzp from before the anchor recorded it.
		if err := markMade(store.db, zsync.FileName); err != nil {
			st.Close()
			if made {
				os.Remove(path)
			}
			return nil, fmt.Errorf("record the zone state in %s: %w", PeerDBName, err)
		}
	}
	return st, nil
}
