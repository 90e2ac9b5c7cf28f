package sync

import (
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"strings"

	"github.com/pzone/pzone/storefile/kv"

	"github.com/pzone/pzone/storefile"
)

// A hub restored from a backup holds less than its devices: the edits
// accepted after the backup exist only on the devices that made or
// received them. MarkRestored gives the restored store a new epoch and
// remembers the one it came from. A device that synced with that epoch
// gets, besides the full resync any new epoch brings, Start.Restored: at
// the end of the full pass it keeps, instead of dropping, the records
// the hub lacks or holds older of
//
//   - its own edits (its name in their version), which it pushes back as
//     if made now, with their versions: the hub takes each where it has
//     nothing newer, as it takes any edit;
//   - the hub's records Options.Witness picks, which the hub can check
//     (Options.Vouch): revocations it signed.
//
// Records of other devices are dropped as in any full resync: their
// authors push them back when they connect. A deletion made after the
// backup is not held anywhere (devices keep no tombstones) and is undone;
// so is a hub record no Witness picks.

// MarkRestored readies the hub store at path, just restored from a
// backup, to take back what its devices hold: a new epoch, and the old
// one remembered. It returns the new epoch.
func MarkRestored(path string) (string, error) {
	db, err := storefile.Open(path, storefile.Options{})
	if err != nil {
		return "", err
	}
	defer db.Close()
	b := make([]byte, 16)
	rand.Read(b)
	epoch := hex.EncodeToString(b)
	err = kv.OfBolt(db).Update(func(tx kv.Tx) error {
		m := tx.Bucket(bMeta)
		if m == nil || string(m.Get(kRole)) != roleHub {
			return fmt.Errorf("%s is not a hub's zone state", path)
		}
		// Every epoch it was restored from, newest first: a device still
		// on one of them holds what the backups lack.
		was := append([]string{string(m.Get(kEpoch))}, strings.Fields(string(m.Get(kRestored)))...)
		if len(was) > maxRestored {
			was = was[:maxRestored]
		}
		if err := m.Put(kRestored, []byte(strings.Join(was, " "))); err != nil {
			return err
		}
		return m.Put(kEpoch, []byte(epoch))
	})
	if err != nil {
		return "", err
	}
	return epoch, db.Close()
}

// maxRestored bounds the earlier epochs a hub remembers.
const maxRestored = 16

// wasEpoch reports whether epoch is among the earlier ones a restored
// hub keeps (kRestored: space-separated).
func wasEpoch(restored []byte, epoch string) bool {
	for e := range strings.FieldsSeq(string(restored)) {
		if e == epoch {
			return true
		}
	}
	return false
}

// pushBack reports whether a device pushes st back to a restored hub.
func (s *Store) pushBack(st *stored, bucket, key string) bool {
	if st == nil || st.Pending != 0 || st.Deleted {
		return false
	}
	return st.Version.Node == s.opts.Node || st.Version.Node == HubNode && s.opts.Witness != nil && s.opts.Witness(bucket, key)
}

// repush queues st, already stored, to push again as it is, with shadow
// (the hub's record of the key, if it has one) to fall back on if the
// hub refuses it.
func (t *txn) repush(bk []byte, st *stored, shadow *Record) error {
	m, pend := t.tx.Bucket(bMeta), t.tx.Bucket(bPending)
	id := getU64(m.Get(kPendID)) + 1
	if err := m.Put(kPendID, u64(id)); err != nil {
		return err
	}
	st.Pending, st.Gen, st.Shadow = id, getU64(m.Get(kGen)), nil
	if shadow != nil {
		sh := *shadow
		st.Shadow = &sh
	}
	t.pendingDelta++
	t.local = true
	if err := pend.Put(u64(id), bk); err != nil {
		return err
	}
	return putStored(t.tx, bk, st)
}
