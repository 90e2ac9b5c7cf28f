package hub

import (
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"time"

	bolt "go.etcd.io/bbolt"

	zsync "github.com/pzone/pzone/sync"
	"github.com/pzone/pzone/zone/backup"
	"github.com/pzone/pzone/zone/localapi"
	"github.com/pzone/pzone/zone/stores"
	"github.com/pzone/pzone/zone/wire"
)

// Backup and restore (pzh backup, pzh restore). A backup is every store
// of the running hub, each a bbolt read transaction begun one after the
// other before any is written, in one file (zone/backup). A restore puts
// them into an empty data directory, and gives the zone state a new
// epoch, signed, that remembers the one it came from: devices that synced
// further than the backup push back what it lacks (package sync,
// restore.go), the revocations the hub signed among it.

// backupFiles are the stores a backup holds, in its order.
var backupFiles = []string{HubDBName, zsync.FileName, MailboxDBName}

// backupRoutes serves GET /v1/backup: the backup file, streamed. Only the
// admin socket has it (never the web listener): it holds the zone CA key.
func (h *Hub) backupRoutes(mux *http.ServeMux) {
	mux.HandleFunc("GET /v1/backup", func(w http.ResponseWriter, r *http.Request) {
		txs, err := h.snapshots()
		if err != nil {
			localapi.WriteErr(w, http.StatusInternalServerError, fmt.Errorf("begin the backup: %w", err))
			return
		}
		defer func() {
			for _, tx := range txs {
				tx.Rollback()
			}
		}()
		sources := make([]backup.Source, len(txs))
		for i, tx := range txs {
			sources[i] = backup.Source{Name: backupFiles[i], Size: tx.Size(), WriteTo: tx.WriteTo}
		}
		w.Header().Set("Content-Type", "application/octet-stream")
		hdr := backup.Header{Zone: h.zone.Name, ZoneID: h.zone.ID.Compact(), Created: h.cfg.Now().UTC(), Software: wire.SoftwareVersion}
		if err := backup.Write(w, hdr, sources); err != nil {
			// The client checks the whole file and sees it cut short.
			h.log.Warn("backup cut short", "err", err)
			return
		}
		h.log.Info("backup taken", "bytes", sources[0].Size+sources[1].Size+sources[2].Size)
	})
}

// snapshots begins a read transaction on each store, in backupFiles'
// order.
func (h *Hub) snapshots() ([]*bolt.Tx, error) {
	var txs []*bolt.Tx
	for _, begin := range []func() (*bolt.Tx, error){
		func() (*bolt.Tx, error) { return h.store.db.Begin(false) },
		h.state.Snapshot,
		func() (*bolt.Tx, error) { return h.mail.db.Begin(false) },
	} {
		tx, err := begin()
		if err != nil {
			for _, t := range txs {
				t.Rollback()
			}
			return nil, err
		}
		txs = append(txs, tx)
	}
	return txs, nil
}

// ErrRestore marks a restore refused before anything was put in place.
var ErrRestore = errors.New("not restored")

// restoringSuffix marks a store being restored, until it is whole.
const restoringSuffix = ".restoring"

// Restore puts the backup read from r into dir, which must hold no zone,
// and readies its zone state to take back what devices hold. Nothing is
// left in dir unless all of it is.
func Restore(r io.Reader, dir string) (*backup.Header, error) {
	for _, name := range backupFiles {
		for _, p := range []string{name, name + restoringSuffix} {
			if _, err := os.Lstat(filepath.Join(dir, p)); err == nil {
				return nil, fmt.Errorf("%w: %s holds %s already: restore into a new, empty data directory (or move that one aside first)", ErrRestore, dir, p)
			} else if !errors.Is(err, os.ErrNotExist) {
				return nil, fmt.Errorf("%w: %v", ErrRestore, err)
			}
		}
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("%w: %v", ErrRestore, err)
	}
	var staged []*os.File
	done := false
	defer func() {
		for _, f := range staged {
			f.Close()
			if !done {
				os.Remove(f.Name())
			}
		}
	}()
	hdr, err := backup.Read(r, func(name string, _ int64) (io.Writer, error) {
		known := false
		for _, n := range backupFiles {
			known = known || n == name
		}
		if !known {
			return nil, fmt.Errorf("%w: %w: it holds %q, which is no store of a hub", ErrRestore, backup.ErrDamaged, name)
		}
		f, err := os.OpenFile(filepath.Join(dir, name+restoringSuffix), os.O_CREATE|os.O_EXCL|os.O_WRONLY, 0o600)
		if err != nil {
			return nil, fmt.Errorf("%w: %v", ErrRestore, err)
		}
		staged = append(staged, f)
		return f, nil
	})
	if err != nil {
		if !errors.Is(err, ErrRestore) {
			err = fmt.Errorf("%w: %w", ErrRestore, err)
		}
		return nil, err
	}
	if len(staged) != len(backupFiles) || filepath.Base(staged[0].Name()) != HubDBName+restoringSuffix {
		return nil, fmt.Errorf("%w: %w: it holds %v, not a hub's %v", ErrRestore, backup.ErrDamaged, hdr.Files, backupFiles)
	}
	for _, f := range staged {
		if err := f.Sync(); err != nil {
			return nil, fmt.Errorf("%w: %v", ErrRestore, err)
		}
		f.Close()
	}
	if err := readyRestored(dir, hdr); err != nil {
		return nil, fmt.Errorf("%w: %w", ErrRestore, err)
	}
	for _, name := range backupFiles {
		if err := os.Rename(filepath.Join(dir, name+restoringSuffix), filepath.Join(dir, name)); err != nil {
			return nil, fmt.Errorf("%w: %v", ErrRestore, err)
		}
	}
	done = true
	return hdr, stores.SyncDir(dir)
}

// readyRestored checks the staged anchor is the zone the header names,
// gives the staged zone state a new epoch (sync.MarkRestored) and records
// it, signed by the zone CA, in the anchor, as a hub does for a zone
// state it made.
func readyRestored(dir string, hdr *backup.Header) error {
	path := filepath.Join(dir, HubDBName+restoringSuffix)
	db, err := bolt.Open(path, 0o600, &bolt.Options{Timeout: stores.LockTimeout})
	if err != nil {
		return fmt.Errorf("%w: its %s does not open: %v", backup.ErrDamaged, HubDBName, err)
	}
	s := &hubStore{db: db}
	if err := markRestored(s, dir, hdr); err != nil {
		s.Close()
		return err
	}
	return s.Close()
}

func markRestored(s *hubStore, dir string, hdr *backup.Header) error {
	if err := s.checkVersion(); err != nil {
		return fmt.Errorf("its %s: %w", HubDBName, err)
	}
	ca, err := s.CA()
	if err != nil {
		return fmt.Errorf("%w: its %s holds no zone CA: %v", backup.ErrDamaged, HubDBName, err)
	}
	if ca.ZoneID.Compact() != hdr.ZoneID {
		return fmt.Errorf("%w: its %s is of zone %s, its header says %s", backup.ErrDamaged, HubDBName, ca.ZoneID.Compact(), hdr.ZoneID)
	}
	epoch, err := zsync.MarkRestored(filepath.Join(dir, zsync.FileName+restoringSuffix))
	if err != nil {
		return fmt.Errorf("%w: its %s: %v", backup.ErrDamaged, zsync.FileName, err)
	}
	proof, err := stores.SignEpoch(ca, epoch, time.Now())
	if err != nil {
		return err
	}
	return s.setStateEpoch(&stateEpoch{Epoch: epoch, Proof: proof})
}
