package cli

import (
	"bytes"
	"context"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	bolt "go.etcd.io/bbolt"

	"github.com/pzone/pzone/zone/api"
)

// The fault matrix (make faults; part of make test as root): the real pzh
// and pzp in network namespaces the test makes (netlab_test.go), under
// the faults people's networks have. Each row logs its figures as
// "fault row N: ...", which README's "What pzone survives" quotes.

// labHubPort is the hub's port in the lab (its own namespace: always free).
const labHubPort = "7443"

// labZone is a zone in a lab: the hub in its namespace, devices in the
// devices' namespace behind the router.
type labZone struct {
	lab    *netLab
	env    []string
	dir    string
	hubDir string
	hub    *proc // the hub serving now
}

// newLabZone makes a zone and serves its hub in the lab, with serveArgs
// added to pzh serve.
func newLabZone(t *testing.T, lab *netLab, serveArgs ...string) *labZone {
	t.Helper()
	dir := t.TempDir()
	z := &labZone{lab: lab, dir: dir, hubDir: filepath.Join(dir, "hub"),
		env: append(os.Environ(), "HOME="+dir, "GORACE=atexit_sleep_ms=0")}
	addr := labHubIP + ":" + labHubPort
	run(t, z.env, "", "pzh", "--data", z.hubDir, "init", "--zone", "lab", "--public-addr", addr)
	z.serve(t, serveArgs...)
	return z
}

// serve starts the hub (again).
func (z *labZone) serve(t *testing.T, args ...string) *proc {
	t.Helper()
	name, argv := z.lab.cmd(z.lab.hub, append([]string{"pzh", "--data", z.hubDir, "serve", "--listen", labHubIP + ":" + labHubPort}, args...)...)
	z.hub = daemon(t, z.env, name, argv...)
	run(t, z.env, "", "pzh", "--data", z.hubDir, "wait", "ready", "--timeout", "60s")
	return z.hub
}

// pair pairs device name in the devices' namespace and runs it there
// with runArgs, returning its data directory once it is online, and how
// long pairing took.
func (z *labZone) pair(t *testing.T, name string, runArgs ...string) (string, time.Duration) {
	t.Helper()
	return z.pairIn(t, z.lab.dev, name, runArgs...)
}

// pairIn is pair in namespace ns.
func (z *labZone) pairIn(t *testing.T, ns, name string, runArgs ...string) (string, time.Duration) {
	t.Helper()
	devDir := filepath.Join(z.dir, name)
	token := strings.TrimSpace(run(t, z.env, "", "pzh", "--data", z.hubDir, "invite", "--device", name))
	start := time.Now()
	pzp, argv := z.lab.cmd(ns, "pzp", "--data", devDir, "pair", "--no-sync", token)
	run(t, z.env, "", pzp, argv...)
	took := time.Since(start)
	pzp, argv = z.lab.cmd(ns, append([]string{"pzp", "--data", devDir, "run"}, runArgs...)...)
	daemon(t, z.env, pzp, argv...)
	run(t, z.env, "", "pzh", "--data", z.hubDir, "wait", "online", name, "--timeout", "120s")
	return devDir, took
}

// devices is the hub's view of its devices.
func (z *labZone) devices(t *testing.T) map[string]api.DeviceView {
	t.Helper()
	return devicesOf(t, z.env, z.hubDir)
}

// waitDevice long-polls the hub's devices until cond holds for device
// name, and returns how long that took.
func (z *labZone) waitDevice(t *testing.T, name string, what string, cond func(api.DeviceView) bool) time.Duration {
	t.Helper()
	start := time.Now()
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	c := api.NewClient(api.SocketPath(z.hubDir, api.HubSocketName))
	var last api.DeviceView
	_, err := watch(ctx, c, "/v1/devices", func(v *api.DevicesView) uint64 { return v.Version }, func(v *api.DevicesView) bool {
		for _, d := range v.Devices {
			if d.Name == name {
				last = d
				return cond(d)
			}
		}
		return false
	})
	if err != nil {
		t.Fatalf("device %s not %s: %v (last seen %+v)", name, what, err, last)
	}
	return time.Since(start)
}

// loadRecords imports n records under prefix into the hub's zone state.
func (z *labZone) loadRecords(t *testing.T, prefix string, n int) {
	t.Helper()
	var b bytes.Buffer
	enc := json.NewEncoder(&b)
	for i := range n {
		text := fmt.Sprintf("record %d of %d, with a little padding.....", i, n)
		enc.Encode(api.ImportLine{Key: fmt.Sprintf("%s/%06d", prefix, i), Text: &text})
	}
	f := filepath.Join(z.dir, prefix+".ndjson")
	if err := os.WriteFile(f, b.Bytes(), 0o600); err != nil {
		t.Fatal(err)
	}
	run(t, z.env, "", "pzh", "--data", z.hubDir, "data", "import", f)
}

// TestFaultLossAndDelay (row 1): on a link that loses 5 % of its packets
// (and, where the kernel has netem, delays them 100 ms ± 20 ms), pairing,
// a sync of 1,000 records, 100 calls and a 10 MB stream all complete;
// their times are logged against the same on a clean link.
func TestFaultLossAndDelay(t *testing.T) {
	t.Parallel() // each row in its own namespaces; most of their time is the faults\' own waits
	lab := newNetLab(t)
	z := newLabZone(t, lab)
	// b, beside the hub, serves echo and takes streams; a, behind the
	// faulty link, pairs, syncs, calls, streams: every packet of it
	// crosses the link.
	bDir, _ := z.pairIn(t, lab.hub, "b")
	daemon(t, z.env, "pzp", "--data", bDir, "serve", "echo")
	bc := deviceClient(bDir)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	ln, err := bc.Listen(ctx, "sink")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	go func() {
		for {
			st, err := ln.AcceptStream()
			if err != nil {
				return
			}
			go func() {
				n, _ := io.Copy(io.Discard, st)
				fmt.Fprintf(st, "%d\n", n)
				st.Close()
			}()
		}
	}()

	type figures struct{ pair, sync, calls, stream time.Duration }
	measure := func(phase string) figures {
		t.Helper()
		var f figures
		dev := "a-" + phase
		aDir, took := z.pair(t, dev)
		f.pair = took
		z.loadRecords(t, phase, 1000)
		start := time.Now()
		run(t, z.env, "", "pzp", "--data", aDir, "wait", "synced", "--timeout", "5m")
		f.sync = time.Since(start)
		ac := deviceClient(aDir)
		start = time.Now()
		for i := range 100 {
			cctx, ccancel := context.WithTimeout(ctx, 2*time.Minute)
			res, err := ac.Call(cctx, "b/echo", "echo", fmt.Sprintf("call %d", i))
			ccancel()
			if err != nil || !strings.Contains(string(res), fmt.Sprintf("call %d", i)) {
				t.Fatalf("%s: call %d: %v %s", phase, i, err, res)
			}
		}
		f.calls = time.Since(start)
		start = time.Now()
		sctx, scancel := context.WithTimeout(ctx, 5*time.Minute)
		defer scancel()
		st, err := ac.Dial(sctx, "b/sink")
		if err != nil {
			t.Fatalf("%s: dial: %v", phase, err)
		}
		const size = 10 << 20
		if _, err := io.CopyN(st, zeros{}, size); err != nil {
			t.Fatalf("%s: stream: %v", phase, err)
		}
		st.CloseWrite()
		got, err := io.ReadAll(st)
		st.Close()
		if err != nil || strings.TrimSpace(string(got)) != fmt.Sprint(size) {
			t.Fatalf("%s: the sink counted %q of %d bytes: %v", phase, got, size, err)
		}
		f.stream = time.Since(start)
		return f
	}
	clean := measure("clean")
	what := lab.lossy(5, "100ms 20ms")
	bad := measure("lossy")
	t.Logf("fault row 1: %s (%d packets dropped): pairing %v (clean %v), sync of 1,000 records %v (%v), 100 calls %v (%v), 10 MB stream %v (%v)",
		what, lab.dropped(), bad.pair.Round(time.Millisecond), clean.pair.Round(time.Millisecond), bad.sync.Round(time.Millisecond), clean.sync.Round(time.Millisecond),
		bad.calls.Round(time.Millisecond), clean.calls.Round(time.Millisecond), bad.stream.Round(time.Millisecond), clean.stream.Round(time.Millisecond))
}

// zeros reads as zero bytes forever.
type zeros struct{}

func (zeros) Read(p []byte) (int, error) { clear(p); return len(p), nil }

// TestFaultPartition (row 2): the device's link goes down for 30 s. The
// hub marks the device offline within its heartbeat bound; the device
// keeps the edits made meanwhile; once the link is back it is online by
// itself within its backoff, and every edit it acknowledged is on the hub.
func TestFaultPartition(t *testing.T) {
	t.Parallel() // each row in its own namespaces; most of their time is the faults\' own waits
	lab := newNetLab(t)
	const hb = 2 * time.Second
	z := newLabZone(t, lab, "--heartbeat", hb.String())
	aDir, _ := z.pair(t, "a", "--backoff-max", "5s")
	down := time.Now()
	lab.devLink(false)
	offline := z.waitDevice(t, "a", "offline", func(d api.DeviceView) bool { return d.State != "online" })
	for i := range 3 {
		run(t, z.env, "", "pzp", "--data", aDir, "data", "set", fmt.Sprintf("notes/offline-%d", i), "made while cut off")
	}
	<-time.After(time.Until(down.Add(30 * time.Second))) // the fault under test: the link stays down 30 s
	lab.devLink(true)
	back := z.waitDevice(t, "a", "online again", func(d api.DeviceView) bool { return d.State == "online" })
	run(t, z.env, "", "pzp", "--data", aDir, "wait", "synced", "--timeout", "2m")
	for i := range 3 {
		if got := run(t, z.env, "", "pzh", "--data", z.hubDir, "data", "get", fmt.Sprintf("notes/offline-%d", i)); strings.TrimSpace(got) != "made while cut off" {
			t.Fatalf("edit %d made offline is %q on the hub", i, got)
		}
	}
	bound := 3*hb + hb + hb // three heartbeats missed, the one in flight, and the look every heartbeat
	t.Logf("fault row 2: link down 30 s: hub marked the device offline after %v (bound %v); online again %v after the link came back (backoff at most 5 s); 3 offline edits landed",
		offline.Round(time.Millisecond), bound, back.Round(time.Millisecond))
	if offline > 10*bound {
		t.Errorf("the hub took %v to see the device gone (heartbeat bound %v)", offline, bound)
	}
}

// TestFaultUDPBlocked (row 3): UDP is dropped while the device's session
// runs over QUIC: the device moves to TCP by itself.
func TestFaultUDPBlocked(t *testing.T) {
	t.Parallel() // each row in its own namespaces; most of their time is the faults\' own waits
	lab := newNetLab(t)
	const hb = 2 * time.Second
	z := newLabZone(t, lab, "--heartbeat", hb.String())
	aDir, _ := z.pair(t, "a", "--backoff-max", "5s")
	if d := z.devices(t)["a"]; d.Transport != "quic" {
		t.Fatalf("the session runs over %q, not QUIC", d.Transport)
	}
	lab.blockUDP()
	moved := z.waitDevice(t, "a", "on TCP", func(d api.DeviceView) bool { return d.State == "online" && d.Transport == "tcp" })
	run(t, z.env, "", "pzp", "--data", aDir, "data", "set", "notes/over-tcp", "yes")
	run(t, z.env, "", "pzp", "--data", aDir, "wait", "synced", "--timeout", "2m")
	bound := 4*hb + 5*time.Second // the dead session seen, then one backoff
	t.Logf("fault row 3: UDP dropped mid-session (%d packets dropped): the device was back over TCP after %v (bound %v: heartbeats missed, then its backoff)", lab.dropped(), moved.Round(time.Millisecond), bound)
	if moved > 10*bound {
		t.Errorf("moving to TCP took %v (bound %v)", moved, bound)
	}
}

// TestFaultNATRebinding (row 4): the router's NAT maps the device to a
// new port and forgets the old mapping, with nothing told to the device:
// the QUIC session goes on (migrated) or the device reconnects by itself.
func TestFaultNATRebinding(t *testing.T) {
	t.Parallel() // each row in its own namespaces; most of their time is the faults\' own waits
	lab := newNetLab(t)
	const hb = 2 * time.Second
	z := newLabZone(t, lab, "--heartbeat", hb.String())
	aDir, _ := z.pair(t, "a", "--backoff-max", "5s")
	before := z.devices(t)["a"]
	lab.rebind(40000, 40999)
	// Traffic after the rebinding: an edit, which must reach the hub.
	start := time.Now()
	run(t, z.env, "", "pzp", "--data", aDir, "data", "set", "notes/after-rebind", "yes")
	run(t, z.env, "", "pzp", "--data", aDir, "wait", "synced", "--timeout", "2m")
	took := time.Since(start)
	after := z.waitDevice(t, "a", "online from the new port", func(d api.DeviceView) bool {
		return d.State == "online" && d.RemoteAddr != before.RemoteAddr && strings.Contains(d.RemoteAddr, ":40")
	})
	how := "the same session, migrated"
	if now := z.devices(t)["a"]; now.Since == nil || before.Since == nil || !now.Since.Equal(*before.Since) {
		how = "a new session"
	}
	if got := run(t, z.env, "", "pzh", "--data", z.hubDir, "data", "get", "notes/after-rebind"); strings.TrimSpace(got) != "yes" {
		t.Fatalf("the edit after the rebinding is %q on the hub", got)
	}
	t.Logf("fault row 4: NAT rebinding (new port, mappings flushed): an edit reached the hub after %v; the hub showed the new address %v after the rebinding (%s)",
		took.Round(time.Millisecond), (took + after).Round(time.Millisecond), how)
}

// fillDisk fills the file system of dir, leaving about leave bytes, with
// a file it returns (remove it to free the space).
func fillDisk(t *testing.T, dir string, leave int64) string {
	t.Helper()
	var st syscall.Statfs_t
	if err := syscall.Statfs(dir, &st); err != nil {
		t.Fatal(err)
	}
	free := int64(st.Bavail) * st.Bsize
	path := filepath.Join(dir, "filler")
	f, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	buf := make([]byte, 64<<10)
	for n := free - leave; n > 0; n -= int64(len(buf)) {
		if _, err := f.Write(buf[:min(int64(len(buf)), n)]); err != nil {
			break // full already
		}
	}
	f.Sync()
	return path
}

// TestFaultDiskFull (row 7): the hub's data directory is on a small
// tmpfs that fills up. Edits, pairing and queued messages are refused
// with a clear error (nothing acknowledged is lost, nothing half-written),
// the sessions stay up, and once space is freed everything works again
// without a restart; bbolt's own check finds the stores whole.
func TestFaultDiskFull(t *testing.T) {
	t.Parallel() // each row in its own namespaces; most of their time is the faults\' own waits
	if os.Geteuid() != 0 {
		t.Skip("fault matrix: needs root to mount a small tmpfs (run make faults as root)")
	}
	dir := t.TempDir()
	env := append(os.Environ(), "HOME="+dir, "GORACE=atexit_sleep_ms=0")
	hubDir := filepath.Join(dir, "hub")
	if err := os.Mkdir(hubDir, 0o700); err != nil {
		t.Fatal(err)
	}
	if out, err := exec.Command("mount", "-t", "tmpfs", "-o", "size=16m,mode=0700", "tmpfs", hubDir).CombinedOutput(); err != nil {
		t.Skipf("fault matrix: cannot mount a tmpfs here: %v %s", err, out)
	}
	t.Cleanup(func() { exec.Command("umount", "-l", hubDir).Run() })
	port, ok := freePort()
	if !ok {
		t.Fatal("no free port")
	}
	addr := fmt.Sprintf("127.0.0.1:%d", port)
	run(t, env, "", "pzh", "--data", hubDir, "init", "--zone", "full", "--public-addr", addr)
	hub := daemon(t, env, "pzh", "--data", hubDir, "serve", "--listen", addr)
	run(t, env, "", "pzh", "--data", hubDir, "wait", "ready", "--timeout", "60s")
	procs := map[string]*proc{}
	pair := func(name string) string {
		devDir := filepath.Join(dir, name)
		token := strings.TrimSpace(run(t, env, "", "pzh", "--data", hubDir, "invite", "--device", name))
		run(t, env, "", "pzp", "--data", devDir, "pair", "--no-sync", token)
		procs[name] = daemon(t, env, "pzp", "--data", devDir, "run", "--backoff-max", "2s")
		run(t, env, "", "pzh", "--data", hubDir, "wait", "online", name, "--timeout", "60s")
		return devDir
	}
	aDir := pair("a")
	// c goes offline: messages for it wait at the hub, in its queue.
	pair("c")
	procs["c"].stop(t)
	run(t, env, "", "pzh", "--data", hubDir, "wait", "offline", "c", "--timeout", "60s")
	message := `"` + strings.Repeat("m", 100<<10) + `"`
	run(t, env, "", "pzp", "--data", aDir, "data", "set", "notes/before", "kept")
	run(t, env, "", "pzp", "--data", aDir, "wait", "synced", "--timeout", "60s")

	big := filepath.Join(dir, "big")
	if err := os.WriteFile(big, bytes.Repeat([]byte("x"), 200<<10), 0o600); err != nil {
		t.Fatal(err)
	}
	filler := fillDisk(t, hubDir, 0)
	// An edit that needs room: refused, saying so; nothing of it kept.
	out, err := runErr(env, "pzh", "--data", hubDir, "data", "set", "notes/hub-edit", "@"+big)
	if err == nil {
		t.Fatalf("an edit on a full disk was acknowledged: %s", out)
	}
	if !strings.Contains(out, "disk") || !strings.Contains(out, "full") {
		t.Errorf("the refusal does not say the disk is full: %s", out)
	}
	hubOut := firstLine(out)
	// A message to keep for c: refused, saying so.
	out, err = runErr(env, "pzp", "--data", aDir, "send", "--ttl", "1h", "c/inbox", message)
	if err == nil {
		t.Fatalf("a message was queued on a full disk: %s", out)
	}
	if !strings.Contains(out, "disk") || !strings.Contains(out, "full") {
		t.Errorf("the refused message does not say the disk is full: %s", out)
	}
	msgOut := firstLine(out)
	// Pairing a device: refused, saying so (an invite fits in the space
	// pzh.db has; recording a device and its certificate does not).
	token := strings.TrimSpace(run(t, env, "", "pzh", "--data", hubDir, "invite", "--device", "d"))
	out, err = runErr(env, "pzp", "--data", filepath.Join(dir, "d"), "pair", "--no-sync", token)
	pairOut := firstLine(out)
	if err == nil {
		t.Logf("pairing on a full disk went through (it fit in the space the stores had): %s", pairOut)
		pairOut = "it fit"
	} else if !strings.Contains(out, "disk is full") {
		t.Errorf("the refused pairing does not say the disk is full: %s", out)
	}
	// The device's edits: kept on the device, pushed again later.
	for i := range 3 {
		run(t, env, "", "pzp", "--data", aDir, "data", "set", fmt.Sprintf("notes/while-full-%d", i), "@"+big)
	}
	if d := devicesOf(t, env, hubDir)["a"]; d.State != "online" {
		t.Fatalf("the device's session did not stay up: %+v", d)
	}
	// Space again: the device's edits land, pairing works, no restart.
	if err := os.Remove(filler); err != nil {
		t.Fatal(err)
	}
	run(t, env, "", "pzp", "--data", aDir, "wait", "synced", "--timeout", "2m")
	for i := range 3 {
		if got := run(t, env, "", "pzh", "--data", hubDir, "data", "get", fmt.Sprintf("notes/while-full-%d", i)); len(got) < 200<<10 {
			t.Fatalf("edit %d made while the disk was full: %d bytes on the hub", i, len(got))
		}
	}
	run(t, env, "", "pzh", "--data", hubDir, "data", "set", "notes/hub-edit", "after")
	if out := run(t, env, "", "pzp", "--data", aDir, "send", "--ttl", "1h", "c/inbox", message); !strings.Contains(out, "queued") {
		t.Errorf("the message after space was freed: %s", out)
	}
	if pairOut != "it fit" {
		pairOut = "refused: " + pairOut
	} else {
		// d paired while the disk was full: its certificate reaches the
		// zone state once there is room, with no restart.
		wctx, wcancel := context.WithTimeout(context.Background(), 3*time.Minute)
		defer wcancel()
		w := exec.CommandContext(wctx, "pzh", "--data", hubDir, "data", "watch", "--bucket", "certs", "device/d", "--count", "1")
		w.Env = env
		if out, err := w.CombinedOutput(); err != nil {
			t.Fatalf("the certificate of the device paired on a full disk is not in the zone state: %v %s", err, out)
		}
	}
	bDir := pair("b")
	run(t, env, "", "pzp", "--data", bDir, "wait", "synced", "--timeout", "60s")
	if got := run(t, env, "", "pzp", "--data", bDir, "data", "get", "notes/before"); strings.TrimSpace(got) != "kept" {
		t.Fatalf("the edit from before: %q", got)
	}
	hub.stop(t)
	for _, name := range []string{"pzh.db", "sync.db", "mailbox.db"} {
		checkBolt(t, filepath.Join(hubDir, name))
	}
	t.Logf("fault row 7: a full disk refused the hub's edit (%q) a message to queue (%q) and a pairing (%q), and kept the device's session up; the device's edits made meanwhile landed once space was freed, a message was queued and a new device paired, with no restart; bbolt's check finds the stores whole", hubOut, msgOut, pairOut)
}

// checkBolt runs bbolt's consistency check on the store at path.
func checkBolt(t *testing.T, path string) {
	t.Helper()
	db, err := bolt.Open(path, 0o600, &bolt.Options{ReadOnly: true, Timeout: 10 * time.Second})
	if err != nil {
		t.Fatalf("%s: %v", path, err)
	}
	defer db.Close()
	if err := db.View(func(tx *bolt.Tx) error {
		for err := range tx.Check() {
			return err
		}
		return nil
	}); err != nil {
		t.Errorf("%s: bbolt check: %v", path, err)
	}
}

func firstLine(s string) string { l, _, _ := strings.Cut(strings.TrimSpace(s), "\n"); return l }

// devicesOf is the hub's view of its devices, by name.
func devicesOf(t *testing.T, env []string, hubDir string) map[string]api.DeviceView {
	t.Helper()
	var list []api.DeviceView
	if err := json.Unmarshal([]byte(run(t, env, "", "pzh", "--data", hubDir, "devices", "--json")), &list); err != nil {
		t.Fatal(err)
	}
	out := map[string]api.DeviceView{}
	for _, d := range list {
		out[d.Name] = d
	}
	return out
}

// damageKinds are the ways the damaged-store row breaks a bbolt file.
var damageKinds = []struct {
	name string
	do   func(b []byte) []byte
}{
	{"cut short of its last page", func(b []byte) []byte {
		// The high-water mark of both meta pages (bbolt's layout: a
		// 16-byte page header, then magic, version, page size, flags,
		// the root bucket (16), the freelist page id, and the pgid).
		var hwm uint64
		for _, meta := range []int{0, 4096} {
			if len(b) >= meta+64 {
				hwm = max(hwm, binary.LittleEndian.Uint64(b[meta+56:]))
			}
		}
		return b[:min(len(b), int(max(hwm, 3)-1)*4096)]
	}},
	{"both meta pages zeroed", func(b []byte) []byte {
		clear(b[:min(len(b), 2*4096)])
		return b
	}},
	{"every page's type flipped", func(b []byte) []byte {
		for off := 2 * 4096; off+10 <= len(b); off += 4096 {
			b[off+8], b[off+9] = ^b[off+8], ^b[off+9]
		}
		return b
	}},
}

// TestFaultDamagedStore (row 8): a hub's pzh.db, sync.db or mailbox.db,
// or a device's pzp.db or sync.db, cut short or with pages broken: the
// daemon refuses to start with an error that names the file and what to
// do, never panics, and leaves the file as it was. (bbolt keeps no
// checksum of data pages: a bit flipped inside a stored value reads back
// as it is.)
func TestFaultDamagedStore(t *testing.T) {
	t.Parallel() // each row in its own namespaces; most of their time is the faults\' own waits
	dir := t.TempDir()
	env := append(os.Environ(), "HOME="+dir, "GORACE=atexit_sleep_ms=0")
	hubDir, devDir := filepath.Join(dir, "hub"), filepath.Join(dir, "dev")
	port, ok := freePort()
	if !ok {
		t.Fatal("no free port")
	}
	addr := fmt.Sprintf("127.0.0.1:%d", port)
	run(t, env, "", "pzh", "--data", hubDir, "init", "--zone", "damage", "--public-addr", addr)
	hub := daemon(t, env, "pzh", "--data", hubDir, "serve", "--listen", addr)
	run(t, env, "", "pzh", "--data", hubDir, "wait", "ready", "--timeout", "60s")
	token := strings.TrimSpace(run(t, env, "", "pzh", "--data", hubDir, "invite", "--device", "dev"))
	run(t, env, "", "pzp", "--data", devDir, "pair", token)
	dev := daemon(t, env, "pzp", "--data", devDir, "run")
	run(t, env, "", "pzp", "--data", devDir, "wait", "online", "--timeout", "60s")
	run(t, env, "", "pzp", "--data", devDir, "data", "set", "notes/a", "kept")
	run(t, env, "", "pzp", "--data", devDir, "wait", "synced", "--timeout", "60s")
	dev.stop(t)
	hub.stop(t)

	refused := 0
	for _, store := range []struct{ prog, dir, file string }{
		{"pzh", hubDir, "pzh.db"}, {"pzh", hubDir, "sync.db"}, {"pzh", hubDir, "mailbox.db"},
		{"pzp", devDir, "pzp.db"}, {"pzp", devDir, "sync.db"},
	} {
		for _, kind := range damageKinds {
			path := filepath.Join(store.dir, store.file)
			whole, err := os.ReadFile(path)
			if err != nil {
				t.Fatal(err)
			}
			bad := kind.do(bytes.Clone(whole))
			if err := os.WriteFile(path, bad, 0o600); err != nil {
				t.Fatal(err)
			}
			args := []string{"--data", store.dir, "serve", "--listen", addr}
			if store.prog == "pzp" {
				args = []string{"--data", store.dir, "run"}
			}
			ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
			cmd := exec.CommandContext(ctx, store.prog, args...)
			cmd.Env = env
			out, err := cmd.CombinedOutput()
			ran := ctx.Err() != nil // still running when the minute was up
			cancel()
			text := string(out)
			switch {
			case err == nil || ran:
				t.Errorf("%s with %s %s: started (%v)\n%s", store.prog, store.file, kind.name, err, text)
			case strings.Contains(text, "panic") || strings.Contains(text, "goroutine "):
				t.Errorf("%s with %s %s panicked:\n%s", store.prog, store.file, kind.name, text)
			case !strings.Contains(text, store.file) || !strings.Contains(text, "damaged"):
				t.Errorf("%s with %s %s: the error names neither the file nor the damage:\n%s", store.prog, store.file, kind.name, text)
			case !strings.Contains(text, "backup") && !strings.Contains(text, "pair") && !strings.Contains(text, "reset"):
				t.Errorf("%s with %s %s: the error says nothing to do:\n%s", store.prog, store.file, kind.name, text)
			default:
				refused++
			}
			if now, _ := os.ReadFile(path); !bytes.Equal(now, bad) {
				t.Errorf("%s with %s %s: the damaged file was changed", store.prog, store.file, kind.name)
			}
			if err := os.WriteFile(path, whole, 0o600); err != nil {
				t.Fatal(err)
			}
		}
	}
	// Whole again: both start.
	daemon(t, env, "pzh", "--data", hubDir, "serve", "--listen", addr)
	run(t, env, "", "pzh", "--data", hubDir, "wait", "ready", "--timeout", "60s")
	daemon(t, env, "pzp", "--data", devDir, "run")
	run(t, env, "", "pzp", "--data", devDir, "wait", "synced", "--timeout", "60s")
	t.Logf("fault row 8: %d of %d damaged stores (5 files × %d kinds of damage) refused at start, naming the file and what to do, no panic, the file left as it was", refused, 5*len(damageKinds), len(damageKinds))
}

// scrapeIn reads the Prometheus metrics at addr from inside namespace ns
// and returns go_goroutines and the heap in use, in bytes.
func scrapeIn(t *testing.T, lab *netLab, ns, addr string) (goroutines, heap float64) {
	t.Helper()
	out := lab.in(ns, "python3", "-c", "import urllib.request,sys; sys.stdout.write(urllib.request.urlopen('http://"+addr+"/metrics', timeout=30).read().decode())")
	for line := range strings.Lines(out) {
		var v float64
		switch {
		case strings.HasPrefix(line, "go_goroutines "):
			fmt.Sscan(strings.TrimPrefix(line, "go_goroutines "), &v)
			goroutines = v
		case strings.HasPrefix(line, "go_memstats_heap_inuse_bytes "):
			fmt.Sscan(strings.TrimPrefix(line, "go_memstats_heap_inuse_bytes "), &v)
			heap = v
		}
	}
	return goroutines, heap
}

// TestFaultFriendFlapping (row 6): bob's hub reaches alice's through a
// link (the router's to alice's side) that goes down and up every 5 s for
// a minute, while bob's laptop
// sends alice's phone messages for later. They arrive once each and in
// order; the hubs' goroutines and heap are logged before and after.
func TestFaultFriendFlapping(t *testing.T) {
	t.Parallel() // each row in its own namespaces; most of their time is the faults\' own waits
	lab := newNetLab(t)
	if _, err := exec.LookPath("python3"); err != nil {
		t.Skip("fault matrix: python3 is not installed (it reads the hubs' metrics inside their namespaces)")
	}
	const hb = 2 * time.Second
	alice := newLabZone(t, lab, "--heartbeat", hb.String(), "--metrics", "127.0.0.1:9477")
	phoneDir, _ := alice.pairIn(t, lab.hub, "phone")
	// bob's hub lives behind the router, beside its laptop.
	bob := &labZone{lab: lab, dir: alice.dir, hubDir: filepath.Join(alice.dir, "bobhub"), env: alice.env}
	bobAddr := labDevIP + ":" + labHubPort
	run(t, bob.env, "", "pzh", "--data", bob.hubDir, "init", "--zone", "bob", "--public-addr", bobAddr)
	name, argv := lab.cmd(lab.dev, "pzh", "--data", bob.hubDir, "serve", "--listen", bobAddr, "--heartbeat", hb.String(), "--metrics", "127.0.0.1:9477")
	daemon(t, bob.env, name, argv...)
	run(t, bob.env, "", "pzh", "--data", bob.hubDir, "wait", "ready", "--timeout", "60s")
	laptopDir, _ := bob.pairIn(t, lab.dev, "laptop")
	ftok := strings.TrimSpace(run(t, alice.env, "", "pzh", "--data", alice.hubDir, "friend", "invite"))
	run(t, bob.env, "", "pzh", "--data", bob.hubDir, "friend", "accept", ftok, "--as", "alice")
	run(t, bob.env, "", "pzh", "--data", bob.hubDir, "wait", "linked", "alice", "--timeout", "60s")
	run(t, alice.env, "", "pzh", "--data", alice.hubDir, "policy", "add", "--allow", "--from", "bob/laptop", "--to", "phone/inbox")

	// The phone's app records what arrives.
	type got struct{ id, body string }
	arrived := make(chan got, 1024)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	ready := make(chan struct{})
	go deviceClient(phoneDir).Serve(ctx, api.ServiceInfo{Name: "inbox"}, func(_ context.Context, ev api.Event) (any, error) {
		arrived <- got{ev.ID, string(ev.Body)}
		return nil, nil
	}, func() { close(ready) })
	<-ready
	laptop := deviceClient(laptopDir)
	send := func(i int) {
		t.Helper()
		sctx, scancel := context.WithTimeout(ctx, time.Minute)
		defer scancel()
		if _, err := laptop.SendWith(sctx, api.CallRequestBody{To: "alice/phone/inbox", Body: json.RawMessage(fmt.Sprintf(`"m%03d"`, i)), TTLMs: time.Hour.Milliseconds()}); err != nil {
			t.Fatalf("message %d: %v", i, err)
		}
	}
	send(0) // the link works
	if m := <-arrived; m.body != `"m000"` {
		t.Fatalf("first message: %+v", m)
	}
	aG, aH := scrapeIn(t, lab, lab.hub, "127.0.0.1:9477")
	bG, bH := scrapeIn(t, lab, lab.dev, "127.0.0.1:9477")

	// A minute of flapping, a message every 250 ms.
	const n = 240
	flapEnd := time.Now().Add(time.Minute)
	up, next := true, time.Now().Add(5*time.Second)
	pace := time.NewTicker(250 * time.Millisecond) // the sender's pace: part of the fault, not a wait for a result
	defer pace.Stop()
	for i := 1; i <= n; i++ {
		if time.Now().After(next) && time.Now().Before(flapEnd) {
			up = !up
			lab.hubLink(up)
			next = next.Add(5 * time.Second)
		}
		send(i)
		<-pace.C
	}
	lab.hubLink(true)
	order := []string{`"m000"`}
	seen := map[string]bool{}
	dups := 0
	deadline := time.After(3 * time.Minute)
	for len(order) < n+1 {
		select {
		case m := <-arrived:
			if seen[m.id] {
				dups++
				continue
			}
			seen[m.id] = true
			order = append(order, m.body)
		case <-deadline:
			t.Fatalf("only %d of %d messages arrived", len(order), n+1)
		}
	}
	for i, b := range order {
		if b != fmt.Sprintf(`"m%03d"`, i) {
			t.Fatalf("message %d arrived as %s: out of order (%v)", i, b, order)
		}
	}
	aG2, aH2 := scrapeIn(t, lab, lab.hub, "127.0.0.1:9477")
	bG2, bH2 := scrapeIn(t, lab, lab.dev, "127.0.0.1:9477")
	t.Logf("fault row 6: friend link flapping every 5 s for a minute: %d messages for later arrived once each (%d repeats of an ID) and in order; alice's hub %0.f goroutines and %.1f MiB heap before, %0.f and %.1f MiB after; bob's hub %0.f and %.1f MiB before, %0.f and %.1f MiB after",
		n+1, dups, aG, aH/(1<<20), aG2, aH2/(1<<20), bG, bH/(1<<20), bG2, bH2/(1<<20))
	if aG2 > aG+50 || bG2 > bG+50 {
		t.Errorf("goroutines grew: alice's hub %0.f → %0.f, bob's %0.f → %0.f", aG, aG2, bG, bG2)
	}
}

// TestFaultNATWake (row 4, sleeping): a sleeping device behind the NAT is
// woken by the hub's ping while its mapping lives (the hub pings the
// address its QUIC session came from, which the wake socket dialled);
// once the router forgot the mapping the ping is lost, and the device's
// --check-in brings it back by itself.
func TestFaultNATWake(t *testing.T) {
	t.Parallel() // each row in its own namespaces; most of their time is the faults\' own waits
	lab := newNetLab(t)
	z := newLabZone(t, lab)
	const checkIn = 10 * time.Second
	aDir, _ := z.pair(t, "a", "--transport", "quic", "--sleep-after", "500ms", "--check-in", checkIn.String(), "--backoff-max", "2s")
	asleep := func() {
		t.Helper()
		run(t, z.env, "", "pzp", "--data", aDir, "wait", "asleep", "--timeout", "60s")
		z.waitDevice(t, "a", "asleep", func(d api.DeviceView) bool { return d.State == "asleep" })
	}
	asleep()
	run(t, z.env, "", "pzh", "--data", z.hubDir, "wake", "a")
	woken := z.waitDevice(t, "a", "woken", func(d api.DeviceView) bool { return d.State == "online" })
	asleep()
	lab.rebind(41000, 41999)
	out, _ := runErr(z.env, "pzh", "--data", z.hubDir, "wake", "a")
	back := z.waitDevice(t, "a", "back by its check-in", func(d api.DeviceView) bool { return d.State == "online" })
	t.Logf("fault row 4 (asleep): a wake ping through the NAT woke the device in %v; after the mapping was forgotten the ping (%s) was lost and the device was back by its %v check-in after %v",
		woken.Round(time.Millisecond), firstLine(out), checkIn, back.Round(time.Millisecond))
	if back > 10*checkIn {
		t.Errorf("the device took %v to check in (every %v)", back, checkIn)
	}
}

// waitOnline long-polls the hub's status until it counts want live
// sessions, and returns how long that took.
func (z *labZone) waitOnline(t *testing.T, want int, within time.Duration) time.Duration {
	t.Helper()
	start := time.Now()
	ctx, cancel := context.WithTimeout(context.Background(), within)
	defer cancel()
	c := api.NewClient(api.SocketPath(z.hubDir, api.HubSocketName))
	st, err := watch(ctx, c, "/v1/status", func(v *api.HubStatus) uint64 { return v.Version }, func(v *api.HubStatus) bool { return v.Online == want })
	if err != nil {
		online := -1
		if st != nil {
			online = st.Online
		}
		t.Fatalf("%d sessions online after %v, want %d: %v", online, within, want, err)
	}
	return time.Since(start)
}

// TestFaultHubRestartUnderLoad (row 5): 1,000 devices online behind a
// router that loses 1 % of the packets each way; the hub is killed
// (SIGKILL: no goodbye) and started again. Every device comes back by
// itself and none is left stuck. The same on the hub's own host (its
// address is local there: loopback) gives the figure to compare.
//
// A hub that crashed tells no one: each device learns it at its next
// Ping, which the new hub answers with a stateless reset (QUIC; the
// reset key comes from the zone's key, so it survives the restart) or
// the kernel with a reset (TCP). So all are back within about one
// heartbeat, plus the backoff and the handshakes: the test runs the hub
// at a 5 s heartbeat (90 s by default) to keep that short.
func TestFaultHubRestartUnderLoad(t *testing.T) {
	t.Parallel() // each row in its own namespaces; most of their time is the faults\' own waits
	lab := newNetLab(t)
	const hb = 5 * time.Second
	z := newLabZone(t, lab, "--heartbeat", hb.String())
	const n = 1000
	token := strings.TrimSpace(run(t, z.env, "", "pzh", "--data", z.hubDir, "invite", "--device", "fleet", "--uses", fmt.Sprint(n), "--ttl", "1h"))
	ids := filepath.Join(z.dir, "fleet.json")
	start := time.Now()
	name, argv := lab.cmd(lab.dev, "pzfleet", "pair", "--token", token, "--n", fmt.Sprint(n), "--ids", ids)
	run(t, z.env, "", name, argv...)
	paired := time.Since(start)

	// restart runs the fleet in namespace ns, kills the hub once every
	// device is online, starts it again, and returns how long from its
	// start (and from the kill) until every device was back.
	restart := func(ns string) (back, sinceKill time.Duration) {
		t.Helper()
		name, argv := lab.cmd(ns, "pzfleet", "run", "--ids", ids)
		fleet := daemon(t, z.env, name, argv...)
		z.waitOnline(t, n, 5*time.Minute)
		killed := time.Now()
		z.hub.kill(t)
		started := time.Now()
		z.serve(t, "--heartbeat", hb.String())
		z.waitOnline(t, n, 5*time.Minute)
		back, sinceKill = time.Since(started), time.Since(killed)
		devs := z.devices(t)
		online := 0
		for _, d := range devs {
			if d.State == "online" {
				online++
			}
		}
		if online != n {
			t.Fatalf("%d of %d devices online after the restart, though the hub counts %d sessions", online, n, n)
		}
		fleet.stop(t)
		z.waitOnline(t, 0, 2*time.Minute)
		for _, line := range strings.Split(fleet.logs.String(), "\n") {
			if strings.Contains(line, "gave up") {
				t.Fatalf("a device gave up: %s", line)
			}
		}
		return back, sinceKill
	}
	loop, loopKill := restart(lab.hub)
	what := lab.lossy(1, "")
	lossy, lossyKill := restart(lab.dev)
	t.Logf("fault row 5: %d devices (paired in %v), heartbeat %v: hub killed and started again: all back %v after the kill (%v after its start) behind a router with %s (%d packets dropped); on loopback %v (%v)",
		n, paired.Round(time.Millisecond), hb, lossyKill.Round(time.Millisecond), lossy.Round(time.Millisecond), what, lab.dropped(), loopKill.Round(time.Millisecond), loop.Round(time.Millisecond))

}
