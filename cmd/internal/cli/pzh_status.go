package cli

import (
	"fmt"
	"net/http"
	"strings"
	"time"

	"github.com/spf13/cobra"

	zsync "github.com/pzone/pzone/sync"
	"github.com/pzone/pzone/zone/api"
)

func newHubStatusCmd(g *globals) *cobra.Command {
	var asJSON bool
	cmd := &cobra.Command{
		Use:   "status",
		Short: "Show the running hub: zone, addresses, sessions",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			var st api.HubStatus
			if err := hubDo(cmd.Context(), g, http.MethodGet, "/v1/status", nil, &st); err != nil {
				return err
			}
			out := cmd.OutOrStdout()
			if asJSON {
				return printJSON(out, st)
			}
			u := st.SyncUsage
			fmt.Fprintf(out, "zone:        %s\nzone ID:     %s\npublic:      %v\nlistening:   %s %v\ndevices:     %d paired, %d online\nfriends:     %d, %d linked\nhub cert:    expires %s\nzone state:  sequence %d, %s in use of the %s zone quota (%s per device)\n",
				st.Zone, st.ZoneID, st.PublicAddrs, st.Listen, st.Transports, st.Devices, st.Online, st.Friends, st.Linked,
				st.CertExpires.Local().Format(time.DateOnly), st.SyncSeq, zsync.FormatSize(u.Bytes), zsync.FormatSize(u.ZoneQuota), zsync.FormatSize(u.DeviceQuota))
			if len(u.Nodes) > 0 {
				top := make([]string, len(u.Nodes))
				for i, n := range u.Nodes {
					top[i] = n.Node + " " + zsync.FormatSize(n.Bytes)
				}
				fmt.Fprintf(out, "             most written by: %s\n", strings.Join(top, ", "))
			}
			fmt.Fprintf(out, "running:     since %s (pid %d)\n", st.Started.Local().Format(time.DateTime), st.PID)
			if len(st.OtherSoftware) > 0 {
				fmt.Fprintf(out, "other pzp:   %s run another version than this hub (%s): upgrade them\n", strings.Join(st.OtherSoftware, ", "), st.Software)
			}
			return nil
		},
	}
	cmd.Flags().BoolVar(&asJSON, "json", false, "print as JSON")
	return cmd
}
