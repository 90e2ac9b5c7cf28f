package cli

import (
	"errors"
	"fmt"
	"net/http"
	"time"

	"github.com/spf13/cobra"

	"github.com/pzone/pzone/transport"
	"github.com/pzone/pzone/zone/api"
	"github.com/pzone/pzone/zone/peer"
)

func newPeerUnpairCmd(g *globals) *cobra.Command {
	var timeout time.Duration
	var mode string
	cmd := &cobra.Command{
		Use:   "unpair",
		Short: "Leave the zone: tell the hub (when reachable) and delete this device's credentials",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			m, err := transport.ParseMode(mode)
			if err != nil {
				return usageError{err}
			}
			dir, err := g.dataDir()
			if err != nil {
				return err
			}
			var res api.UnpairResult
			err = deviceClient(dir).Do(cmd.Context(), http.MethodPost, "/v1/unpair", nil, &res)
			if errors.Is(err, api.ErrNotRunning) {
				var r *api.UnpairResult
				r, err = peer.UnpairOffline(cmd.Context(), dir, m, timeout)
				if r != nil {
					res = *r
				}
			}
			if err != nil {
				return err
			}
			out := cmd.OutOrStdout()
			fmt.Fprintf(out, "device %q unpaired; its credentials are deleted\n", res.Device)
			if !res.HubTold {
				fmt.Fprintf(cmd.ErrOrStderr(), "warning: the hub could not be told (%s); on the hub, run: pzh revoke %s\n", res.HubError, res.Device)
			}
			return nil
		},
	}
	cmd.Flags().DurationVar(&timeout, "timeout", 10*time.Second, "how long to try to reach the hub when pzp run is not running")
	cmd.Flags().StringVar(&mode, "transport", "auto", "auto, quic or tcp (when pzp run is not running)")
	return cmd
}
