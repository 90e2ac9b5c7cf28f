package sync

import (
	"errors"
	"fmt"
	"slices"
	gosync "sync"
	"testing"
	"time"

	"github.com/pzone/pzone/storefile/kv"
	bolt "go.etcd.io/bbolt"
)

// txID is the id of the store's last committed write transaction; each
// commit adds one.
func txID(t testing.TB, s *Store) int {
	t.Helper()
	var id int
	if err := kv.BoltOf(s.db).View(func(tx *bolt.Tx) error { id = tx.ID(); return nil }); err != nil {
		t.Fatal(err)
	}
	return id
}

// holdLead starts a write that keeps the group's lead until the returned
// function is called, so that the writes made meanwhile queue up and are
// committed together.
func holdLead(t testing.TB, s *Store) (release func()) {
	t.Helper()
	running, release0, done := make(chan struct{}), make(chan struct{}), make(chan error, 1)
	go func() {
		done <- s.write(func(*txn) error {
			close(running)
			<-release0
			return nil
		})
	}()
	<-running
	return func() {
		close(release0)
		if err := <-done; err != nil {
			t.Error(err)
		}
	}
}

// waitQueued waits until n writes are queued behind the lead. Nothing
// signals a write joining the queue, so this polls.
func waitQueued(t testing.TB, s *Store, n int) {
	t.Helper()
	await(t, fmt.Sprintf("%d queued writes", n), func() (bool, error) {
		s.grp.mu.Lock()
		defer s.grp.mu.Unlock()
		return len(s.grp.queue) >= n, nil
	}, every(time.Millisecond))
}

// Concurrent Puts all succeed, get unique gap-free sequence numbers, and
// share transactions.
func TestGroupCommit(t *testing.T) {
	hub := openTestNode(t, t.TempDir(), HubNode, time.Now)
	const writers, each = 32, 40
	before := txID(t, hub.Store)
	var mu gosync.Mutex
	var seqs []uint64
	var wg gosync.WaitGroup
	for w := range writers {
		wg.Go(func() {
			for i := range each {
				r, err := hub.Put(BucketAppData, fmt.Sprintf("w%d/k%d", w, i%7), []byte{byte(i)})
				if err != nil {
					t.Error(err)
					return
				}
				mu.Lock()
				seqs = append(seqs, r.Seq)
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	slices.Sort(seqs)
	for i, s := range seqs {
		if s != uint64(i+1) {
			t.Fatalf("sequence numbers are not 1..%d: %v", len(seqs), seqs)
		}
	}
	if hub.Head() != writers*each {
		t.Fatalf("head %d, want %d", hub.Head(), writers*each)
	}
	txs := txID(t, hub.Store) - before
	t.Logf("%d puts from %d goroutines in %d transactions", writers*each, writers, txs)
	if txs >= writers*each {
		t.Errorf("%d puts took %d transactions", writers*each, txs)
	}

	// Writes queued behind a busy one are committed in one transaction.
	release := holdLead(t, hub.Store)
	before = txID(t, hub.Store)
	const queued = 200
	errs := make(chan error, queued)
	for i := range queued {
		go func() {
			_, err := hub.Put(BucketAppData, fmt.Sprintf("q/k%d", i), []byte("v"))
			errs <- err
		}()
	}
	waitQueued(t, hub.Store, queued)
	release()
	for range queued {
		if err := <-errs; err != nil {
			t.Fatal(err)
		}
	}
	if txs := txID(t, hub.Store) - before; txs != 2 {
		t.Errorf("%d queued puts took %d transactions (plus the one that held the lead), want 1", queued, txs-1)
	}
	checkInvariants(t, hub.Store)
}

// A write that fails after it may have written aborts its group's
// transaction; the others of the group are then committed on their own.
func TestGroupCommitFailure(t *testing.T) {
	hub := openTestNode(t, t.TempDir(), HubNode, time.Now)
	release := holdLead(t, hub.Store)
	res := make(chan error, 3)
	put := func(k string) {
		_, err := hub.Put(BucketAppData, k, []byte("v"))
		res <- err
	}
	broken := errors.New("disk on fire")
	go put("app/a")
	waitQueued(t, hub.Store, 1)
	go func() {
		res <- hub.write(func(t *txn) error {
			t.tx.Bucket(bMeta).Put([]byte("half"), []byte("written"))
			return broken
		})
	}()
	waitQueued(t, hub.Store, 2)
	go put("app/b")
	waitQueued(t, hub.Store, 3)
	release()
	failed := 0
	for range 3 {
		if err := <-res; errors.Is(err, broken) {
			failed++
		} else if err != nil {
			t.Errorf("a write of the group: %v", err)
		}
	}
	if failed != 1 {
		t.Errorf("%d writes failed, want the broken one only", failed)
	}
	if got := dump(t, hub.Store); len(got) != 2 || hub.Head() != 2 {
		t.Errorf("state %v, head %d", got, hub.Head())
	}
	hub.view(func(tx kv.Tx) error {
		if tx.Bucket(bMeta).Get([]byte("half")) != nil {
			t.Error("the failed write's half is in the store")
		}
		return nil
	})
}

// The sweep at the end of a full resync runs in chunks. A chunk that
// shares its transaction with a write that fails is run again on its own;
// it must not skip the records of the attempt that was rolled back.
func TestSweepRetriedInGroup(t *testing.T) {
	phone := openTestNode(t, t.TempDir(), "phone", time.Now)
	const stale = sweepChunk + sweepChunk/2
	err := phone.write(func(tx *txn) error {
		m := tx.tx.Bucket(bMeta)
		m.Put(kEpoch, []byte("old"))
		m.Put(kGen, u64(2))
		m.Put(kFull, []byte{1})
		for i := range stale {
			st := &stored{Value: []byte("x"), Version: Version{Wall: 1, Node: HubNode}, Seq: uint64(i + 1), Gen: 1}
			if err := putStored(tx.tx, bucketKey(BucketAppData, fmt.Sprintf("app/%05d", i)), st); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}

	release := holdLead(t, phone.Store)
	swept := make(chan error, 1)
	go func() { swept <- phone.sweep() }()
	waitQueued(t, phone.Store, 1)
	deleted := make(chan error, 1)
	go func() {
		_, err := phone.Delete(BucketAppData, "app/missing")
		deleted <- err
	}()
	waitQueued(t, phone.Store, 2)
	release()
	if err := <-deleted; !errors.Is(err, ErrNotFound) {
		t.Fatalf("delete of a missing key: %v", err)
	}
	if err := <-swept; err != nil {
		t.Fatal(err)
	}
	if left := len(records(t, phone.Store)); left != 0 {
		t.Fatalf("%d of %d stale records left after the sweep", left, stale)
	}
}
