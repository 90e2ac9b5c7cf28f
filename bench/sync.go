package bench

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"runtime/pprof"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	bolt "go.etcd.io/bbolt"

	zsync "github.com/pzone/pzone/sync"
	"github.com/pzone/pzone/transport"
	"github.com/pzone/pzone/zone/api"
	"github.com/pzone/pzone/zone/wire"
)

// The zone-state rows. They run against zones of their own, with the hub
// as its own process (pzh serve): devices live in this process (peer.Run,
// as pzp run would run them) for the propagation, wire-bytes and
// accepted-edits rows, and a new device is its own pzp pair process for
// the initial-sync rows, so its memory is its own.

const (
	// syncHeartbeat is the sync hubs' heartbeat: the longest allowed, so
	// that heartbeats add next to nothing to the wire bytes of edits.
	syncHeartbeat = wire.MaxHeartbeat
	// syncLoops is how many DataPut loops the accepted-edits row runs,
	// spread over its devices. A device commits concurrent local edits
	// together and pushes them in batches, so a few loops per device keep
	// its pipeline full.
	syncLoops = 32
	// syncApp is the application whose keys the rows write (appdata
	// bucket, keys APP/KEY).
	syncApp = "bench"
	// smallKeyLen and smallValueLen size the edits of the propagation and
	// wire-bytes rows: a short key and value, a typical small setting.
	smallKeyLen, smallValueLen = 16, 16
	// stateKeyLen and stateValueLen size the records of the initial-sync
	// rows: a short path and a small JSON-ish value.
	stateKeyLen, stateValueLen = 32, 64
	// echoSize is the raw echo message of the propagation baseline: about
	// the frame of one small change.
	echoSize = 64
	// applyChunk is the records per Apply when filling a hub's state;
	// Apply takes at most 10,000.
	applyChunk = 10000
	// syncWait bounds waiting for devices to come online and in sync, or
	// to drain their pushes: generous, so a slow machine reports a slow
	// figure rather than fails.
	syncWait = 3 * time.Minute
)

// syncBench holds the zones of the sync rows.
type syncBench struct {
	cfg *Config
	dir string
	hub *syncHub // the zone of the propagation and accepted-edits rows
	// pair are the two devices of the propagation rows, their stores on
	// the hub's file system like the raw baseline's commits.
	pair []*syncDevice
	// writers are the devices of the accepted-edits row. In a real zone
	// each has its own disk, so their stores are kept in RAM (ramDir)
	// where there is a RAM file system, so that their fsyncs do not queue
	// with the hub's on one disk; the hub is what the row measures.
	writers []*syncDevice
	ramDir  string
	// big and tenth hold SyncRecords and a tenth of that before they
	// start, for the initial-sync rows; made when first needed.
	big, tenth *syncHub
}

// ramFS is a RAM file system found on most Linux systems.
const ramFS = "/dev/shm"

func newSyncBench(ctx context.Context, cfg *Config) (*syncBench, error) {
	s := &syncBench{cfg: cfg, dir: filepath.Join(cfg.Work, "sync")}
	if err := os.MkdirAll(s.dir, 0o700); err != nil {
		return nil, err
	}
	var err error
	if s.hub, err = s.startHub(ctx, "small", 0); err != nil {
		return nil, err
	}
	if s.pair, err = s.hub.pairDevices(ctx, "pair", filepath.Join(s.dir, "pair"), 2); err != nil {
		s.close()
		return nil, err
	}
	writersDir := filepath.Join(s.dir, "writers")
	if dir, err := os.MkdirTemp(ramFS, "pzbench-writers"); err == nil {
		s.ramDir, writersDir = dir, dir
	} else {
		cfg.logf("sync: no RAM file system at %s (%v): the writing devices share the hub's disk", ramFS, err)
	}
	if s.writers, err = s.hub.pairDevices(ctx, "writer", writersDir, max(1, s.cfg.SyncDevices)); err != nil {
		s.close()
		return nil, err
	}
	return s, nil
}

func (s *syncBench) close() {
	if s.ramDir != "" {
		defer os.RemoveAll(s.ramDir)
	}
	var wg sync.WaitGroup
	for _, h := range []*syncHub{s.hub, s.big, s.tenth} {
		if h != nil {
			wg.Add(1)
			go func() { defer wg.Done(); stopChild(h.proc) }()
		}
	}
	wg.Wait()
}

// propagation: how long a small edit takes from DataPut on device A until
// device B's watch reports it (A commits, pushes; the hub commits, feeds;
// B commits, tells its watchers), p50 and p99, against one raw stream echo
// round trip plus three raw fsync'd commits; and the wire bytes B received
// per edit, against the edit's key and value.
func (s *syncBench) propagation(ctx context.Context, kind transport.Kind) ([]Row, error) {
	n, warm := s.cfg.SyncSamples, max(s.cfg.SyncSamples/10, 5)
	// Raw rounds alternate with edits, so that both see the same disk:
	// on a shared machine its fsyncs vary severalfold within seconds.
	rp, err := s.newRawPath(ctx, kind)
	if err != nil {
		return nil, fmt.Errorf("raw baseline: %w", err)
	}
	defer rp.close()
	a, b := s.pair[0], s.pair[1]
	run, err := runDevices(ctx, kind, s.pair)
	if err != nil {
		return nil, err
	}
	defer run.stop()

	type event struct {
		key string
		at  time.Time
	}
	events := make(chan event, 1024)
	wctx, stopWatch := context.WithCancel(ctx)
	watchEnded := make(chan struct{})
	var watchErr error
	go func() {
		defer close(watchEnded)
		watchErr = b.client.DataWatch(wctx, zsync.BucketAppData, syncApp+"/", true, func(r api.RecordView) error {
			select {
			case events <- event{r.Key, time.Now()}:
				return nil
			case <-wctx.Done():
				return wctx.Err()
			}
		})
	}()
	defer func() { stopWatch(); <-watchEnded }()

	value := bytes.Repeat([]byte{'v'}, smallValueLen)
	errLate := errors.New("not seen")
	// one puts key on A and waits until B's watch reports it.
	one := func(key string, timeout time.Duration) (time.Duration, error) {
		start := time.Now()
		if _, err := a.client.DataPut(ctx, zsync.BucketAppData, key, value); err != nil {
			return 0, fmt.Errorf("put on %s: %w", a.name, err)
		}
		t := time.NewTimer(timeout)
		defer t.Stop()
		for {
			select {
			case ev := <-events:
				if ev.key == key {
					return ev.at.Sub(start), nil
				}
			case <-t.C:
				return 0, errLate
			case <-watchEnded:
				return 0, fmt.Errorf("watch on %s ended: %w", b.name, watchErr)
			}
		}
	}
	// key is smallKeyLen bytes: APP/, a letter for the phase and the
	// transport, a number.
	key := func(phase byte, i int) string {
		p := syncApp + "/" + string([]byte{phase, string(kind)[0]})
		return fmt.Sprintf("%s%0*d", p, smallKeyLen-len(p), i)
	}
	// The watch is subscribed once B sees an edit; until then edits are
	// retried (there is no sign of the subscription itself).
	for i := 0; ; i++ {
		_, err := one(key('s', i), time.Second)
		if err == nil {
			break
		}
		if !errors.Is(err, errLate) || i == 30 {
			return nil, fmt.Errorf("watching for edits on %s: %w", b.name, err)
		}
	}
	for i := range warm {
		if _, err := rp.round(); err != nil {
			return nil, fmt.Errorf("raw baseline: %w", err)
		}
		if _, err := one(key('w', i), 10*time.Second); err != nil {
			return nil, err
		}
	}
	rp.commits = rp.commits[:0]
	a0, err := peerStatus(ctx, a)
	if err != nil {
		return nil, err
	}
	b0, err := peerStatus(ctx, b)
	if err != nil {
		return nil, err
	}
	lat, raw := make([]float64, 0, n), make([]float64, 0, n)
	for i := range n {
		r, err := rp.round()
		if err != nil {
			return nil, fmt.Errorf("raw baseline: %w", err)
		}
		raw = append(raw, ms(r))
		d, err := one(key('e', i), 10*time.Second)
		if err != nil {
			return nil, fmt.Errorf("edit %d: %w", i, err)
		}
		lat = append(lat, ms(d))
	}
	a1, err := peerStatus(ctx, a)
	if err != nil {
		return nil, err
	}
	b1, err := peerStatus(ctx, b)
	if err != nil {
		return nil, err
	}
	if a0.Session != a1.Session || b0.Session != b1.Session {
		return nil, errors.New("a session was replaced while wire bytes were counted")
	}
	per := func(x0, x1 uint64) float64 { return float64(x1-x0) / float64(n) }
	recv := per(b0.BytesReceived, b1.BytesReceived)
	p50, p99 := percentile(lat, .5), percentile(lat, .99)
	r50, r99 := percentile(raw, .5), percentile(raw, .99)
	commitP50 := median(rp.commits)
	s.cfg.logf("sync propagation %s: p50 %.3f ms, p99 %.3f ms; raw p50 %.3f ms, p99 %.3f ms (one commit %.3f ms)", kind, p50, p99, r50, r99, commitP50)
	note := fmt.Sprintf("DataPut on A until B's watch sees it, %d edits one at a time; raw, alternating: %d-byte %s stream echo + 3 fsync'd bbolt commits (one: %.3f ms p50)",
		n, echoSize, kind, commitP50)
	payload := float64(smallKeyLen + smallValueLen)
	return []Row{
		{Name: "sync propagation p50", Transport: string(kind), Value: p50, Unit: "ms", Baseline: r50, Ratio: ratio(p50, r50),
			Target: "report", Met: true, Runs: n, Note: note},
		{Name: "sync propagation p99", Transport: string(kind), Value: p99, Unit: "ms", Baseline: r99, Ratio: ratio(p99, r99),
			Target: "report", Met: true, Runs: n, Note: note},
		{Name: "sync wire bytes per edit", Transport: string(kind), Value: recv, Unit: "B", Baseline: payload, Ratio: ratio(recv, payload),
			Target: "report", Met: true, Runs: n,
			Note: fmt.Sprintf("received by B per %d-byte key + %d-byte value; B sent %.0f B (acks); A sent %.0f B, received %.0f B; heartbeat %v",
				smallKeyLen, smallValueLen, per(b0.BytesSent, b1.BytesSent), per(a0.BytesSent, a1.BytesSent), per(a0.BytesReceived, a1.BytesReceived), syncHeartbeat)},
	}, nil
}

// acceptedEdits: edits per second the hub accepts (the rise of its
// sequence number) while SyncDevices devices push edits as fast as their
// apps make them, against one writer's fsync'd single-record bbolt
// commits per second on the same file system: above 1× only because the
// hub commits concurrent edits together.
func (s *syncBench) acceptedEdits(ctx context.Context, kind transport.Kind) ([]Row, error) {
	window := s.cfg.SyncWindow
	// The raw rate is taken before and after, and averaged: on a shared
	// machine the disk's fsyncs vary severalfold within seconds.
	before, err := s.rawCommitRate(kind, window)
	if err != nil {
		return nil, fmt.Errorf("raw baseline: %w", err)
	}
	devs := s.writers
	run, err := runDevices(ctx, kind, devs)
	if err != nil {
		return nil, err
	}
	defer run.stop()

	wctx, stopWriters := context.WithCancel(ctx)
	defer stopWriters()
	var wg sync.WaitGroup
	var puts atomic.Int64
	var firstErr atomic.Pointer[error]
	value := bytes.Repeat([]byte{'v'}, stateValueLen)
	perDevice := max(syncLoops/len(devs), 1)
	for di, d := range devs {
		for w := range perDevice {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for i := 0; wctx.Err() == nil; i++ {
					key := fmt.Sprintf("%s/t%s-%d-%d-%d", syncApp, kind, di, w, i)
					if _, err := d.client.DataPut(wctx, zsync.BucketAppData, key, value); err != nil {
						if wctx.Err() == nil {
							err = fmt.Errorf("put on %s: %w", d.name, err)
							firstErr.CompareAndSwap(nil, &err)
							stopWriters()
						}
						return
					}
					puts.Add(1)
				}
			}()
		}
	}
	// hubSeq is the hub's sequence number as the first device last heard
	// it: every accepted change reaches every device at once.
	hubSeq := func() (uint64, time.Time, error) {
		st, err := peerStatus(ctx, devs[0])
		if err != nil {
			return 0, time.Time{}, err
		}
		if st.Sync == nil {
			return 0, time.Time{}, fmt.Errorf("device %s reports no sync state", devs[0].name)
		}
		return st.Sync.HubSeq, time.Now(), nil
	}
	hubCPU := -1.0 // share of one core the hub process used in the window
	sample := func() (float64, int64, error) {
		if err := sleep(wctx, window/5); err != nil { // ramp up
			return 0, 0, err
		}
		seq0, t0, err := hubSeq()
		if err != nil {
			return 0, 0, err
		}
		puts0 := puts.Load()
		cpu0, cpuErr := procCPU(s.hub.proc.Process.Pid)
		stopProfiles := s.profileSync(ctx, kind, window)
		err = sleep(wctx, window)
		stopProfiles()
		if err != nil {
			return 0, 0, err
		}
		seq1, t1, err := hubSeq()
		if err != nil {
			return 0, 0, err
		}
		if cpu1, err := procCPU(s.hub.proc.Process.Pid); err == nil && cpuErr == nil {
			hubCPU = float64(cpu1-cpu0) / float64(t1.Sub(t0))
		}
		return float64(seq1-seq0) / t1.Sub(t0).Seconds(), puts.Load() - puts0, nil
	}
	rate, made, err := sample()
	stopWriters()
	wg.Wait()
	if p := firstErr.Load(); p != nil {
		return nil, *p
	}
	if err != nil {
		return nil, err
	}
	// What the devices queued must reach the hub before the next row.
	drainStart := time.Now()
	if err := waitSynced(ctx, devs); err != nil {
		return nil, fmt.Errorf("draining pushes: %w", err)
	}
	drain := time.Since(drainStart)
	run.stop()
	after, err := s.rawCommitRate(kind, window)
	if err != nil {
		return nil, fmt.Errorf("raw baseline: %w", err)
	}
	base := (before + after) / 2
	where := "in RAM"
	if s.ramDir == "" {
		where = "on the hub's disk"
	}
	cpuNote := ""
	if hubCPU >= 0 && rate > 0 {
		cpuNote = fmt.Sprintf("; the hub used %.0f%% of a core, %.0f µs per edit", 100*hubCPU, hubCPU/rate*1e6)
	}
	s.cfg.logf("sync accepted edits %s: %.0f/s at the hub, apps put %.0f/s; raw commits %.0f/s; backlog drained in %v%s",
		kind, rate, float64(made)/window.Seconds(), base, drain.Round(time.Millisecond), cpuNote)
	return []Row{{Name: "sync accepted edits", Transport: string(kind), Value: rate, Unit: "edits/s", Baseline: base, Ratio: ratio(rate, base),
		Target: "> 1×", Met: ratio(rate, base) > 1, Runs: 1,
		Note: fmt.Sprintf("%d devices × %d DataPut loops for %v, every device applying every change, their stores %s; apps put %.0f/s%s; drained in %v; raw: 1 writer, 1 record per fsync'd bbolt commit, %.0f/s before and %.0f/s after",
			len(devs), perDevice, window, where, float64(made)/window.Seconds(), cpuNote, drain.Round(time.Millisecond), before, after)}}, nil
}

// profileSync, with Config.ProfileDir set, saves CPU profiles of the
// sync hub (sync-hub-KIND.pprof, through its admin socket) and of this
// process, which runs the devices (sync-devices-KIND.pprof), over the
// next window; the returned function ends them.
func (s *syncBench) profileSync(ctx context.Context, kind transport.Kind, window time.Duration) (stop func()) {
	return profileWindow(ctx, s.cfg, s.hub.client, "sync", kind, window)
}

// profileWindow, with Config.ProfileDir set, saves CPU profiles of the
// hub answering on hub's socket (PREFIX-hub-KIND.pprof) and of this
// process, which runs the devices (PREFIX-devices-KIND.pprof), over the
// next window; the returned function ends them.
func profileWindow(ctx context.Context, cfg *Config, hub *api.Client, prefix string, kind transport.Kind, window time.Duration) (stop func()) {
	if cfg.ProfileDir == "" {
		return func() {}
	}
	hubDone := make(chan struct{})
	go func() {
		defer close(hubDone)
		path := filepath.Join(cfg.ProfileDir, prefix+"-hub-"+string(kind)+".pprof")
		out, err := os.Create(path)
		if err == nil {
			err = hub.Fetch(ctx, fmt.Sprintf("/debug/pprof/profile?seconds=%d", max(int(window.Seconds()), 1)), out)
			if cerr := out.Close(); err == nil {
				err = cerr
			}
		}
		if err != nil {
			cfg.logf("profile of the %s hub: %v", prefix, err)
		}
	}()
	out, err := os.Create(filepath.Join(cfg.ProfileDir, prefix+"-devices-"+string(kind)+".pprof"))
	if err == nil {
		if err = pprof.StartCPUProfile(out); err != nil {
			out.Close()
		}
	}
	if err != nil {
		cfg.logf("profile of the devices: %v", err)
		return func() { <-hubDone }
	}
	return func() {
		pprof.StopCPUProfile()
		out.Close()
		<-hubDone
	}
}

// procCPU is the CPU time (user and system) process pid has used, from
// /proc (Linux; its clock tick is 1/100 s on every architecture Go runs
// on there).
func procCPU(pid int) (time.Duration, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0, err
	}
	// The command name, field 2, is in parentheses and may hold spaces.
	i := bytes.LastIndexByte(b, ')')
	if i < 0 {
		return 0, errors.New("unreadable /proc stat")
	}
	f := strings.Fields(string(b[i+1:]))
	if len(f) < 13 {
		return 0, errors.New("unreadable /proc stat")
	}
	var utime, stime int64
	if _, err := fmt.Sscan(f[11]+" "+f[12], &utime, &stime); err != nil {
		return 0, err
	}
	return time.Duration(utime+stime) * 10 * time.Millisecond, nil
}

// rawCommitRate is how many fsync'd single-record bbolt commits one
// writer makes per second.
func (s *syncBench) rawCommitRate(kind transport.Kind, window time.Duration) (float64, error) {
	db, err := openRawDB(s.dir, "raw-commits-"+string(kind))
	if err != nil {
		return 0, err
	}
	defer db.close()
	window = max(window/5, 100*time.Millisecond)
	n, start := 0, time.Now()
	for ; time.Since(start) < window; n++ {
		if err := db.commit(); err != nil {
			return 0, err
		}
	}
	return float64(n) / time.Since(start).Seconds(), nil
}

// pairRun is the outcome of one pzp pair process.
type pairRun struct {
	pairOutput
	rssKiB    int64 // peak resident set
	helperKiB int64 // that of the process that started it: rssKiB is at least this
	anonKiB   int64 // peak anonymous resident set (heap, stacks), sampled
	storeSize int64 // its zone state file, after
}

// pairProcess pairs a new device with h as its own pzp pair --json
// process, and reports how it went.
func (s *syncBench) pairProcess(ctx context.Context, h *syncHub, kind transport.Kind, name string, noSync bool) (*pairRun, error) {
	token, err := h.invite(ctx, name, 1)
	if err != nil {
		return nil, err
	}
	dir := filepath.Join(s.dir, name)
	// The peak RSS a process reports includes that of the process it was
	// started from (fork and exec keep the high-water mark), so pzp pair
	// is started by a small helper (ChildMain's "maxrss") that reports it.
	rssFile := filepath.Join(s.dir, name+".maxrss")
	args := append([]string{"maxrss", rssFile}, s.cfg.PairCommand...)
	args = append(args, "--data", dir, "--transport", string(kind), "--log-level", "error", "--json")
	if noSync {
		args = append(args, "--no-sync")
	}
	args = append(args, token)
	var stdout, stderr bytes.Buffer
	cmd := exec.CommandContext(ctx, s.cfg.Self, args...)
	cmd.Stdout, cmd.Stderr = &stdout, &stderr // stderr: a progress bar, if it thought it had a terminal
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	cmd.Cancel = func() error { return syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL) }
	if err := cmd.Run(); err != nil {
		return nil, fmt.Errorf("%v: %w: %s", s.cfg.PairCommand, err, strings.TrimSpace(stderr.String()))
	}
	var r pairRun
	if err := json.Unmarshal(stdout.Bytes(), &r.pairOutput); err != nil {
		return nil, fmt.Errorf("%v: reading its output %q: %w", s.cfg.PairCommand, stdout.String(), err)
	}
	if !noSync && !r.Synced {
		return nil, fmt.Errorf("%v did not finish its first sync: %s", s.cfg.PairCommand, strings.TrimSpace(stderr.String()))
	}
	b, err := os.ReadFile(rssFile)
	if err == nil {
		_, err = fmt.Sscan(string(b), &r.rssKiB, &r.helperKiB, &r.anonKiB)
	}
	if err != nil {
		return nil, fmt.Errorf("peak RSS of %v: %w", s.cfg.PairCommand, err)
	}
	if fi, err := os.Stat(filepath.Join(dir, zsync.FileName)); err == nil {
		r.storeSize = fi.Size()
	}
	return &r, nil
}

// initialSync: how long a new device (pzp pair, its own process) takes to
// receive a zone state of SyncRecords records, against sending the same
// bytes over a raw stream and fsyncing them once; and its peak memory,
// against the same process paired without syncing, with the peak at a
// tenth of the size to show whether memory is bounded.
func (s *syncBench) initialSync(ctx context.Context, kind transport.Kind) ([]Row, error) {
	if s.big == nil {
		n := max(s.cfg.SyncRecords, 10)
		var err error
		if s.big, err = s.startHub(ctx, "big", n); err != nil {
			return nil, err
		}
		if s.tenth, err = s.startHub(ctx, "tenth", n/10); err != nil {
			return nil, err
		}
	}
	// A new device's first sync, Runs times (median); the raw transfer
	// before each and after the last (median): on a shared machine the
	// disk's fsyncs vary severalfold within seconds.
	runs := max(s.cfg.Runs, 1)
	var raws, secs []float64
	var full *pairRun
	for i := range runs + 1 {
		r, err := s.rawBulk(ctx, kind, s.big.wireBytes)
		if err != nil {
			return nil, fmt.Errorf("raw baseline: %w", err)
		}
		raws = append(raws, r.Seconds())
		if i == runs {
			break
		}
		p, err := s.pairProcess(ctx, s.big, kind, fmt.Sprintf("full-%s-%d", kind, i), false)
		if err != nil {
			return nil, err
		}
		secs = append(secs, p.SyncSeconds)
		if full == nil || p.rssKiB > full.rssKiB {
			full = p // the largest peak
		}
	}
	sec, raw := median(secs), median(raws)
	floor, err := s.pairProcess(ctx, s.big, kind, "nosync-"+string(kind), true)
	if err != nil {
		return nil, err
	}
	tenth, err := s.pairProcess(ctx, s.tenth, kind, "tenth-"+string(kind), false)
	if err != nil {
		return nil, err
	}
	load, err := s.rawLoad(kind, s.big.records)
	if err != nil {
		return nil, fmt.Errorf("raw bbolt load: %w", err)
	}
	mb := func(b int64) float64 { return float64(b) / (1 << 20) }
	mib := func(kib int64) float64 { return float64(kib) / 1024 }
	s.cfg.logf("initial sync %s: %d records in %.2fs (runs %.2f), %d in %.2fs (raw transfer %.3fs, raw bbolt load %.3fs); peak RSS %.1f MiB (anon %.1f), %.1f MiB (anon %.1f) at a tenth, %.1f MiB without sync",
		kind, full.Records, sec, secs, tenth.Records, tenth.SyncSeconds, raw, load.Seconds(),
		mib(full.rssKiB), mib(full.anonKiB), mib(tenth.rssKiB), mib(tenth.anonKiB), mib(floor.rssKiB))
	memNote := fmt.Sprintf("largest peak of pzp pair vs pzp pair --no-sync; a tenth (%d records): %.1f MiB; anonymous (heap, stacks; sampled) %.1f and %.1f MiB, the rest mostly the store file, which bbolt maps (%.1f and %.1f MiB)",
		tenth.Records, mib(tenth.rssKiB), mib(full.anonKiB), mib(tenth.anonKiB), mb(full.storeSize), mb(tenth.storeSize))
	if helper := max(full.helperKiB, floor.helperKiB, tenth.helperKiB); min(full.rssKiB, floor.rssKiB, tenth.rssKiB) <= helper {
		memNote += fmt.Sprintf("; NOT MEASURED: at or below the %d KiB of the measuring process", helper)
	}
	return []Row{
		{Name: "initial sync", Transport: string(kind), Value: sec, Unit: "s", Baseline: raw, Ratio: ratio(sec, raw),
			Target: "report", Met: true, Runs: runs,
			Note: fmt.Sprintf("pzp pair: %d records (%.1f MB as sent), a tenth in %.3f s; raw: the same bytes over one %s stream, then one fsync; raw bbolt load of the records, %d per commit: %.3f s",
				full.Records, mb(s.big.wireBytes), tenth.SyncSeconds, kind, rawLoadBatch, load.Seconds())},
		{Name: "initial sync vs bbolt load", Transport: string(kind), Value: sec, Unit: "s", Baseline: load.Seconds(), Ratio: ratio(sec, load.Seconds()),
			Target: fmt.Sprintf("≤ %.1f×", targetSyncLoad), Met: ratio(sec, load.Seconds()) <= targetSyncLoad, Runs: runs,
			Note: fmt.Sprintf("pzp pair of %d records against loading the same records into a bbolt file, %d per commit, in this process", full.Records, rawLoadBatch)},
		{Name: "initial sync peak RSS", Transport: string(kind), Value: mib(full.rssKiB), Unit: "MiB", Baseline: mib(floor.rssKiB), Ratio: ratio(float64(full.rssKiB), float64(floor.rssKiB)),
			Target: "report", Met: true, Runs: runs, Note: memNote},
	}, nil
}

// rawLoadBatch is the records per commit of the raw bbolt load: as many as
// a device applies from one batch of the sync stream.
const rawLoadBatch = 1024

// rawLoad times putting n records of the initial-sync size into a fresh
// bbolt file, rawLoadBatch per fsync'd commit: the storage floor of a
// first sync, for the note.
func (s *syncBench) rawLoad(kind transport.Kind, n int) (time.Duration, error) {
	db, err := openRawDB(s.dir, "raw-load-"+string(kind))
	if err != nil {
		return 0, err
	}
	defer db.close()
	start := time.Now()
	for i := 0; i < n; i += rawLoadBatch {
		err := db.db.Update(func(tx *bolt.Tx) error {
			b, err := tx.CreateBucketIfNotExists([]byte("raw"))
			if err != nil {
				return err
			}
			for j := i; j < min(i+rawLoadBatch, n); j++ {
				if err := b.Put(fmt.Appendf(nil, "%0*d", stateKeyLen, j), db.val); err != nil {
					return err
				}
			}
			return nil
		})
		if err != nil {
			return 0, err
		}
	}
	return time.Since(start), nil
}

// rawBulk times sending size bytes over a new raw stream of kind, to a
// receiver that writes them to a file and fsyncs it once, from the dial
// until the receiver's answer.
func (s *syncBench) rawBulk(ctx context.Context, kind transport.Kind, size int64) (time.Duration, error) {
	srv, addr, ccfg, err := startRawLocal(kind, rawStreams(s.dir))
	if err != nil {
		return 0, err
	}
	defer srv.close()
	start := time.Now()
	c, err := transport.Dial(ctx, addr, transport.Mode(kind), ccfg)
	if err != nil {
		return 0, err
	}
	defer c.CloseWithError(0, "")
	st, err := c.OpenStream(ctx)
	if err != nil {
		return 0, err
	}
	defer st.Reset()
	if _, err := st.Write([]byte{rawSink}); err != nil {
		return 0, err
	}
	buf := make([]byte, 64<<10)
	for left := size; left > 0; left -= int64(len(buf)) {
		if _, err := st.Write(buf[:min(int64(len(buf)), left)]); err != nil {
			return 0, err
		}
	}
	if err := st.Close(); err != nil {
		return 0, err
	}
	if _, err := io.ReadFull(st, buf[:1]); err != nil {
		return 0, fmt.Errorf("no answer from the raw receiver: %w", err)
	}
	return time.Since(start), nil
}
