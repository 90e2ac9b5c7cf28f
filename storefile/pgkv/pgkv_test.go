package pgkv_test

import (
	"context"
	"errors"
	"fmt"
	"testing"

	"github.com/pzone/pzone/storefile/kv"
	"github.com/pzone/pzone/storefile/kv/kvtest"
	"github.com/pzone/pzone/storefile/pgkv"
	"github.com/pzone/pzone/storefile/pgkv/pgtest"
)

func connect(t *testing.T, url string) *pgkv.Pool {
	t.Helper()
	p, err := pgkv.Connect(context.Background(), url)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(p.Close)
	return p
}

func TestPostgres(t *testing.T) {
	srv := pgtest.Start(t)
	pool := connect(t, srv.URL)
	n := 0
	kvtest.Run(t, func(t *testing.T) kv.DB {
		n++
		db, err := pool.Open(context.Background(), fmt.Sprintf("test-%d", n), true)
		if err != nil {
			t.Fatal(err)
		}
		return db
	})
}

// TestNodes: writers on three pools (three nodes of a cluster) of one
// store lose no update, and stores do not see each other's keys.
func TestNodes(t *testing.T) {
	srv := pgtest.Start(t)
	ctx := context.Background()
	var dbs []kv.DB
	for range 3 {
		db, err := connect(t, srv.URL).Open(ctx, "zone-a/sync.db", true)
		if err != nil {
			t.Fatal(err)
		}
		dbs = append(dbs, db)
	}
	kvtest.Counter(t, dbs, 4, 20)
	other, err := connect(t, srv.URL).Open(ctx, "zone-b/sync.db", true)
	if err != nil {
		t.Fatal(err)
	}
	err = other.View(func(tx kv.Tx) error {
		if tx.Bucket([]byte("w")) != nil {
			return errors.New("zone-b sees zone-a's bucket")
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}

// TestUnreachable: with the database down, transactions fail with
// ErrUnreachable and nothing half-written; when it is back they work.
func TestUnreachable(t *testing.T) {
	srv := pgtest.Start(t)
	pool := connect(t, srv.URL)
	ctx := context.Background()
	if _, err := pool.Open(ctx, "missing", false); !errors.Is(err, pgkv.ErrMissing) {
		t.Fatalf("Open of a store never made: %v, want ErrMissing", err)
	}
	db, err := pool.Open(ctx, "z", true)
	if err != nil {
		t.Fatal(err)
	}
	put := func(v string) error {
		return db.Update(func(tx kv.Tx) error {
			b, err := tx.CreateBucketIfNotExists([]byte("b"))
			if err != nil {
				return err
			}
			return b.Put([]byte("k"), []byte(v))
		})
	}
	if err := put("one"); err != nil {
		t.Fatal(err)
	}
	resume := srv.Pause(t)
	err = put("two")
	if !errors.Is(err, pgkv.ErrUnreachable) {
		t.Fatalf("write with the database down: %v, want ErrUnreachable", err)
	}
	t.Logf("the error a write gets: %v", err)
	resume()
	var got string
	// The pool's old connections died with the server: the first try
	// may meet one; pgx drops it, so a second try must work.
	for try := 0; ; try++ {
		err = db.View(func(tx kv.Tx) error { got = string(tx.Bucket([]byte("b")).Get([]byte("k"))); return nil })
		if err == nil || try == 3 {
			break
		}
	}
	if err != nil {
		t.Fatalf("read after the database came back: %v", err)
	}
	if got != "one" {
		t.Fatalf("after the failed write k = %q, want one", got)
	}
	if err := put("three"); err != nil {
		t.Fatalf("write after the database came back: %v", err)
	}
}
