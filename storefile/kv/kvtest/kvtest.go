// Package kvtest checks that a backend of the kv model behaves as the
// model says, the same for each: the stores' logic is one code over all
// of them, so any difference is a bug in the backend.
package kvtest

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	gosync "sync"
	"testing"

	"github.com/pzone/pzone/storefile/kv"
)

// Run checks the backend; open returns a new, empty store each time.
func Run(t *testing.T, open func(t *testing.T) kv.DB) {
	tests := []struct {
		name string
		fn   func(*testing.T, kv.DB)
	}{
		{"Buckets", buckets},
		{"Values", values},
		{"Order", order},
		{"Nested", nested},
		{"Sequence", sequence},
		{"Rollback", rollback},
		{"ReadOnly", readOnly},
		{"Snapshot", snapshot},
		{"Writers", writers},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) { tc.fn(t, open(t)) })
	}
	t.Run("Closed", func(t *testing.T) {
		db := open(t)
		db.Close()
		if err := db.View(func(kv.Tx) error { return nil }); !errors.Is(err, kv.ErrClosed) {
			t.Fatalf("View on a closed store: %v, want ErrClosed", err)
		}
	})
}

func must(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

func buckets(t *testing.T, db kv.DB) {
	must(t, db.Update(func(tx kv.Tx) error {
		if tx.Bucket([]byte("a")) != nil {
			return errors.New("a bucket never made is there")
		}
		if _, err := tx.CreateBucket([]byte("a")); err != nil {
			return err
		}
		if _, err := tx.CreateBucket([]byte("a")); !errors.Is(err, kv.ErrBucketExists) {
			return fmt.Errorf("CreateBucket twice: %v, want ErrBucketExists", err)
		}
		if _, err := tx.CreateBucketIfNotExists([]byte("a")); err != nil {
			return err
		}
		if err := tx.DeleteBucket([]byte("b")); !errors.Is(err, kv.ErrBucketNotFound) {
			return fmt.Errorf("DeleteBucket of none: %v, want ErrBucketNotFound", err)
		}
		return nil
	}))
	must(t, db.View(func(tx kv.Tx) error {
		if tx.Bucket([]byte("a")) == nil {
			return errors.New("the bucket made was not kept")
		}
		return nil
	}))
	must(t, db.Update(func(tx kv.Tx) error { return tx.DeleteBucket([]byte("a")) }))
	must(t, db.View(func(tx kv.Tx) error {
		if tx.Bucket([]byte("a")) != nil {
			return errors.New("a deleted bucket is still there")
		}
		return nil
	}))
}

func values(t *testing.T, db kv.DB) {
	must(t, db.Update(func(tx kv.Tx) error {
		b, err := tx.CreateBucket([]byte("v"))
		if err != nil {
			return err
		}
		must(t, b.Put([]byte("k"), []byte("one")))
		if got := b.Get([]byte("k")); string(got) != "one" {
			return fmt.Errorf("read own write: %q", got)
		}
		must(t, b.Put([]byte("k"), []byte("two")))
		must(t, b.Put([]byte("empty"), []byte{}))
		must(t, b.Put([]byte("gone"), []byte("x")))
		must(t, b.Delete([]byte("gone")))
		must(t, b.Delete([]byte("never")))
		if err := b.Put(nil, []byte("x")); err == nil {
			return errors.New("Put of an empty key was taken")
		}
		return nil
	}))
	must(t, db.View(func(tx kv.Tx) error {
		b := tx.Bucket([]byte("v"))
		if got := b.Get([]byte("k")); string(got) != "two" {
			return fmt.Errorf("k = %q, want two", got)
		}
		if got := b.Get([]byte("empty")); got == nil || len(got) != 0 {
			return fmt.Errorf("an empty value reads %#v, want empty and not nil", got)
		}
		if got := b.Get([]byte("gone")); got != nil {
			return fmt.Errorf("a deleted key reads %q", got)
		}
		if n := b.KeyN(); n != 2 {
			return fmt.Errorf("KeyN %d, want 2", n)
		}
		return nil
	}))
}

// order: keys come back in byte order, across pages, from any seek.
func order(t *testing.T, db kv.DB) {
	const n = 700
	key := func(i int) []byte { return binary.BigEndian.AppendUint32([]byte{0xff, 0}, uint32(i)) }
	must(t, db.Update(func(tx kv.Tx) error {
		b, err := tx.CreateBucket([]byte("o"))
		if err != nil {
			return err
		}
		for i := n - 1; i >= 0; i-- { // out of order
			if err := b.Put(key(i), []byte{byte(i)}); err != nil {
				return err
			}
		}
		// Keys that sort before and after by their first bytes, as
		// unsigned bytes (0xff after 0x01; a prefix before its longer).
		for _, k := range []string{"\x00", "\x01", "\xff", "\xff\x01"} {
			if err := b.Put([]byte(k), []byte("edge")); err != nil {
				return err
			}
		}
		return nil
	}))
	must(t, db.View(func(tx kv.Tx) error {
		b := tx.Bucket([]byte("o"))
		var keys [][]byte
		c := b.Cursor()
		for k, _ := c.First(); k != nil; k, _ = c.Next() {
			keys = append(keys, bytes.Clone(k))
		}
		if len(keys) != n+4 {
			return fmt.Errorf("cursor saw %d keys, want %d", len(keys), n+4)
		}
		for i := 1; i < len(keys); i++ {
			if bytes.Compare(keys[i-1], keys[i]) >= 0 {
				return fmt.Errorf("cursor order: %x then %x", keys[i-1], keys[i])
			}
		}
		if string(keys[0]) != "\x00" || string(keys[2]) != "\xff" || string(keys[3]) != "\xff\x00\x00\x00\x00\x00" || string(keys[len(keys)-1]) != "\xff\x01" {
			return fmt.Errorf("edges out of place: %x %x %x %x", keys[0], keys[2], keys[3], keys[len(keys)-1])
		}
		k, v := c.Seek(key(500))
		if !bytes.Equal(k, key(500)) || v[0] != byte(500%256) {
			return fmt.Errorf("Seek(500) = %x %x", k, v)
		}
		for i := 501; i < n; i++ {
			if k, _ = c.Next(); !bytes.Equal(k, key(i)) {
				return fmt.Errorf("after Seek, Next = %x, want %x", k, key(i))
			}
		}
		if k, _ = c.Seek([]byte{0xff, 0x00, 0xff}); string(k) != "\xff\x01" {
			return fmt.Errorf("Seek between keys = %x, want the next key", k)
		}
		if k, _ = c.Seek([]byte{0xff, 0xff}); k != nil {
			return fmt.Errorf("Seek past the end = %x, want nil", k)
		}
		count := 0
		err := b.ForEach(func(k, v []byte) error { count++; return nil })
		if err != nil || count != n+4 {
			return fmt.Errorf("ForEach saw %d (%v)", count, err)
		}
		stop := errors.New("stop")
		if err := b.ForEach(func(k, v []byte) error { return stop }); err != stop {
			return fmt.Errorf("ForEach did not return fn's error: %v", err)
		}
		return nil
	}))
}

func nested(t *testing.T, db kv.DB) {
	must(t, db.Update(func(tx kv.Tx) error {
		q, err := tx.CreateBucket([]byte("q"))
		if err != nil {
			return err
		}
		for _, name := range []string{"dev", "dev2", "de"} {
			d, err := q.CreateBucketIfNotExists([]byte(name))
			if err != nil {
				return err
			}
			if err := d.Put([]byte("m"), []byte(name)); err != nil {
				return err
			}
		}
		if err := q.Put([]byte("plain"), []byte("v")); err != nil {
			return err
		}
		// A top-level bucket of the same name is another bucket.
		top, err := tx.CreateBucket([]byte("dev"))
		if err != nil {
			return err
		}
		return top.Put([]byte("m"), []byte("top"))
	}))
	must(t, db.Update(func(tx kv.Tx) error {
		q := tx.Bucket([]byte("q"))
		var names []string
		must(t, q.ForEachBucket(func(n []byte) error { names = append(names, string(n)); return nil }))
		if fmt.Sprint(names) != "[de dev dev2]" {
			return fmt.Errorf("ForEachBucket: %v", names)
		}
		if v := q.Get([]byte("dev")); v != nil {
			return fmt.Errorf("a nested bucket's key reads %q, want nil", v)
		}
		if n := q.KeyN(); n != 4 {
			return fmt.Errorf("KeyN %d, want 4 (three buckets and a key)", n)
		}
		return q.DeleteBucket([]byte("dev"))
	}))
	must(t, db.View(func(tx kv.Tx) error {
		q := tx.Bucket([]byte("q"))
		if q.Bucket([]byte("dev")) != nil {
			return errors.New("a deleted nested bucket is there")
		}
		for _, name := range []string{"dev2", "de"} {
			if b := q.Bucket([]byte(name)); b == nil || string(b.Get([]byte("m"))) != name {
				return fmt.Errorf("deleting dev touched %s", name)
			}
		}
		if v := tx.Bucket([]byte("dev")).Get([]byte("m")); string(v) != "top" {
			return fmt.Errorf("deleting q/dev touched the top-level dev: %q", v)
		}
		var keys []string
		q.ForEach(func(k, v []byte) error { keys = append(keys, string(k)); return nil })
		if fmt.Sprint(keys) != "[de dev2 plain]" {
			return fmt.Errorf("keys after the delete: %v", keys)
		}
		return nil
	}))
}

func sequence(t *testing.T, db kv.DB) {
	next := func() (uint64, error) {
		var seq uint64
		err := db.Update(func(tx kv.Tx) error {
			b, err := tx.CreateBucketIfNotExists([]byte("s"))
			if err != nil {
				return err
			}
			seq, err = b.NextSequence()
			return err
		})
		return seq, err
	}
	for want := uint64(1); want <= 3; want++ {
		got, err := next()
		must(t, err)
		if got != want {
			t.Fatalf("NextSequence %d, want %d", got, want)
		}
	}
	// A sequence taken in a transaction that fails is not kept.
	failed := errors.New("fail")
	err := db.Update(func(tx kv.Tx) error {
		tx.Bucket([]byte("s")).NextSequence()
		return failed
	})
	if err != failed {
		t.Fatalf("Update returned %v, want fn's error", err)
	}
	if got, _ := next(); got != 4 {
		t.Fatalf("after a rolled-back NextSequence: %d, want 4", got)
	}
}

func rollback(t *testing.T, db kv.DB) {
	failed := errors.New("fail")
	err := db.Update(func(tx kv.Tx) error {
		b, err := tx.CreateBucket([]byte("r"))
		if err != nil {
			return err
		}
		b.Put([]byte("k"), []byte("v"))
		return failed
	})
	if err != failed {
		t.Fatalf("Update returned %v, want fn's error", err)
	}
	must(t, db.View(func(tx kv.Tx) error {
		if tx.Bucket([]byte("r")) != nil {
			return errors.New("a failed transaction's bucket was kept")
		}
		return nil
	}))
}

func readOnly(t *testing.T, db kv.DB) {
	must(t, db.Update(func(tx kv.Tx) error { _, err := tx.CreateBucket([]byte("ro")); return err }))
	err := db.View(func(tx kv.Tx) error { return tx.Bucket([]byte("ro")).Put([]byte("k"), []byte("v")) })
	if !errors.Is(err, kv.ErrReadOnly) {
		t.Fatalf("Put in a View: %v, want ErrReadOnly", err)
	}
}

// snapshot: a read sees the store as it was when it began.
func snapshot(t *testing.T, db kv.DB) {
	must(t, db.Update(func(tx kv.Tx) error {
		b, err := tx.CreateBucket([]byte("snap"))
		if err != nil {
			return err
		}
		return b.Put([]byte("k"), []byte("before"))
	}))
	must(t, db.View(func(tx kv.Tx) error {
		b := tx.Bucket([]byte("snap"))
		if v := b.Get([]byte("k")); string(v) != "before" {
			return fmt.Errorf("k = %q", v)
		}
		done := make(chan error)
		go func() {
			done <- db.Update(func(tx kv.Tx) error { return tx.Bucket([]byte("snap")).Put([]byte("k"), []byte("after")) })
		}()
		if err := <-done; err != nil {
			return err
		}
		if v := b.Get([]byte("k")); string(v) != "before" {
			return fmt.Errorf("a read saw a write committed after it began: %q", v)
		}
		return nil
	}))
}

// writers: concurrent read-modify-write transactions lose no update.
func writers(t *testing.T, db kv.DB) {
	must(t, db.Update(func(tx kv.Tx) error { _, err := tx.CreateBucket([]byte("w")); return err }))
	Counter(t, []kv.DB{db}, 8, 25)
}

// Counter has each of workers per store increment one counter n times,
// in read-modify-write transactions, and checks that none was lost: the
// stores are the same store reached several ways (several nodes).
func Counter(t *testing.T, dbs []kv.DB, workers, n int) {
	t.Helper()
	var wg gosync.WaitGroup
	errs := make(chan error, len(dbs)*workers)
	for _, db := range dbs {
		for range workers {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for range n {
					err := db.Update(func(tx kv.Tx) error {
						b, err := tx.CreateBucketIfNotExists([]byte("w"))
						if err != nil {
							return err
						}
						var c uint64
						if v := b.Get([]byte("c")); v != nil {
							c = binary.BigEndian.Uint64(v)
						}
						return b.Put([]byte("c"), binary.BigEndian.AppendUint64(nil, c+1))
					})
					if err != nil {
						errs <- err
						return
					}
				}
			}()
		}
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	var got uint64
	must(t, dbs[0].View(func(tx kv.Tx) error {
		got = binary.BigEndian.Uint64(tx.Bucket([]byte("w")).Get([]byte("c")))
		return nil
	}))
	if want := uint64(len(dbs) * workers * n); got != want {
		t.Fatalf("counter %d after %d increments: writers overlapped", got, want)
	}
}
