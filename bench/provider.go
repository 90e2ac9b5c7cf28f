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

	"github.com/pzone/pzone/pairing"
	"github.com/pzone/pzone/transport"
	"github.com/pzone/pzone/zone/api"
	"github.com/pzone/pzone/zone/hub"
	"github.com/pzone/pzone/zone/localapi"
	"github.com/pzone/pzone/zone/peer"
	"github.com/pzone/pzone/zone/provider"
)

// The provider rows: Config.ProviderZones zones in one pzh provider
// process, providerDevices idle devices each, against one zone's own
// pzh serve process in the same run: the heap a zone costs (against the
// whole heap of a hub of its own), the heap a session costs, and the rate
// sessions are set up at (against the same in the single zone).

// providerDevices is the devices per zone.
const providerDevices = 2

// singleDevices bound the sessions of the single-zone baseline: enough
// for its per-session figures to stand out of the heap's noise.
const singleDevices = 2000

type providerBench struct {
	cfg *Config
	// dir is the provider with the zones, empty one with none (whose heap
	// is the process's own, subtracted from the zones').
	dir, empty string
	addr       string
	client     *api.Client // dir's provider socket
	ids        []*peer.Identity
	// single is the zone of its own, with as many devices as the sessions
	// it is measured with.
	single *fixture
	// zones is how many zones run: Config.ProviderZones, unless the
	// open-file limit allows fewer (capped).
	zones  int
	capped bool
}

// filesPerZone are the files the provider holds open per zone with two
// TCP sessions: 3 stores, the admin socket, and the sessions, counted
// twice: at 3,000 zones (6.3 per zone) TCP dials timed out here, at 1,000
// they did not.
const filesPerZone = 4 + 2*providerDevices

// providerZonesFor is how many of want zones fit this process's open-file
// limit, which the provider process inherits: the provider holds
// filesPerZone per zone, this process a socket per session.
func providerZonesFor(want int) (int, bool) {
	most := (openFileLimit() - 2048) / filesPerZone
	if want <= most {
		return want, false
	}
	return max(most, 1), true
}

func openFileLimit() int {
	var l syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &l); err != nil || l.Cur > 1<<30 {
		return 1 << 30
	}
	return int(l.Cur)
}

func newProviderBench(ctx context.Context, cfg *Config) (*providerBench, error) {
	port, err := freePort()
	if err != nil {
		return nil, err
	}
	b := &providerBench{cfg: cfg, dir: filepath.Join(cfg.Work, "provider"), empty: filepath.Join(cfg.Work, "provider-empty"), addr: fmt.Sprintf("127.0.0.1:%d", port)}
	b.client = api.NewClient(api.SocketPath(b.dir, api.ProviderSocketName))
	for _, d := range []string{b.dir, b.empty} {
		if err := provider.Init(d, []string{b.addr}, time.Now()); err != nil {
			return nil, err
		}
	}
	b.zones, b.capped = providerZonesFor(cfg.ProviderZones)
	if b.capped {
		cfg.logf("provider: %d zones, not %d: the open-file limit is %d and could not be raised; each zone holds %d files open (its 3 stores and its admin socket), each TCP session one more",
			b.zones, cfg.ProviderZones, openFileLimit(), filesPerZone-2*providerDevices)
	}
	proc, err := b.start(ctx, b.dir, "")
	if err != nil {
		return nil, err
	}
	defer stopChild(proc)
	zones := b.zones
	start := time.Now()
	b.ids = make([]*peer.Identity, zones*providerDevices)
	var next atomic.Int64
	var wg sync.WaitGroup
	errc := make(chan error, pairWorkers)
	for range pairWorkers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				i := int(next.Add(1) - 1)
				if i >= zones || ctx.Err() != nil {
					return
				}
				if err := b.makeZone(ctx, i); err != nil {
					errc <- err
					return
				}
			}
		}()
	}
	wg.Wait()
	close(errc)
	if err := <-errc; err != nil {
		return nil, err
	}
	cfg.logf("provider: %d zones made and %d devices paired in %v", zones, len(b.ids), time.Since(start).Round(time.Millisecond))

	// The zone of its own, with as many devices as the provider's sessions
	// (at most as many as the idle rows hold).
	sport, err := freePort()
	if err != nil {
		return nil, err
	}
	b.single = &fixture{cfg: cfg, dir: filepath.Join(cfg.Work, "provider-single"), addr: fmt.Sprintf("127.0.0.1:%d", sport)}
	b.single.client = api.NewClient(api.SocketPath(b.single.dir, api.HubSocketName))
	if _, err := hub.InitZone(b.single.dir, "single", []string{b.single.addr}, time.Now()); err != nil {
		return nil, err
	}
	sp, err := b.single.startHubProcess(ctx, transport.KindTCP) // pairMany pairs over TCP
	if err != nil {
		return nil, err
	}
	defer stopChild(sp)
	if err := b.single.pairMany(ctx, min(len(b.ids), singleDevices)); err != nil {
		return nil, err
	}
	return b, nil
}

// makeZone adds zone i and pairs its devices.
func (b *providerBench) makeZone(ctx context.Context, i int) error {
	var z api.ProviderZone
	name := fmt.Sprintf("z%d", i)
	if err := b.client.Do(ctx, http.MethodPost, "/v1/zones", api.ZoneAddRequest{Name: name, Limits: api.DefaultZoneLimits}, &z); err != nil {
		return fmt.Errorf("add zone %s: %w", name, err)
	}
	hc := api.NewClient(api.SocketPath(z.Dir, api.HubSocketName))
	var inv api.InviteView
	if err := hc.Do(ctx, http.MethodPost, "/v1/invites", api.InviteRequest{Device: "d", Uses: providerDevices, TTL: "1h"}, &inv); err != nil {
		return fmt.Errorf("invite in zone %s: %w", name, err)
	}
	tok, err := pairing.ParseToken(inv.Token)
	if err != nil {
		return err
	}
	for d := range providerDevices {
		res, err := pairing.Pair(ctx, tok, transport.ModeTCP)
		if err == nil {
			b.ids[i*providerDevices+d], err = peer.NewIdentity(res)
		}
		if err != nil {
			return fmt.Errorf("pair a device of zone %s: %w", name, err)
		}
	}
	return nil
}

// start runs the provider of dir as its own process, serving one
// transport (both for ""), and returns once it answers: every zone has
// started by then.
func (b *providerBench) start(ctx context.Context, dir string, kind transport.Kind) (*exec.Cmd, error) {
	args := append(append([]string(nil), b.cfg.ProviderCommand[1:]...), "--data", dir, "--listen", b.addr, "--log-level", "error")
	switch kind {
	case transport.KindQUIC:
		args = append(args, "--no-tcp")
	case transport.KindTCP:
		args = append(args, "--no-quic")
	}
	proc := exec.CommandContext(ctx, b.cfg.ProviderCommand[0], args...)
	proc.Stderr = os.Stderr
	if err := proc.Start(); err != nil {
		return nil, fmt.Errorf("start %v: %w", b.cfg.ProviderCommand, err)
	}
	c := api.NewClient(api.SocketPath(dir, api.ProviderSocketName))
	deadline := time.Now().Add(5*time.Minute + time.Duration(b.zones)*10*time.Millisecond)
	for {
		var st api.ProviderStatus
		err := c.Do(ctx, http.MethodGet, "/v1/status", nil, &st)
		if err == nil {
			return proc, nil
		}
		if !errors.Is(err, api.ErrNotRunning) || time.Now().After(deadline) {
			stopChild(proc)
			return nil, fmt.Errorf("provider in %s: %w", dir, err)
		}
		if err := sleep(ctx, 20*time.Millisecond); err != nil {
			stopChild(proc)
			return nil, err
		}
	}
}

// hold opens a session for each of ids, concurrency at a time, and
// returns the rate they were set up at.
func (b *providerBench) hold(ctx context.Context, ids []*peer.Identity, kind transport.Kind) ([]*peer.Session, float64, error) {
	sessions := make([]*peer.Session, len(ids))
	rate, err := measure(ctx, len(ids), b.cfg.Concurrency, func(_, i int) error {
		s, err := peer.DialSession(ctx, ids[i], transport.Mode(kind))
		if err != nil && ctx.Err() == nil {
			// One more try: a QUIC handshake lost on a loaded loopback
			// is answered by a stateless reset.
			s, err = peer.DialSession(ctx, ids[i], transport.Mode(kind))
		}
		sessions[i] = s
		return err
	})
	return sessions, rate, err
}

func closeSessions(ss []*peer.Session) {
	for _, s := range ss {
		if s != nil {
			s.Close()
		}
	}
}

// waitSessions waits until c's process counts n live sessions.
func waitSessions(ctx context.Context, c *api.Client, n int) (*localapi.MemStats, error) {
	deadline := time.Now().Add(2 * time.Minute)
	for {
		var m localapi.MemStats
		if err := c.Do(ctx, http.MethodGet, "/v1/debug/memstats", nil, &m); err != nil {
			return nil, err
		}
		if m.Sessions >= n {
			return memstats(ctx, c)
		}
		if time.Now().After(deadline) {
			return nil, fmt.Errorf("%d of %d sessions live after 2m", m.Sessions, n)
		}
		if err := sleep(ctx, 20*time.Millisecond); err != nil {
			return nil, err
		}
	}
}

// rows measures the single zone, the empty provider, then the provider's
// zones, each as its own process serving kind.
func (b *providerBench) rows(ctx context.Context, kind transport.Kind) ([]Row, error) {
	// One zone of its own.
	sp, err := b.single.startHubProcess(ctx, kind)
	if err != nil {
		return nil, err
	}
	s0, err := settledMemstats(ctx, b.single.client)
	if err != nil {
		stopChild(sp)
		return nil, err
	}
	ss, srate, err := b.hold(ctx, b.single.ids, kind)
	var s1 *localapi.MemStats
	if err == nil {
		s1, err = waitSessions(ctx, b.single.client, len(b.single.ids))
	}
	closeSessions(ss)
	stopChild(sp)
	if err != nil {
		return nil, fmt.Errorf("single zone: %w", err)
	}

	// The provider process with no zone.
	ep, err := b.start(ctx, b.empty, kind)
	if err != nil {
		return nil, err
	}
	e0, err := settledMemstats(ctx, api.NewClient(api.SocketPath(b.empty, api.ProviderSocketName)))
	stopChild(ep)
	if err != nil {
		return nil, err
	}

	// The provider with its zones.
	start := time.Now()
	pp, err := b.start(ctx, b.dir, kind)
	if err != nil {
		return nil, err
	}
	defer stopChild(pp)
	startup := time.Since(start)
	z0, err := settledMemstats(ctx, b.client)
	if err != nil {
		return nil, err
	}
	ps, prate, err := b.hold(ctx, b.ids, kind)
	defer closeSessions(ps)
	if err != nil {
		return nil, fmt.Errorf("provider sessions: %w", err)
	}
	z1, err := waitSessions(ctx, b.client, len(b.ids))
	if err != nil {
		return nil, err
	}
	zones := b.zones
	kib := func(a, c uint64, n int) float64 { return (float64(c) - float64(a)) / float64(n) / 1024 }
	perZone, single := kib(e0.HeapAlloc, z0.HeapAlloc, zones), float64(s0.HeapAlloc)/1024
	perSession, singleSession := kib(z0.HeapAlloc, z1.HeapAlloc, len(b.ids)), kib(s0.HeapAlloc, s1.HeapAlloc, len(b.single.ids))
	gPerZone := float64(z0.Goroutines-e0.Goroutines) / float64(zones)
	rssPerZone := kib(e0.RSS, z0.RSS, zones)
	b.cfg.logf("provider %s: %d zones started in %v; %.1f KiB heap, %.1f KiB RSS and %.1f goroutines per zone; %.1f KiB heap per session (single zone %.1f); %.0f sessions/s (single zone %.0f)",
		kind, zones, startup.Round(time.Millisecond), perZone, rssPerZone, gPerZone, perSession, singleSession, prate, srate)
	note := fmt.Sprintf("%d zones × %d devices; per zone %.0f goroutines, %.0f KiB RSS; started in %v", zones, providerDevices, gPerZone, rssPerZone, startup.Round(100*time.Millisecond))
	if b.capped {
		note += fmt.Sprintf("; not the %d asked: the open-file limit (%d) allows %d", b.cfg.ProviderZones, openFileLimit(), zones)
	}
	return []Row{
		{Name: "provider heap per zone", Transport: string(kind), Value: perZone, Unit: "KiB", Baseline: single, Ratio: ratio(perZone, single),
			Target: "report", Met: true, Runs: 1, Note: note + fmt.Sprintf("; baseline: the whole heap of a single-zone hub with %d devices paired, none online", len(b.single.ids))},
		{Name: "provider heap per session", Transport: string(kind), Value: perSession, Unit: "KiB", Baseline: singleSession, Ratio: ratio(perSession, singleSession),
			Target: "report", Met: true, Runs: 1, Note: fmt.Sprintf("%d sessions; baseline: %d in a single-zone hub", len(b.ids), len(b.single.ids))},
		{Name: "provider session setup", Transport: string(kind), Value: prate, Unit: "sessions/s", Baseline: srate, Ratio: ratio(prate, srate),
			Target: "report", Met: true, Runs: 1, Note: fmt.Sprintf("%d dialers, across %d zones; baseline: one zone", b.cfg.Concurrency, zones)},
	}, nil
}
