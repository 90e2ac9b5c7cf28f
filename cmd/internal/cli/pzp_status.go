package cli

import (
	"fmt"
	"time"

	"github.com/spf13/cobra"

	"github.com/pzone/pzone/zone"
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
			st, err := zone.ReadPeerStatus(cmd.Context(), dir)
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
			if st.LastError != "" {
				fmt.Fprintf(out, "last error:  %s\n", st.LastError)
			}
			return nil
		},
	}
	cmd.Flags().BoolVar(&asJSON, "json", false, "print as JSON (fields in docs/PROTOCOL.md)")
	return cmd
}
