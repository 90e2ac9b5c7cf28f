package bench

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"path/filepath"
	"time"

	zsync "github.com/pzone/pzone/sync"
	"github.com/pzone/pzone/transport"
	"github.com/pzone/pzone/zone/api"
	"github.com/pzone/pzone/zone/peer"
	"github.com/pzone/pzone/zone/policy"
)

// The federation rows: a call from a device of one zone to a service on a
// device of a friend zone (A → A's hub → B's hub → B and back, signed by
// A and by B, each signature checked at the other end), against three
// raw 64-byte echo round trips on one raw stream of the same transport
// (the call crosses three hops), measured alternating. Both hubs run as
// their own processes (pzh serve); the devices run in this process
// (peer.Run, as pzp run would); B's application serves echo.

// federationBench is the two zones of the federation rows.
type federationBench struct {
	cfg    *Config
	dir    string
	hubA   *syncHub
	hubB   *syncHub
	a, b   *syncDevice
	friend string // A's zone's name for B's zone
}

func newFederationBench(ctx context.Context, cfg *Config) (_ *federationBench, err error) {
	f := &federationBench{cfg: cfg, dir: filepath.Join(cfg.Work, "federation"), friend: "friend"}
	if f.hubA, err = startZoneHub(ctx, cfg, filepath.Join(f.dir, "hub-a"), 0); err != nil {
		return nil, err
	}
	defer func() {
		if err != nil {
			f.close()
		}
	}()
	if f.hubB, err = startZoneHub(ctx, cfg, filepath.Join(f.dir, "hub-b"), 0); err != nil {
		return nil, err
	}
	devA, err := f.hubA.pairDevices(ctx, "caller", filepath.Join(f.dir, "devices-a"), 1)
	if err != nil {
		return nil, err
	}
	devB, err := f.hubB.pairDevices(ctx, "server", filepath.Join(f.dir, "devices-b"), 1)
	if err != nil {
		return nil, err
	}
	f.a, f.b = devA[0], devB[0]
	// B's hub invites; A's hub accepts, naming B's zone f.friend.
	var inv api.FriendInviteView
	if err := f.hubB.client.Do(ctx, http.MethodPost, "/v1/friends/invites", api.FriendInviteRequest{}, &inv); err != nil {
		return nil, fmt.Errorf("friend invite: %w", err)
	}
	if err := f.hubA.client.Do(ctx, http.MethodPost, "/v1/friends", api.FriendAcceptRequest{Token: inv.Token, As: f.friend}, nil); err != nil {
		return nil, fmt.Errorf("friend accept: %w", err)
	}
	// B's zone lets A's zone, named by its zone ID, call anything.
	var friendsB api.FriendsView
	if err := f.hubB.client.Do(ctx, http.MethodGet, "/v1/friends", nil, &friendsB); err != nil || len(friendsB.Friends) != 1 {
		return nil, fmt.Errorf("B's hub lists no friend: %v", err)
	}
	rule, err := policy.ParseRule(string(friendsB.Friends[0].ZoneID), "*", "", policy.EffectAllow)
	if err != nil {
		return nil, err
	}
	rule.ID, rule.Created = "bench-friend", time.Now().UTC()
	v, _ := json.Marshal(rule)
	if _, err := f.hubB.client.DataPut(ctx, zsync.BucketPolicy, rule.ID, v); err != nil {
		return nil, fmt.Errorf("policy: %w", err)
	}
	return f, nil
}

func (f *federationBench) close() {
	if f.hubA != nil {
		stopChild(f.hubA.proc)
	}
	if f.hubB != nil {
		stopChild(f.hubB.proc)
	}
}

// waitLinked waits until A's hub has a link with B's.
func (f *federationBench) waitLinked(ctx context.Context) error {
	deadline := time.Now().Add(syncWait)
	var v api.FriendsView
	path := "/v1/friends"
	for {
		if err := f.hubA.client.Do(ctx, http.MethodGet, path, nil, &v); err != nil {
			return err
		}
		if len(v.Friends) == 1 && v.Friends[0].State == "online" {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("no link between the hubs after %v: %+v", syncWait, v.Friends)
		}
		path = fmt.Sprintf("/v1/friends?wait=%d&timeout=5s", v.Version)
	}
}

// roundTrip measures the cross-zone call round trip over kind.
func (f *federationBench) roundTrip(ctx context.Context, kind transport.Kind) (_ []Row, err error) {
	if err := f.waitLinked(ctx); err != nil {
		return nil, err
	}
	peers := startPeers(ctx, peer.Config{Mode: transport.Mode(kind)}, []*syncDevice{f.a, f.b})
	defer func() { err = errors.Join(err, peers.stop()) }()
	if err := waitSynced(ctx, []*syncDevice{f.a, f.b}); err != nil {
		return nil, err
	}
	info := api.ServiceInfo{Name: callService, Description: "returns its argument", Methods: []string{callMethod}}
	apps, err := serveApps(ctx, []*syncDevice{f.b}, info, echo)
	if err != nil {
		return nil, err
	}
	defer apps.stop()
	raw, err := newRawEchoStream(ctx, kind, f.dir)
	if err != nil {
		return nil, fmt.Errorf("raw baseline: %w", err)
	}
	defer raw.close()
	arg := jsonString(callArgSize)
	cb := &callBench{a: f.a}
	to := f.friend + "/" + f.b.name + "/" + callService
	// The first call waits for the policy rule to reach B.
	deadline := time.Now().Add(syncWait)
	for cb.call(ctx, to, arg) != nil {
		if time.Now().After(deadline) {
			return nil, fmt.Errorf("cross-zone call %s: %w", to, cb.call(ctx, to, arg))
		}
		if _, err := waitPeer(ctx, f.b, func(*api.PeerStatus) bool { return true }); err != nil {
			return nil, err
		}
	}
	n, warm := f.cfg.CallSamples, max(f.cfg.CallSamples/10, 5)
	calls, raws := make([]float64, 0, n), make([]float64, 0, n)
	for i := range warm + n {
		start := time.Now()
		for range 3 {
			if err := raw.round(); err != nil {
				return nil, fmt.Errorf("raw baseline: %w", err)
			}
		}
		r := ms(time.Since(start))
		start = time.Now()
		if err := cb.call(ctx, to, arg); err != nil {
			return nil, err
		}
		c := ms(time.Since(start))
		if i >= warm {
			calls, raws = append(calls, c), append(raws, r)
		}
	}
	st, err := waitPeer(ctx, f.b, func(*api.PeerStatus) bool { return true })
	if err != nil {
		return nil, err
	}
	if st.Envelopes.Accepted < uint64(warm+n) || st.Envelopes.Forged+st.Envelopes.Replayed+st.Envelopes.Stale > 0 {
		return nil, fmt.Errorf("B's envelope verdicts %+v after %d calls", st.Envelopes, warm+n)
	}
	p50, p99 := percentile(calls, .5), percentile(calls, .99)
	r50, r99 := percentile(raws, .5), percentile(raws, .99)
	f.cfg.logf("cross-zone call round trip %s: p50 %.3f ms, p99 %.3f ms; raw 3 echoes p50 %.3f ms, p99 %.3f ms", kind, p50, p99, r50, r99)
	note := fmt.Sprintf("A's app calls FRIEND/B/echo through A's local API: A signs, A's hub, the link, B's hub, B checks and signs, B's app answers, A checks; %d-byte JSON argument, %d calls one at a time; "+
		"raw, alternating: three %d-byte echo round trips on one raw %s stream (the call crosses three hops)", callArgSize, n, echoSize, kind)
	return []Row{
		{Name: "cross-zone call round trip p50", Transport: string(kind), Value: p50, Unit: "ms", Baseline: r50, Ratio: ratio(p50, r50),
			Target: fmt.Sprintf("≤ %.1f×", targetCrossZoneP50), Met: ratio(p50, r50) <= targetCrossZoneP50, Runs: n, Note: note},
		{Name: "cross-zone call round trip p99", Transport: string(kind), Value: p99, Unit: "ms", Baseline: r99, Ratio: ratio(p99, r99),
			Target: "report", Met: true, Runs: n, Note: note},
	}, nil
}
