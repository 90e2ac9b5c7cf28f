package bench

import (
	"context"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"testing"
	"time"
)

// TestMain lets the test binary stand in for the benchmark's child
// processes (the raw server, the hub, pzp pair).
func TestMain(m *testing.M) {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	if handled, code := ChildMain(ctx, os.Args[1:]); handled {
		stop()
		os.Exit(code)
	}
	stop()
	os.Exit(m.Run())
}

// TestSmoke runs the whole benchmark at toy sizes: every row must come out
// with a figure (or a reason it is unavailable). It checks that the
// benchmark works, not how fast anything is.
func TestSmoke(t *testing.T) {
	// The race detector's children would each linger a second on exit.
	t.Setenv("GORACE", strings.TrimSpace(os.Getenv("GORACE")+" atexit_sleep_ms=0"))
	cfg := ShortConfig()
	cfg.Self = os.Args[0]
	cfg.HubCommand = []string{os.Args[0], "hub"}
	cfg.PairCommand = []string{os.Args[0], "pair"}
	cfg.ProviderCommand = []string{os.Args[0], "provider"}
	cfg.Work = t.TempDir()
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	rows, err := Run(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]int{"session setup": 2, "session setup latency p50": 2, "reconnect storm": 2, "idle keepalive traffic": 2, "idle heap per session": 2, "idle RSS per session": 2,
		"sync propagation p50": 2, "sync propagation p99": 2, "sync wire bytes per edit": 2, "sync accepted edits": 2, "initial sync": 2, "initial sync peak RSS": 2,
		"call round trip p50": 2, "call round trip p99": 2, "HTTP+JSON call round trip p50": 2, "calls per second": 2, "call payload throughput": 2, "relay throughput": 2,
		"direct call round trip p50": 2, "direct call round trip p99": 2, "cross-zone call round trip p50": 2, "cross-zone call round trip p99": 2,
		"wake ping size": 2, "wake to delivery p50": 2, "wake to delivery p99": 2, "idle traffic asleep": 2,
		"initial sync vs bbolt load": 2, "stream throughput via the hub": 2, "stream setup p50": 2, "idle stream hub heap": 2, "stream throughput direct": 2,
		"provider heap per zone": 2, "provider heap per session": 2, "provider session setup": 2}
	// RSS moves in pages and may not grow at all for a few sessions; a
	// sleeping device sends nothing; a few dozen streams are lost in the
	// heap's noise.
	mayBeZero := map[string]bool{"idle RSS per session": true, "idle traffic asleep": true, "idle stream hub heap": true}
	noBaseline := map[string]bool{"idle keepalive traffic": true, "idle RSS per session": true, "wake ping size": true, "idle traffic asleep": true, "idle stream hub heap": true}
	for _, r := range rows {
		if r.Unit == "" {
			if !strings.HasPrefix(r.Note, "not available") {
				t.Errorf("row %q has no figure and no reason", r.Name)
			}
			continue
		}
		want[r.Name]--
		if (r.Value <= 0 && !mayBeZero[r.Name]) || r.Runs < 1 {
			t.Errorf("row %q over %s: value %v, runs %d", r.Name, r.Transport, r.Value, r.Runs)
		}
		if !noBaseline[r.Name] && (r.Baseline <= 0 || r.Ratio <= 0) {
			t.Errorf("row %q over %s: no baseline (%v) or ratio (%v)", r.Name, r.Transport, r.Baseline, r.Ratio)
		}
	}
	for name, n := range want {
		if n != 0 {
			t.Errorf("row %q: %d missing", name, n)
		}
	}
	var b strings.Builder
	if err := WriteTable(&b, rows); err != nil {
		t.Fatal(err)
	}
	t.Log("\n" + b.String())
}
