package hub

import (
	"crypto/x509"
	"errors"
	"fmt"
	"sort"
	"time"

	"github.com/pzone/pzone/storefile/kv"

	"github.com/pzone/pzone/zone/stores"

	"github.com/pzone/pzone/certs"
	"github.com/pzone/pzone/pairing"
	"github.com/pzone/pzone/transport"
)

// The hub's records of friends (other zones it federates with) and of the
// friend invites it has printed, in pzh.db next to the zone's keys: a
// friend's CA certificate is a trust anchor like the zone's own.

var (
	bucketFriends       = []byte("friends")        // compact zone ID → FriendRecord
	bucketFriendInvites = []byte("friend-invites") // invite id → pairing.Invite
)

// FriendRecord is the hub's record of a friend zone.
type FriendRecord struct {
	// Petname is what this zone calls the friend: unique among its
	// friends, never this zone's own name, and what devices write in
	// addresses (bob/laptop/files) and policy rules.
	Petname string       `cbor:"1,keyasint"`
	Zone    string       `cbor:"2,keyasint"` // the name the friend gives itself
	ZoneID  certs.ZoneID `cbor:"3,keyasint"`
	CA      []byte       `cbor:"4,keyasint"` // the friend's zone CA certificate, DER
	// HubAddrs are where the friend's hub listens, as it said.
	HubAddrs []string  `cbor:"5,keyasint"`
	Added    time.Time `cbor:"6,keyasint"`
	// Invited: this hub printed the friend token the friend redeemed
	// (rather than redeeming the friend's).
	Invited bool `cbor:"7,keyasint,omitempty"`

	ca *x509.Certificate // parsed CA, in memory
}

// parse fills the in-memory fields and checks the record hangs together.
func (f *FriendRecord) parse() error {
	ca, err := x509.ParseCertificate(f.CA)
	if err != nil {
		return fmt.Errorf("friend %q: CA certificate: %w", f.Petname, err)
	}
	id, err := certs.ZoneIDFromKey(ca.PublicKey)
	if err != nil {
		return fmt.Errorf("friend %q: %w", f.Petname, err)
	}
	if id != f.ZoneID {
		return fmt.Errorf("friend %q: CA certificate is of zone %s, not %s", f.Petname, id, f.ZoneID)
	}
	f.ca = ca
	return nil
}

// ErrNoFriend: no friend has that name.
var ErrNoFriend = errors.New("no such friend")

// ensureFriendBuckets adds the friend buckets to a store made before
// federation existed: an addition, so the store version stays.
func (s *hubStore) ensureFriendBuckets() error {
	return s.db.Update(func(tx kv.Tx) error {
		for _, b := range [][]byte{bucketFriends, bucketFriendInvites} {
			if _, err := tx.CreateBucketIfNotExists(b); err != nil {
				return err
			}
		}
		return nil
	})
}

// Friends lists the friend records, by petname.
func (s *hubStore) Friends() ([]*FriendRecord, error) {
	var out []*FriendRecord
	err := s.db.View(func(tx kv.Tx) error {
		return tx.Bucket(bucketFriends).ForEach(func(k, v []byte) error {
			var f FriendRecord
			if err := transport.Unmarshal(v, &f); err != nil {
				return fmt.Errorf("friend %q: %w", k, err)
			}
			if err := f.parse(); err != nil {
				return err
			}
			out = append(out, &f)
			return nil
		})
	})
	sort.Slice(out, func(i, j int) bool { return out[i].Petname < out[j].Petname })
	return out, err
}

// friendTaken reports whether another friend than zone already has petname.
func friendTaken(b kv.Bucket, petname string, zone certs.ZoneID) bool {
	taken := false
	b.ForEach(func(k, v []byte) error {
		var f FriendRecord
		if transport.Unmarshal(v, &f) == nil && f.Petname == petname && f.ZoneID != zone {
			taken = true
		}
		return nil
	})
	return taken
}

// AddFriend records a friend this hub redeemed a token of. A zone that
// is a friend already is refused; so is a petname in use.
func (s *hubStore) AddFriend(f *FriendRecord) error {
	return s.db.Update(func(tx kv.Tx) error {
		b := tx.Bucket(bucketFriends)
		var cur FriendRecord
		if stores.GetCBOR(b, []byte(f.ZoneID.Compact()), &cur) == nil {
			return fmt.Errorf("%w: zone %s is a friend already, as %q (pzh friend remove %s first to make friends again)", ErrAlreadyDone, f.ZoneID, cur.Petname, cur.Petname)
		}
		if friendTaken(b, f.Petname, f.ZoneID) {
			return fmt.Errorf("%w: another friend is called %q already; choose another name with --as", errBadFriend, f.Petname)
		}
		return stores.PutCBOR(b, []byte(f.ZoneID.Compact()), f)
	})
}

// RenameFriend gives a friend a new petname.
func (s *hubStore) RenameFriend(from, to string) (*FriendRecord, error) {
	var out *FriendRecord
	err := s.db.Update(func(tx kv.Tx) error {
		b := tx.Bucket(bucketFriends)
		var key []byte
		var rec FriendRecord
		b.ForEach(func(k, v []byte) error {
			var f FriendRecord
			if transport.Unmarshal(v, &f) == nil && f.Petname == from {
				key, rec = stores.Clone(k), f
			}
			return nil
		})
		if key == nil {
			return fmt.Errorf("%w %q: pzh friends lists them", ErrNoFriend, from)
		}
		if friendTaken(b, to, rec.ZoneID) {
			return fmt.Errorf("%w: another friend is called %q already", errBadFriend, to)
		}
		rec.Petname = to
		out = &rec
		return stores.PutCBOR(b, key, &rec)
	})
	if err != nil {
		return nil, err
	}
	return out, out.parse()
}

// SetFriendAddrs records where a friend's hub listens now.
func (s *hubStore) SetFriendAddrs(zone certs.ZoneID, addrs []string) (*FriendRecord, error) {
	var rec FriendRecord
	err := s.db.Update(func(tx kv.Tx) error {
		b := tx.Bucket(bucketFriends)
		if err := stores.GetCBOR(b, []byte(zone.Compact()), &rec); err != nil {
			return err
		}
		rec.HubAddrs = addrs
		return stores.PutCBOR(b, []byte(zone.Compact()), &rec)
	})
	if err != nil {
		return nil, err
	}
	return &rec, rec.parse()
}

// RemoveFriend forgets a friend.
func (s *hubStore) RemoveFriend(zone certs.ZoneID) error {
	return s.db.Update(func(tx kv.Tx) error {
		return tx.Bucket(bucketFriends).Delete([]byte(zone.Compact()))
	})
}

// AddFriendInvite stores a new friend invite.
func (s *hubStore) AddFriendInvite(inv *pairing.Invite) error {
	return s.db.Update(func(tx kv.Tx) error {
		b := tx.Bucket(bucketFriendInvites)
		if b.Get([]byte(inv.ID)) != nil {
			return fmt.Errorf("invite id collision; try again")
		}
		return stores.PutCBOR(b, []byte(inv.ID), inv)
	})
}

// redeemFriendFunc checks a friend invite inside the redemption
// transaction and returns the friend to record; taken tells whether a
// petname is in use by another friend. It must not do I/O.
type redeemFriendFunc func(inv *pairing.Invite, taken func(petname string, zone certs.ZoneID) bool) (*FriendRecord, error)

// RedeemFriend atomically finds a friend invite, lets fn check it and
// build the record, then records the friend (replacing an earlier record
// of the same zone: it made friends again) and spends the invite. Nothing
// is written if fn fails.
func (s *hubStore) RedeemFriend(id string, fn redeemFriendFunc) (*FriendRecord, error) {
	var rec *FriendRecord
	err := s.db.Update(func(tx kv.Tx) error {
		ib, fb := tx.Bucket(bucketFriendInvites), tx.Bucket(bucketFriends)
		var inv pairing.Invite
		if err := stores.GetCBOR(ib, []byte(id), &inv); err != nil {
			return err
		}
		f, err := fn(&inv, func(p string, z certs.ZoneID) bool { return friendTaken(fb, p, z) })
		if err != nil {
			return err
		}
		rec = f
		inv.UsesLeft--
		inv.Devices = append(inv.Devices, f.Petname)
		if inv.UsesLeft <= 0 {
			inv.CodeSecret = nil // used up: a code's words are kept no longer
		}
		if err := stores.PutCBOR(ib, []byte(id), &inv); err != nil {
			return err
		}
		return stores.PutCBOR(fb, []byte(f.ZoneID.Compact()), f)
	})
	return rec, err
}
