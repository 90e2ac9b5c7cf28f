package sync

import (
	"errors"
	gosync "sync"

	"github.com/pzone/pzone/storefile/kv"
)

// maxGroup bounds how many writes share one transaction, so that a burst
// does not build one huge transaction that holds every writer's pages.
const maxGroup = 1000

// txn is one write as seen by its function: the shared transaction, plus
// what the write changed, published to watchers after the commit.
type txn struct {
	tx      kv.Tx
	s       *Store
	seq     uint64 // hub: the last sequence number assigned (loaded lazily)
	seqSet  bool
	changed []Record
	// pendingDelta is the change in the count of local edits waiting to be
	// pushed (peer).
	pendingDelta int
	// local: a local edit was queued (peer), so the push loop has work.
	local bool
	// usage is the change in live bytes by owning node (hub), added to
	// the store's count after the commit.
	usage map[string]int64
}

// refusal is an error a write function returns when it refused before
// writing anything: it fails that write alone, not the group's
// transaction (a Delete of a key that is not there, an everyday 404,
// would otherwise cost every write of its group a transaction of its own).
type refusal struct{ err error }

func (r refusal) Error() string { return r.err.Error() }
func (r refusal) Unwrap() error { return r.err }

// group commits writes in groups: the first writer to arrive leads and
// commits every write queued behind it in one fsync'd transaction, then
// hands the lead to the next writer waiting. A lone write commits at once;
// under load, one fsync serves many writes. (bbolt's own Batch waits a
// fixed delay for company, which would add that delay to every lone edit.)
type group struct {
	db kv.DB
	s  *Store // its afterCommit runs after each successful commit, in commit order

	mu    gosync.Mutex
	queue []*call
	busy  bool
}

type call struct {
	fn   func(*txn) error
	err  error
	done chan struct{}
	lead chan struct{}
}

// do runs fn in a write transaction shared with other writers and returns
// once it is committed. fn must check before it writes: an error from fn
// aborts the shared transaction, after which every write in it is retried
// in a transaction of its own so that only the failing one fails.
func (g *group) do(fn func(*txn) error) error {
	c := &call{fn: fn, done: make(chan struct{}), lead: make(chan struct{}, 1)}
	g.mu.Lock()
	g.queue = append(g.queue, c)
	if g.busy {
		g.mu.Unlock()
		select {
		case <-c.done:
			return c.err
		case <-c.lead:
		}
		g.mu.Lock()
	} else {
		g.busy = true
	}
	n := min(len(g.queue), maxGroup)
	batch := g.queue[:n:n]
	g.queue = g.queue[n:]
	g.mu.Unlock()

	g.run(batch)

	g.mu.Lock()
	if len(g.queue) > 0 {
		g.queue[0].lead <- struct{}{}
	} else {
		g.busy = false
		g.queue = nil
	}
	g.mu.Unlock()
	<-c.done
	return c.err
}

func (g *group) run(batch []*call) {
	var t *txn
	err := g.db.Update(func(tx kv.Tx) error {
		t = &txn{tx: tx, s: g.s}
		for _, c := range batch {
			c.err = nil
			if err := c.fn(t); err != nil {
				var ref refusal
				if errors.As(err, &ref) {
					c.err = ref.err // this write only; it wrote nothing
					continue
				}
				return err
			}
		}
		return t.finish()
	})
	if err == nil {
		g.s.afterCommit(t)
		for _, c := range batch {
			close(c.done)
		}
		return
	}
	if len(batch) == 1 {
		batch[0].err = err
		close(batch[0].done)
		return
	}
	for _, c := range batch {
		g.run([]*call{c})
	}
}
