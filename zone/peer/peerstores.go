package peer

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"github.com/pzone/pzone/zone/stores"
	"github.com/pzone/pzone/zone/wire"

	"github.com/pzone/pzone/storefile"
	zsync "github.com/pzone/pzone/sync"
)

// A device's stores: pzp.db is the anchor, recording the zone state (sync.db)
// once made, so that a lost one is reported, never made again in silence.

const (
	resetDeviceState = "start it over with pzp run --reset-zone-state (it is fetched again from the hub; edits not yet pushed are lost)"
	rePairDevice     = "move it away and pair this device again (pzp pair with a new invite; revoke the old one with pzh revoke)"
)

// openPeerState opens the device's copy of the zone state: made by the
// first run after pairing, and required from then on unless
// cfg.ResetZoneState starts it over.
func openPeerState(cfg *Config, store *peerStore, id *Identity, opts zsync.Options) (*zsync.Store, error) {
	path := filepath.Join(cfg.DataDir, zsync.FileName)
	opts.MustExist = stores.WasMade(store.db, zsync.FileName)
	if cfg.ResetZoneState {
		aside, err := storefile.MoveAside(path, cfg.Now())
		if err != nil {
			return nil, fmt.Errorf("move the old zone state aside: %w", err)
		}
		if aside != "" {
			cfg.Logger.Warn("starting this device's zone state over, as asked (--reset-zone-state)", "old", aside)
		}
		opts.MustExist = false
	}
	opts.CheckEpoch = func(epoch string, proof []byte) error {
		return stores.VerifyEpochProof(id.CA, id.ZoneID, epoch, proof)
	}
	// Revocations the hub signed are pushed back to a hub restored from
	// a backup that lacks them: it checks the signature and revokes again.
	opts.Witness = func(bucket, key string) bool {
		return bucket == zsync.BucketCerts && strings.HasPrefix(key, wire.CertKeyRevokedPrefix)
	}
	made := false
	if !opts.MustExist {
		exists, err := storefile.Exists(path)
		if err != nil {
			return nil, err
		}
		made = !exists
	}
	st, err := zsync.OpenPeer(path, opts)
	if err != nil {
		return nil, stores.StoreError(err, "pzp", "this device's copy of the zone state and its edits not yet pushed", resetDeviceState)
	}
	if !opts.MustExist {
		// Made now, or kept by a pzp from before the anchor recorded it.
		if err := stores.MarkMade(store.db, zsync.FileName); err != nil {
			st.Close()
			if made {
				os.Remove(path)
			}
			return nil, fmt.Errorf("record the zone state in %s: %w", DBName, err)
		}
	}
	return st, nil
}
