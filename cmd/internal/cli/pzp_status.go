package cli

import (
	"fmt"
	"io"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	zsync "github.com/pzone/pzone/sync"
	"github.com/pzone/pzone/zone/api"
	"github.com/pzone/pzone/zone/envelope"
	"github.com/pzone/pzone/zone/peer"
)

func newPeerStatusCmd(g *globals) *cobra.Command {
	var asJSON bool
	cmd := &cobra.Command{
		Use:   "status",
		Short: "Show this device's zone and its link to the hub",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			dir, err := g.dataDir()
			if err != nil {
				return err
			}
			st, err := peer.ReadStatus(cmd.Context(), dir)
			if err != nil {
				return err
			}
			out := cmd.OutOrStdout()
			if asJSON {
				return printJSON(out, st)
			}
			state := st.State
			if !st.Running && st.State == "stopped" {
				state = "not running (start it with: pzp run --data " + dir + ")"
			}
			fmt.Fprintf(out, "zone:        %s (%s)\ndevice:      %s\nhub:         %s\nstate:       %s\n", st.Zone, st.ZoneID, st.Device, st.Hub, state)
			if st.Transport != "" {
				fmt.Fprintf(out, "transport:   %s\nsession:     %s since %s\nrtt:         %s\n", st.Transport, st.Session, timeOrDash(st.Since), rttOrDash(st.RTTMs))
			}
			fmt.Fprintf(out, "certificate: expires %s, renews %s\n", st.CertExpires.Local().Format(time.DateTime), st.CertRenews.Local().Format(time.DateTime))
			if sy := st.Sync; sy != nil {
				fmt.Fprintf(out, "sync:        %s, last sequence %d of %d, %d local edits pending\n", syncPhase(sy), sy.LastSeq, sy.HubSeq, sy.Pending)
				if sy.Refused > 0 {
					fmt.Fprintf(out, "             %d local edits refused by the hub (and undone here); the last: %s\n", sy.Refused, dash(sy.LastRefused))
				}
			}
			if w := st.Wake; w != nil {
				state := "awake"
				if w.Asleep != nil {
					state = "asleep since " + w.Asleep.Local().Format(time.DateTime)
				}
				endpoint := w.Endpoint
				if endpoint == "" {
					endpoint = "not registered yet"
				}
				fmt.Fprintf(out, "wake:        %s; sleeps after %s idle; listening on %s, hub pings %s\n", state, w.SleepAfter, w.Listen, endpoint)
				p := w.Pings
				fmt.Fprintf(out, "             %d sleeps, %d woken by ping, %d by local need; pings: %d accepted, %d forged, %d stale, %d replayed, %d malformed\n",
					w.Sleeps, w.PingWakes, w.LocalWakes, p.Accepted, p.Forged, p.Stale, p.Replayed, p.Malformed)
			}
			if e := st.Envelopes; e != (envelope.Counts{}) {
				fmt.Fprintf(out, "friends:     signed envelopes from friend zones: %d accepted, %d forged, %d stale, %d replayed, %d from unknown zones\n",
					e.Accepted, e.Forged, e.Stale, e.Replayed, e.Unknown)
			}
			if d := st.Direct; d != nil {
				printDirect(out, d)
			}
			if st.LastError != "" {
				fmt.Fprintf(out, "last error:  %s\n", st.LastError)
			}
			return nil
		},
	}
	cmd.Flags().BoolVar(&asJSON, "json", false, "print as JSON (fields in docs/PROTOCOL.md)")
	return cmd
}

// syncPhase describes a device's sync state in a few words.
func syncPhase(s *zsync.State) string {
	switch {
	case s.Phase == zsync.PhaseCatchingUp && s.FullResync:
		return "catching up (full resync)"
	case s.Phase == zsync.PhaseOffline && s.FullResync:
		return "offline (full resync unfinished)"
	}
	return string(s.Phase)
}

// printDirect shows the direct listener and the path to each device.
func printDirect(out io.Writer, d *api.DirectStatus) {
	listen := strings.Join(d.Listen, ", ")
	if listen == "" {
		listen = "no address to publish"
	}
	fmt.Fprintf(out, "direct:      listening on %s; calls %d direct, %d via hub (%d after a direct attempt failed)\n", listen, d.CallsDirect, d.CallsHub, d.Fallbacks)
	tw := tabwriter.NewWriter(out, 0, 4, 2, ' ', 0)
	for _, p := range d.Peers {
		path := "hub"
		if p.Path == "direct" {
			path = fmt.Sprintf("direct %s %s", p.Transport, p.Addr)
			if p.Inbound {
				path += " (dialled by it)"
			}
		}
		detail := fmt.Sprintf("calls %d direct, %d via hub", p.CallsDirect, p.CallsHub)
		if p.Path != "direct" && p.LastError != "" {
			detail += "; last direct attempt: " + p.LastError
		}
		fmt.Fprintf(tw, "             %s\t%s\t%s\n", p.Device, path, detail)
	}
	tw.Flush()
}
