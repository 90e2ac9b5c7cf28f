package hub

import (
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"time"

	"github.com/pzone/pzone/certs"
	"github.com/pzone/pzone/zone/api"
	"github.com/pzone/pzone/zone/localapi"
)

// ErrZoneExists: pzh init found a zone already in the data directory.
var ErrZoneExists = errors.New("a zone already exists here")

// Public address bounds: what an invite token (and a QR code of it) can
// carry comfortably.
const (
	// MaxPublicAddrs is how many public addresses a zone may have: all
	// fit in an invite token.
	MaxPublicAddrs   = 4
	maxPublicAddrLen = 100
)

// ValidateHubAddr checks a public hub address: host:port with a port from
// 1 to 65535.
func ValidateHubAddr(addr string) error {
	if len(addr) > maxPublicAddrLen {
		return fmt.Errorf("address %q is longer than %d characters", addr, maxPublicAddrLen)
	}
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		return fmt.Errorf("address %q: want HOST:PORT, e.g. hub.example.net:7443", addr)
	}
	if host == "" {
		return fmt.Errorf("address %q has no host: devices must be able to reach it, e.g. hub.example.net:7443", addr)
	}
	if p, err := strconv.Atoi(port); err != nil || p < 1 || p > 65535 {
		return fmt.Errorf("address %q: port must be a number from 1 to 65535", addr)
	}
	return nil
}

// InitZone creates a zone in dir: its CA, the hub's certificate, and the
// store. It refuses to touch an existing zone.
func InitZone(dir, name string, publicAddrs []string, now time.Time) (*ZoneInfo, error) {
	if err := checkNewZone(name, publicAddrs); err != nil {
		return nil, err
	}
	path := filepath.Join(dir, HubDBName)
	if _, err := os.Stat(path); err != nil {
		if err := localapi.CheckDataDir(dir, api.HubSocketName); err != nil {
			return nil, err
		}
	}
	if _, err := os.Stat(path); err == nil {
		if s, err := openHubStore(dir); err == nil {
			z, _ := s.Zone()
			s.Close()
			if z != nil {
				return nil, fmt.Errorf("%w: %s holds zone %q (%s); use another --data directory", ErrZoneExists, dir, z.Name, z.ID)
			}
		}
		return nil, fmt.Errorf("%w: %s exists; use another --data directory", ErrZoneExists, path)
	}
	info, ca, hubCert, hubKey, err := newZoneKeys(name, publicAddrs, now)
	if err != nil {
		return nil, err
	}
	if err := createHubStore(dir, *info, ca, hubCert, hubKey); err != nil {
		return nil, fmt.Errorf("write zone store: %w", err)
	}
	return info, nil
}

// checkNewZone checks a new zone's name and public addresses.
func checkNewZone(name string, publicAddrs []string) error {
	if err := certs.ValidateName("zone", name); err != nil {
		return err
	}
	if len(publicAddrs) == 0 {
		return errors.New("no public address given: use --public-addr HOST:PORT, the address devices will reach the hub at")
	}
	if len(publicAddrs) > MaxPublicAddrs {
		return fmt.Errorf("%d public addresses given; at most %d fit in an invite token", len(publicAddrs), MaxPublicAddrs)
	}
	for _, a := range publicAddrs {
		if err := ValidateHubAddr(a); err != nil {
			return err
		}
	}
	return nil
}
