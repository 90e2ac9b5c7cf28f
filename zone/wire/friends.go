package wire

import (
	"crypto/x509"
	"encoding/json"
	"fmt"
	"time"

	"github.com/pzone/pzone/certs"
)

// FriendInfo is the value of a friends-bucket record (key: the friend's
// compact zone ID): what devices need to address a friend zone and to
// check its devices' signatures themselves.
type FriendInfo struct {
	Petname string       `json:"petname"`
	Zone    string       `json:"zone"`
	ZoneID  certs.ZoneID `json:"zone_id"`
	CA      []byte       `json:"ca"` // the friend's zone CA certificate, DER
	Since   time.Time    `json:"since"`
}

// Friend is a friend as calls use it: on the hub from its records,
// on a device from the friends bucket.
type Friend struct {
	Petname string
	ID      certs.ZoneID
	CA      *x509.Certificate
}

// DecodeFriendInfo reads a friends-bucket record, checking that its CA
// is the zone its key names.
func DecodeFriendInfo(key string, value []byte) (*Friend, error) {
	var fi FriendInfo
	if err := json.Unmarshal(value, &fi); err != nil {
		return nil, fmt.Errorf("friend record %q: %w", key, err)
	}
	ca, err := x509.ParseCertificate(fi.CA)
	if err != nil {
		return nil, fmt.Errorf("friend record %q: CA certificate: %w", key, err)
	}
	id, err := certs.ZoneIDFromKey(ca.PublicKey)
	if err != nil || id.Compact() != key || id != fi.ZoneID {
		return nil, fmt.Errorf("friend record %q: CA certificate is not of that zone", key)
	}
	if certs.ValidateName("zone", fi.Petname) != nil {
		return nil, fmt.Errorf("friend record %q: bad petname %q", key, fi.Petname)
	}
	return &Friend{Petname: fi.Petname, ID: id, CA: ca}, nil
}

// Friends looks friends up by zone ID (compact) and by petname.
type Friends struct {
	ByID   map[string]*Friend
	byName map[string]*Friend
}

func NewFriends() *Friends {
	return &Friends{ByID: map[string]*Friend{}, byName: map[string]*Friend{}}
}

func (fs *Friends) Add(f *Friend) {
	fs.ByID[f.ID.Compact()] = f
	fs.byName[f.Petname] = f
}

// resolve finds the friend a caller names: a petname, or a zone ID in any
// form certs.ParseZoneID reads.
func (fs *Friends) Resolve(name string) *Friend {
	if f := fs.byName[name]; f != nil {
		return f
	}
	if id, err := certs.ParseZoneID(name); err == nil {
		return fs.ByID[id.Compact()]
	}
	return nil
}
