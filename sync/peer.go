package sync

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"strings"
	gosync "sync"
	"time"

	"github.com/pzone/pzone/storefile/kv"

	"github.com/pzone/pzone/transport"
)

// Phase is where a device's sync stands.
type Phase string

const (
	PhaseOffline    Phase = "offline"     // no session
	PhaseCatchingUp Phase = "catching up" // receiving the backlog
	PhaseInSync     Phase = "in sync"     // has everything the hub has; changes arrive as they happen
)

// State is a device's sync state, as pzp status shows it; its JSON is
// stable (docs/PROTOCOL.md).
type State struct {
	Phase Phase `json:"phase"`
	// LastSeq is the last hub sequence number applied here.
	LastSeq uint64 `json:"last_seq"`
	// HubSeq is the hub's last sequence number as last heard.
	HubSeq uint64 `json:"hub_seq"`
	// StartSeq is LastSeq when the current session's sync began (for
	// progress: LastSeq-StartSeq out of HubSeq-StartSeq).
	StartSeq uint64 `json:"start_seq"`
	// Pending counts local edits the hub has not yet accepted.
	Pending int `json:"pending"`
	// FullResync: the device is receiving the whole state again.
	FullResync bool `json:"full_resync,omitempty"`
	// Received counts records received in the current session.
	Received uint64 `json:"received"`
	// Refused counts local edits the hub refused since the daemon started.
	Refused uint64 `json:"refused,omitempty"`
	// LastRefused is the latest of them and the hub's reason, kept across
	// sessions (unlike LastError) until the daemon stops.
	LastRefused string `json:"last_refused,omitempty"`
	LastError   string `json:"last_error,omitempty"`
}

// Synced reports whether the device holds everything the hub has told it
// of and has no local edit waiting for the hub.
func (s State) Synced() bool {
	return s.Phase == PhaseInSync && s.Pending == 0 && s.LastSeq >= s.HubSeq
}

// State reports the device's sync state.
func (s *Store) State() State {
	s.stMu.Lock()
	defer s.stMu.Unlock()
	return s.st
}

func (s *Store) setState(f func(*State)) {
	s.stMu.Lock()
	f(&s.st)
	s.stMu.Unlock()
	s.onChange()
}

// ackDelay is how long a device may wait before confirming what it
// applied. Confirmations only let the hub compact deletions, so they are
// sent at most this often rather than once per change.
const ackDelay = time.Second

// Sync runs a device's side of its sync stream: it resumes from the last
// change it applied, applies what the hub sends, and pushes its local
// edits, until ctx ends or the stream fails.
func (s *Store) Sync(ctx context.Context, st Stream) error {
	if s.hub {
		return errors.New("sync: Sync needs a device's store")
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	defer context.AfterFunc(ctx, func() { st.Close() })()
	defer s.setState(func(st *State) { st.Phase = PhaseOffline })

	var epoch string
	var since uint64
	var full bool
	if err := s.view(func(tx kv.Tx) error {
		m := tx.Bucket(bMeta)
		epoch, since, full = string(m.Get(kEpoch)), getU64(m.Get(kSeq)), m.Get(kFull) != nil
		return nil
	}); err != nil {
		return err
	}
	w := &writer{w: st}
	if err := w.send(&Msg{Type: MsgHello, Version: ProtocolVersion, Epoch: epoch, Since: since, Full: full}); err != nil {
		return err
	}
	fr := transport.NewFrameReader(st, maxFrame)
	var start Msg
	if err := readMsg(fr, &start); err != nil {
		return fmt.Errorf("read sync start: %w", err)
	}
	if start.Type != MsgStart || start.Epoch == "" {
		return protoErr("sync stream does not start with start")
	}
	if start.Epoch != epoch {
		if err := s.checkEpoch(epoch, &start); err != nil {
			return err
		}
	}
	if start.Reset || start.Epoch != epoch {
		if err := s.beginReset(start.Epoch, start.Restored); err != nil {
			return err
		}
		since = 0
	}
	s.setState(func(st *State) {
		st.Phase, st.HubSeq, st.StartSeq, st.LastSeq, st.Received, st.LastError = PhaseCatchingUp, start.Head, since, since, 0, ""
		st.FullResync = st.FullResync || start.Reset
	})

	p := &pushes{inflight: map[uint64][]pushItem{}, freed: make(chan struct{}, 1)}
	ack := &acker{w: w}
	defer ack.stop()
	errc := make(chan error, 2)
	go func() { errc <- s.syncRead(fr, p, ack); cancel() }()
	go func() { errc <- s.pushLoop(ctx, w, p); cancel() }()
	err := <-errc
	<-errc
	if errors.Is(err, context.Canceled) && ctx.Err() != nil {
		err = ctx.Err()
	}
	return err
}

// checkEpoch decides whether the device may follow a hub to another
// epoch, which drops every record the new epoch lacks: only with proof
// that the zone replaced its state on purpose. A hub that lost its store
// and started afresh would otherwise wipe every device that reconnects.
func (s *Store) checkEpoch(had string, start *Msg) error {
	var err error
	switch {
	case had == "" && start.EpochProof == nil:
		return nil // a device's first sync: nothing to lose
	case s.opts.CheckEpoch == nil:
		err = errors.New("this store cannot check epoch proofs")
	default:
		err = s.opts.CheckEpoch(start.Epoch, start.EpochProof)
	}
	if err == nil {
		return nil
	}
	if had == "" {
		return fmt.Errorf("%w: the hub's proof of its zone state does not hold: %v", ErrEpochUnproven, err)
	}
	return fmt.Errorf("%w: the hub's zone state changed (epoch %s, this device synced with %s) and %v; "+
		"this device keeps its copy and does not sync: the hub's operator should restore the hub's %s, or reset it on purpose (pzh serve --reset-zone-state)",
		ErrEpochUnproven, start.Epoch, had, err, FileName)
}

// beginReset starts a full resync from the hub of epoch: every record
// not confirmed by the full pass is dropped at its end (sweep), or, from
// a restored hub, kept and pushed back where it should be (restore.go).
func (s *Store) beginReset(epoch string, restored bool) error {
	s.log.Info("full resync with the hub", "epoch", epoch, "restored", restored)
	return s.write(func(t *txn) error {
		m := t.tx.Bucket(bMeta)
		same := string(m.Get(kEpoch)) == epoch
		if err := m.Put(kEpoch, []byte(epoch)); err != nil {
			return err
		}
		m.Put(kGen, u64(getU64(m.Get(kGen))+1))
		m.Put(kFull, []byte{1})
		switch {
		case restored:
			m.Put(kKeep, []byte{1})
		case same && m.Get(kKeep) != nil:
			// A restored pass cut short (its Hello then names the new
			// epoch, and says nothing of the restore) or overtaken by a
			// compaction: still a restored one, until its sweep.
		default:
			m.Delete(kKeep)
		}
		t.setSeq(0)
		return nil
	})
}

// syncRead applies what the hub sends.
func (s *Store) syncRead(fr *transport.FrameReader, p *pushes, ack *acker) error {
	// A goroutine of its own reads and decodes ahead, so that the next
	// changes arrive while a batch commits; the changes read by the time a
	// commit ends go into the next one together, so a long catch-up takes
	// far fewer commits (and fsyncs) than it has batches.
	msgs, errc, done := make(chan *Msg, readAhead), make(chan error, 1), make(chan struct{})
	defer close(done)
	go func() {
		for {
			m := new(Msg)
			if err := readMsg(fr, m); err != nil {
				errc <- err
				return
			}
			select {
			case msgs <- m:
			case <-done:
				return
			}
		}
	}()
	var next *Msg // read while gathering changes, not a change itself
	for {
		m := next
		next = nil
		if m == nil {
			select {
			case m = <-msgs:
			case err := <-errc:
				// What was read before the end is applied first.
				select {
				case m = <-msgs:
					next = nil
					errc <- err
				default:
					return err
				}
			}
		}
		switch m.Type {
		case MsgChanges:
			batch, n := []*Msg{m}, len(m.Records)
		gather:
			for n < maxApplyRecords {
				select {
				case more := <-msgs:
					if more.Type != MsgChanges {
						next = more
						break gather
					}
					batch, n = append(batch, more), n+len(more.Records)
				default:
					break gather
				}
			}
			if err := s.applyChanges(batch); err != nil {
				return err
			}
			ack.note(batch[len(batch)-1].Upto)
		case MsgPushResult:
			items := p.take(m.ID)
			if items == nil || len(items) != len(m.Results) {
				return protoErr("push result %d does not match a push", m.ID)
			}
			deferred, err := s.applyResults(items, m.Results)
			if err != nil {
				return err
			}
			// A deferral with a reason is the hub unable to take edits
			// for now (its disk is full): pushed again after a backoff,
			// not at once.
			why := ""
			for _, r := range m.Results {
				if r.Status == PushDeferred && r.Reason != "" {
					why = r.Reason
				}
			}
			p.retry(deferred, why != "")
			if why != "" {
				s.setState(func(st *State) { st.LastError = waitingEdits + why + "; they wait here" })
			} else if s.State().LastError != "" && strings.HasPrefix(s.State().LastError, waitingEdits) {
				s.setState(func(st *State) {
					if strings.HasPrefix(st.LastError, waitingEdits) {
						st.LastError = ""
					}
				})
			}
		default:
			return protoErr("unexpected message %d from the hub", m.Type)
		}
	}
}

// applyChanges applies messages of changes from the hub, in order, in
// one transaction.
func (s *Store) applyChanges(ms []*Msg) error {
	last := s.State().LastSeq
	for _, m := range ms {
		if m.Upto < last {
			return protoErr("changes up to %d after %d", m.Upto, last)
		}
		for i := range m.Records {
			r := &m.Records[i]
			if err := r.check(); err != nil {
				return protoErr("hub sent a bad record: %v", err)
			}
			if r.Seq <= last || r.Seq > m.Upto {
				return protoErr("record seq %d outside (%d, %d]", r.Seq, last, m.Upto)
			}
		}
		last = m.Upto
	}
	var full bool
	err := s.write(func(t *txn) error {
		meta := t.tx.Bucket(bMeta)
		gen := getU64(meta.Get(kGen))
		full = meta.Get(kFull) != nil
		keep := full && meta.Get(kKeep) != nil
		for _, m := range ms {
			for i := range m.Records {
				r := m.Records[i]
				s.clock.observe(r.Version)
				bk := bucketKey(r.Bucket, r.Key)
				cur, err := getStored(t.tx, bk)
				if err != nil {
					return err
				}
				if keep && s.pushBack(cur, r.Bucket, r.Key) && cur.Version.Compare(r.Version) > 0 {
					// Newer here than in the backup the hub came back
					// from: pushed back, the hub's kept for a refusal.
					if err := t.repush(bk, cur, &r); err != nil {
						return err
					}
					continue
				}
				if err := t.peerApply(bk, cur, &r, gen, false); err != nil {
					return err
				}
			}
		}
		t.setSeq(last)
		return nil
	})
	if err != nil {
		return err
	}
	caughtUp, received := false, 0
	for _, m := range ms {
		caughtUp = caughtUp || m.CaughtUp
		received += len(m.Records)
	}
	if caughtUp && full {
		if err := s.sweep(); err != nil {
			return err
		}
	}
	end := ms[len(ms)-1]
	s.setState(func(st *State) {
		st.HubSeq, st.Received = max(end.Head, end.Upto), st.Received+uint64(received)
		if caughtUp {
			st.Phase, st.FullResync = PhaseInSync, false
		}
	})
	return nil
}

// peerApply merges a record from the hub into the device's copy. A local
// edit not yet accepted that is newer stays (the hub will take it);
// otherwise the hub's record wins, and a deletion removes the key (a device
// keeps no tombstones but its own pending ones: the hub sends each key's
// latest change once, so nothing older can follow).
func (t *txn) peerApply(bk []byte, cur *stored, r *Record, gen uint64, force bool) error {
	if !force && cur != nil && cur.Pending == 0 && cur.Gen == gen && cur.Seq > r.Seq {
		// A later change of the key is already here: this device's own
		// edit, accepted by the hub after the hub read this batch.
		return nil
	}
	if cur != nil && cur.Pending != 0 {
		if !force && cur.Version.Compare(r.Version) > 0 {
			// The pending edit stays; the hub's record is kept beside it
			// in case the hub does not take the edit after all.
			cur.Gen = gen
			if cur.Shadow == nil || r.Seq > cur.Shadow.Seq {
				sh := *r
				cur.Shadow = &sh
			}
			return putStored(t.tx, bk, cur)
		}
		t.tx.Bucket(bPending).Delete(u64(cur.Pending))
		t.pendingDelta--
	}
	same := cur != nil && cur.Version == r.Version && cur.Deleted == r.Deleted
	if same && !force && cur.Pending == 0 && cur.Seq == r.Seq && cur.Gen == gen {
		return nil // already here as it is
	}
	if r.Deleted {
		if cur != nil {
			if err := t.tx.Bucket(bRecords).Delete(bk); err != nil {
				return err
			}
		}
		if cur != nil && !cur.Deleted && !same {
			t.changed = append(t.changed, *r)
		}
		return nil
	}
	if err := putStored(t.tx, bk, &stored{Value: r.Value, Version: r.Version, Seq: r.Seq, Gen: gen}); err != nil {
		return err
	}
	if !same {
		t.changed = append(t.changed, *r)
	}
	return nil
}

// sweepChunk bounds the records one sweep transaction looks at.
const sweepChunk = 4096

// sweep ends a full resync: records the full pass did not confirm are
// gone from the hub, and go here too; pending local edits stay. It looks
// in read transactions and writes only where something is stale, so the
// first sync of a new device (nothing stale) costs one small commit.
func (s *Store) sweep() error {
	var from []byte
	for {
		var stale [][]byte
		var next []byte
		err := s.view(func(tx kv.Tx) error {
			gen := getU64(tx.Bucket(bMeta).Get(kGen))
			c := tx.Bucket(bRecords).Cursor()
			k, v := c.First()
			if from != nil {
				k, v = c.Seek(from)
			}
			for n := 0; k != nil; k, v = c.Next() {
				if n == sweepChunk {
					next = bytes.Clone(k)
					return nil
				}
				n++
				var st stored
				if err := transport.Unmarshal(v, &st); err != nil {
					return corrupt(k, err)
				}
				if st.Gen < gen && st.Pending == 0 {
					stale = append(stale, bytes.Clone(k))
				}
			}
			return nil
		})
		if err != nil {
			return err
		}
		last := next == nil
		if len(stale) > 0 || last {
			// Checked again inside the write: a change may have landed
			// since the look.
			err = s.write(func(t *txn) error {
				meta := t.tx.Bucket(bMeta)
				gen := getU64(meta.Get(kGen))
				keep := meta.Get(kKeep) != nil
				for _, k := range stale {
					st, err := getStored(t.tx, k)
					if err != nil {
						return err
					}
					if st == nil || st.Gen >= gen || st.Pending != 0 {
						continue
					}
					if b, key := splitKey(k); keep && s.pushBack(st, b, key) {
						// Gone from the backup the hub came back from:
						// pushed back.
						if err := t.repush(k, st, nil); err != nil {
							return err
						}
						continue
					}
					if err := t.tx.Bucket(bRecords).Delete(k); err != nil {
						return err
					}
					if !st.Deleted {
						b, key := splitKey(k)
						t.changed = append(t.changed, Record{Bucket: b, Key: key, Deleted: true, Version: st.Version})
					}
				}
				if last {
					meta.Delete(kKeep)
					return meta.Delete(kFull)
				}
				return nil
			})
			if err != nil || last {
				return err
			}
		}
		from = next
	}
}

// pushItem is one record of a push in flight.
type pushItem struct {
	bk  []byte
	pid uint64
	ver Version // of the edit pushed, for whoever awaits its verdict
}

// pushes tracks a session's pushes awaiting their results.
type pushes struct {
	mu       gosync.Mutex
	next     uint64
	inflight map[uint64][]pushItem
	again    []pushItem // deferred by the hub: push again
	freed    chan struct{}
	// notBefore: deferred edits wait until then (the hub cannot take
	// edits for now); backoff is how long the last wait was.
	notBefore time.Time
	backoff   time.Duration
}

// waitingEdits starts the status error of edits the hub cannot take now.
const waitingEdits = "the hub cannot take edits now: "

// Backoff of edits the hub cannot take for now.
const (
	minPushBackoff = 500 * time.Millisecond
	maxPushBackoff = 10 * time.Second
)

// retry queues deferred edits to be pushed again: at once, or, later,
// after a backoff that doubles while the hub goes on refusing.
func (p *pushes) retry(items []pushItem, later bool) {
	p.mu.Lock()
	switch now := time.Now(); {
	case !later:
		p.backoff, p.notBefore = 0, time.Time{} // the hub takes edits again
	case now.Before(p.notBefore):
		// Waiting already: once per wait, however many pushes were in
		// flight.
	default:
		p.backoff = min(max(2*p.backoff, minPushBackoff), maxPushBackoff)
		p.notBefore = now.Add(p.backoff)
	}
	p.again = append(p.again, items...)
	p.mu.Unlock()
	if len(items) == 0 {
		return
	}
	select {
	case p.freed <- struct{}{}:
	default:
	}
}

// takeRetry returns the deferred edits to push now, or, while they must
// wait, none and how long.
func (p *pushes) takeRetry() ([]pushItem, time.Duration) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if len(p.again) > 0 {
		if wait := time.Until(p.notBefore); wait > 0 {
			return nil, wait
		}
	}
	items := p.again
	p.again = nil
	return items, 0
}

func (p *pushes) add(items []pushItem) uint64 {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.next++
	p.inflight[p.next] = items
	return p.next
}

func (p *pushes) take(id uint64) []pushItem {
	p.mu.Lock()
	items := p.inflight[id]
	delete(p.inflight, id)
	p.mu.Unlock()
	select {
	case p.freed <- struct{}{}:
	default:
	}
	return items
}

func (p *pushes) count() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return len(p.inflight)
}

// pushLoop sends the local edits waiting for the hub, oldest first: those
// made offline at once, later ones as they are made.
func (s *Store) pushLoop(ctx context.Context, w *writer, p *pushes) error {
	var cursor uint64 // pending id of the last edit pushed in this session
	for {
		if p.count() >= maxPushesInFlight {
			select {
			case <-ctx.Done():
				return ctx.Err()
			case <-p.freed:
			}
			continue
		}
		again, wait := p.takeRetry()
		if len(again) > 0 {
			recs, items, err := s.readItems(again)
			if err != nil {
				return err
			}
			if len(recs) > 0 {
				id := p.add(items)
				if err := w.send(&Msg{Type: MsgPush, ID: id, Records: recs}); err != nil {
					return err
				}
			}
			continue
		}
		recs, items, next, err := s.readPending(cursor)
		if err != nil {
			return err
		}
		if len(recs) == 0 {
			var due <-chan time.Time
			var t *time.Timer
			if wait > 0 {
				t = time.NewTimer(wait)
				due = t.C
			}
			select {
			case <-ctx.Done():
				return ctx.Err()
			case <-s.pushWake:
			case <-p.freed: // deferred edits to push again
			case <-due: // deferred edits whose wait is over
			}
			if t != nil {
				t.Stop()
			}
			continue
		}
		id := p.add(items)
		if err := w.send(&Msg{Type: MsgPush, ID: id, Records: recs}); err != nil {
			return err
		}
		cursor = next
	}
}

// readPending reads a batch of local edits queued after pending id after.
func (s *Store) readPending(after uint64) (recs []Record, items []pushItem, last uint64, err error) {
	last = after
	err = s.view(func(tx kv.Tx) error {
		size := 0
		c := tx.Bucket(bPending).Cursor()
		for k, bk := c.Seek(u64(after + 1)); k != nil; k, bk = c.Next() {
			if len(recs) == maxBatchRecords || size >= maxBatchBytes {
				break
			}
			pid := getU64(k)
			last = pid
			st, err := getStored(tx, bk)
			if err != nil {
				return err
			}
			if st == nil || st.Pending != pid {
				continue // superseded within this read; cannot happen, but harmless
			}
			b, key := splitKey(bk)
			r := st.record(b, key)
			recs = append(recs, r)
			items = append(items, pushItem{bk: bytes.Clone(bk), pid: pid, ver: st.Version})
			size += r.size()
		}
		return nil
	})
	return recs, items, last, err
}

// readItems reads deferred edits again, leaving out those changed or
// settled since.
func (s *Store) readItems(items []pushItem) (recs []Record, still []pushItem, err error) {
	err = s.view(func(tx kv.Tx) error {
		for _, it := range items {
			st, err := getStored(tx, it.bk)
			if err != nil {
				return err
			}
			if st == nil || st.Pending != it.pid {
				continue
			}
			b, key := splitKey(it.bk)
			recs = append(recs, st.record(b, key))
			it.ver = st.Version
			still = append(still, it)
		}
		return nil
	})
	return recs, still, err
}

// applyResults settles pushed edits with the hub's verdicts. An edit
// changed again since it was pushed is left to its next push.
func (s *Store) applyResults(items []pushItem, results []PushResult) (deferred []pushItem, err error) {
	var refused []string
	var accepted uint64 // the greatest sequence number accepted
	err = s.write(func(t *txn) error {
		refused, accepted, deferred = refused[:0], 0, deferred[:0]
		gen := getU64(t.tx.Bucket(bMeta).Get(kGen))
		for i, it := range items {
			res := results[i]
			cur, err := getStored(t.tx, it.bk)
			if err != nil {
				return err
			}
			if cur == nil || cur.Pending != it.pid {
				continue
			}
			b, key := splitKey(it.bk)
			switch res.Status {
			case PushAccepted:
				accepted = max(accepted, res.Seq)
				t.tx.Bucket(bPending).Delete(u64(it.pid))
				t.pendingDelta--
				if cur.Deleted {
					err = t.tx.Bucket(bRecords).Delete(it.bk)
				} else {
					cur.Pending, cur.Seq, cur.Gen, cur.Shadow = 0, res.Seq, gen, nil
					err = putStored(t.tx, it.bk, cur)
				}
			case PushDeferred:
				deferred = append(deferred, it)
			case PushSuperseded, PushRefused:
				if res.Status == PushRefused {
					refused = append(refused, fmt.Sprintf("%s/%s: %s", b, key, res.Reason))
				}
				c := res.Current
				if c != nil && (c.Bucket != b || c.Key != key || c.check() != nil) {
					return protoErr("push result for %s/%q carries another record", b, key)
				}
				// A change of the key that arrived while the edit was
				// pending, and was held back by it, may be newer than
				// what the hub read when it answered.
				if sh := cur.Shadow; sh != nil && (c == nil || sh.Seq > c.Seq) {
					c = sh
				}
				if c != nil {
					s.clock.observe(c.Version)
					err = t.peerApply(it.bk, cur, c, gen, true)
				} else if res.Status == PushRefused && cur.Version.Node == HubNode {
					// A hub record pushed back to a restored hub (a
					// Witness pick) that it did not take: kept here all
					// the same, as the device had it (a revocation it
					// holds is one it honours), and pushed no more.
					t.tx.Bucket(bPending).Delete(u64(it.pid))
					t.pendingDelta--
					cur.Pending, cur.Gen, cur.Shadow = 0, gen, nil
					err = putStored(t.tx, it.bk, cur)
				} else if res.Status == PushRefused {
					// The hub has nothing here: undo the local edit.
					err = t.peerApply(it.bk, cur, &Record{Bucket: b, Key: key, Deleted: true, Version: cur.Version}, gen, true)
				} else {
					// Superseded, and the hub left out its record: the
					// winner comes with the changes. Until then the key
					// shows the local edit, but a device keeps no
					// tombstone that is not pending.
					t.tx.Bucket(bPending).Delete(u64(it.pid))
					t.pendingDelta--
					if cur.Deleted {
						err = t.tx.Bucket(bRecords).Delete(it.bk)
					} else {
						cur.Pending = 0
						err = putStored(t.tx, it.bk, cur)
					}
				}
			default:
				return protoErr("push result with status %d", res.Status)
			}
			if err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	for _, r := range refused {
		s.log.Warn("the hub refused a local edit; it was undone", "edit", r)
	}
	for i, it := range items {
		if results[i].Status != PushDeferred {
			s.verdicts.publish(it.bk, it.ver, Verdict{Status: results[i].Status, Seq: results[i].Seq, Reason: results[i].Reason})
		}
	}
	if len(refused) > 0 || accepted > s.State().HubSeq {
		// The hub's head is at least what it just accepted; the changes
		// that carry it back here follow.
		s.setState(func(st *State) {
			st.HubSeq = max(st.HubSeq, accepted)
			if len(refused) > 0 {
				st.Refused += uint64(len(refused))
				st.LastRefused = refused[len(refused)-1]
				st.LastError = "hub refused " + st.LastRefused
			}
		})
	}
	return deferred, nil
}

// acker confirms applied changes to the hub at most once per ackDelay.
type acker struct {
	w       *writer
	mu      gosync.Mutex
	latest  uint64
	sent    uint64
	timer   *time.Timer
	stopped bool
}

func (a *acker) note(seq uint64) {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.latest = max(a.latest, seq)
	if a.timer != nil || a.stopped || a.latest == a.sent {
		return
	}
	a.timer = time.AfterFunc(ackDelay, func() {
		a.mu.Lock()
		seq := a.latest
		a.timer = nil
		stopped := a.stopped
		a.sent = seq
		a.mu.Unlock()
		if !stopped {
			a.w.send(&Msg{Type: MsgAck, Seq: seq})
		}
	})
}

func (a *acker) stop() {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.stopped = true
	if a.timer != nil {
		a.timer.Stop()
	}
}
