package cli

import (
	"fmt"
	"net/http"
	"net/url"
	"time"

	"github.com/spf13/cobra"

	"github.com/pzone/pzone/certs"
	"github.com/pzone/pzone/zone/api"
)

func newHubWakeCmd(g *globals) *cobra.Command {
	var print bool
	var at string
	cmd := &cobra.Command{
		Use:   "wake DEVICE",
		Short: "Send a sleeping device a wake ping now",
		Long: `wake sends DEVICE one wake ping now, within the rate cap (pzh serve
--wake-rate), so that it reconnects and syncs. The hub wakes devices by
itself whenever messages wait for them; this is for an operator.

With --print, the ping is made but not sent: its 41 bytes are printed in
hex, to send from elsewhere when checking whether pings reach the device
(e.g. through a NAT). --at stamps it at another time (RFC 3339).`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if err := certs.ValidateName("device", args[0]); err != nil {
				return usageError{err}
			}
			q := url.Values{}
			if print {
				q.Set("print", "1")
			}
			if at != "" {
				if !print {
					return usagef("--at goes with --print")
				}
				if _, err := time.Parse(time.RFC3339Nano, at); err != nil {
					return usagef("--at %q: want RFC 3339, e.g. 2026-01-02T15:04:05Z", at)
				}
				q.Set("at", at)
			}
			var r api.WakeResult
			if err := hubDo(cmd.Context(), g, http.MethodPost, "/v1/devices/"+url.PathEscape(args[0])+"/wake?"+q.Encode(), nil, &r); err != nil {
				return err
			}
			out := cmd.OutOrStdout()
			switch {
			case print:
				fmt.Fprintln(out, r.Ping)
			case r.Online:
				fmt.Fprintf(out, "device %q is online; no ping needed\n", r.Device)
			case r.Sent:
				fmt.Fprintf(out, "wake ping sent to %q at %s\n", r.Device, r.Endpoint)
			default:
				return fmt.Errorf("no ping sent to %q: it has had its pings for this minute (the cap set by pzh serve --wake-rate); try again shortly", r.Device)
			}
			return nil
		},
	}
	cmd.Flags().BoolVar(&print, "print", false, "print the ping in hex instead of sending it")
	cmd.Flags().StringVar(&at, "at", "", "with --print: stamp the ping at this time (RFC 3339)")
	return cmd
}
