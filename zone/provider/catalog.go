package provider

import (
	"crypto/rand"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"time"

	"github.com/pzone/pzone/storefile/kv"

	"github.com/pzone/pzone/certs"
	"github.com/pzone/pzone/storefile"
	"github.com/pzone/pzone/transport"
	"github.com/pzone/pzone/zone/api"
	"github.com/pzone/pzone/zone/stores"
)

// The provider's own store, provider.db in its data directory: its public
// addresses, the secret its QUIC stateless resets are keyed by, and the
// zones it serves with their limits. Each zone's own state is in its hub's
// data directory, zones/NAME (docs/PROVIDER.md).
const (
	DBName = api.ProviderStoreName
	// ZonesDir holds one hub data directory per zone.
	ZonesDir = api.ProviderZonesDir
	// RemovedDir keeps the data of removed zones until the operator
	// deletes it.
	RemovedDir = "removed"
)

var (
	bucketMeta  = []byte("meta")
	bucketZones = []byte("zones")
	keySettings = []byte("settings")
)

// settings are the provider's own, set by pzh provider init.
type settings struct {
	PublicAddrs []string  `cbor:"1,keyasint"`
	ResetSecret []byte    `cbor:"2,keyasint"` // 32 bytes
	Created     time.Time `cbor:"3,keyasint"`
	// Node names this node of a cluster (pzh provider init --store): its
	// own provider.db keeps only this and its own public address, and
	// the cluster's catalog is in the cluster's database.
	Node string `cbor:"4,keyasint,omitempty"`
}

// zoneEntry is one zone the provider serves.
type zoneEntry struct {
	Name   string         `cbor:"1,keyasint"`
	ID     certs.ZoneID   `cbor:"2,keyasint"`
	Added  time.Time      `cbor:"3,keyasint"`
	Limits api.ZoneLimits `cbor:"4,keyasint"`
}

// ErrNoProvider: the directory holds no provider.
var ErrNoProvider = errors.New("no provider here")

type catalog struct {
	db  kv.DB
	set settings
}

// createCatalog makes provider.db in dir; it refuses an existing one.
func createCatalog(dir string, publicAddrs []string, now time.Time) error {
	path := filepath.Join(dir, DBName)
	if _, err := os.Lstat(path); err == nil {
		return fmt.Errorf("%s holds a provider already; use another --data directory", dir)
	}
	db, err := storefile.Open(path, storefile.Options{Create: true})
	if err != nil {
		return err
	}
	defer db.Close()
	s := settings{PublicAddrs: publicAddrs, ResetSecret: make([]byte, 32), Created: now.UTC()}
	rand.Read(s.ResetSecret)
	return writeCatalog(kv.OfBolt(db), &s)
}

// writeCatalog makes a catalog's buckets and settings in db.
func writeCatalog(db kv.DB, s *settings) error {
	return db.Update(func(tx kv.Tx) error {
		meta, err := tx.CreateBucket(bucketMeta)
		if err != nil {
			return err
		}
		if _, err := tx.CreateBucket(bucketZones); err != nil {
			return err
		}
		return stores.PutCBOR(meta, keySettings, s)
	})
}

func openCatalog(dir string) (*catalog, error) {
	db, err := storefile.Open(filepath.Join(dir, DBName), storefile.Options{})
	if errors.Is(err, storefile.ErrMissing) {
		return nil, fmt.Errorf("%w: %s has no %s; make one with pzh provider init --data %s --public-addr HOST:PORT", ErrNoProvider, dir, DBName, dir)
	}
	if err != nil {
		return nil, err
	}
	c, err := readCatalog(kv.OfBolt(db))
	if err != nil {
		db.Close()
		return nil, fmt.Errorf("%s: %w; restore it from a backup", filepath.Join(dir, DBName), err)
	}
	return c, nil
}

// readCatalog reads and checks the catalog in db.
func readCatalog(db kv.DB) (*catalog, error) {
	c := &catalog{db: db}
	err := db.View(func(tx kv.Tx) error {
		meta, zones := tx.Bucket(bucketMeta), tx.Bucket(bucketZones)
		if meta == nil || zones == nil {
			return errors.New("it lacks its buckets")
		}
		if err := stores.GetCBOR(meta, keySettings, &c.set); err != nil {
			return fmt.Errorf("settings: %w", err)
		}
		if len(c.set.ResetSecret) != 32 || len(c.set.PublicAddrs) == 0 {
			return errors.New("its settings are incomplete")
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	return c, nil
}

func (c *catalog) Close() error { return c.db.Close() }

func (c *catalog) zones() ([]zoneEntry, error) {
	var out []zoneEntry
	err := c.db.View(func(tx kv.Tx) error {
		return tx.Bucket(bucketZones).ForEach(func(k, v []byte) error {
			var z zoneEntry
			if err := transport.Unmarshal(v, &z); err != nil {
				return fmt.Errorf("zone %q: %w", k, err)
			}
			out = append(out, z)
			return nil
		})
	})
	slices.SortFunc(out, func(a, b zoneEntry) int { return a.Added.Compare(b.Added) })
	return out, err
}

// put records z (new, or with new limits).
func (c *catalog) put(z zoneEntry) error {
	return c.db.Update(func(tx kv.Tx) error {
		return stores.PutCBOR(tx.Bucket(bucketZones), []byte(z.Name), &z)
	})
}

func (c *catalog) remove(name string) error {
	return c.db.Update(func(tx kv.Tx) error {
		return tx.Bucket(bucketZones).Delete([]byte(name))
	})
}
