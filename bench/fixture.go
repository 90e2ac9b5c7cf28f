package bench

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/pzone/pzone/pairing"
	"github.com/pzone/pzone/transport"
	"github.com/pzone/pzone/zone/api"
	"github.com/pzone/pzone/zone/hub"
	"github.com/pzone/pzone/zone/peer"
)

// fixture is one zone with many paired devices and an in-process hub.
type fixture struct {
	cfg    *Config
	dir    string
	addr   string
	ids    []*peer.Identity
	client *api.Client

	stopHubHere func() // nil while no hub runs in this process
}

// pairWorkers pair devices in parallel; the hub serialises the store
// commits, so more would only queue.
const pairWorkers = 8

func newFixture(ctx context.Context, cfg *Config) (*fixture, error) {
	port, err := freePort()
	if err != nil {
		return nil, err
	}
	f := &fixture{cfg: cfg, dir: filepath.Join(cfg.Work, "hub"), addr: fmt.Sprintf("127.0.0.1:%d", port)}
	f.client = api.NewClient(api.SocketPath(f.dir, api.HubSocketName))
	if _, err := hub.InitZone(f.dir, "bench", []string{f.addr}, time.Now()); err != nil {
		return nil, err
	}
	if err := f.startHub(ctx, 0); err != nil {
		return nil, err
	}
	need := max(cfg.StormPeers, cfg.IdlePeers, 4*cfg.Concurrency, trafficPeers)
	start := time.Now()
	if err := f.pairMany(ctx, need); err != nil {
		f.close()
		return nil, err
	}
	cfg.logf("paired %d devices in %v", need, time.Since(start).Round(time.Millisecond))
	return f, nil
}

func (f *fixture) close() { f.stopHub() }

// startHub runs the hub in this process (heartbeat 0: the default).
func (f *fixture) startHub(ctx context.Context, heartbeat time.Duration) error {
	stop, err := runHub(ctx, hub.Config{DataDir: f.dir, Listen: f.addr, Heartbeat: heartbeat})
	if err != nil {
		return err
	}
	f.stopHubHere = stop
	return nil
}

func (f *fixture) stopHub() {
	if f.stopHubHere == nil {
		return
	}
	f.stopHubHere()
	f.stopHubHere = nil
}

// runHub runs a hub in this process, as pzh serve would, and returns once
// it listens; stop ends it and waits until it has.
func runHub(ctx context.Context, hc hub.Config) (stop func(), err error) {
	hctx, cancel := context.WithCancel(ctx)
	ready := make(chan struct{})
	done := make(chan error, 1)
	hc.Ready = func(net.Addr) { close(ready) }
	go func() { done <- hub.Run(hctx, hc) }()
	select {
	case <-ready:
		return func() { cancel(); <-done }, nil
	case err := <-done:
		cancel()
		return nil, fmt.Errorf("hub did not start: %w", err)
	}
}

// pairMany pairs n devices through the real pairing exchange.
func (f *fixture) pairMany(ctx context.Context, n int) error {
	f.ids = make([]*peer.Identity, n)
	var next atomic.Int64
	var wg sync.WaitGroup
	errc := make(chan error, pairWorkers)
	var tokens []*pairing.Token
	for i := 0; i < n; i += pairing.MaxInviteUses {
		var inv api.InviteView
		uses := min(pairing.MaxInviteUses, n-i)
		if err := f.client.Do(ctx, http.MethodPost, "/v1/invites", api.InviteRequest{Device: fmt.Sprintf("d%d", i/pairing.MaxInviteUses), Uses: uses, TTL: "1h"}, &inv); err != nil {
			return err
		}
		tok, err := pairing.ParseToken(inv.Token)
		if err != nil {
			return err
		}
		tokens = append(tokens, tok)
	}
	for range pairWorkers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				i := int(next.Add(1) - 1)
				if i >= n || ctx.Err() != nil {
					return
				}
				res, err := pairing.Pair(ctx, tokens[i/pairing.MaxInviteUses], transport.ModeTCP)
				if err == nil {
					f.ids[i], err = peer.NewIdentity(res)
				}
				if err != nil {
					errc <- fmt.Errorf("pair device %d: %w", i, err)
					return
				}
			}
		}()
	}
	wg.Wait()
	close(errc)
	return <-errc
}

// hubStatus reads the hub's status, long-polling past version since when
// wait is set.
func (f *fixture) hubStatus(ctx context.Context, since uint64, wait bool) (*api.HubStatus, error) {
	path := "/v1/status"
	if wait {
		path = fmt.Sprintf("/v1/status?wait=%d&timeout=5s", since)
	}
	var st api.HubStatus
	return &st, f.client.Do(ctx, http.MethodGet, path, nil, &st)
}

// waitOnline waits until the hub counts want live sessions (or, with
// atMost, no more than want), and returns how long that took.
func (f *fixture) waitOnline(ctx context.Context, want int, atMost bool, timeout time.Duration) (time.Duration, error) {
	start := time.Now()
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	st, err := f.hubStatus(ctx, 0, false)
	for {
		if err != nil {
			if errors.Is(err, api.ErrNotRunning) && ctx.Err() == nil {
				// A hub process still starting: its socket is not there yet.
				if err := sleep(ctx, 10*time.Millisecond); err != nil {
					return time.Since(start), err
				}
				st, err = f.hubStatus(ctx, 0, false)
				continue
			}
			if ctx.Err() != nil {
				return time.Since(start), fmt.Errorf("%d of %d sessions online after %v", st.Online, want, timeout)
			}
			return 0, err
		}
		if (!atMost && st.Online >= want) || (atMost && st.Online <= want) {
			return time.Since(start), nil
		}
		var next *api.HubStatus
		next, err = f.hubStatus(ctx, st.Version, true)
		if err == nil {
			st = next
		}
	}
}

// fleet is a set of running peers.
type fleet struct {
	peers  []*peer.Peer
	cancel context.CancelFunc
	wg     sync.WaitGroup
	// retries counts failed connection attempts across the fleet.
	retries retryCounter
}

// retryCounter is a log handler that counts the peers' "retrying"
// warnings and why they happened.
type retryCounter struct {
	n    *atomic.Int64
	mu   *sync.Mutex
	why  map[string]int
	skip *atomic.Bool // while set, count nothing (a planned shutdown)
}

func newRetryCounter() retryCounter {
	return retryCounter{n: new(atomic.Int64), mu: new(sync.Mutex), why: map[string]int{}, skip: new(atomic.Bool)}
}

func (r retryCounter) Enabled(_ context.Context, l slog.Level) bool { return l >= slog.LevelWarn }
func (r retryCounter) Handle(_ context.Context, rec slog.Record) error {
	if !strings.Contains(rec.Message, "retrying") {
		return nil
	}
	var why string
	rec.Attrs(func(a slog.Attr) bool {
		if a.Key == "err" {
			why = a.Value.String()
		}
		return true
	})
	if strings.Contains(why, "shutdown") {
		return nil // the hub's own goodbye, not a failed attempt
	}
	r.n.Add(1)
	// Addresses and ports differ per peer; keep the part after them.
	if i := strings.Index(why, "127.0.0.1:"); i >= 0 {
		if j := strings.Index(why[i:], " "); j >= 0 {
			why = why[:i] + "ADDR" + why[i+j:]
		}
	}
	r.mu.Lock()
	r.why[why]++
	r.mu.Unlock()
	return nil
}

// reset forgets the reasons seen so far (the count keeps running).
func (r retryCounter) reset() {
	r.mu.Lock()
	clear(r.why)
	r.mu.Unlock()
}

// all lists every reason with its count.
func (r retryCounter) all() string {
	r.mu.Lock()
	defer r.mu.Unlock()
	out := ""
	for w, c := range r.why {
		out += fmt.Sprintf("\n#   %5d × %s", c, w)
	}
	return out
}

// top is the most common reason for a failed attempt.
func (r retryCounter) top() string {
	r.mu.Lock()
	defer r.mu.Unlock()
	best, n := "", 0
	for w, c := range r.why {
		if c > n {
			best, n = w, c
		}
	}
	if n == 0 {
		return "none"
	}
	return fmt.Sprintf("%q ×%d", best, n)
}
func (r retryCounter) WithAttrs([]slog.Attr) slog.Handler { return r }
func (r retryCounter) WithGroup(string) slog.Handler      { return r }

// startFleet runs a peer runtime for each identity, as pzp run would.
func startFleet(ctx context.Context, ids []*peer.Identity, kind transport.Kind) (*fleet, error) {
	return startFleetCounting(ctx, ids, kind, newRetryCounter())
}

func startFleetCounting(ctx context.Context, ids []*peer.Identity, kind transport.Kind, rc retryCounter) (*fleet, error) {
	fctx, cancel := context.WithCancel(ctx)
	fl := &fleet{cancel: cancel, retries: rc}
	log := slog.New(fl.retries)
	for _, id := range ids {
		p, err := peer.New(peer.Config{Mode: transport.Mode(kind), Logger: log}, id)
		if err != nil {
			cancel()
			return nil, err
		}
		fl.peers = append(fl.peers, p)
		fl.wg.Add(1)
		go func() {
			defer fl.wg.Done()
			p.Run(fctx)
		}()
	}
	return fl, nil
}

func (fl *fleet) stop() {
	fl.cancel()
	fl.wg.Wait()
}

// traffic sums the wire bytes of every peer's current session.
func (fl *fleet) traffic() uint64 {
	var sum uint64
	for _, p := range fl.peers {
		st := p.Traffic()
		sum += st.BytesSent + st.BytesReceived
	}
	return sum
}

func freePort() (int, error) {
	for range 50 {
		tl, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return 0, err
		}
		port := tl.Addr().(*net.TCPAddr).Port
		ul, err := net.ListenPacket("udp", fmt.Sprintf("127.0.0.1:%d", port))
		tl.Close()
		if err != nil {
			continue
		}
		ul.Close()
		return port, nil
	}
	return 0, errors.New("no port free for both TCP and UDP")
}
