package cli

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/pzone/pzone/pairing"
	"github.com/pzone/pzone/transport"
	"github.com/pzone/pzone/zone"
)

type peerPairOptions struct {
	transport string
	timeout   time.Duration
	json      bool
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
}

func newPeerPairCmd(g *globals) *cobra.Command {
	o := &peerPairOptions{}
	cmd := &cobra.Command{
		Use:   "pair TOKEN",
		Short: "Pair this device with a hub using an invite token (- reads it from stdin)",
		Long: `pair redeems an invite: it makes this device's key here (the key never
leaves the device), checks the hub against the zone ID in the token, proves
the token's secret over this connection, and stores the certificate the hub
issues. If anything fails, nothing is written. Pass - as TOKEN to read it
from standard input, which keeps it out of shell history.`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			mode, err := transport.ParseMode(o.transport)
			if err != nil {
				return usageError{err}
			}
			raw := args[0]
			if raw == "-" {
				line, err := bufio.NewReader(cmd.InOrStdin()).ReadString('\n')
				if err != nil && line == "" {
					return fmt.Errorf("read token from stdin: %w", err)
				}
				raw = line
			}
			tok, err := pairing.ParseToken(raw)
			if err != nil {
				return err
			}
			dir, err := g.dataDir()
			if err != nil {
				return err
			}
			if _, err := os.Stat(filepath.Join(dir, zone.PeerDBName)); err == nil {
				return fmt.Errorf("%s already holds a pairing; to pair again, first run: pzp unpair --data %s", dir, dir)
			}
			// Everything that can fail here is checked before the invite
			// is spent on the hub.
			createdDir := false
			if _, err := os.Stat(dir); errors.Is(err, os.ErrNotExist) {
				createdDir = true
			}
			if err := zone.CheckDataDir(dir, zone.PeerSocketName); err != nil {
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
			res, err := pairing.Pair(ctx, tok, mode)
			if err != nil {
				removeIfNew()
				var perr *pairing.Error
				switch {
				case errors.As(err, &perr):
					return fmt.Errorf("the hub refused pairing: %s", perr.Message)
				case errors.Is(err, pairing.ErrZoneMismatch):
					return fmt.Errorf("pairing stopped: %w", err)
				case ctx.Err() != nil && cmd.Context().Err() == nil:
					return fmt.Errorf("no answer from the hub at %s within %v: %w", strings.Join(tok.Addrs, ", "), o.timeout, err)
				}
				return fmt.Errorf("pairing failed: %w", err)
			}
			if err := zone.SavePairing(dir, res, time.Now()); err != nil {
				removeIfNew()
				return fmt.Errorf("the hub paired this device as %q, but saving its credentials failed: %w; on the hub run 'pzh revoke %s', then pair again with a new invite", res.Device, err, res.Device)
			}
			out := cmd.OutOrStdout()
			po := PairOutput{Zone: res.Zone, ZoneID: string(res.ZoneID), Device: res.Device, HubAddrs: res.HubAddrs,
				CertExpires: res.Cert.NotAfter, Transport: string(res.Via), Seconds: time.Since(start).Seconds()}
			if o.json {
				return printJSON(out, po)
			}
			fmt.Fprintf(out, "paired: device %q in zone %q (%s)\n", res.Device, res.Zone, res.ZoneID)
			fmt.Fprintf(out, "certificate expires %s; it renews itself while pzp run is up\n", res.Cert.NotAfter.Local().Format(time.DateOnly))
			fmt.Fprintf(out, "next: pzp run --data %s\n", dir)
			return nil
		},
	}
	f := cmd.Flags()
	f.StringVar(&o.transport, "transport", "auto", "auto, quic or tcp")
	f.DurationVar(&o.timeout, "timeout", 30*time.Second, "give up after this long")
	f.BoolVar(&o.json, "json", false, "print the result as JSON")
	return cmd
}
