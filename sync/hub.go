package sync

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"slices"
	gosync "sync"
	"time"

	"github.com/pzone/pzone/storefile/kv"

	"github.com/pzone/pzone/storefile"
	"github.com/pzone/pzone/transport"
)

// ErrProtocol: the other side sent something the sync protocol does not
// allow.
var ErrProtocol = errors.New("sync protocol violation")

// ErrEpochUnproven: a device was asked to give up its copy of the zone
// state for a hub epoch it has no proof of (Options.CheckEpoch).
var ErrEpochUnproven = errors.New("zone state not replaced")

func protoErr(format string, args ...any) error {
	return fmt.Errorf("%w: %s", ErrProtocol, fmt.Sprintf(format, args...))
}

// readMsg reads one frame; a frame that is not a valid message is a
// protocol violation, told apart from the stream failing.
func readMsg(fr *transport.FrameReader, m *Msg) error {
	err := fr.ReadFrame(m)
	if errors.Is(err, transport.ErrMalformed) || errors.Is(err, transport.ErrFrameTooLarge) {
		return fmt.Errorf("%w: %w", ErrProtocol, err)
	}
	return err
}

// writer serialises the frames of one stream's two senders.
type writer struct {
	mu gosync.Mutex
	w  io.Writer
}

func (w *writer) send(m *Msg) error {
	w.mu.Lock()
	defer w.mu.Unlock()
	return transport.WriteFrame(w.w, m)
}

// Serve runs the hub's side of one device's sync stream: it sends the
// device every change after the one it last applied, then each new change
// as it is accepted, and accepts the device's edits. It returns when ctx
// ends or the stream fails; device is the authenticated device name.
func (s *Store) Serve(ctx context.Context, device string, st Stream) error {
	if !s.hub {
		return errors.New("sync: Serve needs the hub's store")
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	defer context.AfterFunc(ctx, func() { st.Close() })()

	fr := transport.NewFrameReader(st, maxFrame)
	var hello Msg
	if err := readMsg(fr, &hello); err != nil {
		return fmt.Errorf("read sync hello: %w", err)
	}
	if hello.Type != MsgHello || hello.Version < 1 {
		return protoErr("stream does not start with hello")
	}
	var epoch string
	var restoredFrom []byte
	var floor uint64
	head := s.head.Load()
	if err := s.view(func(tx kv.Tx) error {
		m := tx.Bucket(bMeta)
		epoch, floor, head = string(m.Get(kEpoch)), getU64(m.Get(kFloor)), getU64(m.Get(kSeq))
		restoredFrom = bytes.Clone(m.Get(kRestored))
		return nil
	}); err != nil {
		return err
	}
	// A device that is new, synced with another incarnation of this hub,
	// missed compacted deletions, or claims more than the hub has (the hub
	// was restored from a backup) gets everything again.
	reset := hello.Epoch != epoch || hello.Since < floor || hello.Since > head || hello.Since == 0
	// One that synced with what this hub was restored from, or further
	// than its head (its file put back by hand), holds what the backup
	// lacks: it pushes that back (restore.go).
	restored := hello.Epoch != "" && (wasEpoch(restoredFrom, hello.Epoch) || hello.Epoch == epoch && hello.Since > head)
	since := hello.Since
	if reset {
		since = 0
	}
	w := &writer{w: st}
	if err := w.send(&Msg{Type: MsgStart, Epoch: epoch, Reset: reset, Restored: restored, Head: head, EpochProof: s.proof()}); err != nil {
		return err
	}
	s.log.Debug("sync stream", "device", device, "since", hello.Since, "reset", reset, "head", head)

	readErr := make(chan error, 1)
	go func() {
		readErr <- s.serveRead(device, fr, w)
		cancel()
	}()
	// A device has its own changes, unless it is rebuilding its state;
	// its deletions are sent anyway: it drops an accepted deletion at
	// once, and a batch read before the deletion could otherwise bring
	// the key back on it.
	skip := ""
	if !reset && !hello.Full {
		skip = device
	}
	err := s.feed(ctx, w, since, floor, skip)
	cancel()
	rerr := <-readErr
	if ferr := s.flushAcks(); ferr != nil && !errors.Is(ferr, ErrClosed) {
		s.log.Warn("save sync confirmations", "err", ferr)
	}
	// The reader sees why the stream ended (the device went away, or sent
	// garbage); the feed only sees its writes fail, unless it ended the
	// stream itself.
	if rerr != nil && !errors.Is(rerr, context.Canceled) && !errors.Is(err, errCompactedAhead) {
		return rerr
	}
	return err
}

// ReasonDiskFull is the Reason of a PushDeferred the hub gives when its
// disk is full: the device pushes the edit again after a backoff.
const ReasonDiskFull = "its disk is full"

// diskFullPace is how long the hub waits before it answers a push it
// could not take for a full disk.
const diskFullPace = time.Second

// errCompactedAhead ends a device's stream when deletions it had not yet
// received were compacted while it was receiving its backlog.
var errCompactedAhead = errors.New("sync: deletions this device had not yet received were compacted; it needs a full resync, which it gets when it reconnects")

// feed sends the changes after sent, then waits for more, until ctx ends.
// floor is the compaction floor when the stream started.
func (s *Store) feed(ctx context.Context, w *writer, sent, floor uint64, skip string) error {
	told := false // the device was told it is caught up at sent
	for {
		wake := s.changed()
		recs, upto, head, caught, nowFloor, err := s.readLog(sent, skip, told)
		if err != nil {
			return err
		}
		// A compaction since the stream started removed deletions after
		// what the device has (deletions kept past the retention period
		// for a device that was away): changes alone can no longer bring
		// it up to date, and even a full resync under way would keep the
		// records it already confirmed. Its next Hello is below the floor
		// and gets a full resync.
		if nowFloor != floor && nowFloor > sent {
			return errCompactedAhead
		}
		if len(recs) == 0 && upto == sent && told {
			select {
			case <-ctx.Done():
				return ctx.Err()
			case <-wake:
				continue
			}
		}
		m := &Msg{Type: MsgChanges, Records: recs, Upto: upto, CaughtUp: caught}
		if !caught {
			m.Head = head // for progress; caught up, it is Upto
		}
		if err := w.send(m); err != nil {
			return err
		}
		sent, told = upto, caught
	}
}

// maxScan bounds the log entries one batch looks at, when many are left
// out (a device's own changes).
const maxScan = 8 * maxBatchRecords

// readLog reads a batch of the changes after seq after, in order, leaving
// out those made by node skip (if not ""). When it reaches the end of the
// log, upto is the head and caught is true. A live feed (one that caught up
// before) reads the latest changes from memory when it can; a backlog is
// always read from the log, where each key appears once, at its latest.
func (s *Store) readLog(after uint64, skip string, live bool) (recs []Record, upto, head uint64, caught bool, floor uint64, err error) {
	if live {
		// The floor first: a compaction that raises it after the read
		// is then seen at the next batch.
		floor = s.floor.Load()
		if recs, upto, head, caught, ok := s.latest.read(after, skip); ok {
			return recs, upto, head, caught, floor, nil
		}
	}
	err = s.view(func(tx kv.Tx) error {
		head, floor = getU64(tx.Bucket(bMeta).Get(kSeq)), getU64(tx.Bucket(bMeta).Get(kFloor))
		upto = after
		size, scanned := 0, 0
		c := tx.Bucket(bLog).Cursor()
		k, bk := c.Seek(u64(after + 1))
		for ; k != nil; k, bk = c.Next() {
			if len(recs) == maxBatchRecords || size >= maxBatchBytes || scanned == maxScan {
				return nil
			}
			scanned++
			st, err := getStored(tx, bk)
			if err != nil {
				return err
			}
			if st == nil || st.Seq != getU64(k) {
				return fmt.Errorf("sync store: log entry %d does not match its record", getU64(k))
			}
			upto = st.Seq
			if skip != "" && st.Version.Node == skip && !st.Deleted {
				continue
			}
			b, key := splitKey(bk)
			r := st.record(b, key)
			recs = append(recs, r)
			size += r.size()
		}
		upto, caught = head, true
		return nil
	})
	return recs, upto, head, caught, floor, err
}

// serveRead handles what the device sends: pushes and acks.
func (s *Store) serveRead(device string, fr *transport.FrameReader, w *writer) error {
	for {
		var m Msg
		if err := readMsg(fr, &m); err != nil {
			return err
		}
		switch m.Type {
		case MsgPush:
			if len(m.Records) == 0 || len(m.Records) > maxBatchRecords {
				return protoErr("push of %d records", len(m.Records))
			}
			res, err := s.accept(device, m.Records)
			if err != nil {
				return err
			}
			if len(res) > 0 && res[0].Reason == ReasonDiskFull {
				// Paced, for devices from before the reason, which
				// push again at once.
				time.Sleep(diskFullPace)
			}
			if err := w.send(&Msg{Type: MsgPushResult, ID: m.ID, Results: res}); err != nil {
				return err
			}
		case MsgAck:
			if m.Seq > s.head.Load() {
				return protoErr("ack of %d beyond the head %d", m.Seq, s.head.Load())
			}
			s.acksMu.Lock()
			s.acks[device] = max(s.acks[device], m.Seq)
			s.acksMu.Unlock()
		default:
			return protoErr("unexpected message %d from a device", m.Type)
		}
	}
}

// accept applies the edits a device pushed and says what became of each.
// The permission check is here, at the hub, whatever the device checked.
//
// An edit that would take the device or the zone over its quota is
// refused (quota.go); one that shrinks what they hold never is.
//
// An edit of a key the hub holds nothing for, stamped no later than the
// horizon (the latest deletion compacted before every device saw it), is
// refused: the key may be one of those deletions, and the device one that
// never saw it. This holds in every session, not only in the full resync
// that follows such a compaction: that resync can be cut short after the
// device caught up but before the hub saw its pushes, and the session
// after it is an ordinary one. An edit made after the device saw the
// deletions is stamped later than them (the clock moves past every
// version it sees), and the horizon is older than the retention period.
func (s *Store) accept(device string, recs []Record) ([]PushResult, error) {
	pre := make([]PushResult, len(recs))
	// Ahead of the latest time the hub's own clock has shown, not of now:
	// devices that took a version from a hub whose clock once ran ahead
	// must not be locked out once it is set right.
	limit := s.clock.physical() + uint64(s.opts.MaxClockAhead.Milliseconds())
	for i := range recs {
		r := &recs[i]
		r.Seq = 0
		var why string
		if err := r.check(); err != nil {
			why = err.Error()
		} else if r.Version.Node == HubNode && r.Version.Wall <= limit {
			// The hub's own record, pushed back to a restored hub.
			why = fmt.Sprintf("edit stamped by node %q, not by device %q", r.Version.Node, device)
			if s.opts.Vouch != nil {
				why = ""
				if err := s.opts.Vouch(device, *r); err != nil {
					why = err.Error()
				}
			}
		} else if err := CheckWrite(device, r.Bucket, r.Key); err != nil {
			why = err.Error()
		} else if r.Version.Node != device {
			why = fmt.Sprintf("edit stamped by node %q, not by device %q", r.Version.Node, device)
		} else if r.Version.Wall > limit {
			why = fmt.Sprintf("edit stamped %s, more than %v ahead of the hub's clock: set this device's clock right", r.Version.Time().Format(time.RFC3339), s.opts.MaxClockAhead)
		}
		if why != "" {
			pre[i] = PushResult{Status: PushRefused, Reason: why}
		}
	}
	var out []PushResult
	err := s.write(func(t *txn) error {
		res := slices.Clone(pre)
		now := uint64(s.opts.Now().UnixMilli())
		var horizon Version
		transport.Unmarshal(t.tx.Bucket(bMeta).Get(kHorizon), &horizon)
		// The hub's records go back with the results so the device
		// settles at once, within one budget so the answer fits in a
		// frame whatever the values are. A superseded edit can do without
		// (the winner reaches the device with the changes); a refused one
		// cannot, and is deferred: the device pushes it again.
		room := maxBatchBytes
		attach := func(i int, cur *stored, r *Record) bool {
			c := cur.record(r.Bucket, r.Key)
			if c.size() > room {
				room = 0 // and look up no more records for refusals
				return false
			}
			room -= c.size()
			res[i].Current = &c
			return true
		}
		for i := range recs {
			r := recs[i]
			bk := bucketKey(r.Bucket, r.Key)
			if res[i].Status == PushRefused {
				if CheckKey(r.Bucket, r.Key) != nil {
					continue // no such key: nothing to send back
				}
				if room <= 0 {
					res[i] = PushResult{Status: PushDeferred}
					continue
				}
				cur, err := getStored(t.tx, bk)
				if err != nil {
					return err
				}
				if cur != nil && !attach(i, cur, &r) {
					res[i] = PushResult{Status: PushDeferred}
				}
				continue
			}
			cur, err := getStored(t.tx, bk)
			if err != nil {
				return err
			}
			s.clock.observe(r.Version)
			switch {
			case cur != nil && cur.Version == r.Version:
				// Pushed again (the device did not hear the answer).
				res[i] = PushResult{Status: PushAccepted, Seq: cur.Seq}
			case cur != nil && (cur.Version.Compare(r.Version) > 0 || r.Version.Node == HubNode):
				// A hub record pushed back (Vouch) only fills a gap: it
				// never replaces what the hub holds, whatever its version.
				res[i] = PushResult{Status: PushSuperseded}
				attach(i, cur, &r)
			case cur == nil && !horizon.IsZero() && r.Version.Compare(horizon) <= 0:
				res[i] = PushResult{Status: PushRefused, Reason: "edit made before deletions this device never saw were compacted; it might bring back deleted data"}
			default:
				if why := t.overQuota(device, cur, &r); why != "" {
					// The device restores the hub's record, so it needs it.
					res[i] = PushResult{Status: PushRefused, Reason: why}
					if cur != nil && !attach(i, cur, &r) {
						res[i] = PushResult{Status: PushDeferred}
					}
					continue
				}
				res[i] = PushResult{Status: PushAccepted, Seq: t.hubPut(bk, cur, &r, now)}
			}
		}
		out = res
		return nil
	})
	if storefile.IsDiskFull(err) {
		// The disk is full: nothing was written. The edits wait on the
		// device, which pushes them again after a backoff; the stream,
		// and the session, go on.
		if now := time.Now().UnixNano(); now-s.diskFullLogged.Load() > int64(10*time.Second) {
			s.diskFullLogged.Store(now)
			s.log.Warn("edits deferred: the disk is full", "device", device, "edits", len(recs), "err", err)
		}
		res := make([]PushResult, len(recs))
		for i := range res {
			res[i] = PushResult{Status: PushDeferred, Reason: ReasonDiskFull}
		}
		return res, nil
	}
	if err != nil {
		return nil, err
	}
	return out, nil
}

// flushAcks writes the devices' confirmations gathered in memory.
func (s *Store) flushAcks() error {
	s.acksMu.Lock()
	acks := s.acks
	s.acks = map[string]uint64{}
	s.acksMu.Unlock()
	if len(acks) == 0 {
		return nil
	}
	err := s.write(func(t *txn) error {
		b := t.tx.Bucket(bAcks)
		for d, seq := range acks {
			if seq > getU64(b.Get([]byte(d))) {
				if err := b.Put([]byte(d), u64(seq)); err != nil {
					return err
				}
			}
		}
		return nil
	})
	if err != nil { // keep them for the next flush
		s.acksMu.Lock()
		for d, seq := range acks {
			s.acks[d] = max(s.acks[d], seq)
		}
		s.acksMu.Unlock()
	}
	return err
}

// Acked is the last sequence number device confirmed.
func (s *Store) Acked(device string) uint64 {
	s.acksMu.Lock()
	mem := s.acks[device]
	s.acksMu.Unlock()
	var stored uint64
	s.view(func(tx kv.Tx) error {
		stored = getU64(tx.Bucket(bAcks).Get([]byte(device)))
		return nil
	})
	return max(mem, stored)
}

// compactChunk bounds the deletions of one compaction transaction.
const compactChunk = 4096

// Compact removes tombstones that every device in active has confirmed,
// and those older than the retention period whoever has seen them; it
// forgets the confirmations of devices no longer active. A device that
// comes back having missed a compacted deletion gets a full resync.
func (s *Store) Compact(active []string) (removed int, err error) {
	if !s.hub {
		return 0, errors.New("sync: Compact needs the hub's store")
	}
	if err := s.flushAcks(); err != nil {
		return 0, err
	}
	minAck := s.head.Load()
	err = s.write(func(t *txn) error {
		b := t.tx.Bucket(bAcks)
		var gone [][]byte
		b.ForEach(func(k, _ []byte) error {
			if !slices.Contains(active, string(k)) {
				gone = append(gone, bytes.Clone(k))
			}
			return nil
		})
		for _, k := range gone {
			b.Delete(k)
		}
		return nil
	})
	if err != nil {
		return 0, err
	}
	for _, d := range active {
		minAck = min(minAck, s.Acked(d))
	}
	cutoff := uint64(s.opts.Now().Add(-s.opts.TombstoneRetention).UnixMilli())
	for {
		n, more := 0, false
		var newFloor uint64
		err := s.write(func(t *txn) error {
			n, more = 0, false
			m := t.tx.Bucket(bMeta)
			floor := getU64(m.Get(kFloor))
			var horizon Version
			transport.Unmarshal(m.Get(kHorizon), &horizon)
			type victim struct{ seq, bk []byte }
			var vs []victim
			c := t.tx.Bucket(bTombs).Cursor()
			for k, bk := c.First(); k != nil; k, bk = c.Next() {
				if len(vs) == compactChunk {
					more = true
					break
				}
				st, err := getStored(t.tx, bk)
				if err != nil {
					return err
				}
				seq := getU64(k)
				if st == nil || seq > minAck && st.Accepted > cutoff {
					break // later tombstones are newer still
				}
				if seq > minAck && st.Version.Compare(horizon) > 0 {
					horizon = st.Version
				}
				floor = max(floor, seq)
				vs = append(vs, victim{bytes.Clone(k), bytes.Clone(bk)})
			}
			for _, v := range vs {
				t.tx.Bucket(bRecords).Delete(v.bk)
				t.tx.Bucket(bLog).Delete(v.seq)
				t.tx.Bucket(bTombs).Delete(v.seq)
			}
			n = len(vs)
			if n == 0 {
				return nil
			}
			m.Put(kFloor, u64(floor))
			newFloor = floor
			if !horizon.IsZero() {
				hb, err := transport.Marshal(horizon)
				if err != nil {
					return err
				}
				m.Put(kHorizon, hb)
			}
			return nil
		})
		if err != nil {
			return removed, err
		}
		if n > 0 {
			s.floor.Store(newFloor)
		}
		removed += n
		if !more {
			return removed, nil
		}
	}
}
