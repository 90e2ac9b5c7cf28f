package cli

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"time"
	"unicode"

	"github.com/spf13/cobra"
	"golang.org/x/term"

	"github.com/pzone/pzone/certs"
	"github.com/pzone/pzone/pairing"
	zsync "github.com/pzone/pzone/sync"
	"github.com/pzone/pzone/transport"
	"github.com/pzone/pzone/zone/api"
	"github.com/pzone/pzone/zone/localapi"
	"github.com/pzone/pzone/zone/peer"
)

type peerPairOptions struct {
	transport   string
	timeout     time.Duration
	syncTimeout time.Duration
	noSync      bool
	json        bool
	code        string
	yes         bool
}

// PairOutput is pzp pair --json.
type PairOutput struct {
	Zone        string    `json:"zone"`
	ZoneID      string    `json:"zone_id"`
	Device      string    `json:"device"`
	HubAddrs    []string  `json:"hub_addrs"`
	CertExpires time.Time `json:"cert_expires"`
	Transport   string    `json:"transport"`
	Seconds     float64   `json:"seconds"`
	// Synced: the first sync of the zone state finished (Records records,
	// SyncSeconds); false with --no-sync or when it was cut short.
	Synced      bool    `json:"synced"`
	Records     uint64  `json:"records"`
	SyncSeconds float64 `json:"sync_seconds"`
}

func newPeerPairCmd(g *globals) *cobra.Command {
	o := &peerPairOptions{}
	cmd := &cobra.Command{
		Use:   "pair TOKEN | pair --code CODE HUB:PORT",
		Short: "Pair this device with a hub using an invite token (- reads it from stdin) or a short code",
		Long: `pair redeems an invite: it makes this device's key here (the key never
leaves the device), checks the hub against the zone ID in the token, proves
the token's secret over this connection, and stores the certificate the hub
issues. If anything fails, nothing is written. Pass - as TOKEN to read it
from standard input, which keeps it out of shell history.

With --code CODE HUB:PORT it pairs by the short code 'pzh invite --code'
printed instead: the code proves to each side that the other holds it (a
wrong code, or someone in the way, fails; 3 wrong codes burn the invite),
then the device shows the zone's name and ID and asks whether to join it,
on a terminal; --yes joins without asking (and is needed off a terminal).
The device pins that zone ID from then on.

Then it receives the zone state (with a progress bar on a terminal) unless
--no-sync is given; if that is cut short, pzp run finishes it.`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			mode, err := transport.ParseMode(o.transport)
			if err != nil {
				return usageError{err}
			}
			pair, addrs, err := o.pairer(cmd, args[0], mode)
			if err != nil {
				return err
			}
			dir, err := g.dataDir()
			if err != nil {
				return err
			}
			if _, err := os.Stat(filepath.Join(dir, peer.DBName)); err == nil {
				return fmt.Errorf("%s already holds a pairing; to pair again, first run: pzp unpair --data %s", dir, dir)
			}
			// Everything that can fail here is checked before the invite
			// is spent on the hub.
			createdDir := false
			if _, err := os.Stat(dir); errors.Is(err, os.ErrNotExist) {
				createdDir = true
			}
			if err := localapi.CheckDataDir(dir, api.PeerSocketName); err != nil {
				return err
			}
			removeIfNew := func() {
				if createdDir {
					os.Remove(dir) // only if still empty
				}
			}
			start := time.Now()
			ctx, cancel := context.WithTimeout(cmd.Context(), o.timeout)
			defer cancel()
			res, err := pair(ctx)
			if err != nil {
				removeIfNew()
				var perr *pairing.Error
				switch {
				case errors.As(err, &perr):
					// Printable text only: with a code, the hub is not yet
					// authenticated when it may refuse.
					return fmt.Errorf("the hub refused pairing: %s", strings.Map(func(r rune) rune {
						if unicode.IsPrint(r) {
							return r
						}
						return -1
					}, perr.Message))
				case errors.Is(err, pairing.ErrZoneMismatch), errors.Is(err, pairing.ErrCodeMismatch), errors.Is(err, pairing.ErrDeclined):
					return fmt.Errorf("pairing stopped: %w", err)
				case ctx.Err() != nil && cmd.Context().Err() == nil:
					return fmt.Errorf("no answer from the hub at %s within %v: %w", strings.Join(addrs, ", "), o.timeout, err)
				}
				return fmt.Errorf("pairing failed: %w", err)
			}
			if err := peer.SavePairing(dir, res, time.Now()); err != nil {
				removeIfNew()
				return fmt.Errorf("the hub paired this device as %q, but saving its credentials failed: %w; on the hub run 'pzh revoke %s', then pair again with a new invite", res.Device, err, res.Device)
			}
			out := cmd.OutOrStdout()
			po := PairOutput{Zone: res.Zone, ZoneID: string(res.ZoneID), Device: res.Device, HubAddrs: res.HubAddrs,
				CertExpires: res.Cert.NotAfter, Transport: string(res.Via), Seconds: time.Since(start).Seconds()}
			if !o.json {
				fmt.Fprintf(out, "paired: device %q in zone %q (%s)\n", res.Device, res.Zone, res.ZoneID)
				fmt.Fprintf(out, "certificate expires %s; it renews itself while pzp run is up\n", res.Cert.NotAfter.Local().Format(time.DateOnly))
			}
			var syncErr error
			if !o.noSync {
				syncStart := time.Now()
				po.Records, po.Synced, syncErr = firstSync(cmd.Context(), dir, mode, o.syncTimeout, cmd.ErrOrStderr())
				po.SyncSeconds = time.Since(syncStart).Seconds()
			}
			if o.json {
				if err := printJSON(out, po); err != nil {
					return err
				}
			} else {
				if po.Synced {
					fmt.Fprintf(out, "zone state: %d records received in %.1fs\n", po.Records, po.SyncSeconds)
				}
				fmt.Fprintf(out, "next: pzp run --data %s\n", dir)
			}
			return syncErr
		},
	}
	f := cmd.Flags()
	f.StringVar(&o.transport, "transport", "auto", "auto, quic or tcp")
	f.StringVar(&o.code, "code", "", "pair by the short code pzh invite --code printed; the argument is then the hub's HOST:PORT")
	f.BoolVar(&o.yes, "yes", false, "with --code: join the zone without asking")
	f.DurationVar(&o.timeout, "timeout", 30*time.Second, "give up after this long")
	f.BoolVar(&o.json, "json", false, "print the result as JSON")
	f.BoolVar(&o.noSync, "no-sync", false, "do not receive the zone state now (pzp run will)")
	f.DurationVar(&o.syncTimeout, "sync-timeout", 10*time.Minute, "stop waiting for the first sync after this long (pzp run finishes it)")
	return cmd
}

// pairer checks the arguments and returns the pairing to run (by token or
// by code) and the hub addresses it tries.
func (o *peerPairOptions) pairer(cmd *cobra.Command, arg string, mode transport.Mode) (func(context.Context) (*pairing.Result, error), []string, error) {
	if o.code == "" {
		if o.yes {
			return nil, nil, usagef("--yes goes with --code: a token names its zone already")
		}
		raw, err := tokenArg(cmd, arg)
		if err != nil {
			return nil, nil, err
		}
		tok, err := pairing.ParseToken(raw)
		if err != nil {
			return nil, nil, err
		}
		return func(ctx context.Context) (*pairing.Result, error) { return pairing.Pair(ctx, tok, mode) }, tok.Addrs, nil
	}
	code, err := pairing.ParseCode(o.code)
	if err != nil {
		return nil, nil, usageError{err}
	}
	if _, _, err := net.SplitHostPort(arg); err != nil {
		return nil, nil, usagef("with --code, give the hub's address as HOST:PORT (what pzh invite --code printed), not %q", arg)
	}
	in, isFile := cmd.InOrStdin().(*os.File)
	terminal := isFile && term.IsTerminal(int(in.Fd()))
	if !o.yes && !terminal {
		return nil, nil, usagef("--code needs a terminal to confirm the zone it finds, or --yes to join it without asking")
	}
	confirm := func(zone string, id certs.ZoneID) error {
		fmt.Fprintf(cmd.ErrOrStderr(), "the hub at %s holds the code: zone %q, zone ID %s\n", arg, zone, id)
		if o.yes {
			return nil
		}
		fmt.Fprint(cmd.ErrOrStderr(), "join this zone? [y/N] ")
		line, _ := bufio.NewReader(in).ReadString('\n')
		if a := strings.ToLower(strings.TrimSpace(line)); a != "y" && a != "yes" {
			return fmt.Errorf("%w: the zone was not confirmed; nothing was written, and the invite is not spent", pairing.ErrDeclined)
		}
		return nil
	}
	return func(ctx context.Context) (*pairing.Result, error) {
		return pairing.PairCode(ctx, code, arg, mode, confirm)
	}, []string{arg}, nil
}

// firstSync runs the device until it holds the zone state, drawing a
// progress bar on w if it is a terminal. It returns the records received
// and whether the sync finished; cut short by the user it is an error (the
// pairing stands either way).
func firstSync(ctx context.Context, dir string, mode transport.Mode, timeout time.Duration, w io.Writer) (uint64, bool, error) {
	bar := newProgressBar(w, "receiving zone state")
	var received atomic.Uint64
	var done atomic.Bool
	sctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	err := peer.Run(sctx, peer.Config{DataDir: dir, Mode: mode, ExitWhenSynced: true, OnSync: func(st zsync.State) {
		received.Store(st.Received)
		if st.Synced() {
			done.Store(true)
		}
		bar.update(st.LastSeq-st.StartSeq, st.HubSeq-st.StartSeq, st.Received)
	}})
	bar.finish()
	switch {
	case err != nil:
		return received.Load(), false, fmt.Errorf("the device is paired, but the first sync failed: %w", err)
	case done.Load():
		return received.Load(), true, nil
	case ctx.Err() != nil:
		return received.Load(), false, errors.New("first sync interrupted; the device is paired: pzp run will finish the sync")
	}
	fmt.Fprintf(w, "warning: the first sync did not finish within %v; the device is paired, and pzp run will finish it\n", timeout)
	return received.Load(), false, nil
}
