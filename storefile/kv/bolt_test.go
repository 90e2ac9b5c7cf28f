package kv_test

import (
	"path/filepath"
	"testing"

	bolt "go.etcd.io/bbolt"

	"github.com/pzone/pzone/storefile/kv"
	"github.com/pzone/pzone/storefile/kv/kvtest"
)

func TestBolt(t *testing.T) {
	kvtest.Run(t, func(t *testing.T) kv.DB {
		// Room to grow without a remap, which waits for open reads (the
		// snapshot check holds one while a write commits).
		db, err := bolt.Open(filepath.Join(t.TempDir(), "kv.db"), 0o600, &bolt.Options{InitialMmapSize: 8 << 20})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { db.Close() })
		return kv.OfBolt(db)
	})
}
