// Package bench measures pzone against raw limits taken in the same run:
// every figure is reported beside a baseline (raw mutual-TLS handshakes,
// raw idle connections, raw stream echoes and transfers, raw fsync'd bbolt
// commits) measured on the same machine moments apart, as a ratio, so runs
// on shared, noisy machines stay comparable.
//
// It is not a test: targets are reported (Row.Met), never asserted. It runs
// real hubs and peers over real loopback sockets with the same code as
// pzh serve and pzp run; the idle-cost, sync and call rows run the hub as
// a separate pzh process so its memory and CPU are its own, the
// initial-sync row runs the new device as a pzp pair process, and the
// wakeup rows run the hub in this process, to time its wake pings.
package bench

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"math"
	"os"
	"slices"
	"sort"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/pzone/pzone/transport"
)

// Row is one figure; its JSON is what make bench BENCH_OUT=file writes.
type Row struct {
	Name      string  `json:"name"`
	Transport string  `json:"transport"`
	Value     float64 `json:"value"`
	Unit      string  `json:"unit"`
	Baseline  float64 `json:"baseline"`
	Ratio     float64 `json:"ratio"`
	Target    string  `json:"target"`
	Met       bool    `json:"met"`
	Runs      int     `json:"runs"`
	Note      string  `json:"note,omitempty"`
}

// Config sizes a run.
type Config struct {
	Runs        int // median of this many runs for the cheap rows
	Handshakes  int // per session-setup run
	Concurrency int // dialers in flight for session setup
	StormPeers  int // peers in the reconnect storm
	IdlePeers   int // sessions held for the idle-cost rows
	IdleStreams int // streams held open through the hub for its memory row
	// TrafficWindow is how long idle traffic is sampled (at a short
	// heartbeat, then scaled to the default one).
	TrafficWindow time.Duration
	Transports    []transport.Kind
	// TrafficSettle skips the start of each idle-traffic sample, while
	// QUIC still probes the path MTU with full-size packets.
	TrafficSettle time.Duration
	// SyncSamples is how many edits the propagation row times, one at a
	// time, after a tenth as many to warm up.
	SyncSamples int
	// SyncDevices share 32 DataPut loops in the accepted-edits row, for
	// SyncWindow (after a fifth of it to ramp up). Every device applies
	// every change, and on one 2-core machine the devices, not the hub,
	// run out of CPU first: 2 measures the hub better than 8 (which gives
	// about 1.0× raw commits, with the hub half idle).
	SyncDevices int
	SyncWindow  time.Duration
	// SyncRecords is the size of the zone state a new device receives in
	// the initial-sync row (which runs at a tenth of it too).
	SyncRecords int
	// CallSamples is how many calls the round-trip rows time, one at a
	// time, after a tenth as many to warm up. CallWindow is how long the
	// calls-per-second and call-payload rows count calls, after a fifth
	// of it to ramp up.
	CallSamples int
	CallWindow  time.Duration
	// CallPayload is the JSON argument of the call-payload row, in bytes:
	// a call's body is at most 1 MiB of JSON, request and result.
	CallPayload int
	// RelayBytes is what the relay row sends through the hub on one call
	// stream, each run.
	RelayBytes int64
	// WakeSamples is how many messages the wake-to-delivery rows time,
	// one at a time, each to a sleeping device, after a tenth as many (at
	// least 2) to warm up.
	WakeSamples int
	// ProviderZones is how many zones the provider rows serve in one
	// process, each with two idle devices.
	ProviderZones int
	// Only limits the run to these row groups (Groups); empty means all.
	Only []string
	// HubCommand starts the hub as its own process for the idle-cost,
	// sync and call rows: pzh serve, or a binary whose ChildMain handles
	// "hub".
	HubCommand []string
	// PairCommand pairs a new device as its own process for the
	// initial-sync row: pzp pair, or a binary whose ChildMain handles
	// "pair".
	PairCommand []string
	// ProviderCommand runs a provider as its own process for the provider
	// rows: pzh provider serve, or a binary whose ChildMain handles
	// "provider".
	ProviderCommand []string
	Self            string // a binary whose ChildMain handles "rawserver"
	// ProfileDir, if set, receives CPU profiles: of the restarted hub
	// during each reconnect storm (storm-TRANSPORT.pprof), and of the sync
	// hub and of this process, which runs the writing devices, during each
	// accepted-edits window (sync-hub-TRANSPORT.pprof,
	// sync-devices-TRANSPORT.pprof); likewise of the calls' hub and of
	// this process, which runs the devices and their applications, during
	// each calls-per-second and call-payload window (calls-hub-,
	// calls-devices-, payload-hub-, payload-devices-TRANSPORT.pprof).
	ProfileDir string
	Work       string // scratch directory
	Log        io.Writer
}

// DefaultConfig is what make bench runs.
func DefaultConfig() Config {
	return Config{Runs: 3, Handshakes: 1000, Concurrency: 16, StormPeers: 2000, IdlePeers: 10000, IdleStreams: 1000,
		TrafficWindow: 5 * time.Second, TrafficSettle: 4 * time.Second,
		SyncSamples: 500, SyncDevices: 2, SyncWindow: 5 * time.Second, SyncRecords: 100000,
		CallSamples: 2000, CallWindow: 5 * time.Second, CallPayload: 768 << 10, RelayBytes: 256 << 20,
		WakeSamples: 100, ProviderZones: 10000, Transports: []transport.Kind{transport.KindQUIC, transport.KindTCP}}
}

// ShortConfig is a smoke run that proves the benchmark still works.
func ShortConfig() Config {
	return Config{Runs: 1, Handshakes: 40, Concurrency: 4, StormPeers: 20, IdlePeers: 20, IdleStreams: 40,
		TrafficWindow: time.Second, TrafficSettle: 200 * time.Millisecond,
		SyncSamples: 20, SyncDevices: 2, SyncWindow: 300 * time.Millisecond, SyncRecords: 2000,
		CallSamples: 20, CallWindow: 300 * time.Millisecond, CallPayload: 16 << 10, RelayBytes: 4 << 20,
		WakeSamples: 5, ProviderZones: 4, Transports: []transport.Kind{transport.KindQUIC, transport.KindTCP}}
}

func (c *Config) logf(format string, args ...any) {
	if c.Log != nil {
		fmt.Fprintf(c.Log, "# "+format+"\n", args...)
	}
}

// Groups names the row groups, in table order, for Config.Only.
var Groups = []string{"setup", "storm", "idle", "sync", "calls", "streams", "direct", "federation", "wakeup", "provider"}

// Run measures every row available and returns them in table order.
func Run(ctx context.Context, cfg Config) ([]Row, error) {
	for _, g := range cfg.Only {
		if !slices.Contains(Groups, g) {
			return nil, fmt.Errorf("no row group %q: groups are %s", g, strings.Join(Groups, ", "))
		}
	}
	want := func(group string) bool { return len(cfg.Only) == 0 || slices.Contains(cfg.Only, group) }
	if cfg.Work == "" {
		dir, err := os.MkdirTemp("", "pzbench")
		if err != nil {
			return nil, err
		}
		defer os.RemoveAll(dir)
		cfg.Work = dir
	}
	// The session rows share one zone of many paired devices.
	var f *fixture
	if want("setup") || want("storm") || want("idle") {
		var err error
		if f, err = newFixture(ctx, &cfg); err != nil {
			return nil, err
		}
		defer f.close()
	}
	// The sync, call and wakeup rows have zones of their own, each made
	// when first needed; nothing else runs while one is measured.
	var sb *syncBench
	var cb *callBench
	var wb *wakeBench
	var db *directBench
	var fb *federationBench
	var pb *providerBench
	stopOthers := func() {
		if f != nil {
			f.stopHub()
		}
		if sb != nil {
			sb.close()
			sb = nil
		}
		if cb != nil {
			cb.close()
			cb = nil
		}
		if wb != nil {
			wb.close()
			wb = nil
		}
		if db != nil {
			db.close()
			db = nil
		}
		if fb != nil {
			fb.close()
			fb = nil
		}
		pb = nil // its processes run only while a row measures
	}
	defer stopOthers()
	syncRows := func(measure func(*syncBench, context.Context, transport.Kind) ([]Row, error)) func(transport.Kind) ([]Row, error) {
		return func(k transport.Kind) ([]Row, error) {
			if sb == nil {
				stopOthers()
				var err error
				if sb, err = newSyncBench(ctx, &cfg); err != nil {
					return nil, err
				}
			}
			return measure(sb, ctx, k)
		}
	}
	callRows := func(measure func(*callBench, context.Context, transport.Kind) ([]Row, error)) func(transport.Kind) ([]Row, error) {
		return func(k transport.Kind) ([]Row, error) {
			if cb == nil {
				stopOthers()
				var err error
				if cb, err = newCallBench(ctx, &cfg); err != nil {
					return nil, err
				}
			}
			return measure(cb, ctx, k)
		}
	}
	directRows := func(k transport.Kind) ([]Row, error) {
		if db == nil {
			stopOthers()
			var err error
			if db, err = newDirectBench(ctx, &cfg); err != nil {
				return nil, err
			}
		}
		rows, err := db.roundTrip(ctx, k)
		if err != nil {
			return nil, err
		}
		more, err := db.streamThroughput(ctx, k)
		return append(rows, more...), err
	}
	federationRows := func(k transport.Kind) ([]Row, error) {
		if fb == nil {
			stopOthers()
			var err error
			if fb, err = newFederationBench(ctx, &cfg); err != nil {
				return nil, err
			}
		}
		return fb.roundTrip(ctx, k)
	}
	providerRows := func(k transport.Kind) ([]Row, error) {
		if pb == nil {
			stopOthers()
			var err error
			if pb, err = newProviderBench(ctx, &cfg); err != nil {
				return nil, err
			}
		}
		return pb.rows(ctx, k)
	}
	wakeRows := func(k transport.Kind) ([]Row, error) {
		if wb == nil {
			stopOthers()
			var err error
			if wb, err = newWakeBench(ctx, &cfg); err != nil {
				return nil, err
			}
		}
		return wb.rows(ctx, k)
	}

	var rows []Row
	// each measures one row group over every transport, in table order.
	each := func(what string, measure func(transport.Kind) ([]Row, error)) error {
		for _, k := range cfg.Transports {
			start := time.Now()
			rs, err := measure(k)
			cfg.logf("%s over %s took %v", what, k, time.Since(start).Round(time.Millisecond))
			if err != nil {
				return fmt.Errorf("%s over %s: %w", what, k, err)
			}
			rows = append(rows, rs...)
		}
		return nil
	}
	one := func(r Row, err error) ([]Row, error) { return []Row{r}, err }
	raw := map[transport.Kind]float64{}
	steps := []struct {
		group, what string
		measure     func(transport.Kind) ([]Row, error)
	}{
		{"setup", "session setup", func(k transport.Kind) ([]Row, error) {
			r, err := f.sessionSetup(ctx, k)
			raw[k] = r.Baseline
			return one(r, err)
		}},
		{"setup", "session setup latency", func(k transport.Kind) ([]Row, error) { return one(f.setupLatency(ctx, k)) }},
		{"storm", "reconnect storm", func(k transport.Kind) ([]Row, error) {
			if raw[k] == 0 { // the setup rows were left out
				var err error
				if raw[k], err = f.rawHandshakeRate(ctx, k); err != nil {
					return nil, err
				}
			}
			return one(f.reconnectStorm(ctx, k, raw[k]))
		}},
		{"idle", "idle traffic", func(k transport.Kind) ([]Row, error) { return one(f.idleTraffic(ctx, k)) }},
		// The in-process hub holds the store; the memory rows run their own.
		{"idle", "idle memory", func(k transport.Kind) ([]Row, error) { f.stopHub(); return f.idleMemory(ctx, k) }},
		{"sync", "sync propagation", syncRows((*syncBench).propagation)},
		{"sync", "sync accepted edits", syncRows((*syncBench).acceptedEdits)},
		{"sync", "initial sync", syncRows((*syncBench).initialSync)},
		{"calls", "call round trip", callRows((*callBench).roundTrip)},
		{"calls", "calls per second", callRows((*callBench).callRate)},
		{"calls", "call payload throughput", callRows((*callBench).payloadRate)},
		{"calls", "relay throughput", callRows((*callBench).relayThroughput)},
		{"streams", "stream throughput via the hub", callRows((*callBench).streamThroughput)},
		{"streams", "stream setup", callRows((*callBench).streamSetup)},
		{"streams", "idle stream memory", callRows((*callBench).idleStreamMemory)},
		{"direct", "direct call round trip", directRows},
		{"federation", "cross-zone call round trip", federationRows},
		{"wakeup", "wake to delivery", wakeRows},
		{"provider", "provider", providerRows},
	}
	for _, st := range steps {
		if !want(st.group) {
			continue
		}
		if err := each(st.what, st.measure); err != nil {
			return rows, err
		}
	}
	return rows, nil
}

// WriteTable prints rows for a person.
func WriteTable(w io.Writer, rows []Row) error {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "ROW\tTRANSPORT\tPZONE\tRAW BASELINE\tRATIO\tTARGET\tMET\tRUNS\tNOTE")
	for _, r := range rows {
		if r.Unit == "" {
			fmt.Fprintf(tw, "%s\t%s\t-\t-\t-\t-\t-\t-\t%s\n", r.Name, r.Transport, r.Note)
			continue
		}
		base, ratio := fmtNum(r.Baseline)+" "+r.Unit, fmt.Sprintf("%.2f×", r.Ratio)
		if r.Baseline == 0 {
			base, ratio = "-", "-"
		}
		met := "no"
		if r.Met {
			met = "yes"
		}
		fmt.Fprintf(tw, "%s\t%s\t%s %s\t%s\t%s\t%s\t%s\t%d\t%s\n", r.Name, r.Transport, fmtNum(r.Value), r.Unit, base, ratio, r.Target, met, r.Runs, r.Note)
	}
	return tw.Flush()
}

// WriteJSON writes rows as a JSON list.
func WriteJSON(w io.Writer, rows []Row) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(rows)
}

func fmtNum(v float64) string {
	switch {
	case v >= 100:
		return fmt.Sprintf("%.0f", v)
	case v >= 10:
		return fmt.Sprintf("%.1f", v)
	}
	return strings.TrimRight(strings.TrimRight(fmt.Sprintf("%.3f", v), "0"), ".")
}

func median(xs []float64) float64 {
	s := append([]float64(nil), xs...)
	sort.Float64s(s)
	if len(s) == 0 {
		return 0
	}
	return s[len(s)/2]
}

// percentile is the p-th (0 < p ≤ 1) of xs by the nearest-rank method.
func percentile(xs []float64, p float64) float64 {
	s := append([]float64(nil), xs...)
	sort.Float64s(s)
	if len(s) == 0 {
		return 0
	}
	i := int(math.Ceil(p*float64(len(s)))) - 1
	return s[min(max(i, 0), len(s)-1)]
}

func ratio(v, base float64) float64 {
	if base == 0 {
		return 0
	}
	return v / base
}
