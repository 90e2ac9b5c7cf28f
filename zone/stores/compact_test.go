package stores

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"testing"

	bolt "go.etcd.io/bbolt"

	"github.com/pzone/pzone/storefile"
)

// fillStore writes n records of size bytes into a new bbolt file at path
// and deletes all but keep of them, leaving free pages in the file.
func fillStore(t *testing.T, path string, n, size, keep int) {
	t.Helper()
	db, err := bolt.Open(path, 0o600, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	val := bytes.Repeat([]byte{'x'}, size)
	err = db.Update(func(tx *bolt.Tx) error {
		b, err := tx.CreateBucketIfNotExists([]byte("b"))
		if err != nil {
			return err
		}
		for i := range n {
			if err := b.Put(fmt.Appendf(nil, "k%06d", i), val); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	err = db.Update(func(tx *bolt.Tx) error {
		b := tx.Bucket([]byte("b"))
		for i := keep; i < n; i++ {
			if err := b.Delete(fmt.Appendf(nil, "k%06d", i)); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}

func TestCompactStores(t *testing.T) {
	dir := t.TempDir()
	fillStore(t, filepath.Join(dir, "a.db"), 2000, 1000, 10)
	res, err := CompactStores(dir, []string{"a.db", "absent.db"})
	if err != nil {
		t.Fatal(err)
	}
	if len(res) != 2 || !res[1].Absent || res[0].After >= res[0].Before/4 {
		t.Fatalf("compaction did not shrink the file: %+v", res)
	}
	db, err := storefile.Open(filepath.Join(dir, "a.db"), storefile.Options{ReadOnly: true})
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	db.View(func(tx *bolt.Tx) error {
		if n := tx.Bucket([]byte("b")).Stats().KeyN; n != 10 {
			t.Errorf("%d records after compaction, want 10", n)
		}
		return nil
	})
	if m, _ := filepath.Glob(filepath.Join(dir, ".*compact-*")); len(m) != 0 {
		t.Errorf("copies left behind: %v", m)
	}
	fi, _ := os.Stat(filepath.Join(dir, "a.db"))
	if fi.Mode().Perm() != 0o600 {
		t.Errorf("compacted file has mode %v", fi.Mode().Perm())
	}
}

func TestCompactRefusesInUseAndDamaged(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "a.db")
	fillStore(t, path, 100, 1000, 10)
	db, err := bolt.Open(path, 0o600, nil)
	if err != nil {
		t.Fatal(err)
	}
	_, err = CompactStores(dir, []string{"a.db"})
	db.Close()
	if !errors.Is(err, ErrStoreInUse) {
		t.Fatalf("compaction of a store in use: %v, want ErrStoreInUse", err)
	}

	fi, _ := os.Stat(path)
	if err := os.Truncate(path, fi.Size()/2); err != nil {
		t.Fatal(err)
	}
	before, _ := os.ReadFile(path)
	_, err = CompactStores(dir, []string{"a.db"})
	if !errors.Is(err, storefile.ErrDamaged) {
		t.Fatalf("compaction of a damaged store: %v, want ErrDamaged", err)
	}
	after, _ := os.ReadFile(path)
	if !bytes.Equal(before, after) {
		t.Error("a refused compaction changed the file")
	}
	if m, _ := filepath.Glob(filepath.Join(dir, ".*compact-*")); len(m) != 0 {
		t.Errorf("copies left behind: %v", m)
	}
}
