package sync

import gosync "sync"

// The hub keeps its latest accepted changes in memory: a device that is
// caught up reads new changes from there instead of from bbolt, where each
// change would otherwise be read and decoded once per device. At most
// recentMax changes and recentBytes of them (a device can write values of
// up to MaxValue).
const (
	recentMax   = 4096
	recentBytes = 4 << 20
)

// recent holds the hub's latest accepted changes, oldest first, with
// contiguous sequence numbers. It may hold a change the log has since
// dropped (the key changed again, or a tombstone was compacted): a feed
// that sends it also sends what replaced it, which the device applies
// after it.
type recent struct {
	mu    gosync.Mutex
	recs  []Record
	bytes int
}

// add appends the changes of a commit, in sequence order.
func (r *recent) add(recs []Record) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if n := len(r.recs); n > 0 && r.recs[n-1].Seq+1 != recs[0].Seq {
		clear(r.recs) // not contiguous: cannot happen, but never serve a gap
		r.recs, r.bytes = r.recs[:0], 0
	}
	for i := range recs {
		r.bytes += recs[i].size()
	}
	r.recs = append(r.recs, recs...)
	drop := 0
	for len(r.recs)-drop > recentMax || r.bytes > recentBytes && drop < len(r.recs) {
		r.bytes -= r.recs[drop].size()
		drop++
	}
	if drop > 0 {
		// Let go of the dropped values, and of the array once it has
		// grown well past what is kept.
		clear(r.recs[:drop])
		r.recs = r.recs[drop:]
		if cap(r.recs) > 4*recentMax {
			r.recs = append([]Record(nil), r.recs...)
		}
	}
}

// read is readLog from memory: ok is false when the changes after after
// are not all here.
func (r *recent) read(after uint64, skip string) (recs []Record, upto, head uint64, caught, ok bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	// after may be past the last change here: a commit is readable in
	// the store a moment before it is added here.
	if len(r.recs) == 0 || after+1 < r.recs[0].Seq || after > r.recs[len(r.recs)-1].Seq {
		return nil, 0, 0, false, false
	}
	head = r.recs[len(r.recs)-1].Seq
	upto = after
	size, scanned := 0, 0
	for i := int(after + 1 - r.recs[0].Seq); i < len(r.recs); i++ {
		if len(recs) == maxBatchRecords || size >= maxBatchBytes || scanned == maxScan {
			return recs, upto, head, false, true
		}
		scanned++
		c := r.recs[i]
		upto = c.Seq
		if skip != "" && c.Version.Node == skip && !c.Deleted {
			continue
		}
		recs = append(recs, c)
		size += c.size()
	}
	return recs, head, head, true, true
}
