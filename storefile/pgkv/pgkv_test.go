package pgkv_test

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

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

// TestLease: one holder at a time; a waiting node takes the lease when
// the holder's connection ends, and the old holder's writes are fenced.
func TestLease(t *testing.T) {
	srv := pgtest.Start(t)
	ctx := context.Background()
	poolA, poolB := connect(t, srv.URL), connect(t, srv.URL)
	a, b := poolA.NewLease("cluster", "node-a"), poolB.NewLease("cluster", "node-b")
	if err := a.Take(ctx); err != nil {
		t.Fatal(err)
	}
	poolA.SetFence(a.Fence())
	poolB.SetFence(b.Fence())
	dbA, err := poolA.Open(ctx, "z/pzh.db", true)
	if err != nil {
		t.Fatal(err)
	}
	write := func(db kv.DB) error {
		return db.Update(func(tx kv.Tx) error {
			bk, err := tx.CreateBucketIfNotExists([]byte("b"))
			if err != nil {
				return err
			}
			return bk.Put([]byte("k"), []byte("v"))
		})
	}
	if err := write(dbA); err != nil {
		t.Fatalf("the holder's write: %v", err)
	}
	taken := make(chan error, 1)
	go func() { taken <- b.Take(ctx) }()
	select {
	case err := <-taken:
		t.Fatalf("node-b took a held lease (%v)", err)
	default:
	}
	if holder, _, err := poolB.LeaseHolder(ctx, "cluster"); err != nil || holder != "node-a" {
		t.Fatalf("holder %q (%v), want node-a", holder, err)
	}
	a.Release() // node-a's connection ends, as when it is killed
	if err := <-taken; err != nil {
		t.Fatal(err)
	}
	if b.Epoch() != 2 {
		t.Fatalf("epoch %d after the second taking, want 2", b.Epoch())
	}
	if err := write(dbA); !errors.Is(err, pgkv.ErrFenced) {
		t.Fatalf("the old holder's write: %v, want ErrFenced", err)
	}
	dbB, err := poolB.Open(ctx, "z/pzh.db", false)
	if err != nil {
		t.Fatal(err)
	}
	if err := write(dbB); err != nil {
		t.Fatalf("the new holder's write: %v", err)
	}
	// The old holder, checking, learns it lost the lease.
	wctx, cancel := context.WithTimeout(ctx, time.Minute)
	defer cancel()
	if err := a.Watch(wctx); !errors.Is(err, pgkv.ErrLeaseLost) {
		t.Fatalf("the old holder's watch: %v, want ErrLeaseLost", err)
	}
}
