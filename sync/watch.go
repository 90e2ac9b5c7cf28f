package sync

import (
	"strings"
	gosync "sync"
)

// watchBuffer is how many changes a watcher may lag behind before it is
// dropped (ErrWatchOverflow). Changes are applied in batches of up to
// maxBatchRecords; a watcher must hold at least a few batches.
const watchBuffer = 4096

// Watch is a subscription to the changes of one bucket, optionally under a
// key prefix. Changes arrive in the order they were applied locally.
type Watch struct {
	bucket, prefix string
	ch             chan Record
	b              *broadcaster

	mu     gosync.Mutex
	err    error
	closed bool
}

// Changes delivers each change; it is closed when the watch ends.
func (w *Watch) Changes() <-chan Record { return w.ch }

// Err says why Changes was closed: nil after Close, ErrWatchOverflow or
// ErrClosed otherwise.
func (w *Watch) Err() error {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.err
}

// Close ends the watch.
func (w *Watch) Close() { w.b.remove(w, nil) }

func (w *Watch) matches(r *Record) bool {
	return r.Bucket == w.bucket && strings.HasPrefix(r.Key, w.prefix)
}

// broadcaster hands applied changes to watchers without ever blocking the
// writer: a watcher that cannot keep up is dropped.
type broadcaster struct {
	mu       gosync.Mutex
	watchers map[*Watch]struct{}
	closed   bool
}

func (b *broadcaster) add(bucket, prefix string) (*Watch, error) {
	w := &Watch{bucket: bucket, prefix: prefix, ch: make(chan Record, watchBuffer), b: b}
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.closed {
		return nil, ErrClosed
	}
	if b.watchers == nil {
		b.watchers = map[*Watch]struct{}{}
	}
	b.watchers[w] = struct{}{}
	return w, nil
}

func (b *broadcaster) remove(w *Watch, err error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.removeLocked(w, err)
}

func (b *broadcaster) removeLocked(w *Watch, err error) {
	if _, ok := b.watchers[w]; !ok {
		return
	}
	delete(b.watchers, w)
	w.mu.Lock()
	w.err, w.closed = err, true
	w.mu.Unlock()
	close(w.ch)
}

func (b *broadcaster) publish(recs []Record) {
	b.mu.Lock()
	defer b.mu.Unlock()
	for w := range b.watchers {
		for i := range recs {
			if !w.matches(&recs[i]) {
				continue
			}
			select {
			case w.ch <- recs[i]:
			default:
				b.removeLocked(w, ErrWatchOverflow)
			}
			if w.closed {
				break
			}
		}
	}
}

func (b *broadcaster) close() {
	b.mu.Lock()
	defer b.mu.Unlock()
	for w := range b.watchers {
		b.removeLocked(w, ErrClosed)
	}
	b.closed = true
}
