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

	"github.com/pzone/pzone/storefile/kv"

	"github.com/pzone/pzone/storefile"
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
		copies, err := h.snapshotCopies()
		if err != nil {
			localapi.WriteErr(w, http.StatusInternalServerError, fmt.Errorf("begin the backup: %w", err))
			return
		}
		defer func() {
			for _, f := range copies {
				f.Close()
				os.Remove(f.Name())
			}
		}()
		sources := make([]backup.Source, len(copies))
		var total int64
		for i, f := range copies {
			st, err := f.Stat()
			if err != nil {
				localapi.WriteErr(w, http.StatusInternalServerError, fmt.Errorf("begin the backup: %w", err))
				return
			}
			sources[i] = backup.Source{Name: backupFiles[i], Size: st.Size(), WriteTo: func(w io.Writer) (int64, error) {
				if _, err := f.Seek(0, io.SeekStart); err != nil {
					return 0, err
				}
				return io.Copy(w, f)
			}}
			total += st.Size()
		}
		w.Header().Set("Content-Type", "application/octet-stream")
		hdr := backup.Header{Zone: h.zone.Name, ZoneID: h.zone.ID.Compact(), Created: h.cfg.Now().UTC(), Software: wire.SoftwareVersion}
		if err := backup.Write(w, hdr, sources); err != nil {
			// The client checks the whole file and sees it cut short.
			h.log.Warn("backup cut short", "err", err)
			return
		}
		h.log.Info("backup taken", "bytes", total)
	})
}

// snapshotCopies copies each store, as of a read transaction on each
// begun one after the other, to a private file in the data directory,
// in backupFiles' order. The transactions end as soon as the copies are
// made, so however slowly the client reads, no writer waits on them.
//
// The zone state's transaction begins first: the hub writes its own
// records (devices, revocations) before it publishes them in the zone
// state, and at start publishes what its records say and the zone state
// lacks, so a backup cut between the two heals when it is restored.
func (h *Hub) snapshotCopies() (copies []*os.File, err error) {
	defer func() {
		if err != nil {
			for _, f := range copies {
				f.Close()
				os.Remove(f.Name())
			}
		}
	}()
	var txs [3]*bolt.Tx // in backupFiles' order
	defer func() {
		for _, tx := range txs {
			if tx != nil {
				tx.Rollback()
			}
		}
	}()
	zdb, mdb := kv.BoltOf(h.store.db), kv.BoltOf(h.mail.db)
	if zdb == nil || mdb == nil {
		return nil, fmt.Errorf("%w: back it up with the database's own tools (pg_dump)", errStoresNotFiles)
	}
	if txs[1], err = h.state.Snapshot(); err != nil {
		return nil, err
	}
	if txs[0], err = zdb.Begin(false); err != nil {
		return nil, err
	}
	if txs[2], err = mdb.Begin(false); err != nil {
		return nil, err
	}
	for i, tx := range txs {
		f, err := os.CreateTemp(h.cfg.DataDir, ".backup-"+backupFiles[i]+"-*") // mode 0600, in a 0700 directory
		if err != nil {
			return copies, err
		}
		copies = append(copies, f)
		if _, err := tx.WriteTo(f); err != nil {
			return copies, err
		}
		tx.Rollback()
		txs[i] = nil
	}
	return copies, nil
}

// removeStaleCopies removes the copies of a backup a hub stopped in the
// middle of (they hold the zone CA key, as pzh.db does).
func removeStaleCopies(dir string) {
	old, _ := filepath.Glob(filepath.Join(dir, ".backup-*"))
	for _, p := range old {
		os.Remove(p)
	}
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
	// The anchor last: without it the directory holds no zone, and a
	// crash before it leaves nothing pzh serve would take for one.
	var placed []string
	for i := len(backupFiles) - 1; i >= 0; i-- {
		name := filepath.Join(dir, backupFiles[i])
		if err := os.Rename(name+restoringSuffix, name); err != nil {
			for _, p := range placed {
				os.Remove(p)
			}
			stores.SyncDir(dir)
			return nil, fmt.Errorf("%w: %v", ErrRestore, err)
		}
		placed = append(placed, name)
	}
	done = true
	return hdr, stores.SyncDir(dir)
}

// readyRestored checks the staged anchor is the zone the header names,
// gives the staged zone state a new epoch (sync.MarkRestored) and records
// it, signed by the zone CA, in the anchor, as a hub does for a zone
// state it made.
func readyRestored(dir string, hdr *backup.Header) error {
	// Every page of each store is read once (storefile's check) before
	// anything is put in place.
	mail, err := storefile.Open(filepath.Join(dir, MailboxDBName+restoringSuffix), storefile.Options{LockTimeout: stores.LockTimeout})
	if err != nil {
		return fmt.Errorf("%w: its %s: %v", backup.ErrDamaged, MailboxDBName, err)
	}
	mail.Close()
	db, err := storefile.Open(filepath.Join(dir, HubDBName+restoringSuffix), storefile.Options{LockTimeout: stores.LockTimeout})
	if err != nil {
		return fmt.Errorf("%w: its %s: %v", backup.ErrDamaged, HubDBName, err)
	}
	s := &hubStore{db: kv.OfBolt(db)}
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
