package stores

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"

	bolt "go.etcd.io/bbolt"

	"github.com/pzone/pzone/storefile"
)

// ErrStoreInUse: a daemon holds the store's file lock.
var ErrStoreInUse = errors.New("the store is in use by a running daemon")

// Compaction tuning, with why.
const (
	// compactLockWait is how long compaction waits for a store's lock. A
	// daemon holds it for as long as it runs, so waiting longer would
	// only delay the refusal; a CLI command that just closed the store
	// releases it at once.
	compactLockWait = 200 * time.Millisecond
	// compactTxBytes bounds one transaction of the copy: the copy's dirty
	// pages stay in memory until it commits, and the stores can hold
	// hundreds of MiB.
	compactTxBytes = 16 << 20
	// compactTempMark marks a copy under way in a temporary file name,
	// so one a crash left behind can be recognised and removed.
	compactTempMark = ".compact-"
)

// CompactResult is what compacting one file did; its JSON is stable
// (pzh compact --json).
type CompactResult struct {
	File   string `json:"file"`
	Before int64  `json:"before"` // bytes on disk
	After  int64  `json:"after"`
	// Absent: the data directory has no such file (nothing was done).
	Absent bool `json:"absent,omitempty"`
}

// CompactStores compacts each of files (names in dir) in turn, and stops
// at the first failure, which leaves that file as it was. A file in use
// by a running daemon fails with ErrStoreInUse.
func CompactStores(dir string, files []string) ([]CompactResult, error) {
	var out []CompactResult
	for _, f := range files {
		r, err := compactFile(filepath.Join(dir, f))
		if err != nil {
			return out, err
		}
		r.File = f
		out = append(out, r)
	}
	return out, nil
}

// compactFile copies the live data of the bbolt file at path into a
// temporary file beside it, makes the copy durable, and renames it over
// the original; on any failure the original stays and the copy goes. The
// original's lock is held throughout, so no daemon writes to it meanwhile.
func compactFile(path string) (res CompactResult, err error) {
	fi, err := os.Stat(path)
	if errors.Is(err, os.ErrNotExist) {
		return CompactResult{Absent: true}, nil
	}
	if err != nil {
		return res, err
	}
	res.Before = fi.Size()
	// Open checks the file whole first: a damaged store is refused, never
	// copied (the copy would lose what the damage hides).
	src, err := storefile.Open(path, storefile.Options{LockTimeout: compactLockWait})
	if errors.Is(err, storefile.ErrInUse) {
		return res, fmt.Errorf("%s: %w", path, ErrStoreInUse)
	}
	if err != nil {
		return res, err
	}
	defer src.Close()

	dir, base := filepath.Dir(path), filepath.Base(path)
	removeStaleCopies(dir, base)
	tf, err := os.CreateTemp(dir, "."+base+compactTempMark+"*")
	if err != nil {
		return res, fmt.Errorf("compact %s: %w", path, err)
	}
	tmp := tf.Name()
	tf.Close()
	done := false
	defer func() {
		if !done {
			os.Remove(tmp)
		}
	}()
	// Each commit of the copy need not be durable: the whole file is
	// synced once at the end, before it replaces anything.
	dst, err := bolt.Open(tmp, 0o600, &bolt.Options{Timeout: compactLockWait, NoSync: true})
	if err != nil {
		return res, fmt.Errorf("compact %s: %w", path, err)
	}
	if err := bolt.Compact(dst, src, compactTxBytes); err != nil {
		dst.Close()
		return res, fmt.Errorf("compact %s: %w", path, err)
	}
	if err := dst.Close(); err != nil {
		return res, fmt.Errorf("compact %s: %w", path, err)
	}
	if err := syncFile(tmp); err != nil {
		return res, fmt.Errorf("compact %s: %w", path, err)
	}
	if err := os.Rename(tmp, path); err != nil {
		return res, fmt.Errorf("compact %s: %w", path, err)
	}
	done = true
	if err := storefile.SyncDir(dir); err != nil {
		return res, fmt.Errorf("compact %s: the compacted file is in place, but syncing its directory failed: %w", path, err)
	}
	if fi, err := os.Stat(path); err == nil {
		res.After = fi.Size()
	}
	return res, nil
}

// syncFile makes the file at path durable, with mode 0600.
func syncFile(path string) error {
	f, err := os.OpenFile(path, os.O_RDWR, 0)
	if err != nil {
		return err
	}
	defer f.Close()
	if err := f.Chmod(0o600); err != nil {
		return err
	}
	return f.Sync()
}

// removeStaleCopies removes copies of base that a compaction killed part
// way left in dir. The caller holds base's lock, so no compaction of it
// is under way.
func removeStaleCopies(dir, base string) {
	entries, _ := os.ReadDir(dir)
	for _, e := range entries {
		if strings.HasPrefix(e.Name(), "."+base+compactTempMark) {
			os.Remove(filepath.Join(dir, e.Name()))
		}
	}
}
