package sync

import (
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"math/rand/v2"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"
)

// The convergence test runs a random schedule of edits, partitions,
// restarts, compactions and clock changes over a hub and three devices,
// then reconnects everything and checks that every node shows the same
// state, and that it is the one last-writer-wins promises: for each key,
// the edit with the greatest version of all edits ever made, present if it
// is a put.
//
// The schedule follows the seed; the interleaving of the sync streams
// with it does not (the streams run concurrently, as in the daemons), so
// a seed explores a neighbourhood rather than replaying one history.
//
//	PZONE_SYNC_SEED=42 go test -race -run TestConvergence ./sync/   one seed (or a comma-separated list, or "random")
//	PZONE_SYNC_STEPS=2000 ...                                         a longer schedule

// convergenceSeeds and convergenceSteps are the default runs: a few
// seeds of a few hundred steps keep the test within a few seconds under
// the race detector.
var convergenceSeeds = []uint64{1, 2, 3, 4, 5, 6}

const convergenceSteps = 300

// maxSkew bounds how far a device's clock is from the hub's. It stays
// well inside DefaultMaxClockAhead, so that no edit is refused for its
// stamp: the test checks convergence, not refusal.
const maxSkew = 4 * time.Minute

func TestConvergence(t *testing.T) {
	seeds, steps := convergenceSeeds, convergenceSteps
	if testing.Short() {
		seeds = seeds[:2]
	}
	if v := os.Getenv("PZONE_SYNC_SEED"); v != "" {
		seeds = nil
		for _, f := range strings.Split(v, ",") {
			if f == "random" {
				seeds = append(seeds, rand.Uint64())
				continue
			}
			s, err := strconv.ParseUint(strings.TrimSpace(f), 10, 64)
			if err != nil {
				t.Fatalf("PZONE_SYNC_SEED: %v", err)
			}
			seeds = append(seeds, s)
		}
	}
	if v := os.Getenv("PZONE_SYNC_STEPS"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 1 {
			t.Fatalf("PZONE_SYNC_STEPS=%q", v)
		}
		steps = n
	}
	for _, seed := range seeds {
		t.Run(fmt.Sprintf("seed=%d", seed), func(t *testing.T) {
			// Seeds share nothing; running them together overlaps their
			// waits for confirmations.
			t.Parallel()
			t.Logf("seed %d, %d steps; run it again with PZONE_SYNC_SEED=%d PZONE_SYNC_STEPS=%d go test -race -run 'TestConvergence' ./sync/", seed, steps, seed, steps)
			w := newSimWorld(t, seed)
			// Once in the schedule everything settles, so that devices
			// confirm and tombstones are compacted (the schedule is over
			// before the devices' own confirmations would let any go).
			quiet := steps/3 + w.rng.IntN(steps/3+1)
			for i := range steps {
				if i == quiet {
					w.quiesce(i)
				}
				w.step(i)
			}
			w.finish()
		})
	}
}

// simDevice is a device of the simulation: its node, its clock's offset
// from the hub's, and its link while connected.
type simDevice struct {
	*testNode
	name string
	skew atomic.Int64 // ns
	link *link
}

func (d *simDevice) now(hub *fakeClock) func() time.Time {
	return func() time.Time { return hub.Now().Add(time.Duration(d.skew.Load())) }
}

// simEdit is an edit the model knows of.
type simEdit struct {
	version Version
	value   string
	deleted bool
}

type simWorld struct {
	t     *testing.T
	rng   *rand.Rand
	clock *fakeClock // the hub's; the devices' are offset from it
	hub   *testNode
	devs  []*simDevice
	// want is, per bucket/key, the edit with the greatest version made so
	// far; versions holds every version made, to catch one made twice.
	want     map[string]simEdit
	versions map[Version]bool
	// history is the schedule so far, for the failure report.
	history []string
	stats   map[string]int
	warned  *warnings // what every node logged at warning level
}

func newSimWorld(t *testing.T, seed uint64) *simWorld {
	w := &simWorld{
		t: t, rng: rand.New(rand.NewPCG(seed, 0x5eed)), clock: newFakeClock(),
		want: map[string]simEdit{}, versions: map[Version]bool{}, stats: map[string]int{}, warned: &warnings{},
	}
	dir := t.TempDir()
	logger := func(o *Options) { o.Logger = slog.New(w.warned) }
	w.hub = openTestNodeWith(t, dir, HubNode, w.clock.Now, logger)
	for _, name := range []string{"desk", "phone", "tablet"} {
		d := &simDevice{name: name}
		d.testNode = openTestNodeWith(t, dir, name, d.now(w.clock), logger)
		w.devs = append(w.devs, d)
	}
	t.Cleanup(func() {
		if t.Failed() {
			n := len(w.history)
			t.Logf("last steps of the schedule:\n  %s", strings.Join(w.history[max(0, n-40):], "\n  "))
		}
		for _, d := range w.devs {
			if d.link != nil {
				d.link.stop()
			}
		}
	})
	return w
}

func (w *simWorld) logf(format string, args ...any) {
	w.history = append(w.history, fmt.Sprintf(format, args...))
}

// simKeys is the small key space every node edits, so that edits
// conflict; each device also edits its own devices record, which the hub
// may edit too.
var simKeys = [][2]string{
	{BucketAppData, "notes/a"}, {BucketAppData, "notes/b"}, {BucketAppData, "notes/c"},
	{BucketAppData, "todo/x"}, {BucketAppData, "todo/y"}, {BucketUserData, "name"},
}

// pickKey picks a key node may write.
func (w *simWorld) pickKey(node string) (bucket, key string) {
	if w.rng.IntN(6) == 0 {
		if node == HubNode {
			return BucketDevices, w.devs[w.rng.IntN(len(w.devs))].name
		}
		return BucketDevices, node
	}
	k := simKeys[w.rng.IntN(len(simKeys))]
	return k[0], k[1]
}

// pickNode picks the hub or a device.
func (w *simWorld) pickNode() (*testNode, string) {
	i := w.rng.IntN(len(w.devs) + 1)
	if i == len(w.devs) {
		return w.hub, HubNode
	}
	return w.devs[i].testNode, w.devs[i].name
}

func (w *simWorld) step(i int) {
	t := w.t
	t.Helper()
	switch r := w.rng.IntN(100); {
	case r < 30:
		n, node := w.pickNode()
		b, k := w.pickKey(node)
		value := fmt.Sprintf("%s#%d", node, i)
		rec, err := n.Put(b, k, []byte(value))
		if err != nil {
			t.Fatalf("step %d: %s put %s/%s: %v", i, node, b, k, err)
		}
		w.note(rec, value)
		w.logf("%d: %s put %s/%s = %q at %v", i, node, b, k, value, rec.Version)
	case r < 42:
		n, node := w.pickNode()
		b, k := w.pickKey(node)
		if cur, ok, _ := n.Get(b, k); !ok || cur.Deleted {
			return
		}
		rec, err := n.Delete(b, k)
		if errors.Is(err, ErrNotFound) { // deleted by a change that just arrived
			return
		}
		if err != nil {
			t.Fatalf("step %d: %s delete %s/%s: %v", i, node, b, k, err)
		}
		w.note(rec, "")
		w.logf("%d: %s delete %s/%s at %v", i, node, b, k, rec.Version)
	case r < 52:
		var d time.Duration
		switch x := w.rng.IntN(20); {
		case x < 6: // the same millisecond: ties between nodes
		case x < 14:
			d = time.Duration(w.rng.IntN(1500)) * time.Millisecond
		case x < 19:
			d = time.Duration(w.rng.IntN(180)) * time.Second
		default:
			d = time.Duration(w.rng.IntN(120)) * time.Minute
		}
		w.clock.Add(d)
		w.logf("%d: clock +%v", i, d)
	case r < 60:
		d := w.devs[w.rng.IntN(len(w.devs))]
		skew := time.Duration(w.rng.Int64N(int64(2*maxSkew))) - maxSkew
		d.skew.Store(int64(skew))
		w.logf("%d: %s clock skew %v", i, d.name, skew)
	case r < 69:
		d := w.devs[w.rng.IntN(len(w.devs))]
		if d.link != nil {
			w.disconnect(d)
			w.logf("%d: %s partitioned", i, d.name)
		}
	case r < 81:
		d := w.devs[w.rng.IntN(len(w.devs))]
		if d.link == nil {
			d.link = connect(w.hub, d.testNode)
			w.logf("%d: %s connected", i, d.name)
		}
	case r < 86:
		d := w.devs[w.rng.IntN(len(w.devs))]
		up := d.link != nil
		if up {
			w.disconnect(d)
		}
		d.restart(t)
		w.stats["device restarts"]++
		if w.rng.IntN(2) == 0 {
			d.link = connect(w.hub, d.testNode)
		}
		w.logf("%d: %s restarted (was connected: %v, now: %v)", i, d.name, up, d.link != nil)
	case r < 88:
		var up []*simDevice
		for _, d := range w.devs {
			if d.link != nil {
				w.disconnect(d)
				up = append(up, d)
			}
		}
		w.hub.restart(t)
		for _, d := range up {
			d.link = connect(w.hub, d.testNode)
		}
		w.stats["hub restarts"]++
		w.logf("%d: hub restarted, %d devices reconnected", i, len(up))
	case r < 92:
		var names []string
		for _, d := range w.devs {
			names = append(names, d.name)
		}
		n, err := w.hub.Compact(names)
		if err != nil {
			t.Fatalf("step %d: compact: %v", i, err)
		}
		w.stats["tombstones compacted"] += n
		w.logf("%d: compact removed %d", i, n)
	default:
		// Let a connected device catch up, so that the others' edits
		// meet it in every state, from far behind to in sync.
		d := w.devs[w.rng.IntN(len(w.devs))]
		if d.link != nil {
			waitSyncedOn(t, w.hub, d.testNode, d.link)
			w.logf("%d: %s in sync at %d", i, d.name, w.hub.Head())
		}
	}
}

func (w *simWorld) disconnect(d *simDevice) {
	d.link.stopClean(w.t, d.name)
	d.link = nil
}

// note records an edit in the model.
func (w *simWorld) note(rec Record, value string) {
	if w.versions[rec.Version] {
		w.t.Fatalf("version %v made twice", rec.Version)
	}
	w.versions[rec.Version] = true
	w.stats["edits"]++
	k := rec.Bucket + "/" + rec.Key
	if cur, ok := w.want[k]; !ok || rec.Version.Compare(cur.version) > 0 {
		w.want[k] = simEdit{version: rec.Version, value: value, deleted: rec.Deleted}
	}
}

// settle reconnects every device and waits until all are in sync.
func (w *simWorld) settle() {
	for _, d := range w.devs {
		if d.link == nil {
			d.link = connect(w.hub, d.testNode)
		}
	}
	// Twice around: a device's pushes reach the others after they were
	// found in sync.
	for range 2 {
		for _, d := range w.devs {
			waitSyncedOn(w.t, w.hub, d.testNode, d.link)
		}
	}
}

// quiesce settles, has every device confirm everything, and compacts:
// every tombstone must go. The confirmations are handed to the hub here,
// as each device would send them within ackDelay of real time, which
// would dwarf the rest of the run (TestCompactAfterAcks waits for real
// ones).
func (w *simWorld) quiesce(i int) {
	t := w.t
	w.settle()
	head := w.hub.Head()
	tombs := 0
	for _, r := range records(t, w.hub.Store) {
		if r.Deleted {
			tombs++
		}
	}
	var names []string
	for _, d := range w.devs {
		if st := d.State(); st.LastSeq != head {
			t.Fatalf("step %d: %s at %d after settling, hub at %d", i, d.name, st.LastSeq, head)
		}
		confirm(w.hub, d.name, head)
		names = append(names, d.name)
	}
	n, err := w.hub.Compact(names)
	if err != nil || n != tombs {
		t.Fatalf("step %d: compact after every device confirmed %d: removed %d of %d tombstones, %v", i, head, n, tombs, err)
	}
	w.stats["tombstones compacted"] += n
	w.logf("%d: all in sync at %d; compact removed %d", i, head, n)
}

// finish settles and checks every node against the model.
func (w *simWorld) finish() {
	t := w.t
	w.settle()
	want := map[string]string{}
	for k, e := range w.want {
		if !e.deleted {
			want[k] = e.value
		}
	}
	for _, n := range append([]*testNode{w.hub}, w.nodes()...) {
		if got := dump(t, n.Store); !maps.Equal(got, want) {
			t.Errorf("%s does not hold the last writes:\n%s", n.opts.Node, diffStates(got, want))
		}
		recs := records(t, n.Store)
		for _, k := range slices.Sorted(maps.Keys(w.want)) {
			e, r := w.want[k], recs[k]
			if !e.deleted && r.Version != e.version {
				t.Errorf("%s holds %s at %v, want %v", n.opts.Node, k, r.Version, e.version)
			}
		}
	}
	for _, m := range w.warned.all() {
		t.Errorf("logged: %s", m)
	}
	for _, d := range w.devs {
		if st := d.State(); st.Refused != 0 {
			t.Errorf("%s had edits refused: %+v", d.name, st)
		}
		d.link.stopClean(t, d.name)
		d.link = nil
	}
	w.stats["keys live"] = len(want)
	w.stats["head"] = int(w.hub.Head())
	t.Logf("%v", w.stats)
}

func (w *simWorld) nodes() []*testNode {
	var out []*testNode
	for _, d := range w.devs {
		out = append(out, d.testNode)
	}
	return out
}
