package bench

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"math/rand/v2"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"time"

	"github.com/pzone/pzone/pairing"
	zsync "github.com/pzone/pzone/sync"
	"github.com/pzone/pzone/transport"
	"github.com/pzone/pzone/zone/api"
	"github.com/pzone/pzone/zone/appid"
	"github.com/pzone/pzone/zone/hub"
	"github.com/pzone/pzone/zone/peer"
)

// Zones and devices for the benchmarks: a hub in its own process with a
// zone state filled in advance, devices paired with it and run in this
// process, and waiting on their status.

// syncHub is the hub of a zone of its own: its own process, or (the
// wakeup rows) one run in this process, proc nil.
type syncHub struct {
	dir, addr string
	client    *api.Client
	proc      *exec.Cmd
	// records were put in its state before it started; wireBytes is
	// their encoded size (CBOR, as the sync stream carries them).
	records   int
	wireBytes int64
}

// startHub makes a zone whose state holds records, and starts its hub.
func (s *syncBench) startHub(ctx context.Context, name string, records int) (*syncHub, error) {
	return startZoneHub(ctx, s.cfg, filepath.Join(s.dir, name), records)
}

// startZoneHub makes a zone in dir whose state holds records, and starts
// its hub as its own process (Config.HubCommand).
func startZoneHub(ctx context.Context, cfg *Config, dir string, records int) (*syncHub, error) {
	h, err := newZone(cfg, dir, records)
	if err != nil {
		return nil, err
	}
	args := append(append([]string(nil), cfg.HubCommand[1:]...), "--data", h.dir, "--listen", h.addr,
		"--log-level", "error", "--heartbeat", syncHeartbeat.String())
	h.proc = exec.CommandContext(ctx, cfg.HubCommand[0], args...)
	h.proc.Stderr = os.Stderr
	if err := h.proc.Start(); err != nil {
		return nil, fmt.Errorf("start %v: %w", cfg.HubCommand, err)
	}
	var st api.HubStatus
	if err := answer(ctx, h.client, "/v1/status", &st, 30*time.Second); err != nil {
		stopChild(h.proc)
		return nil, fmt.Errorf("hub in %s: %w", h.dir, err)
	}
	return h, nil
}

// newZone makes a zone in dir, on a free loopback port, whose state holds
// records; its hub is not started.
func newZone(cfg *Config, dir string, records int) (*syncHub, error) {
	port, err := freePort()
	if err != nil {
		return nil, err
	}
	h := &syncHub{dir: dir, addr: fmt.Sprintf("127.0.0.1:%d", port), records: records}
	h.client = api.NewClient(api.SocketPath(h.dir, api.HubSocketName))
	if _, err := hub.InitZone(h.dir, "bench", []string{h.addr}, time.Now()); err != nil {
		return nil, err
	}
	if records > 0 {
		start := time.Now()
		if h.wireBytes, err = fillState(h.dir, records); err != nil {
			return nil, fmt.Errorf("fill the hub's state: %w", err)
		}
		cfg.logf("sync: put %d records in a hub's state in %v", records, time.Since(start).Round(time.Millisecond))
	}
	return h, nil
}

// fillState puts n records (appdata, stateKeyLen-byte keys,
// stateValueLen-byte values) in the hub's state in dir, while no hub
// runs, and returns their encoded size.
func fillState(dir string, n int) (int64, error) {
	st, err := zsync.OpenHub(filepath.Join(dir, zsync.FileName), zsync.Options{})
	if err != nil {
		return 0, err
	}
	rng := rand.New(rand.NewPCG(1, 2))
	var size int64
	for i := 0; i < n; i += applyChunk {
		edits := make([]zsync.Edit, 0, applyChunk)
		for j := i; j < min(i+applyChunk, n); j++ {
			v := make([]byte, stateValueLen)
			for k := 0; k < len(v); k += 8 {
				binary.LittleEndian.PutUint64(v[k:], rng.Uint64())
			}
			key := fmt.Sprintf("%s/%0*d", syncApp, stateKeyLen-len(syncApp)-1, j)
			edits = append(edits, zsync.Edit{Bucket: zsync.BucketAppData, Key: key, Value: v})
		}
		recs, err := st.Apply(edits)
		if err != nil {
			st.Close()
			return 0, err
		}
		for i := range recs {
			b, err := transport.Marshal(&recs[i])
			if err != nil {
				st.Close()
				return 0, err
			}
			size += int64(len(b))
		}
	}
	return size, st.Close()
}

// invite creates an invite for uses devices named device.
func (h *syncHub) invite(ctx context.Context, device string, uses int) (string, error) {
	var inv api.InviteView
	if err := h.client.Do(ctx, http.MethodPost, "/v1/invites", api.InviteRequest{Device: device, Uses: uses, TTL: "1h"}, &inv); err != nil {
		return "", fmt.Errorf("invite: %w", err)
	}
	return inv.Token, nil
}

// syncDevice is a device paired with a sync hub, with its data directory.
type syncDevice struct {
	name, dir string
	client    *api.Client
	cred      string // app callApp's credential, which client presents
}

// pairDevices pairs n devices named name, name-2, ..., each with its data
// directory under base, as pzp pair --no-sync would.
func (h *syncHub) pairDevices(ctx context.Context, name, base string, n int) ([]*syncDevice, error) {
	token, err := h.invite(ctx, name, n)
	if err != nil {
		return nil, err
	}
	tok, err := pairing.ParseToken(token)
	if err != nil {
		return nil, err
	}
	var devs []*syncDevice
	for i := range n {
		res, err := pairing.Pair(ctx, tok, transport.ModeTCP)
		if err != nil {
			return nil, fmt.Errorf("pair device %d: %w", i, err)
		}
		dir := filepath.Join(base, fmt.Sprint(i))
		if err := peer.SavePairing(dir, res, time.Now()); err != nil {
			return nil, err
		}
		cred, err := appid.Open(dir).Add(callApp, time.Now())
		if err != nil {
			return nil, err
		}
		devs = append(devs, &syncDevice{name: res.Device, dir: dir, client: api.NewClient(api.SocketPath(dir, api.PeerSocketName), api.WithCredential(cred)), cred: cred})
	}
	return devs, nil
}

// running is a set of devices running as pzp run would run them.
type running struct {
	cancel context.CancelFunc
	wg     sync.WaitGroup
	mu     sync.Mutex
	err    error
}

// runDevices runs devs over kind and waits until every one is online and
// in sync with nothing left to push.
func runDevices(ctx context.Context, kind transport.Kind, devs []*syncDevice) (*running, error) {
	r := startPeers(ctx, peer.Config{Mode: transport.Mode(kind)}, devs)
	if err := waitSynced(ctx, devs); err != nil {
		r.stop()
		return nil, err
	}
	return r, nil
}

// startPeers runs devs as pzp run would, each with pc and its own data
// directory, without waiting for them.
func startPeers(ctx context.Context, pc peer.Config, devs []*syncDevice) *running {
	rctx, cancel := context.WithCancel(ctx)
	r := &running{cancel: cancel}
	for _, d := range devs {
		r.wg.Add(1)
		go func() {
			defer r.wg.Done()
			dc := pc
			dc.DataDir = d.dir
			if err := peer.Run(rctx, dc); err != nil {
				r.mu.Lock()
				r.err = errors.Join(r.err, fmt.Errorf("device %s: %w", d.name, err))
				r.mu.Unlock()
			}
		}()
	}
	return r
}

func (r *running) stop() error {
	r.cancel()
	r.wg.Wait()
	return r.err
}

// waitSynced waits until every device is online, holds what the hub has,
// and has pushed all its edits (pzp wait synced).
func waitSynced(ctx context.Context, devs []*syncDevice) error {
	ctx, cancel := context.WithTimeout(ctx, syncWait)
	defer cancel()
	for _, d := range devs {
		st, err := waitPeer(ctx, d, synced)
		if err != nil {
			if ctx.Err() != nil && st != nil && st.Sync != nil {
				return fmt.Errorf("device %s not in sync after %v: %s, sync %s at %d of %d, %d pending, last error %q",
					d.name, syncWait, st.State, st.Sync.Phase, st.Sync.LastSeq, st.Sync.HubSeq, st.Sync.Pending, st.LastError+st.Sync.LastError)
			}
			return err
		}
	}
	return nil
}

// waitPeer long-polls d's status, once its daemon answers, until cond
// holds, and returns that status; on failure, the last status seen (nil
// if none).
func waitPeer(ctx context.Context, d *syncDevice, cond func(*api.PeerStatus) bool) (*api.PeerStatus, error) {
	st := &api.PeerStatus{}
	if err := answer(ctx, d.client, "/v1/status", st, syncWait); err != nil {
		return nil, fmt.Errorf("device %s: %w", d.name, err)
	}
	for !cond(st) {
		var next api.PeerStatus
		if err := d.client.Do(ctx, http.MethodGet, fmt.Sprintf("/v1/status?wait=%d&timeout=5s", st.Version), nil, &next); err != nil {
			return st, fmt.Errorf("device %s: %w", d.name, err)
		}
		st = &next
	}
	return st, nil
}

func synced(st *api.PeerStatus) bool {
	return st.State == "online" && st.Sync != nil && st.Sync.Synced()
}

// answer reads path from a daemon that may still be starting.
func answer(ctx context.Context, c *api.Client, path string, out any, timeout time.Duration) error {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	for {
		err := c.Do(ctx, http.MethodGet, path, nil, out)
		if !errors.Is(err, api.ErrNotRunning) {
			return err
		}
		if err := sleep(ctx, 10*time.Millisecond); err != nil {
			return fmt.Errorf("nothing answered within %v: %w", timeout, err)
		}
	}
}

func peerStatus(ctx context.Context, d *syncDevice) (*api.PeerStatus, error) {
	var st api.PeerStatus
	if err := d.client.Do(ctx, http.MethodGet, "/v1/status", nil, &st); err != nil {
		return nil, fmt.Errorf("device %s: %w", d.name, err)
	}
	return &st, nil
}

func ms(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }
