// Command pzbench measures pzone against raw baselines taken in the same
// run. See README.md, "Benchmarks".
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"path/filepath"
	"slices"
	"strings"
	"syscall"

	"github.com/pzone/pzone/bench"
	"github.com/pzone/pzone/transport"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if handled, code := bench.ChildMain(ctx, os.Args[1:]); handled {
		os.Exit(code)
	}
	cfg := bench.DefaultConfig()
	short := flag.Bool("short", false, "a quick smoke run with tiny sizes")
	out := flag.String("json", "", "also write the rows as JSON to this file")
	transports := flag.String("transports", "quic,tcp", "transports to measure")
	runs := flag.Int("runs", 0, "runs per cheap row (median reported)")
	storm := flag.Int("storm-peers", 0, "peers in the reconnect storm (default 2000; 10000 for the full target)")
	idle := flag.Int("idle-peers", 0, "sessions held for the idle-cost rows (default 10000)")
	handshakes := flag.Int("handshakes", 0, "handshakes per session-setup run")
	syncRecords := flag.Int("sync-records", 0, "records in the zone state of the initial-sync rows (default 100000)")
	syncSamples := flag.Int("sync-samples", 0, "edits timed for the sync propagation rows (default 500)")
	syncDevices := flag.Int("sync-devices", 0, "devices writing at once in the accepted-edits row (default 8)")
	callSamples := flag.Int("call-samples", 0, "calls timed for the call round-trip rows (default 2000)")
	providerZones := flag.Int("provider-zones", 0, "zones in one provider process for the provider rows (default 10000)")
	only := flag.String("only", "", "measure only these row groups, comma-separated: "+strings.Join(bench.Groups, ", "))
	pzh := flag.String("pzh", "bin/pzh", "pzh binary for the storm, idle-cost, sync and call rows")
	pzp := flag.String("pzp", "bin/pzp", "pzp binary for the initial-sync rows")
	profile := flag.String("profile", "", "save CPU profiles in this directory: of the hub during each reconnect storm, of the hub and the devices during each accepted-edits, calls-per-second and call-payload window")
	flag.Parse()
	if *short {
		cfg = bench.ShortConfig()
	}
	for _, o := range []struct{ flag, dst *int }{{runs, &cfg.Runs}, {storm, &cfg.StormPeers}, {idle, &cfg.IdlePeers}, {handshakes, &cfg.Handshakes},
		{syncRecords, &cfg.SyncRecords}, {syncSamples, &cfg.SyncSamples}, {syncDevices, &cfg.SyncDevices}, {callSamples, &cfg.CallSamples}, {providerZones, &cfg.ProviderZones}} {
		if *o.flag > 0 {
			*o.dst = *o.flag
		}
	}
	cfg.Transports = nil
	for _, t := range strings.Split(*transports, ",") {
		k := transport.Kind(strings.TrimSpace(t))
		if k != transport.KindQUIC && k != transport.KindTCP {
			fmt.Fprintf(os.Stderr, "pzbench: unknown transport %q: use quic and/or tcp\n", t)
			os.Exit(2)
		}
		cfg.Transports = append(cfg.Transports, k)
	}
	if *only != "" {
		for _, g := range strings.Split(*only, ",") {
			g = strings.TrimSpace(g)
			if !slices.Contains(bench.Groups, g) {
				fmt.Fprintf(os.Stderr, "pzbench: no row group %q: use %s\n", g, strings.Join(bench.Groups, ", "))
				os.Exit(2)
			}
			cfg.Only = append(cfg.Only, g)
		}
	}
	var err error
	if cfg.Self, err = os.Executable(); err != nil {
		fmt.Fprintln(os.Stderr, "pzbench:", err)
		os.Exit(1)
	}
	binary := func(path, name string) string {
		abs, err := filepath.Abs(path)
		if err == nil {
			_, err = os.Stat(abs)
		}
		if err != nil {
			fmt.Fprintf(os.Stderr, "pzbench: no %s binary at %s: build it first (make bench does)\n", name, path)
			os.Exit(1)
		}
		return abs
	}
	cfg.HubCommand = []string{binary(*pzh, "pzh"), "serve"}
	cfg.PairCommand = []string{binary(*pzp, "pzp"), "pair"}
	cfg.ProviderCommand = []string{binary(*pzh, "pzh"), "provider", "serve"}
	cfg.ProfileDir = *profile
	cfg.Log = os.Stderr
	raiseFileLimit(max(2*max(cfg.StormPeers, cfg.IdlePeers), 4*cfg.ProviderZones) + 4096)
	rows, err := bench.Run(ctx, cfg)
	bench.WriteTable(os.Stdout, rows)
	if *out != "" {
		f, ferr := os.Create(*out)
		if ferr == nil {
			ferr = bench.WriteJSON(f, rows)
			if cerr := f.Close(); ferr == nil {
				ferr = cerr
			}
		}
		if ferr != nil {
			fmt.Fprintln(os.Stderr, "pzbench: write JSON:", ferr)
			os.Exit(1)
		}
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "pzbench:", err)
		os.Exit(1)
	}
}

// raiseFileLimit lifts the open-file limit to at least want where the
// system allows it: peers and hub share this process, so each session
// costs two descriptors over TCP.
func raiseFileLimit(want int) {
	var lim syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &lim); err != nil || lim.Cur >= uint64(want) {
		return
	}
	next := syscall.Rlimit{Cur: uint64(want), Max: max(lim.Max, uint64(want))}
	if err := syscall.Setrlimit(syscall.RLIMIT_NOFILE, &next); err != nil {
		fmt.Fprintf(os.Stderr, "# open-file limit is %d and could not be raised to %d (%v): large runs may fail to connect; raise it with ulimit -n\n", lim.Cur, want, err)
	}
}
