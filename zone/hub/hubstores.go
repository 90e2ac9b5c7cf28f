package hub

import (
	"crypto/x509"
	"errors"
	"fmt"
	"path/filepath"
	"time"

	"github.com/pzone/pzone/storefile/kv"

	"github.com/pzone/pzone/zone/stores"

	"github.com/pzone/pzone/certs"
	"github.com/pzone/pzone/storefile"
	zsync "github.com/pzone/pzone/sync"
)

// Each daemon has one anchor store (pzh.db, pzp.db) made when the zone or
// the pairing is; the others (sync.db, mailbox.db) are made by the first
// run. The anchor records each one it saw made, so that one that goes
// missing later is reported as lost, never made again in silence. The
// hub's anchor also records the epoch of its zone state: a zone state
// that is new, or another's, is refused at start, and every epoch a hub
// serves carries a proof signed by the zone CA, which devices require
// before they give up their copies for it.

// keyStateEpoch: the hub's zone-state epoch and its proof (stateEpoch).
var keyStateEpoch = []byte("state-epoch")

// stateEpoch is what the hub's anchor records of its zone state.
type stateEpoch struct {
	Epoch string `cbor:"1,keyasint"`
	Proof []byte `cbor:"2,keyasint"`
}

const (
	keepsZoneState  = "the zone state: policy rules, service tokens, app and user data"
	keepsMailbox    = "messages queued for devices and friends, and wake registrations"
	resetZoneStateH = "start it over with pzh serve --reset-zone-state (policy rules, tokens and app data are lost; devices drop their copies)"
	resetMailboxH   = "start it over with pzh serve --reset-mailbox (the queued messages are lost)"
)

// openHubState opens the hub's zone state, refusing one that is missing,
// damaged, new or another zone's unless cfg.ResetZoneState asks to start
// it over, and returns the proof of its epoch that devices are sent.
func openHubState(cfg *Config, store *hubStore, ca *certs.CA, vouch func(string, zsync.Record) error) (*zsync.Store, error) {
	path := filepath.Join(cfg.DataDir, zsync.FileName)
	rec, err := store.stateEpoch()
	if err != nil {
		return nil, err
	}
	opts := zsync.Options{Now: cfg.Now, Logger: cfg.Logger.With("part", "sync"), TombstoneRetention: cfg.TombstoneRetention,
		DeviceQuota: cfg.DeviceQuota, ZoneQuota: cfg.ZoneQuota, Vouch: vouch}
	var st *zsync.Store
	if cfg.Stores != nil {
		// Made with the zone's first run, on whichever node: a zone state
		// recorded once and gone now is refused, as a lost file is.
		opts.MustExist = rec != nil || stores.WasMade(store.db, zsync.FileName)
		db, err := cfg.Stores.Open(zsync.FileName, !opts.MustExist)
		if err == nil {
			st, err = zsync.OpenHubOn(db, cfg.Stores.Where()+" "+zsync.FileName, opts)
			if err != nil {
				db.Close()
			}
		}
		if err != nil {
			return nil, fmt.Errorf("open the zone state in %s: %w", cfg.Stores.Where(), err)
		}
		return st, checkStateEpoch(cfg, store, ca, st, rec, cfg.Stores.Where())
	}
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
		had := rec != nil || stores.WasMade(store.db, zsync.FileName)
		if !had && !exists {
			// A hub from before the anchor recorded its zone state: it
			// had one if it has paired a device or made a friend.
			if had, err = store.hasMembers(); err != nil {
				return nil, err
			}
		}
		opts.MustExist = had
	}
	st, err = zsync.OpenHub(path, opts)
	if err != nil {
		return nil, stores.StoreError(err, "pzh", keepsZoneState, resetZoneStateH)
	}
	return st, checkStateEpoch(cfg, store, ca, st, rec, path)
}

// checkStateEpoch refuses a zone state of another epoch than the hub
// served, and vouches for a new one; it closes st if it refuses.
func checkStateEpoch(cfg *Config, store *hubStore, ca *certs.CA, st *zsync.Store, rec *stateEpoch, path string) error {
	epoch, err := st.ReadEpoch()
	if err != nil {
		st.Close()
		return fmt.Errorf("read the zone state's epoch in %s: %w", path, err)
	}
	if rec != nil && rec.Epoch != epoch {
		st.Close()
		return fmt.Errorf("%s holds another zone state (epoch %s) than this hub served (epoch %s): pzh was not started. Put back this hub's own %s (from a backup), or %s",
			path, epoch, rec.Epoch, zsync.FileName, resetZoneStateH)
	}
	if rec == nil || !checkEpochProof(ca.Cert, ca.ZoneID, epoch, rec.Proof) {
		// A zone state made now (first run, or the reset asked for), or
		// one a hub from before this check kept: this hub vouches for it.
		proof, err := stores.SignEpoch(ca, epoch, cfg.Now())
		if err == nil {
			rec = &stateEpoch{Epoch: epoch, Proof: proof}
			err = store.setStateEpoch(rec)
		}
		if err != nil {
			st.Close()
			return fmt.Errorf("record the zone state's epoch in %s: %w", HubDBName, err)
		}
	}
	st.SetEpochProof(rec.Proof)
	return nil
}

// openHubMailbox opens mailbox.db, which must exist once made.
func openHubMailbox(cfg *Config, store *hubStore) (*mailbox, error) {
	path := filepath.Join(cfg.DataDir, MailboxDBName)
	create := !stores.WasMade(store.db, MailboxDBName)
	var m *mailbox
	var err error
	if cfg.Stores != nil {
		var db kv.DB
		if db, err = cfg.Stores.Open(MailboxDBName, create); err == nil {
			m, err = openMailboxOn(db, cfg.QueueLimit, cfg.QueueBytes)
		}
		if err != nil {
			return nil, fmt.Errorf("open the mailbox in %s: %w", cfg.Stores.Where(), err)
		}
	} else {
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
		if m, err = openMailbox(path, create, cfg.QueueLimit, cfg.QueueBytes); err != nil {
			return nil, stores.StoreError(err, "pzh", keepsMailbox, resetMailboxH)
		}
	}
	m.zoneBytes = cfg.ZoneQueueBytes
	if create {
		if err := stores.MarkMade(store.db, MailboxDBName); err != nil {
			m.Close()
			return nil, fmt.Errorf("record the mailbox in %s: %w", HubDBName, err)
		}
	}
	return m, nil
}

func (s *hubStore) stateEpoch() (*stateEpoch, error) {
	var rec stateEpoch
	err := s.db.View(func(tx kv.Tx) error { return stores.GetCBOR(tx.Bucket(stores.BucketMeta), keyStateEpoch, &rec) })
	if errors.Is(err, stores.ErrNotFound) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("read %s: %w", HubDBName, err)
	}
	return &rec, nil
}

func (s *hubStore) setStateEpoch(rec *stateEpoch) error {
	return s.db.Update(func(tx kv.Tx) error {
		m := tx.Bucket(stores.BucketMeta)
		if err := stores.PutCBOR(m, keyStateEpoch, rec); err != nil {
			return err
		}
		v, _ := time.Now().UTC().MarshalText()
		return m.Put([]byte(stores.KeyMadePrefix+zsync.FileName), v)
	})
}

// hasMembers reports whether the zone has ever paired a device or made a
// friend, which leaves records in its zone state.
func (s *hubStore) hasMembers() (bool, error) {
	var n int
	err := s.db.View(func(tx kv.Tx) error {
		for _, b := range [][]byte{bucketDevices, bucketFriends} {
			if bk := tx.Bucket(b); bk != nil {
				n += bk.KeyN()
			}
		}
		return nil
	})
	return n > 0, err
}

func checkEpochProof(ca *x509.Certificate, zoneID certs.ZoneID, epoch string, proof []byte) bool {
	return stores.VerifyEpochProof(ca, zoneID, epoch, proof) == nil
}
