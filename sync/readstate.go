package sync

import (
	"errors"
	"fmt"
	"os"
	"time"

	bolt "go.etcd.io/bbolt"
)

// ReadState reads a device's sync state from its store file while no
// daemon has it open (pzp status with pzp run stopped). It returns nil if
// there is no store yet.
func ReadState(path string) (*State, error) {
	if _, err := os.Stat(path); errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	db, err := bolt.Open(path, 0o600, &bolt.Options{ReadOnly: true, Timeout: time.Second})
	if err != nil {
		return nil, fmt.Errorf("open %s: %w", path, err)
	}
	defer db.Close()
	st := &State{Phase: PhaseOffline}
	err = db.View(func(tx *bolt.Tx) error {
		m, p := tx.Bucket(bMeta), tx.Bucket(bPending)
		if m == nil || p == nil || string(m.Get(kRole)) != rolePeer {
			return fmt.Errorf("%s is not a device's zone state", path)
		}
		st.LastSeq = getU64(m.Get(kSeq))
		st.HubSeq, st.StartSeq = st.LastSeq, st.LastSeq
		st.FullResync = m.Get(kFull) != nil
		st.Pending = p.Stats().KeyN
		return nil
	})
	if err != nil {
		return nil, err
	}
	return st, nil
}
