package sync

import (
	"errors"
	"fmt"
	"os"

	"github.com/pzone/pzone/storefile/kv"

	"github.com/pzone/pzone/storefile"
)

// ReadState reads a device's sync state from its store file while no
// daemon has it open (pzp status with pzp run stopped). It returns nil if
// there is no store yet.
func ReadState(path string) (*State, error) {
	if _, err := os.Stat(path); errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	db, err := storefile.Open(path, storefile.Options{ReadOnly: true})
	if err != nil {
		return nil, err
	}
	defer db.Close()
	st := &State{Phase: PhaseOffline}
	err = kv.OfBolt(db).View(func(tx kv.Tx) error {
		m, p := tx.Bucket(bMeta), tx.Bucket(bPending)
		if m == nil || p == nil || string(m.Get(kRole)) != rolePeer {
			return fmt.Errorf("%s is not a device's zone state", path)
		}
		st.LastSeq = getU64(m.Get(kSeq))
		st.HubSeq, st.StartSeq = st.LastSeq, st.LastSeq
		st.FullResync = m.Get(kFull) != nil
		st.Pending = p.KeyN()
		return nil
	})
	if err != nil {
		return nil, err
	}
	return st, nil
}
