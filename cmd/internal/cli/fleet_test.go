package cli

import (
	"context"
	"crypto/ed25519"
	"crypto/x509"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"sync"
	"sync/atomic"
	"syscall"

	"github.com/pzone/pzone/certs"
	"github.com/pzone/pzone/pairing"
	"github.com/pzone/pzone/transport"
	"github.com/pzone/pzone/zone/peer"
)

// fleetMain is the test binary run as "pzfleet": many devices in one
// process, for the fault matrix's hub restart under load (row 5). Each
// device has its own key, certificate, session and zone/peer runtime, as
// pzp run would run it, without a device store: a thousand pzp processes
// would need gigabytes.
//
//	pzfleet pair --token T --n N --ids FILE   pair N devices with invite T, write them to FILE
//	pzfleet run --ids FILE                    run them until SIGTERM
//
// run logs each failed connection attempt (the peers' warnings) and ends
// with status 1 if a device gave up (its runtime returned an error).
func fleetMain() int {
	if len(os.Args) < 2 || (os.Args[1] != "pair" && os.Args[1] != "run") {
		fmt.Fprintln(os.Stderr, "pzfleet: want pair or run")
		return 2
	}
	fs := flag.NewFlagSet("pzfleet "+os.Args[1], flag.ContinueOnError)
	token := fs.String("token", "", "invite token (pair)")
	n := fs.Int("n", 0, "devices to pair (pair)")
	ids := fs.String("ids", "", "file of the devices' identities")
	if err := fs.Parse(os.Args[2:]); err != nil {
		return 2
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, os.Interrupt)
	defer stop()
	var err error
	if os.Args[1] == "pair" {
		err = fleetPair(ctx, *token, *n, *ids)
	} else {
		err = fleetRun(ctx, *ids)
	}
	if err != nil {
		fmt.Fprintf(os.Stderr, "pzfleet %s: %v\n", os.Args[1], err)
		return 1
	}
	return 0
}

// fleetID is one device as pzfleet keeps it.
type fleetID struct {
	Device   string       `json:"device"`
	Zone     string       `json:"zone"`
	ZoneID   certs.ZoneID `json:"zone_id"`
	Seed     []byte       `json:"seed"`
	Cert     []byte       `json:"cert"`
	CA       []byte       `json:"ca"`
	HubAddrs []string     `json:"hub_addrs"`
}

func fleetPair(ctx context.Context, token string, n int, path string) error {
	tok, err := pairing.ParseToken(token)
	if err != nil {
		return err
	}
	out := make([]fleetID, n)
	var next atomic.Int64
	var wg sync.WaitGroup
	errs := make([]error, n)
	for range 8 { // the hub commits one pairing at a time: more would queue
		wg.Go(func() {
			for {
				i := int(next.Add(1) - 1)
				if i >= n || ctx.Err() != nil {
					return
				}
				res, err := pairing.Pair(ctx, tok, transport.ModeTCP)
				if err != nil {
					errs[i] = fmt.Errorf("device %d: %w", i, err)
					return
				}
				out[i] = fleetID{Device: res.Device, Zone: res.Zone, ZoneID: res.ZoneID, Seed: res.Key.Seed(),
					Cert: res.Cert.Raw, CA: res.CA.Raw, HubAddrs: res.HubAddrs}
			}
		})
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		return err
	}
	b, err := json.Marshal(out)
	if err != nil {
		return err
	}
	return os.WriteFile(path, b, 0o600)
}

func fleetRun(ctx context.Context, path string) error {
	b, err := os.ReadFile(path)
	if err != nil {
		return err
	}
	var fids []fleetID
	if err := json.Unmarshal(b, &fids); err != nil {
		return err
	}
	log := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
	var wg sync.WaitGroup
	var gaveUp atomic.Int64
	for _, f := range fids {
		res := &pairing.Result{Device: f.Device, Zone: f.Zone, ZoneID: f.ZoneID, Key: ed25519.NewKeyFromSeed(f.Seed), HubAddrs: f.HubAddrs}
		if res.Cert, err = x509.ParseCertificate(f.Cert); err != nil {
			return err
		}
		if res.CA, err = x509.ParseCertificate(f.CA); err != nil {
			return err
		}
		id, err := peer.NewIdentity(res)
		if err != nil {
			return err
		}
		p, err := peer.New(peer.Config{Mode: transport.ModeAuto, Logger: log.With("device", f.Device)}, id)
		if err != nil {
			return err
		}
		wg.Go(func() {
			if err := p.Run(ctx); err != nil && ctx.Err() == nil {
				gaveUp.Add(1)
				fmt.Fprintf(os.Stderr, "pzfleet: device %s gave up: %v\n", f.Device, err)
			}
		})
	}
	wg.Wait()
	if k := gaveUp.Load(); k > 0 {
		return fmt.Errorf("%d of %d devices gave up", k, len(fids))
	}
	return nil
}
