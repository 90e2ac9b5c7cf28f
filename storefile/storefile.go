// Package storefile opens the daemons' bbolt files so that whatever is
// found on disk is either used safely or refused with an error that names
// the file and says what to do. It checks, before trusting a file:
//
//   - that it and its directory belong to this user and nobody else may
//     write them (a store another user planted, or may swap, is not ours);
//   - that a file which should exist does (it is never created again in
//     silence: a missing store is lost data, not a fresh start);
//   - that an existing file is a whole bbolt database: not empty, not cut
//     short, every page reachable from its root readable.
//
// bbolt maps the file into memory, so a truncated file would otherwise
// kill the process with SIGBUS the first time a missing page is touched,
// and a damaged page panics deep inside a transaction. Opening checks the
// whole file once, with faults turned into errors.
//
// It is not a storage engine: it hands back a *bolt.DB and knows nothing
// of what the daemons keep in it.
package storefile

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"runtime"
	"runtime/debug"
	"syscall"
	"time"

	bolt "go.etcd.io/bbolt"
)

// Errors, for callers that must tell the cases apart (errors.Is).
var (
	// ErrMissing: the file does not exist and Options.Create was not set.
	ErrMissing = errors.New("missing")
	// ErrDamaged: the file exists but is not a whole bbolt database.
	ErrDamaged = errors.New("damaged")
	// ErrInUse: another process holds the file's lock.
	ErrInUse = errors.New("in use by another process")
	// ErrUnsafe: the file or its directory belongs to another user or
	// may be written by others.
	ErrUnsafe = errors.New("not private to this user")
)

// DefaultLockTimeout is how long Open waits for bbolt's file lock before
// concluding another process holds it: a daemon holds it for as long as
// it runs, so waiting longer only delays the answer.
const DefaultLockTimeout = time.Second

// Options says how to open a store.
type Options struct {
	// Create a new, empty store when the file does not exist. Without
	// it a missing file is ErrMissing.
	Create bool
	// ReadOnly opens with a shared lock, for status reads while no daemon
	// runs.
	ReadOnly bool
	// LockTimeout: zero means DefaultLockTimeout.
	LockTimeout time.Duration
}

// Error is what Open returns for a file it refuses: the path, which of
// the errors above, and the detail.
type Error struct {
	Path   string
	Kind   error
	Detail string
}

func (e *Error) Error() string {
	if e.Detail == "" {
		return fmt.Sprintf("%s is %v", e.Path, e.Kind)
	}
	return fmt.Sprintf("%s is %v: %s", e.Path, e.Kind, e.Detail)
}

func (e *Error) Unwrap() error { return e.Kind }

func refuse(path string, kind error, format string, args ...any) *Error {
	return &Error{Path: path, Kind: kind, Detail: fmt.Sprintf(format, args...)}
}

// Open opens the bbolt store at path after the checks in the package
// comment. A file it refuses is left exactly as it was.
func Open(path string, o Options) (*bolt.DB, error) {
	if o.LockTimeout == 0 {
		o.LockTimeout = DefaultLockTimeout
	}
	if err := CheckDir(filepath.Dir(path)); err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			return nil, &Error{Path: path, Kind: ErrMissing}
		}
		return nil, err
	}
	fi, err := os.Lstat(path)
	created := false
	switch {
	case errors.Is(err, fs.ErrNotExist):
		if !o.Create || o.ReadOnly {
			return nil, &Error{Path: path, Kind: ErrMissing}
		}
		created = true
	case err != nil:
		return nil, fmt.Errorf("check %s: %w", path, err)
	default:
		if err := checkFile(path, fi); err != nil {
			return nil, err
		}
		if fi.Size() == 0 {
			// bbolt would make a new database of an empty file.
			return nil, refuse(path, ErrDamaged, "the file is empty (0 bytes)")
		}
	}
	db, err := openChecked(path, o, fi)
	if err != nil {
		return nil, err
	}
	if created {
		if err := SyncDir(filepath.Dir(path)); err != nil {
			db.Close()
			return nil, fmt.Errorf("create %s: %w", path, err)
		}
	}
	return db, nil
}

// openChecked opens the file and reads every page reachable from its root
// with memory faults turned into panics, then recovered: a file cut short
// is refused rather than crashing the process.
func openChecked(path string, o Options, fi fs.FileInfo) (db *bolt.DB, err error) {
	defer debug.SetPanicOnFault(debug.SetPanicOnFault(true))
	defer func() {
		if r := recover(); r != nil {
			// The half-opened handle (and its lock) cannot be reached to
			// close it; the caller refuses to run, so that is all it costs.
			why := fmt.Sprint(r)
			if _, fault := r.(runtime.Error); fault {
				why = "part of it cannot be read: probably cut short"
			}
			db, err = nil, refuse(path, ErrDamaged, "%s", why)
		}
	}()
	db, err = bolt.Open(path, 0o600, &bolt.Options{Timeout: o.LockTimeout, ReadOnly: o.ReadOnly})
	if err != nil {
		if errors.Is(err, bolt.ErrTimeout) {
			return nil, &Error{Path: path, Kind: ErrInUse}
		}
		if fi == nil {
			return nil, fmt.Errorf("create %s: %w", path, err)
		}
		return nil, refuse(path, ErrDamaged, "%v", err)
	}
	if fi == nil {
		return db, nil
	}
	if err := verify(db, path); err != nil {
		db.Close()
		return nil, err
	}
	return db, nil
}

// verify checks that the file holds every page its header claims and that
// every page reachable from the root can be read, then runs bbolt's own
// consistency check.
func verify(db *bolt.DB, path string) error {
	return db.View(func(tx *bolt.Tx) error {
		fi, err := os.Stat(path)
		if err != nil {
			return err
		}
		if want := tx.Size(); fi.Size() < want {
			return refuse(path, ErrDamaged, "the file is cut short (%d bytes of %d)", fi.Size(), want)
		}
		if err := walk(tx); err != nil {
			return refuse(path, ErrDamaged, "%v", err)
		}
		// Drain the channel: the check runs in its own goroutine and must
		// end before the transaction does.
		var first error
		for err := range tx.Check() {
			if first == nil {
				first = refuse(path, ErrDamaged, "%v", err)
			}
		}
		return first
	})
}

// walk reads every key and value of every bucket.
func walk(tx *bolt.Tx) error {
	var visit func(b *bolt.Bucket, depth int) error
	visit = func(b *bolt.Bucket, depth int) error {
		if depth > maxDepth {
			return fmt.Errorf("buckets nested deeper than %d", maxDepth)
		}
		return b.ForEach(func(k, v []byte) error {
			if v != nil {
				return nil
			}
			child := b.Bucket(k)
			if child == nil {
				return fmt.Errorf("bucket %q cannot be read", k)
			}
			return visit(child, depth+1)
		})
	}
	return tx.ForEach(func(name []byte, b *bolt.Bucket) error { return visit(b, 1) })
}

// maxDepth bounds nesting: the daemons nest buckets two or three deep; a
// damaged page must not send the walk into an endless descent.
const maxDepth = 16

// CheckDir refuses a directory that is not this user's or that others may
// write: whoever can write it can replace the stores and sockets in it.
func CheckDir(dir string) error {
	fi, err := os.Stat(dir)
	if err != nil {
		return fmt.Errorf("data directory %s: %w", dir, err)
	}
	if !fi.IsDir() {
		return fmt.Errorf("data directory %s is not a directory", dir)
	}
	if err := owned(fi); err != nil {
		return refuse(dir, ErrUnsafe, "%v; use a directory of your own (e.g. create it anew with mkdir -m 700)", err)
	}
	if fi.Mode().Perm()&0o022 != 0 {
		return refuse(dir, ErrUnsafe, "its mode %04o lets others write it, and so replace the stores in it; run chmod 700 %s", fi.Mode().Perm(), dir)
	}
	return nil
}

// checkFile refuses a store that is not a plain file of this user's, or
// that others may read or write (the hub's store holds the zone CA key).
func checkFile(path string, fi fs.FileInfo) error {
	if !fi.Mode().IsRegular() {
		what := "a symbolic link"
		if fi.Mode()&fs.ModeSymlink == 0 {
			what = "not a regular file"
		}
		return refuse(path, ErrUnsafe, "it is %s; put the store itself there", what)
	}
	if err := owned(fi); err != nil {
		return refuse(path, ErrUnsafe, "%v; move it away, it was not made by this user", err)
	}
	if fi.Mode().Perm()&0o077 != 0 {
		return refuse(path, ErrUnsafe, "its mode %04o lets others read or write it; if it is yours, run chmod 600 %s", fi.Mode().Perm(), path)
	}
	return nil
}

func owned(fi fs.FileInfo) error {
	st, ok := fi.Sys().(*syscall.Stat_t)
	if !ok {
		return nil // no owner to compare on this system
	}
	if uid := os.Geteuid(); int(st.Uid) != uid {
		return fmt.Errorf("it belongs to user id %d, not to this user (%d)", st.Uid, uid)
	}
	return nil
}

// Exists reports whether path exists (as anything).
func Exists(path string) (bool, error) {
	_, err := os.Lstat(path)
	if errors.Is(err, fs.ErrNotExist) {
		return false, nil
	}
	return err == nil, err
}

// MoveAside renames path to path.replaced-TIMESTAMP, for a deliberate
// reset that keeps the old file for inspection, and returns the new name.
// A path that does not exist is not an error ("" is returned).
func MoveAside(path string, now time.Time) (string, error) {
	if ok, err := Exists(path); err != nil || !ok {
		return "", err
	}
	to := fmt.Sprintf("%s.replaced-%s", path, now.UTC().Format("20060102T150405Z"))
	if err := os.Rename(path, to); err != nil {
		return "", err
	}
	return to, SyncDir(filepath.Dir(path))
}

// SyncDir makes a rename or a new file in dir durable.
func SyncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer d.Close()
	return d.Sync()
}
