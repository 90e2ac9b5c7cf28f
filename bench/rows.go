package bench

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/pzone/pzone/transport"
	"github.com/pzone/pzone/zone/api"
	"github.com/pzone/pzone/zone/localapi"
	"github.com/pzone/pzone/zone/peer"
	"github.com/pzone/pzone/zone/wire"
)

// Targets from the benchmark issue.
const (
	targetSetupRatio = 0.7  // sessions/s ≥ 0.7 × raw handshakes/s
	targetStormRatio = 2.0  // storm ≤ 2 × N ÷ raw handshake rate
	targetIdleRatio  = 1.3  // idle heap per session ≤ 1.3 × raw
	targetIdleBytes  = 100. // keepalive bytes per minute per session
	// From the applications' data path issue.
	targetCallP50      = 2.5 // relayed call p50 ≤ 2.5 × two raw echoes
	targetCallP99      = 4.0 // and p99 ≤ 4 ×
	targetHTTPCallP50  = 4.0 // the HTTP+JSON path (a non-Go app) p50 ≤ 4 ×
	targetCallRate     = 0.5 // calls/s ≥ 0.5 × the raw two-hop echo rate
	targetCrossZoneP50 = 3.0 // cross-zone call p50 ≤ 3 × three raw echoes
	targetSyncLoad     = 2.0 // initial sync ≤ 2 × the raw bbolt load
	targetStreamHub    = 0.5 // stream throughput through the hub ≥ 0.5 × one raw hop
	targetStreamDirect = 0.8 // over a direct path ≥ 0.8 ×
	targetStreamSetup  = 2.0 // Dial to first byte echoed ≤ 2 × a call
	targetIdleStream   = 8.0 // KiB of hub heap per idle open stream
	// trafficPeers and trafficHeartbeat sample idle traffic: enough
	// sessions to average out, a heartbeat short enough to see many
	// exchanges in a few seconds. The bytes of one exchange do not depend
	// on the interval, so the figure is scaled to the default heartbeat.
	trafficPeers     = 50
	trafficHeartbeat = 200 * time.Millisecond
	// dialersInFlight bounds how many sessions connect at once when
	// filling the idle-cost rows, so none waits past its handshake timeout.
	dialersInFlight = 64
)

// measure runs fn with c workers until n operations are done and returns
// operations per second. fn gets the worker's number and the operation's.
func measure(ctx context.Context, n, c int, fn func(worker, op int) error) (float64, error) {
	var next atomic.Int64
	var wg sync.WaitGroup
	var firstErr atomic.Pointer[error]
	start := time.Now()
	for w := range c {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				i := int(next.Add(1) - 1)
				if i >= n || ctx.Err() != nil || firstErr.Load() != nil {
					return
				}
				if err := fn(w, i); err != nil {
					firstErr.CompareAndSwap(nil, &err)
					return
				}
			}
		}()
	}
	wg.Wait()
	if p := firstErr.Load(); p != nil {
		return 0, *p
	}
	return float64(n) / time.Since(start).Seconds(), ctx.Err()
}

// startRawLocal starts an in-process raw server on a free loopback port
// and returns it with its address and a client configuration for it;
// handle, if not nil, serves each connection.
func startRawLocal(kind transport.Kind, handle func(transport.Conn)) (*rawServer, string, transport.Config, error) {
	pki, err := newRawPKI()
	if err != nil {
		return nil, "", transport.Config{}, err
	}
	port, err := freePort()
	if err != nil {
		return nil, "", transport.Config{}, err
	}
	addr := fmt.Sprintf("127.0.0.1:%d", port)
	srv, err := startRawServer(addr, kind, pki, handle)
	if err != nil {
		return nil, "", transport.Config{}, err
	}
	return srv, addr, pki.clientConfig(), nil
}

// sessionSetup: sessions per second the hub brings online (handshake,
// hello, admission, registry, welcome) against raw mutual-TLS handshakes
// per second, same transport, same concurrency, same certificates.
func (f *fixture) sessionSetup(ctx context.Context, kind transport.Kind) (Row, error) {
	cfg := f.cfg
	srv, rawAddr, ccfg, err := startRawLocal(kind, nil)
	if err != nil {
		return Row{}, err
	}
	defer srv.close()
	mode := transport.Mode(kind)
	// Each worker cycles over its own devices, so a device's previous
	// session is gone before it dials again (no "replaced" churn).
	perWorker := len(f.ids) / cfg.Concurrency
	var raws, zs []float64
	for run := range cfg.Runs {
		r, err := rawHandshakes(ctx, cfg, rawAddr, mode, ccfg)
		if err != nil {
			return Row{}, fmt.Errorf("raw handshakes: %w", err)
		}
		z, err := measure(ctx, cfg.Handshakes, cfg.Concurrency, func(w, op int) error {
			id := f.ids[w*perWorker+(op/cfg.Concurrency)%perWorker]
			s, err := peer.DialSession(ctx, id, mode)
			if err != nil {
				return err
			}
			return s.Close()
		})
		if err != nil {
			return Row{}, fmt.Errorf("pzone sessions: %w", err)
		}
		cfg.logf("session setup %s run %d: pzone %.0f/s, raw %.0f/s", kind, run+1, z, r)
		raws, zs = append(raws, r), append(zs, z)
		if _, err := f.waitOnline(ctx, 0, true, time.Minute); err != nil {
			return Row{}, err
		}
	}
	v, b := median(zs), median(raws)
	return Row{Name: "session setup", Transport: string(kind), Value: v, Unit: "sessions/s", Baseline: b, Ratio: ratio(v, b),
		Target: fmt.Sprintf("≥ %.1f×", targetSetupRatio), Met: ratio(v, b) >= targetSetupRatio, Runs: cfg.Runs,
		Note: fmt.Sprintf("%d dialers", cfg.Concurrency)}, nil
}

// rawHandshakes measures raw mutual-TLS handshakes per second against the
// raw server at addr.
func rawHandshakes(ctx context.Context, cfg *Config, addr string, mode transport.Mode, ccfg transport.Config) (float64, error) {
	return measure(ctx, cfg.Handshakes, cfg.Concurrency, func(_, _ int) error {
		c, err := transport.Dial(ctx, addr, mode, ccfg)
		if err != nil {
			return err
		}
		return c.CloseWithError(0, "")
	})
}

// rawHandshakeRate is the raw handshake rate of one run, for the storm's
// bound when the session-setup rows are left out.
func (f *fixture) rawHandshakeRate(ctx context.Context, kind transport.Kind) (float64, error) {
	srv, addr, ccfg, err := startRawLocal(kind, nil)
	if err != nil {
		return 0, err
	}
	defer srv.close()
	return rawHandshakes(ctx, f.cfg, addr, transport.Mode(kind), ccfg)
}

// setupLatency: how long one device waits from dialling until the hub has
// admitted its session, one dialer at a time, against one raw handshake.
func (f *fixture) setupLatency(ctx context.Context, kind transport.Kind) (Row, error) {
	srv, rawAddr, ccfg, err := startRawLocal(kind, nil)
	if err != nil {
		return Row{}, err
	}
	defer srv.close()
	mode := transport.Mode(kind)
	n := max(f.cfg.Handshakes/5, 10)
	var raws, zs []float64
	for i := range n {
		start := time.Now()
		c, err := transport.Dial(ctx, rawAddr, mode, ccfg)
		if err != nil {
			return Row{}, err
		}
		raws = append(raws, float64(time.Since(start))/float64(time.Millisecond))
		c.CloseWithError(0, "")
		start = time.Now()
		s, err := peer.DialSession(ctx, f.ids[i%len(f.ids)], mode)
		if err != nil {
			return Row{}, err
		}
		zs = append(zs, float64(time.Since(start))/float64(time.Millisecond))
		s.Close()
	}
	v, b := median(zs), median(raws)
	return Row{Name: "session setup latency p50", Transport: string(kind), Value: v, Unit: "ms", Baseline: b, Ratio: ratio(v, b),
		Target: "report", Met: true, Runs: n, Note: "one dialer; handshake + hello + admission + welcome vs a raw handshake"}, nil
}

// reconnectStorm: N peers online, the hub (its own pzh process, as in
// production) restarts, seconds from the new process's start until every
// peer is back, against N ÷ the raw handshake rate.
func (f *fixture) reconnectStorm(ctx context.Context, kind transport.Kind, rawRate float64) (Row, error) {
	n := f.cfg.StormPeers
	f.stopHub()
	defer f.startHub(ctx, 0)
	hub, err := f.startHubProcess(ctx, kind)
	if err != nil {
		return Row{}, err
	}
	fl, err := f.fillFleet(ctx, kind, n)
	if err != nil {
		stopChild(hub)
		return Row{}, fmt.Errorf("bringing peers online: %w", err)
	}
	defer fl.stop()
	stopStart := time.Now()
	stopChild(hub)
	f.cfg.logf("reconnect storm %s: the old hub took %v to shut down", kind, time.Since(stopStart).Round(time.Millisecond))
	retriesBefore := fl.retries.n.Load()
	fl.retries.reset()
	start := time.Now()
	hub, err = f.startHubProcess(ctx, kind)
	if err != nil {
		return Row{}, err
	}
	defer stopChild(hub)
	profiled := make(chan struct{})
	if f.cfg.ProfileDir != "" {
		go func() {
			defer close(profiled)
			if err := f.profileHub(ctx, filepath.Join(f.cfg.ProfileDir, "storm-"+string(kind)+".pprof")); err != nil {
				f.cfg.logf("profile of the %s storm: %v", kind, err)
			}
		}()
	} else {
		close(profiled)
	}
	_, werr := f.waitOnline(ctx, n, false, 5*time.Minute)
	took := time.Since(start)
	failed := fl.retries.n.Load() - retriesBefore
	<-profiled
	f.cfg.logf("reconnect storm %s: %d failed attempts:%s", kind, failed, fl.retries.all())
	fl.stop()
	stopChild(hub)
	base := float64(n) / rawRate
	row := Row{Name: "reconnect storm", Transport: string(kind), Value: took.Seconds(), Unit: "s", Baseline: base,
		Ratio: ratio(took.Seconds(), base), Target: fmt.Sprintf("≤ %.1f×, all back", targetStormRatio), Runs: 1,
		Note: fmt.Sprintf("%d peers; %d attempts failed, most: %s", n, failed, fl.retries.top())}
	row.Met = werr == nil && row.Ratio <= targetStormRatio
	if werr != nil {
		row.Note += "; NOT ALL BACK: " + werr.Error()
	}
	f.cfg.logf("reconnect storm %s: %d peers back in %v (bound %.2fs)", kind, n, took.Round(time.Millisecond), base)
	return row, nil
}

// idleTraffic: wire bytes an idle session costs per minute at the default
// heartbeat, measured as bytes per heartbeat exchange.
func (f *fixture) idleTraffic(ctx context.Context, kind transport.Kind) (Row, error) {
	f.stopHub()
	if err := f.startHub(ctx, trafficHeartbeat); err != nil {
		return Row{}, err
	}
	defer func() {
		f.stopHub()
		f.startHub(ctx, 0)
	}()
	n := min(trafficPeers, len(f.ids))
	fl, err := startFleet(ctx, f.ids[:n], kind)
	if err != nil {
		return Row{}, err
	}
	defer fl.stop()
	if _, err := f.waitOnline(ctx, n, false, time.Minute); err != nil {
		return Row{}, err
	}
	// Let the connect-time pings settle, then sample a window.
	if err := sleep(ctx, f.cfg.TrafficSettle); err != nil {
		return Row{}, err
	}
	before := fl.traffic()
	window := f.cfg.TrafficWindow
	if err := sleep(ctx, window); err != nil {
		return Row{}, err
	}
	perBeat := float64(fl.traffic()-before) / float64(n) / (float64(window) / float64(trafficHeartbeat))
	perMin := perBeat * float64(time.Minute) / float64(wire.DefaultHeartbeat)
	return Row{Name: "idle keepalive traffic", Transport: string(kind), Value: perMin, Unit: "B/min/session",
		Target: fmt.Sprintf("≤ %.0f B/min", targetIdleBytes), Met: perMin <= targetIdleBytes, Runs: 1,
		Note: fmt.Sprintf("%.0f B per ping/pong exchange (both ways, with ACKs), one per %v; a raw idle connection sends 0", perBeat, wire.DefaultHeartbeat)}, nil
}

// sleep waits out a measurement window (not a synchronisation).
func sleep(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C:
		return nil
	}
}

// idleMemory: heap and RSS per idle session in a pzh serve process holding
// N sessions, against a raw server process holding N idle connections.
func (f *fixture) idleMemory(ctx context.Context, kind transport.Kind) ([]Row, error) {
	n := f.cfg.IdlePeers
	hub, err := f.startHubProcess(ctx, kind)
	if err != nil {
		return nil, err
	}
	defer stopChild(hub)
	pz0, err := memstats(ctx, f.client)
	if err != nil {
		return nil, err
	}
	fl, err := f.fillFleet(ctx, kind, n)
	if err != nil {
		return nil, err
	}
	pz1, err := memstats(ctx, f.client)
	fl.stop()
	if err != nil {
		return nil, err
	}
	stopChild(hub)

	// The raw baseline in its own process.
	pkiDir := filepath.Join(f.cfg.Work, "raw-"+string(kind))
	if err := os.MkdirAll(pkiDir, 0o700); err != nil {
		return nil, err
	}
	pki, err := newRawPKI()
	if err != nil {
		return nil, err
	}
	if err := pki.save(pkiDir); err != nil {
		return nil, err
	}
	port, err := freePort()
	if err != nil {
		return nil, err
	}
	rawAddr := fmt.Sprintf("127.0.0.1:%d", port)
	raw := exec.CommandContext(ctx, f.cfg.Self, "rawserver", "--kind", string(kind), "--listen", rawAddr, "--dir", pkiDir)
	raw.Stderr = os.Stderr
	if err := raw.Start(); err != nil {
		return nil, fmt.Errorf("start %s rawserver: %w", f.cfg.Self, err)
	}
	defer stopChild(raw)
	rc := api.NewClient(filepath.Join(pkiDir, "raw.sock"))
	var raw0 *localapi.MemStats
	for raw0 == nil {
		if raw0, err = memstats(ctx, rc); err != nil && !errors.Is(err, api.ErrNotRunning) {
			return nil, err
		}
		if err := sleep(ctx, 20*time.Millisecond); err != nil { // child still starting
			return nil, err
		}
	}
	conns, err := holdRaw(ctx, rawAddr, kind, pki, n)
	defer func() {
		for _, c := range conns {
			c.CloseWithError(0, "")
		}
	}()
	if err != nil {
		return nil, err
	}
	// The server records a connection just after the dialer returns. Over
	// QUIC a handful of a 10,000-connection burst can stay finished on the
	// client but never on the server; the figure is then per connection
	// actually held, as long as that is nearly all of them.
	held := 0
	for deadline := time.Now().Add(10 * time.Second); ; {
		var m localapi.MemStats
		if err := rc.Do(ctx, http.MethodGet, "/v1/debug/memstats", nil, &m); err != nil {
			return nil, err
		}
		held = m.Sessions
		if held == n || time.Now().After(deadline) {
			break
		}
		if err := sleep(ctx, 10*time.Millisecond); err != nil {
			return nil, err
		}
	}
	if held < n*99/100 {
		return nil, fmt.Errorf("raw server holds %d connections, want %d", held, n)
	}
	raw1, err := memstats(ctx, rc)
	if err != nil {
		return nil, err
	}
	per := func(a, b uint64, k int) float64 { return (float64(b) - float64(a)) / float64(k) / 1024 }
	heap, rheap := per(pz0.HeapAlloc, pz1.HeapAlloc, pz1.Sessions), per(raw0.HeapAlloc, raw1.HeapAlloc, raw1.Sessions)
	rss, rrss := per(pz0.RSS, pz1.RSS, pz1.Sessions), per(raw0.RSS, raw1.RSS, raw1.Sessions)
	f.cfg.logf("idle memory %s: pzone %.1f KiB heap/session (%d goroutines), raw %.1f KiB (%d goroutines)", kind, heap, pz1.Goroutines, rheap, raw1.Goroutines)
	note := fmt.Sprintf("%d sessions vs %d raw connections; goroutines %d vs %d", pz1.Sessions, raw1.Sessions, pz1.Goroutines, raw1.Goroutines)
	return []Row{
		{Name: "idle heap per session", Transport: string(kind), Value: heap, Unit: "KiB", Baseline: rheap, Ratio: ratio(heap, rheap),
			Target: fmt.Sprintf("≤ %.1f×", targetIdleRatio), Met: ratio(heap, rheap) <= targetIdleRatio, Runs: 1, Note: note},
		{Name: "idle RSS per session", Transport: string(kind), Value: rss, Unit: "KiB", Baseline: rrss, Ratio: ratio(rss, rrss),
			Target: "report", Met: true, Runs: 1},
	}, nil
}

// profileHub saves a CPU profile of the running hub (its admin socket
// serves pprof) covering the next few seconds.
func (f *fixture) profileHub(ctx context.Context, path string) error {
	out, err := os.Create(path)
	if err != nil {
		return err
	}
	if err := f.client.Fetch(ctx, "/debug/pprof/profile?seconds=3", out); err != nil {
		out.Close()
		return err
	}
	return out.Close()
}

// startHubProcess runs the hub as its own process serving one transport
// and returns once it answers on its socket.
func (f *fixture) startHubProcess(ctx context.Context, kind transport.Kind) (*exec.Cmd, error) {
	only := "--no-tcp"
	if kind == transport.KindTCP {
		only = "--no-quic"
	}
	args := append(append([]string(nil), f.cfg.HubCommand[1:]...), "--data", f.dir, "--listen", f.addr, "--log-level", "error", only)
	hub := exec.CommandContext(ctx, f.cfg.HubCommand[0], args...)
	hub.Stderr = os.Stderr
	if err := hub.Start(); err != nil {
		return nil, fmt.Errorf("start %v: %w", f.cfg.HubCommand, err)
	}
	// Ready once it answers; devices may already be coming back.
	if _, err := f.waitOnline(ctx, 0, false, 30*time.Second); err != nil {
		stopChild(hub)
		return nil, err
	}
	return hub, nil
}

// fillFleet starts n peers in batches and waits until all are online.
func (f *fixture) fillFleet(ctx context.Context, kind transport.Kind, n int) (*fleet, error) {
	fctx, cancel := context.WithCancel(ctx)
	all := &fleet{cancel: cancel, retries: newRetryCounter()}
	for i := 0; i < n; i += dialersInFlight {
		part, err := startFleetCounting(fctx, f.ids[i:min(i+dialersInFlight, n)], kind, all.retries)
		if err != nil {
			all.stop()
			return nil, err
		}
		all.peers = append(all.peers, part.peers...)
		all.wg.Add(1)
		go func() {
			defer all.wg.Done()
			<-fctx.Done()
			part.stop()
		}()
		if _, err := f.waitOnline(ctx, min(i+dialersInFlight, n), false, 2*time.Minute); err != nil {
			all.stop()
			return nil, err
		}
	}
	return all, nil
}

// holdRaw opens n raw idle connections.
func holdRaw(ctx context.Context, addr string, kind transport.Kind, pki *rawPKI, n int) ([]transport.Conn, error) {
	conns := make([]transport.Conn, n)
	ccfg := pki.clientConfig()
	_, err := measure(ctx, n, dialersInFlight, func(_, i int) error {
		c, err := transport.Dial(ctx, addr, transport.Mode(kind), ccfg)
		conns[i] = c
		return err
	})
	var out []transport.Conn
	for _, c := range conns {
		if c != nil {
			out = append(out, c)
		}
	}
	return out, err
}

func memstats(ctx context.Context, c *api.Client) (*localapi.MemStats, error) {
	var m localapi.MemStats
	if err := c.Do(ctx, http.MethodGet, "/v1/debug/memstats?gc=1", nil, &m); err != nil {
		return nil, err
	}
	return &m, nil
}

// settledMemstats is memstats once the heap stops falling: what earlier
// rows left behind (sessions being torn down) is gone, so a later
// reading's growth is the row's own. It reads at most settleReads times.
func settledMemstats(ctx context.Context, c *api.Client) (*localapi.MemStats, error) {
	const settleReads, settleSlack = 10, 64 << 10
	m, err := memstats(ctx, c)
	for i := 1; err == nil && i < settleReads; i++ {
		var next *localapi.MemStats
		if next, err = memstats(ctx, c); err != nil {
			break
		}
		settled := next.HeapAlloc+settleSlack >= m.HeapAlloc
		m = next
		if settled {
			break
		}
	}
	return m, err
}

// stopChild interrupts a child process and waits for it; a second call is
// harmless.
func stopChild(c *exec.Cmd) {
	if c.Process == nil || c.ProcessState != nil {
		return
	}
	c.Process.Signal(syscall.SIGINT)
	done := make(chan struct{})
	go func() { c.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		c.Process.Kill()
		<-done
	}
}
