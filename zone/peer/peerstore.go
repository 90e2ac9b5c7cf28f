package peer

import (
	"crypto/ed25519"
	"crypto/x509"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"time"

	"github.com/pzone/pzone/storefile/kv"

	"github.com/pzone/pzone/zone/stores"

	"github.com/pzone/pzone/certs"
	"github.com/pzone/pzone/pairing"
	"github.com/pzone/pzone/storefile"
	zsync "github.com/pzone/pzone/sync"
	"github.com/pzone/pzone/zone/api"
)

// DBName is the device's store inside its data directory.
const DBName = api.PeerStoreName

var bucketIdentity = []byte("identity")

// ErrNotPaired: the data directory holds no pairing.
var ErrNotPaired = errors.New("this device is not paired")

// Identity is everything a device keeps about its membership of a zone.
type Identity struct {
	Zone     string             `cbor:"1,keyasint"`
	ZoneID   certs.ZoneID       `cbor:"2,keyasint"`
	Device   string             `cbor:"3,keyasint"`
	KeyDER   []byte             `cbor:"4,keyasint"` // PKCS#8; never leaves the device
	CertDER  []byte             `cbor:"5,keyasint"`
	CADER    []byte             `cbor:"6,keyasint"`
	HubAddrs []string           `cbor:"7,keyasint"`
	Paired   time.Time          `cbor:"8,keyasint"`
	Key      ed25519.PrivateKey `cbor:"-"`
	Cert     *x509.Certificate  `cbor:"-"`
	CA       *x509.Certificate  `cbor:"-"`
}

func (id *Identity) parse() error {
	var err error
	if id.Key, err = stores.ParseKey(id.KeyDER); err != nil {
		return err
	}
	if id.Cert, err = x509.ParseCertificate(id.CertDER); err != nil {
		return fmt.Errorf("device certificate: %w", err)
	}
	if id.CA, err = x509.ParseCertificate(id.CADER); err != nil {
		return fmt.Errorf("zone CA certificate: %w", err)
	}
	return nil
}

// peerStore is the device's bbolt database.
type peerStore struct {
	db kv.DB
}

// SavePairing writes a fresh pairing into dir in one step: a temporary
// file renamed into place, so a failure leaves nothing behind.
func SavePairing(dir string, res *pairing.Result, now time.Time) error {
	path := filepath.Join(dir, DBName)
	if _, err := os.Stat(path); err == nil {
		return fmt.Errorf("%s already holds a pairing; run pzp unpair --data %s first", dir, dir)
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return fmt.Errorf("create data directory: %w", err)
	}
	// Zone state left by an earlier pairing (an unpair cut short) belongs
	// to another device.
	if err := os.Remove(filepath.Join(dir, zsync.FileName)); err != nil && !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("remove old zone state: %w", err)
	}
	fail := func(err error) error {
		os.Remove(path + ".new")
		return err
	}
	key, err := stores.MarshalKey(res.Key)
	if err != nil {
		return fail(err)
	}
	id := Identity{Zone: res.Zone, ZoneID: res.ZoneID, Device: res.Device, KeyDER: key, CertDER: res.Cert.Raw,
		CADER: res.CA.Raw, HubAddrs: res.HubAddrs, Paired: now.UTC()}
	tmp := path + ".new"
	os.Remove(tmp)
	db, err := storefile.Open(tmp, storefile.Options{Create: true, LockTimeout: stores.LockTimeout})
	if err != nil {
		return fail(err)
	}
	err = kv.OfBolt(db).Update(func(tx kv.Tx) error {
		m, err := tx.CreateBucket(stores.BucketMeta)
		if err != nil {
			return err
		}
		if err := stores.PutCBOR(m, stores.KeyVersion, stores.StoreVersion); err != nil {
			return err
		}
		b, err := tx.CreateBucket(bucketIdentity)
		if err != nil {
			return err
		}
		return stores.PutCBOR(b, stores.KeyZoneInfo, &id)
	})
	if cerr := db.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return fail(err)
	}
	if err := os.Rename(tmp, path); err != nil {
		return fail(err)
	}
	return stores.SyncDir(dir)
}

// openPeerStore opens the device's store; readOnly is for status reads
// while no daemon runs.
func openPeerStore(dir string, readOnly bool) (*peerStore, error) {
	path := filepath.Join(dir, DBName)
	db, err := storefile.Open(path, storefile.Options{LockTimeout: stores.LockTimeout, ReadOnly: readOnly})
	if errors.Is(err, storefile.ErrMissing) {
		return nil, fmt.Errorf("%w: %s holds no pairing; pair first with: pzp pair --data %s TOKEN", ErrNotPaired, dir, dir)
	}
	if errors.Is(err, storefile.ErrInUse) {
		return nil, fmt.Errorf("%s is in use by another pzp process (is pzp run already running with this --data?)", path)
	}
	if err != nil {
		return nil, stores.StoreError(err, "pzp", "this device's key, certificate and pairing", rePairDevice)
	}
	s := &peerStore{db: kv.OfBolt(db)}
	err = kv.OfBolt(db).View(func(tx kv.Tx) error {
		m := tx.Bucket(stores.BucketMeta)
		if m == nil {
			return fmt.Errorf("%s is not a pzp store, or is damaged", path)
		}
		var v int
		if err := stores.GetCBOR(m, stores.KeyVersion, &v); err != nil {
			return err
		}
		if v != stores.StoreVersion {
			return fmt.Errorf("store format version %d; this pzp understands %d", v, stores.StoreVersion)
		}
		return nil
	})
	if err != nil {
		db.Close()
		return nil, err
	}
	return s, nil
}

func (s *peerStore) Close() error { return s.db.Close() }

func (s *peerStore) Identity() (*Identity, error) {
	var id Identity
	err := s.db.View(func(tx kv.Tx) error { return stores.GetCBOR(tx.Bucket(bucketIdentity), stores.KeyZoneInfo, &id) })
	if err != nil {
		return nil, err
	}
	return &id, id.parse()
}

// SaveCert replaces the device key and certificate together (renewal).
func (s *peerStore) SaveCert(key ed25519.PrivateKey, cert *x509.Certificate) (*Identity, error) {
	kder, err := stores.MarshalKey(key)
	if err != nil {
		return nil, err
	}
	var id Identity
	err = s.db.Update(func(tx kv.Tx) error {
		b := tx.Bucket(bucketIdentity)
		if err := stores.GetCBOR(b, stores.KeyZoneInfo, &id); err != nil {
			return err
		}
		id.KeyDER, id.CertDER = kder, cert.Raw
		return stores.PutCBOR(b, stores.KeyZoneInfo, &id)
	})
	if err != nil {
		return nil, err
	}
	return &id, id.parse()
}

// SaveHubAddrs records where the hub is now, as the zone state says.
func (s *peerStore) SaveHubAddrs(addrs []string) (*Identity, error) {
	var id Identity
	err := s.db.Update(func(tx kv.Tx) error {
		b := tx.Bucket(bucketIdentity)
		if err := stores.GetCBOR(b, stores.KeyZoneInfo, &id); err != nil {
			return err
		}
		id.HubAddrs = addrs
		return stores.PutCBOR(b, stores.KeyZoneInfo, &id)
	})
	if err != nil {
		return nil, err
	}
	return &id, id.parse()
}

// RemovePairing deletes the device's store (its key and certificate),
// then its copy of the zone state.
func RemovePairing(dir string) error {
	path := filepath.Join(dir, DBName)
	if err := os.Remove(path); err != nil {
		if errors.Is(err, os.ErrNotExist) {
			return fmt.Errorf("%w: %s holds no pairing", ErrNotPaired, dir)
		}
		return err
	}
	if err := os.Remove(filepath.Join(dir, zsync.FileName)); err != nil && !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("remove zone state: %w", err)
	}
	return stores.SyncDir(dir)
}
