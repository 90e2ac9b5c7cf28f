package hub

import (
	"crypto/ed25519"
	"crypto/x509"
	"errors"
	"fmt"
	"time"

	"github.com/pzone/pzone/certs"
	"github.com/pzone/pzone/storefile/kv"
)

// Stores keeps a zone's stores somewhere other than files in its data
// directory: a provider cluster's database, where every node reaches
// them. Its stores are those a hub keeps in files (StoreFiles), by the
// same names.
type Stores interface {
	// Open opens the store of that name; create makes it (empty) if it
	// was never made, and without create one never made is an error
	// wrapping storefile.ErrMissing.
	Open(name string, create bool) (kv.DB, error)
	// Where names the place in messages.
	Where() string
}

// errStoresNotFiles: a file's operation asked of stores kept elsewhere.
var errStoresNotFiles = errors.New("this zone's stores are kept in a cluster's database, not in files")

// InitZoneIn creates a zone in stores, as InitZone does in a directory:
// its CA, the hub's certificate, and its anchor store, written in one
// transaction (all or nothing). It refuses stores that hold a zone.
func InitZoneIn(st Stores, name string, publicAddrs []string, now time.Time) (*ZoneInfo, error) {
	if err := checkNewZone(name, publicAddrs); err != nil {
		return nil, err
	}
	if s, err := readyAnchor(st); err == nil {
		z, _ := s.Zone()
		s.Close()
		if z != nil {
			return nil, fmt.Errorf("%w: %s holds zone %q (%s)", ErrZoneExists, st.Where(), z.Name, z.ID)
		}
	}
	info, ca, hubCert, hubKey, err := newZoneKeys(name, publicAddrs, now)
	if err != nil {
		return nil, err
	}
	db, err := st.Open(HubDBName, true)
	if err != nil {
		return nil, err
	}
	defer db.Close()
	if err := writeZone(db, *info, ca, hubCert, hubKey); err != nil {
		return nil, fmt.Errorf("write the zone into %s: %w", st.Where(), err)
	}
	return info, nil
}

func readyAnchor(st Stores) (*hubStore, error) {
	db, err := st.Open(HubDBName, false)
	if err != nil {
		return nil, err
	}
	return readyHubStore(db, st.Where())
}

// ReadZoneIn returns the zone description from stores.
func ReadZoneIn(st Stores) (*ZoneInfo, error) {
	s, err := readyAnchor(st)
	if err != nil {
		return nil, err
	}
	defer s.Close()
	return s.Zone()
}

// newZoneKeys makes a new zone's CA and hub certificate.
func newZoneKeys(name string, publicAddrs []string, now time.Time) (*ZoneInfo, *certs.CA, *x509.Certificate, ed25519.PrivateKey, error) {
	ca, err := certs.NewCA(name, now)
	if err != nil {
		return nil, nil, nil, nil, err
	}
	hubKey, err := certs.NewKey()
	if err != nil {
		return nil, nil, nil, nil, err
	}
	hubCert, err := ca.Sign(hubKey.Public(), certs.HubDevice, now, hubCertLifetime)
	if err != nil {
		return nil, nil, nil, nil, err
	}
	return &ZoneInfo{Name: name, ID: ca.ZoneID, PublicAddrs: publicAddrs, Created: now.UTC()}, ca, hubCert, hubKey, nil
}
