package stores

import (
	"encoding/binary"
	"sync/atomic"
	"time"

	"github.com/pzone/pzone/storefile/kv"

	"github.com/pzone/pzone/zone/envelope"
)

// boltEnvelopes keeps the envelopes a node accepted that stay fresh for a
// long time (messages and calls with a time to live, up to 30 days) in
// its bbolt file, bucket "envelopes" (key: sender zone/device/ID, value:
// the unix ms after which the envelope is stale anyway), so that a
// restart does not open them to replay. A device keeps it in pzp.db, the
// hub (for the services on its host) in mailbox.db. Calls and messages
// carry at most MaxTTL (wire.CheckCallHeader), which bounds what it holds.
type boltEnvelopes struct {
	db    kv.DB
	now   func() time.Time
	saves atomic.Uint64
}

var bucketEnvelopes = []byte("envelopes")

// envelopePruneEvery is how many saves pass between sweeps of expired
// entries: the sweep reads the whole bucket, which holds at most what a
// month of messages for later left behind.
const envelopePruneEvery = 1024

// load returns the envelopes still fresh at now, and forgets the others.
func (b *boltEnvelopes) load(now time.Time) (map[string]int64, error) {
	out := map[string]int64{}
	err := b.db.Update(func(tx kv.Tx) error {
		bk, err := tx.CreateBucketIfNotExists(bucketEnvelopes)
		if err != nil {
			return err
		}
		stale, err := staleEnvelopes(bk, now, out)
		if err != nil {
			return err
		}
		return deleteKeys(bk, stale)
	})
	return out, err
}

// staleEnvelopes lists the entries of bk stale at now, and puts the
// others in fresh (if not nil).
func staleEnvelopes(bk kv.Bucket, now time.Time, fresh map[string]int64) ([][]byte, error) {
	var stale [][]byte
	err := bk.ForEach(func(k, v []byte) error {
		if len(v) != 8 || int64(binary.BigEndian.Uint64(v)) < now.UnixMilli() {
			stale = append(stale, Clone(k))
		} else if fresh != nil {
			fresh[string(k)] = int64(binary.BigEndian.Uint64(v))
		}
		return nil
	})
	return stale, err
}

func deleteKeys(bk kv.Bucket, keys [][]byte) error {
	for _, k := range keys {
		if err := bk.Delete(k); err != nil {
			return err
		}
	}
	return nil
}

// SaveEnvelope remembers an accepted envelope until expMs, and now and
// then sweeps out the expired.
func (b *boltEnvelopes) SaveEnvelope(key string, expMs int64) error {
	sweep := b.saves.Add(1)%envelopePruneEvery == 0
	return b.db.Update(func(tx kv.Tx) error {
		bk, err := tx.CreateBucketIfNotExists(bucketEnvelopes)
		if err != nil {
			return err
		}
		if sweep {
			stale, err := staleEnvelopes(bk, b.now(), nil)
			if err != nil {
				return err
			}
			if err := deleteKeys(bk, stale); err != nil {
				return err
			}
		}
		var v [8]byte
		binary.BigEndian.PutUint64(v[:], uint64(expMs))
		return bk.Put([]byte(key), v[:])
	})
}

// ForgetEnvelope drops a remembered envelope (its delivery failed).
func (b *boltEnvelopes) ForgetEnvelope(key string) error {
	return b.db.Update(func(tx kv.Tx) error {
		if bk := tx.Bucket(bucketEnvelopes); bk != nil {
			return bk.Delete([]byte(key))
		}
		return nil
	})
}

// KeepEnvelopes makes c remember across restarts in db, loading what an
// earlier run accepted.
func KeepEnvelopes(c *envelope.Checker, db kv.DB, now func() time.Time) error {
	store := &boltEnvelopes{db: db, now: now}
	seen, err := store.load(now())
	if err != nil {
		return err
	}
	c.Remember(seen)
	c.Store = store
	return nil
}
