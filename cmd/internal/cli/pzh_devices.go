package cli

import (
	"fmt"
	"net/http"
	"text/tabwriter"
	"time"

	"github.com/pzone/pzone/zone/api"
	"github.com/spf13/cobra"
)

func newHubDevicesCmd(g *globals) *cobra.Command {
	var asJSON bool
	cmd := &cobra.Command{
		Use:   "devices",
		Short: "List paired devices with their session state",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			var v api.DevicesView
			if err := hubDo(cmd.Context(), g, http.MethodGet, "/v1/devices", nil, &v); err != nil {
				return err
			}
			out := cmd.OutOrStdout()
			if asJSON {
				return printJSON(out, v.Devices)
			}
			if len(v.Devices) == 0 {
				fmt.Fprintln(out, "no devices; pair one with: pzh invite --device NAME")
				return nil
			}
			tw := tabwriter.NewWriter(out, 0, 4, 2, ' ', 0)
			fmt.Fprintln(tw, "DEVICE\tSTATE\tTRANSPORT\tREMOTE\tSINCE\tLAST ACTIVE\tRTT\tQUEUE\tWAKE\tCERT EXPIRES")
			for _, d := range v.Devices {
				fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\t%d\t%s\t%s\n", d.Name, d.State, dash(d.Transport), dash(d.RemoteAddr),
					timeOrDash(d.Since), timeOrDash(d.LastActivity), rttOrDash(d.RTTMs), d.Queue, wakeSummary(d.Wake), d.CertExpires.Local().Format(time.DateOnly))
			}
			return tw.Flush()
		},
	}
	cmd.Flags().BoolVar(&asJSON, "json", false, "print as JSON (a list of devices; fields in docs/PROTOCOL.md)")
	return cmd
}

// wakeSummary is a device's wake column: where it is pinged and how many
// pings went (and were held back by the rate cap).
func wakeSummary(w *api.WakeView) string {
	if w == nil {
		return "-"
	}
	s := fmt.Sprintf("%s %s, pings %d", w.Method, w.Endpoint, w.Pings)
	if w.Limited > 0 {
		s += fmt.Sprintf(" (%d held back)", w.Limited)
	}
	return s
}

func dash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

func timeOrDash(t *time.Time) string {
	if t == nil {
		return "-"
	}
	return t.Local().Format(time.TimeOnly)
}

func rttOrDash(ms *float64) string {
	if ms == nil {
		return "-"
	}
	return fmt.Sprintf("%.2fms", *ms)
}
