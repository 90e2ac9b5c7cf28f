package hub

import (
	"crypto/ed25519"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"time"

	"github.com/pzone/pzone/storefile/kv"

	"github.com/pzone/pzone/zone/stores"

	"github.com/pzone/pzone/certs"
	"github.com/pzone/pzone/pairing"
	"github.com/pzone/pzone/storefile"
	"github.com/pzone/pzone/transport"
)

// HubDBName is the hub's store inside its data directory.
const HubDBName = "pzh.db"

var (
	bucketDevices = []byte("devices")
	bucketInvites = []byte("invites")
	bucketRevoked = []byte("revoked")
)

var (
	keyCACert  = []byte("ca-cert")
	keyCAKey   = []byte("ca-key")
	keyHubCert = []byte("hub-cert")
	keyHubKey  = []byte("hub-key")
)

// ErrNoZone: the data directory holds no zone.
var ErrNoZone = errors.New("no zone here")

// ZoneInfo is the hub's description of its zone.
type ZoneInfo struct {
	Name        string       `cbor:"1,keyasint" json:"zone"`
	ID          certs.ZoneID `cbor:"2,keyasint" json:"zone_id"`
	PublicAddrs []string     `cbor:"3,keyasint" json:"public_addrs"`
	Created     time.Time    `cbor:"4,keyasint" json:"created"`
}

// DeviceRecord is the hub's record of a paired device.
type DeviceRecord struct {
	Name         string        `cbor:"1,keyasint"`
	Paired       time.Time     `cbor:"2,keyasint"`
	Invite       string        `cbor:"3,keyasint"`
	CertLifetime time.Duration `cbor:"4,keyasint"`
	// Serials of every certificate issued to this pairing, oldest first
	// (hex). A handshake with a certificate whose serial is not here is
	// refused, so a certificate issued to an earlier pairing of the same
	// name cannot come back.
	Serials      []string  `cbor:"5,keyasint"`
	CertExpires  time.Time `cbor:"6,keyasint"`
	Revoked      bool      `cbor:"7,keyasint,omitempty"`
	RevokedAt    time.Time `cbor:"8,keyasint,omitempty"`
	RevokeReason string    `cbor:"9,keyasint,omitempty"`
	LastSeen     time.Time `cbor:"10,keyasint,omitempty"`
	LastAddr     string    `cbor:"11,keyasint,omitempty"`
	LastVia      string    `cbor:"12,keyasint,omitempty"`
	// Cert is the latest certificate issued (DER), which the hub keeps
	// published in the zone state.
	Cert []byte `cbor:"13,keyasint,omitempty"`
}

// maxSerials bounds a device record: renewal at 2/3 of a 90-day lifetime
// adds about six a year; older ones have long expired.
const maxSerials = 16

func (d *DeviceRecord) hasSerial(s string) bool {
	for _, x := range d.Serials {
		if x == s {
			return true
		}
	}
	return false
}

func (d *DeviceRecord) addCert(c *x509.Certificate) {
	d.Serials = append(d.Serials, stores.SerialHex(c))
	if len(d.Serials) > maxSerials {
		d.Serials = d.Serials[len(d.Serials)-maxSerials:]
	}
	d.CertExpires, d.Cert = c.NotAfter, c.Raw
}

// hubStore is the hub's bbolt database. Only the running hub (or pzh init,
// before any hub runs) opens it.
type hubStore struct {
	db kv.DB
}

// createHubStore writes a new zone into dir atomically: everything goes
// into a temporary file that is renamed into place only when complete.
func createHubStore(dir string, info ZoneInfo, ca *certs.CA, hubCert *x509.Certificate, hubKey ed25519.PrivateKey) error {
	path := filepath.Join(dir, HubDBName)
	tmp := path + ".new"
	os.Remove(tmp)
	db, err := storefile.Open(tmp, storefile.Options{Create: true, LockTimeout: stores.LockTimeout})
	if err != nil {
		return err
	}
	err = writeZone(kv.OfBolt(db), info, ca, hubCert, hubKey)
	if cerr := db.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		os.Remove(tmp)
		return err
	}
	if err := os.Rename(tmp, path); err != nil {
		os.Remove(tmp)
		return err
	}
	return stores.SyncDir(dir)
}

// writeZone writes a new zone's anchor store in one transaction.
func writeZone(db kv.DB, info ZoneInfo, ca *certs.CA, hubCert *x509.Certificate, hubKey ed25519.PrivateKey) error {
	caKey, err := stores.MarshalKey(ca.Key)
	if err != nil {
		return err
	}
	hk, err := stores.MarshalKey(hubKey)
	if err != nil {
		return err
	}
	return db.Update(func(tx kv.Tx) error {
		for _, b := range [][]byte{stores.BucketMeta, bucketDevices, bucketInvites, bucketRevoked} {
			if _, err := tx.CreateBucket(b); err != nil {
				return err
			}
		}
		m := tx.Bucket(stores.BucketMeta)
		if err := stores.PutCBOR(m, stores.KeyVersion, stores.StoreVersion); err != nil {
			return err
		}
		if err := stores.PutCBOR(m, stores.KeyZoneInfo, info); err != nil {
			return err
		}
		for k, v := range map[string][]byte{string(keyCACert): ca.Cert.Raw, string(keyCAKey): caKey, string(keyHubCert): hubCert.Raw, string(keyHubKey): hk} {
			if err := m.Put([]byte(k), v); err != nil {
				return err
			}
		}
		return nil
	})
}

// openHubStore opens an existing zone's files in dir.
func openHubStore(dir string) (*hubStore, error) {
	path := filepath.Join(dir, HubDBName)
	db, err := storefile.Open(path, storefile.Options{LockTimeout: stores.LockTimeout})
	if errors.Is(err, storefile.ErrMissing) {
		return nil, fmt.Errorf("%w: %s has no %s; create a zone first with: pzh init --data %s --zone NAME --public-addr HOST:PORT", ErrNoZone, dir, HubDBName, dir)
	}
	if err != nil {
		return nil, stores.StoreError(err, "pzh", "the zone CA key and the records of devices, invites and friends", "")
	}
	return readyHubStore(kv.OfBolt(db), path)
}

// openHubStoreIn opens the zone's anchor store where cfg keeps it.
func openHubStoreIn(cfg *Config) (*hubStore, error) {
	if cfg.Stores == nil {
		return openHubStore(cfg.DataDir)
	}
	db, err := cfg.Stores.Open(HubDBName, false)
	if errors.Is(err, storefile.ErrMissing) {
		return nil, fmt.Errorf("%w: %s holds no zone", ErrNoZone, cfg.Stores.Where())
	}
	if err != nil {
		return nil, err
	}
	return readyHubStore(db, cfg.Stores.Where())
}

func readyHubStore(db kv.DB, where string) (*hubStore, error) {
	s := &hubStore{db: db}
	if err := s.checkVersion(); err != nil {
		db.Close()
		return nil, err
	}
	if err := s.ensureFriendBuckets(); err != nil {
		db.Close()
		return nil, fmt.Errorf("open %s: %w", where, err)
	}
	return s, nil
}

func (s *hubStore) Close() error { return s.db.Close() }

func (s *hubStore) checkVersion() error {
	return s.db.View(func(tx kv.Tx) error {
		m := tx.Bucket(stores.BucketMeta)
		if m == nil {
			return fmt.Errorf("store has no meta bucket: not a pzh store, or damaged")
		}
		var v int
		if err := stores.GetCBOR(m, stores.KeyVersion, &v); err != nil {
			return err
		}
		if v != stores.StoreVersion {
			return fmt.Errorf("store format version %d; this pzh understands %d: use a matching pzh", v, stores.StoreVersion)
		}
		return nil
	})
}

// Zone returns the zone description.
func (s *hubStore) Zone() (*ZoneInfo, error) {
	var z ZoneInfo
	err := s.db.View(func(tx kv.Tx) error { return stores.GetCBOR(tx.Bucket(stores.BucketMeta), stores.KeyZoneInfo, &z) })
	return &z, err
}

// UpdatePublicAddrs replaces the zone's public addresses with what
// change makes of a copy of them, in one transaction (pzh addr).
func (s *hubStore) UpdatePublicAddrs(change func([]string) ([]string, error)) ([]string, error) {
	var next []string
	err := s.db.Update(func(tx kv.Tx) error {
		b := tx.Bucket(stores.BucketMeta)
		var z ZoneInfo
		if err := stores.GetCBOR(b, stores.KeyZoneInfo, &z); err != nil {
			return err
		}
		var err error
		if next, err = change(slices.Clone(z.PublicAddrs)); err != nil {
			return err
		}
		z.PublicAddrs = next
		return stores.PutCBOR(b, stores.KeyZoneInfo, &z)
	})
	return next, err
}

// CA loads the zone CA.
func (s *hubStore) CA() (*certs.CA, error) {
	var c, k []byte
	s.db.View(func(tx kv.Tx) error {
		m := tx.Bucket(stores.BucketMeta)
		c, k = stores.Clone(m.Get(keyCACert)), stores.Clone(m.Get(keyCAKey))
		return nil
	})
	return certs.LoadCA(c, k)
}

// HubCert loads the hub's own certificate and key.
func (s *hubStore) HubCert() (*x509.Certificate, ed25519.PrivateKey, error) {
	var c, k []byte
	s.db.View(func(tx kv.Tx) error {
		m := tx.Bucket(stores.BucketMeta)
		c, k = stores.Clone(m.Get(keyHubCert)), stores.Clone(m.Get(keyHubKey))
		return nil
	})
	cert, err := x509.ParseCertificate(c)
	if err != nil {
		return nil, nil, fmt.Errorf("hub certificate: %w", err)
	}
	key, err := stores.ParseKey(k)
	return cert, key, err
}

// SaveHubCert replaces the hub's certificate and key together.
func (s *hubStore) SaveHubCert(cert *x509.Certificate, key ed25519.PrivateKey) error {
	k, err := stores.MarshalKey(key)
	if err != nil {
		return err
	}
	return s.db.Update(func(tx kv.Tx) error {
		m := tx.Bucket(stores.BucketMeta)
		if err := m.Put(keyHubCert, cert.Raw); err != nil {
			return err
		}
		return m.Put(keyHubKey, k)
	})
}

// Devices lists device records by name.
func (s *hubStore) Devices() ([]*DeviceRecord, error) {
	var out []*DeviceRecord
	err := s.db.View(func(tx kv.Tx) error {
		return tx.Bucket(bucketDevices).ForEach(func(k, v []byte) error {
			var d DeviceRecord
			if err := transport.Unmarshal(v, &d); err != nil {
				return fmt.Errorf("device %q: %w", k, err)
			}
			out = append(out, &d)
			return nil
		})
	})
	return out, err
}

// RevokedSerials returns every revoked serial.
func (s *hubStore) RevokedSerials() (map[string]bool, error) {
	out := map[string]bool{}
	err := s.db.View(func(tx kv.Tx) error {
		return tx.Bucket(bucketRevoked).ForEach(func(k, _ []byte) error {
			out[string(k)] = true
			return nil
		})
	})
	return out, err
}

// Revocation is the stored record of one revoked certificate, in the
// hub's store and, as revoked/SERIAL, in the zone state's certificates
// bucket.
type Revocation struct {
	Device string    `cbor:"1,keyasint"`
	At     time.Time `cbor:"2,keyasint"`
	Reason string    `cbor:"3,keyasint"`
	// Sig, in the zone state: the zone CA's signature (revocations.go),
	// so that a hub restored from an older backup can take it back from
	// a device.
	Sig []byte `cbor:"4,keyasint,omitempty"`
}

// ErrAlreadyDone: a revocation or cancellation that was already made.
var ErrAlreadyDone = errors.New("already done")

// ErrNoDevice: no paired device has that name.
var ErrNoDevice = errors.New("no such device")

// Revoke marks a device revoked and every certificate it was issued, in one
// transaction.
func (s *hubStore) Revoke(name, reason string, now time.Time) (*DeviceRecord, error) {
	var d DeviceRecord
	err := s.db.Update(func(tx kv.Tx) error {
		b := tx.Bucket(bucketDevices)
		if err := stores.GetCBOR(b, []byte(name), &d); err != nil {
			return err
		}
		if d.Revoked {
			return fmt.Errorf("%w: device %q was already revoked on %s", ErrAlreadyDone, name, d.RevokedAt.Format(time.RFC3339))
		}
		d.Revoked, d.RevokedAt, d.RevokeReason = true, now.UTC(), reason
		rb := tx.Bucket(bucketRevoked)
		for _, serial := range d.Serials {
			if err := stores.PutCBOR(rb, []byte(serial), Revocation{Device: name, At: now.UTC(), Reason: reason}); err != nil {
				return err
			}
		}
		return stores.PutCBOR(b, []byte(name), &d)
	})
	if errors.Is(err, stores.ErrNotFound) {
		return nil, fmt.Errorf("%w %q: pzh devices lists the paired ones", ErrNoDevice, name)
	}
	return &d, err
}

// AddSerial records a renewal for a device.
func (s *hubStore) AddSerial(name string, cert *x509.Certificate) (*DeviceRecord, error) {
	var d DeviceRecord
	err := s.db.Update(func(tx kv.Tx) error {
		b := tx.Bucket(bucketDevices)
		if err := stores.GetCBOR(b, []byte(name), &d); err != nil {
			return err
		}
		if d.Revoked {
			return fmt.Errorf("device %q is revoked", name)
		}
		d.addCert(cert)
		return stores.PutCBOR(b, []byte(name), &d)
	})
	return &d, err
}

// RetireOlder drops every serial issued to a device before serial.
func (s *hubStore) RetireOlder(name, serial string) (*DeviceRecord, error) {
	var d DeviceRecord
	err := s.db.Update(func(tx kv.Tx) error {
		b := tx.Bucket(bucketDevices)
		if err := stores.GetCBOR(b, []byte(name), &d); err != nil {
			return err
		}
		for i, x := range d.Serials {
			if x == serial {
				d.Serials = append([]string(nil), d.Serials[i:]...)
				return stores.PutCBOR(b, []byte(name), &d)
			}
		}
		return nil
	})
	return &d, err
}

// SeenMany records where devices were last connected from, in one
// transaction.
func (s *hubStore) SeenMany(each func(yield func(name string, at time.Time, addr, via string) bool)) error {
	return s.db.Update(func(tx kv.Tx) error {
		b := tx.Bucket(bucketDevices)
		var err error
		each(func(name string, at time.Time, addr, via string) bool {
			var d DeviceRecord
			if stores.GetCBOR(b, []byte(name), &d) != nil {
				return true // unpaired meanwhile: nothing to record
			}
			d.LastSeen, d.LastAddr, d.LastVia = at.UTC(), addr, via
			err = stores.PutCBOR(b, []byte(name), &d)
			return err == nil
		})
		return err
	})
}

// AddInvite stores a new invite; ids are random, a collision is refused.
func (s *hubStore) AddInvite(inv *pairing.Invite) error {
	return s.db.Update(func(tx kv.Tx) error {
		b := tx.Bucket(bucketInvites)
		if b.Get([]byte(inv.ID)) != nil {
			return fmt.Errorf("invite id collision; try again")
		}
		return stores.PutCBOR(b, []byte(inv.ID), inv)
	})
}

// Invites lists invites, newest first, dropping those expired, used up or
// cancelled more than inviteKeep ago.
func (s *hubStore) Invites(now time.Time) ([]*pairing.Invite, error) {
	return s.invitesIn(bucketInvites, now)
}

// FriendInvites lists friend invites as Invites lists device invites.
func (s *hubStore) FriendInvites(now time.Time) ([]*pairing.Invite, error) {
	return s.invitesIn(bucketFriendInvites, now)
}

func (s *hubStore) invitesIn(bucket []byte, now time.Time) ([]*pairing.Invite, error) {
	var out []*pairing.Invite
	err := s.db.Update(func(tx kv.Tx) error {
		b := tx.Bucket(bucket)
		var stale [][]byte
		err := b.ForEach(func(k, v []byte) error {
			var inv pairing.Invite
			if err := transport.Unmarshal(v, &inv); err != nil {
				return fmt.Errorf("invite %q: %w", k, err)
			}
			if inv.Usable(now) != nil && now.Sub(inv.Expires) > inviteKeep {
				stale = append(stale, stores.Clone(k))
				return nil
			}
			out = append(out, &inv)
			return nil
		})
		if err != nil {
			return err
		}
		for _, k := range stale {
			if err := b.Delete(k); err != nil {
				return err
			}
		}
		return nil
	})
	sort.Slice(out, func(i, j int) bool { return out[i].Created.After(out[j].Created) })
	return out, err
}

// inviteKeep is how long a dead invite stays listed, so the operator can
// see what happened to it.
const inviteKeep = 24 * time.Hour

// ErrNoInvite: no invite has that id.
var ErrNoInvite = errors.New("no such invite")

// CancelInvite cancels an invite.
func (s *hubStore) CancelInvite(id string) (*pairing.Invite, error) {
	return s.cancelIn(bucketInvites, id, "pzh invites")
}

// CancelFriendInvite cancels a friend invite.
func (s *hubStore) CancelFriendInvite(id string) (*pairing.Invite, error) {
	return s.cancelIn(bucketFriendInvites, id, "pzh friend invites")
}

func (s *hubStore) cancelIn(bucket []byte, id, lister string) (*pairing.Invite, error) {
	var inv pairing.Invite
	err := s.db.Update(func(tx kv.Tx) error {
		b := tx.Bucket(bucket)
		if err := stores.GetCBOR(b, []byte(id), &inv); err != nil {
			return err
		}
		if inv.Cancelled {
			return fmt.Errorf("%w: invite %s is already cancelled", ErrAlreadyDone, id)
		}
		inv.Cancelled = true
		inv.CodeSecret = nil
		return stores.PutCBOR(b, []byte(id), &inv)
	})
	if errors.Is(err, stores.ErrNotFound) {
		return nil, fmt.Errorf("%w %q: %s lists them", ErrNoInvite, id, lister)
	}
	return &inv, err
}

// redeemFunc checks a looked-up invite inside the redemption transaction
// and, if the device may pair, signs its certificate. It must not do I/O.
type redeemFunc func(inv *pairing.Invite, device string) (*x509.Certificate, error)

// Redeem atomically finds an invite, picks the device name for this use
// (skipping names held by active devices), lets fn check and sign, then
// records the device and spends one use. Nothing is written if fn fails.
func (s *hubStore) Redeem(id string, now time.Time, fn redeemFunc) (*DeviceRecord, *x509.Certificate, error) {
	var rec *DeviceRecord
	var cert *x509.Certificate
	err := s.db.Update(func(tx kv.Tx) error {
		ib, db := tx.Bucket(bucketInvites), tx.Bucket(bucketDevices)
		var inv pairing.Invite
		if err := stores.GetCBOR(ib, []byte(id), &inv); err != nil {
			return err
		}
		name := inv.DeviceForUse()
		for i := 2; activeDevice(db, name); i++ {
			name = fmt.Sprintf("%s-%d", inv.DeviceForUse(), i)
			if i > pairing.MaxInviteUses+1 {
				return fmt.Errorf("no free device name for %q", inv.Device)
			}
		}
		c, err := fn(&inv, name)
		if err != nil {
			return err
		}
		cert = c
		rec = &DeviceRecord{Name: name, Paired: now.UTC(), Invite: inv.ID, CertLifetime: inv.CertLifetime}
		rec.addCert(c)
		inv.UsesLeft--
		inv.Devices = append(inv.Devices, name)
		if inv.UsesLeft <= 0 {
			inv.CodeSecret = nil // used up: a code's words are kept no longer
		}
		if err := stores.PutCBOR(ib, []byte(id), &inv); err != nil {
			return err
		}
		return stores.PutCBOR(db, []byte(name), rec)
	})
	return rec, cert, err
}

// inviteVerifier reads the verifier of invite id in bucket (device or
// friend invites) without a write transaction: the check a rate-limited
// request gets, so that guesses cost the hub no more than a read.
func (s *hubStore) inviteVerifier(bucket []byte, id string) ([]byte, error) {
	var inv pairing.Invite
	err := s.db.View(func(tx kv.Tx) error { return stores.GetCBOR(tx.Bucket(bucket), []byte(id), &inv) })
	return inv.Verifier, err
}

func activeDevice(b kv.Bucket, name string) bool {
	var d DeviceRecord
	return stores.GetCBOR(b, []byte(name), &d) == nil && !d.Revoked
}

// ActiveDevice reports whether name is paired and not revoked.
func (s *hubStore) ActiveDevice(name string) bool {
	var ok bool
	s.db.View(func(tx kv.Tx) error {
		ok = activeDevice(tx.Bucket(bucketDevices), name)
		return nil
	})
	return ok
}

// Helpers shared by both stores.

// ReadZone returns the zone description from the data directory of a hub
// that is not running (a running hub holds its store's lock).
func ReadZone(dir string) (*ZoneInfo, error) {
	store, err := openHubStore(dir)
	if err != nil {
		return nil, err
	}
	defer store.Close()
	return store.Zone()
}

// ReadCredentials returns the hub's TLS certificate chain (its own
// certificate, then the zone CA's) with its key, from the data directory
// of a hub that is not running: for a tool that must speak as the zone's
// hub, such as a test of what a friend link refuses.
func ReadCredentials(dir string) (tls.Certificate, error) {
	store, err := openHubStore(dir)
	if err != nil {
		return tls.Certificate{}, err
	}
	defer store.Close()
	ca, err := store.CA()
	if err != nil {
		return tls.Certificate{}, err
	}
	cert, key, err := store.HubCert()
	if err != nil {
		return tls.Certificate{}, err
	}
	return tls.Certificate{Certificate: [][]byte{cert.Raw, ca.Cert.Raw}, PrivateKey: key, Leaf: cert}, nil
}
