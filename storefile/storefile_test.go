package storefile

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"testing"
	"time"

	bolt "go.etcd.io/bbolt"
)

// makeStore writes a store with enough records to span many pages and
// returns its path.
func makeStore(t *testing.T) string {
	t.Helper()
	dir := t.TempDir()
	path := filepath.Join(dir, "s.db")
	db, err := Open(path, Options{Create: true})
	if err != nil {
		t.Fatal(err)
	}
	err = db.Update(func(tx *bolt.Tx) error {
		b, err := tx.CreateBucket([]byte("outer"))
		if err != nil {
			return err
		}
		inner, err := b.CreateBucket([]byte("inner"))
		if err != nil {
			return err
		}
		for i := range 5000 {
			if err := inner.Put(fmt.Appendf(nil, "key-%06d", i), bytes.Repeat([]byte{byte(i)}, 100)); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if err := db.Close(); err != nil {
		t.Fatal(err)
	}
	return path
}

func wantKind(t *testing.T, err, kind error) {
	t.Helper()
	if !errors.Is(err, kind) {
		t.Fatalf("got %v, want an error that is %v", err, kind)
	}
	var e *Error
	if !errors.As(err, &e) || e.Path == "" {
		t.Fatalf("error %v does not name the file", err)
	}
	t.Log(err)
}

func TestOpenWholeStore(t *testing.T) {
	path := makeStore(t)
	db, err := Open(path, Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	if _, err := Open(path, Options{LockTimeout: 50 * time.Millisecond}); !errors.Is(err, ErrInUse) {
		t.Fatalf("second open: %v, want in use", err)
	}
}

func TestMissingIsNotCreated(t *testing.T) {
	path := filepath.Join(t.TempDir(), "s.db")
	_, err := Open(path, Options{})
	wantKind(t, err, ErrMissing)
	if ok, _ := Exists(path); ok {
		t.Fatal("a refused open created the file")
	}
	_, err = Open(path, Options{Create: true, ReadOnly: true})
	wantKind(t, err, ErrMissing)
}

// Every kind of damage is refused with an error, never a crash, and the
// file is left as it was.
func TestDamagedStoresRefused(t *testing.T) {
	for _, tc := range []struct {
		name   string
		damage func(t *testing.T, path string)
	}{
		{"empty", func(t *testing.T, path string) { os.Truncate(path, 0) }},
		{"cut in half", func(t *testing.T, path string) {
			fi, _ := os.Stat(path)
			os.Truncate(path, fi.Size()/2)
		}},
		{"cut to one page", func(t *testing.T, path string) { os.Truncate(path, 4096) }},
		{"garbage header", func(t *testing.T, path string) { overwrite(t, path, 0, 8192) }},
		{"garbage pages", func(t *testing.T, path string) {
			fi, _ := os.Stat(path)
			overwrite(t, path, fi.Size()/3, 3*4096)
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			path := makeStore(t)
			tc.damage(t, path)
			before, _ := os.ReadFile(path)
			_, err := Open(path, Options{})
			wantKind(t, err, ErrDamaged)
			if after, _ := os.ReadFile(path); !bytes.Equal(before, after) {
				t.Error("the refused file was changed")
			}
		})
	}
}

func overwrite(t *testing.T, path string, off, n int64) {
	t.Helper()
	f, err := os.OpenFile(path, os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	junk := bytes.Repeat([]byte{0xA5, 0x3C, 0xFF, 0x01}, int(n/4))
	if _, err := f.WriteAt(junk, off); err != nil {
		t.Fatal(err)
	}
}

func TestUnsafeFilesRefused(t *testing.T) {
	t.Run("readable by others", func(t *testing.T) {
		path := makeStore(t)
		os.Chmod(path, 0o644)
		_, err := Open(path, Options{})
		wantKind(t, err, ErrUnsafe)
	})
	t.Run("directory writable by others", func(t *testing.T) {
		path := makeStore(t)
		os.Chmod(filepath.Dir(path), 0o777)
		_, err := Open(path, Options{})
		wantKind(t, err, ErrUnsafe)
		_, err = Open(filepath.Join(filepath.Dir(path), "new.db"), Options{Create: true})
		wantKind(t, err, ErrUnsafe)
	})
	t.Run("symlink", func(t *testing.T) {
		path := makeStore(t)
		link := filepath.Join(filepath.Dir(path), "link.db")
		os.Symlink(path, link)
		_, err := Open(link, Options{})
		wantKind(t, err, ErrUnsafe)
	})
	t.Run("another user's", func(t *testing.T) {
		if os.Geteuid() != 0 {
			t.Skip("needs root to give a file to another user")
		}
		path := makeStore(t)
		if err := os.Chown(path, 65534, 65534); err != nil {
			t.Fatal(err)
		}
		_, err := Open(path, Options{})
		wantKind(t, err, ErrUnsafe)
		os.Chown(path, 0, 0)
		os.Chown(filepath.Dir(path), 65534, 65534)
		_, err = Open(path, Options{})
		wantKind(t, err, ErrUnsafe)
	})
}

func TestMoveAside(t *testing.T) {
	path := makeStore(t)
	to, err := MoveAside(path, fixedTime)
	if err != nil || to != path+".replaced-20261205T120000Z" {
		t.Fatalf("moved to %q, %v", to, err)
	}
	if ok, _ := Exists(path); ok {
		t.Fatal("still there")
	}
	if to, err := MoveAside(path, fixedTime); to != "" || err != nil {
		t.Fatalf("moving a missing file: %q, %v", to, err)
	}
}

var fixedTime = mustTime("2026-12-05T12:00:00Z")

func mustTime(s string) (t time.Time) {
	t, err := time.Parse(time.RFC3339, s)
	if err != nil {
		panic(err)
	}
	return t
}
