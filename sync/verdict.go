package sync

import (
	"context"
	gosync "sync"
)

// Verdict is the hub's answer to one local edit of a device, for an
// application (or pzp data set) that waits to learn whether the edit
// stands: the hub may refuse it (a quota, a permission) or find it beaten
// by a newer edit.
type Verdict struct {
	Status PushStatus // never PushDeferred: a deferred edit is pushed again
	Seq    uint64     // PushAccepted: the hub's sequence number
	Reason string     // PushRefused: why, for people
}

// verdictBuffer is how many verdicts on one key a watch holds unread:
// its owner waits for a single edit, so more are only the edits of
// others racing it, and a dropped one costs no more than a wait that runs
// out.
const verdictBuffer = 16

type verdictMsg struct {
	ver Version
	v   Verdict
}

// verdicts hands the hub's answers on local edits to their watchers.
type verdicts struct {
	mu      gosync.Mutex
	watches map[string]map[*VerdictWatch]struct{} // by bucketKey
}

// VerdictWatch receives the hub's verdicts on the local edits of one key.
type VerdictWatch struct {
	s  *Store
	bk string
	c  chan verdictMsg
}

// WatchVerdicts starts receiving the hub's verdicts on the local edits of
// (bucket, key). Start it before making the edit: the verdict can arrive
// before the edit's caller has its version. Close it when done.
func (s *Store) WatchVerdicts(bucket, key string) *VerdictWatch {
	w := &VerdictWatch{s: s, bk: string(bucketKey(bucket, key)), c: make(chan verdictMsg, verdictBuffer)}
	s.verdicts.mu.Lock()
	defer s.verdicts.mu.Unlock()
	if s.verdicts.watches == nil {
		s.verdicts.watches = map[string]map[*VerdictWatch]struct{}{}
	}
	if s.verdicts.watches[w.bk] == nil {
		s.verdicts.watches[w.bk] = map[*VerdictWatch]struct{}{}
	}
	s.verdicts.watches[w.bk][w] = struct{}{}
	return w
}

// Wait returns the hub's verdict on the edit of version ver, or ctx's
// error if none came before ctx ended.
func (w *VerdictWatch) Wait(ctx context.Context, ver Version) (Verdict, error) {
	for {
		select {
		case <-ctx.Done():
			return Verdict{}, ctx.Err()
		case m := <-w.c:
			if m.ver == ver {
				return m.v, nil
			}
		}
	}
}

// Close stops the watch.
func (w *VerdictWatch) Close() {
	w.s.verdicts.mu.Lock()
	defer w.s.verdicts.mu.Unlock()
	delete(w.s.verdicts.watches[w.bk], w)
	if len(w.s.verdicts.watches[w.bk]) == 0 {
		delete(w.s.verdicts.watches, w.bk)
	}
}

func (vs *verdicts) publish(bk []byte, ver Version, v Verdict) {
	vs.mu.Lock()
	defer vs.mu.Unlock()
	for w := range vs.watches[string(bk)] {
		select {
		case w.c <- verdictMsg{ver, v}:
		default:
		}
	}
}
