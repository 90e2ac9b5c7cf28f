package cli

import (
	"fmt"
	"net/http"
	"net/url"

	"github.com/spf13/cobra"

	"github.com/pzone/pzone/certs"
	"github.com/pzone/pzone/zone/api"
)

func newHubRevokeCmd(g *globals) *cobra.Command {
	return &cobra.Command{
		Use:   "revoke DEVICE",
		Short: "Revoke a device: cut its session now and refuse its certificates forever",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if err := certs.ValidateName("device", args[0]); err != nil {
				return usageError{err}
			}
			var r api.RevokeResponse
			if err := hubDo(cmd.Context(), g, http.MethodPost, "/v1/devices/"+url.PathEscape(args[0])+"/revoke", nil, &r); err != nil {
				return err
			}
			cut := ""
			if r.WasOnline {
				cut = "; its session was closed"
			}
			fmt.Fprintf(cmd.OutOrStdout(), "device %q revoked%s\n", r.Device, cut)
			return nil
		},
	}
}
