package bench

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"os"
	"os/exec"
	"strings"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/pzone/pzone/pairing"
	zsync "github.com/pzone/pzone/sync"
	"github.com/pzone/pzone/transport"
	"github.com/pzone/pzone/zone/hub"
	"github.com/pzone/pzone/zone/peer"
	"github.com/pzone/pzone/zone/provider"
)

// ChildMain runs the benchmark's child roles when args name one:
// "rawserver" (the raw baseline server), "maxrss FILE CMD ARGS..." (run a
// command and write its peak RSS in FILE), and, for when no pzh or pzp
// binary is at hand (as in the smoke test), "hub" (hub.Run with the
// pzh serve flags the benchmark uses) and "pair" (pzp pair --json with the
// flags the benchmark uses). It reports whether args named a role.
func ChildMain(ctx context.Context, args []string) (handled bool, code int) {
	if len(args) == 0 || (args[0] != "rawserver" && args[0] != "hub" && args[0] != "provider" && args[0] != "pair" && args[0] != "maxrss") {
		return false, 0
	}
	if args[0] == "maxrss" {
		return true, maxRSS(ctx, args[1:])
	}
	fs := flag.NewFlagSet(args[0], flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	kind := fs.String("kind", "quic", "")
	listen := fs.String("listen", "", "")
	dir := fs.String("dir", "", "")
	data := fs.String("data", "", "")
	fs.String("log-level", "", "")
	noTCP := fs.Bool("no-tcp", false, "")
	noQUIC := fs.Bool("no-quic", false, "")
	heartbeat := fs.Duration("heartbeat", 0, "")
	mode := fs.String("transport", "auto", "")
	fs.Bool("json", true, "")
	noSync := fs.Bool("no-sync", false, "")
	if err := fs.Parse(args[1:]); err != nil {
		fmt.Fprintf(os.Stderr, "pzbench %s: %v\n", args[0], err)
		return true, 2
	}
	var err error
	switch args[0] {
	case "rawserver":
		err = RunRawServer(ctx, transport.Kind(*kind), *listen, *dir)
	case "hub":
		kinds := kindsOf(*noQUIC, *noTCP)
		err = hub.Run(ctx, hub.Config{DataDir: *data, Listen: *listen, Transports: kinds, Heartbeat: *heartbeat})
	case "provider":
		kinds := kindsOf(*noQUIC, *noTCP)
		err = provider.Run(ctx, provider.Config{DataDir: *data, Listen: *listen, Transports: kinds, Heartbeat: *heartbeat})
	case "pair":
		if fs.NArg() != 1 {
			err = fmt.Errorf("want one token, got %d arguments", fs.NArg())
			break
		}
		err = pairChild(ctx, *data, transport.Mode(*mode), *noSync, fs.Arg(0))
	}
	if err != nil {
		fmt.Fprintf(os.Stderr, "pzbench %s: %v\n", args[0], err)
		return true, 1
	}
	return true, 0
}

// pairOutput is the part of pzp pair --json the benchmark reads.
type pairOutput struct {
	Synced      bool    `json:"synced"`
	Records     uint64  `json:"records"`
	SyncSeconds float64 `json:"sync_seconds"`
}

// pairChild does what pzp pair --json does: pair, save the pairing, run
// the device until its first sync is done, print the outcome.
func pairChild(ctx context.Context, dir string, mode transport.Mode, noSync bool, token string) error {
	tok, err := pairing.ParseToken(token)
	if err != nil {
		return err
	}
	res, err := pairing.Pair(ctx, tok, mode)
	if err != nil {
		return err
	}
	if err := peer.SavePairing(dir, res, time.Now()); err != nil {
		return err
	}
	var out pairOutput
	if !noSync {
		var received atomic.Uint64
		var done atomic.Bool
		start := time.Now()
		err := peer.Run(ctx, peer.Config{DataDir: dir, Mode: mode, ExitWhenSynced: true, OnSync: func(st zsync.State) {
			received.Store(st.Received)
			if st.Synced() {
				done.Store(true)
			}
		}})
		if err != nil {
			return err
		}
		out = pairOutput{Synced: done.Load(), Records: received.Load(), SyncSeconds: time.Since(start).Seconds()}
	}
	return json.NewEncoder(os.Stdout).Encode(out)
}

// maxRSS runs args[1:] with this process's standard streams, then writes
// "PEAK SELF ANON" to the file args[0], in KiB: the command's peak
// resident set, this process's own, and the largest anonymous (heap and
// stacks, not mapped files) resident set seen while polling the command.
// Linux carries a process's high-water mark across fork and exec, so a
// command started straight from a large benchmark process would report
// that process's size; started from this small one it reports its own (or
// SELF, if that is larger).
func maxRSS(ctx context.Context, args []string) int {
	if len(args) < 2 {
		fmt.Fprintln(os.Stderr, "pzbench maxrss: want FILE CMD [ARGS...]")
		return 2
	}
	cmd := exec.CommandContext(ctx, args[1], args[2:]...)
	cmd.Stdin, cmd.Stdout, cmd.Stderr = os.Stdin, os.Stdout, os.Stderr
	if err := cmd.Start(); err != nil {
		fmt.Fprintln(os.Stderr, "pzbench maxrss:", err)
		return 1
	}
	var anon atomic.Int64
	done := make(chan struct{})
	polled := make(chan struct{})
	go func() {
		defer close(polled)
		status := fmt.Sprintf("/proc/%d/status", cmd.Process.Pid)
		t := time.NewTicker(maxRSSPoll)
		defer t.Stop()
		for {
			if kib := procStatusKiB(status, "RssAnon:"); kib > anon.Load() {
				anon.Store(kib)
			}
			select {
			case <-done:
				return
			case <-t.C:
			}
		}
	}()
	cmd.Wait()
	close(done)
	<-polled
	child, _ := cmd.ProcessState.SysUsage().(*syscall.Rusage)
	if child == nil {
		child = &syscall.Rusage{}
	}
	self := procStatusKiB("/proc/self/status", "VmHWM:")
	if err := os.WriteFile(args[0], fmt.Appendf(nil, "%d %d %d\n", child.Maxrss, self, anon.Load()), 0o600); err != nil {
		fmt.Fprintln(os.Stderr, "pzbench maxrss:", err)
		return 1
	}
	return cmd.ProcessState.ExitCode()
}

// maxRSSPoll is how often maxRSS samples the command's anonymous memory:
// often enough to catch a peak that lasts a few batches of a sync.
const maxRSSPoll = 10 * time.Millisecond

// procStatusKiB reads one "Name:  N kB" line of a /proc status file (0 if
// it cannot).
func procStatusKiB(path, name string) int64 {
	b, err := os.ReadFile(path)
	if err != nil {
		return 0
	}
	for _, line := range strings.Split(string(b), "\n") {
		if rest, ok := strings.CutPrefix(line, name); ok {
			var kib int64
			fmt.Sscan(rest, &kib)
			return kib
		}
	}
	return 0
}

// kindsOf are the transports a child hub or provider serves, from the
// pzh serve flags --no-quic and --no-tcp.
func kindsOf(noQUIC, noTCP bool) []transport.Kind {
	kinds := []transport.Kind{}
	if !noQUIC {
		kinds = append(kinds, transport.KindQUIC)
	}
	if !noTCP {
		kinds = append(kinds, transport.KindTCP)
	}
	return kinds
}
