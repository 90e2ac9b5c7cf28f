package bench

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"time"

	"github.com/pzone/pzone/transport"
	"github.com/pzone/pzone/zone/api"
	"github.com/pzone/pzone/zone/peer"
)

// The direct rows: calls between two devices of one zone that connect
// directly (docs/PROTOCOL.md, direct sessions), against the same calls
// through the hub, measured alternating in the same run. The hub runs as
// its own process (pzh serve), as for the call rows. Devices A and B run
// with direct listeners on loopback, C without one, all in this process
// (peer.Run, as pzp run would); B and C each have an application serving
// echo. A call from A to B/echo takes the direct connection; one from A to
// C/echo, which publishes no direct address, goes A → hub → C: the same
// call, the same applications, over the hub.

// directBench is the zone of the direct rows.
type directBench struct {
	cfg     *Config
	dir     string
	hub     *syncHub
	a, b, c *syncDevice
}

func newDirectBench(ctx context.Context, cfg *Config) (_ *directBench, err error) {
	d := &directBench{cfg: cfg, dir: filepath.Join(cfg.Work, "direct")}
	if d.hub, err = startZoneHub(ctx, cfg, filepath.Join(d.dir, "hub"), 0); err != nil {
		return nil, err
	}
	devs, err := d.hub.pairDevices(ctx, "direct", filepath.Join(d.dir, "devices"), 3)
	if err != nil {
		stopChild(d.hub.proc)
		return nil, err
	}
	d.a, d.b, d.c = devs[0], devs[1], devs[2]
	return d, nil
}

func (d *directBench) close() { stopChild(d.hub.proc) }

// roundTrip: how long one 64-byte call takes from A's application to B's
// echo and back over the direct connection (A's local API, A, B, B's
// application, and back), p50 and p99, against the same call to C's echo
// through the hub, alternating.
func (d *directBench) roundTrip(ctx context.Context, kind transport.Kind) (_ []Row, err error) {
	mode := transport.Mode(kind)
	direct := startPeers(ctx, peer.Config{Mode: mode, DirectListen: "127.0.0.1:0"}, []*syncDevice{d.a, d.b})
	viaHub := startPeers(ctx, peer.Config{Mode: mode}, []*syncDevice{d.c})
	defer func() { err = errors.Join(err, viaHub.stop(), direct.stop()) }()
	if err := waitSynced(ctx, []*syncDevice{d.a, d.b, d.c}); err != nil {
		return nil, err
	}
	info := api.ServiceInfo{Name: callService, Description: "returns its argument", Methods: []string{callMethod}}
	apps, err := serveApps(ctx, []*syncDevice{d.b, d.c}, info, echo)
	if err != nil {
		return nil, err
	}
	defer apps.stop()
	arg := jsonString(callArgSize)
	cb := &callBench{a: d.a}
	toB, toC := d.b.name+"/"+callService, d.c.name+"/"+callService
	timed := func(to string) (float64, error) {
		start := time.Now()
		err := cb.call(ctx, to, arg)
		return ms(time.Since(start)), err
	}
	if err := d.waitDirect(ctx, toB, func(to string) error { _, err := timed(to); return err }); err != nil {
		return nil, err
	}
	before, err := waitPeer(ctx, d.a, func(*api.PeerStatus) bool { return true })
	if err != nil {
		return nil, err
	}
	n, warm := d.cfg.CallSamples, max(d.cfg.CallSamples/10, 5)
	dirs, hubs := make([]float64, 0, n), make([]float64, 0, n)
	for i := range warm + n {
		x, err := timed(toB)
		if err != nil {
			return nil, err
		}
		h, err := timed(toC)
		if err != nil {
			return nil, err
		}
		if i >= warm {
			dirs, hubs = append(dirs, x), append(hubs, h)
		}
	}
	after, err := waitPeer(ctx, d.a, func(*api.PeerStatus) bool { return true })
	if err != nil {
		return nil, err
	}
	if got, want := after.Direct.CallsDirect-before.Direct.CallsDirect, uint64(warm+n); got != want {
		return nil, fmt.Errorf("%d of %d calls to %s went directly", got, want, d.b.name)
	}
	p50, p99 := percentile(dirs, .5), percentile(dirs, .99)
	h50, h99 := percentile(hubs, .5), percentile(hubs, .99)
	d.cfg.logf("direct call round trip %s: p50 %.3f ms, p99 %.3f ms; through the hub p50 %.3f ms, p99 %.3f ms", kind, p50, p99, h50, h99)
	note := fmt.Sprintf("A's app calls B/echo through A's local API, B's app answers, over A and B's direct connection, %d-byte JSON argument, %d calls one at a time; "+
		"baseline, alternating: the same call to echo on C, which has no direct listener, through the hub (A, hub, C)", callArgSize, n)
	return []Row{
		{Name: "direct call round trip p50", Transport: string(kind), Value: p50, Unit: "ms", Baseline: h50, Ratio: ratio(p50, h50),
			Target: "report", Met: true, Runs: n, Note: note},
		{Name: "direct call round trip p99", Transport: string(kind), Value: p99, Unit: "ms", Baseline: h99, Ratio: ratio(p99, h99),
			Target: "report", Met: true, Runs: n, Note: note},
	}, nil
}

// waitDirect runs exchange to to (on B) until A's path to B is direct:
// the first exchange makes the connection, once A holds B's published
// address.
func (d *directBench) waitDirect(ctx context.Context, to string, exchange func(to string) error) error {
	up := func(st *api.PeerStatus) bool {
		if st.Direct == nil {
			return false
		}
		for _, p := range st.Direct.Peers {
			if p.Device == d.b.name {
				return p.Path == "direct"
			}
		}
		return false
	}
	deadline := time.Now().Add(syncWait)
	for {
		if err := exchange(to); err != nil {
			return err
		}
		if st, err := waitPeer(ctx, d.a, func(*api.PeerStatus) bool { return true }); err != nil {
			return err
		} else if up(st) {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("no direct connection from %s to %s after %v", d.a.name, d.b.name, syncWait)
		}
	}
}
