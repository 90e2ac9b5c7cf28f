package cli

import (
	"context"
	"fmt"
	"net/http"
	"net/url"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"

	zsync "github.com/pzone/pzone/sync"
	"github.com/pzone/pzone/zone/api"
)

// The provider's commands that talk to it running: status and the zone
// set (pzh provider zone ...), through its socket.

func newProviderStatusCmd(g *globals) *cobra.Command {
	var asJSON bool
	cmd := &cobra.Command{
		Use:   "status",
		Short: "Show the running provider: address and zones",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			var st api.ProviderStatus
			if err := providerDo(cmd.Context(), g, http.MethodGet, "/v1/status", nil, &st); err != nil {
				return err
			}
			if asJSON {
				return printJSON(cmd.OutOrStdout(), st)
			}
			out := cmd.OutOrStdout()
			if st.Node != "" {
				active := st.ActiveNode
				if active == "" {
					active = "none yet"
				}
				fmt.Fprintf(out, "node:        %s %v, %s since %s\nserving node: %s\n", st.Node, st.NodeAddrs, st.Role, st.RoleSince.Local().Format(time.DateTime), active)
			}
			if st.Listen == "" {
				fmt.Fprintf(out, "public:      %v\nlistening:   no (on standby)\nrunning:     since %s (pid %d)\n",
					st.PublicAddrs, st.Started.Local().Format(time.DateTime), st.PID)
				return nil
			}
			fmt.Fprintf(out, "public:      %v\nlistening:   %s %v\nzones:       %d, %d serving\nrunning:     since %s (pid %d)\n",
				st.PublicAddrs, st.Listen, st.Transports, st.Zones, st.Serving, st.Started.Local().Format(time.DateTime), st.PID)
			return nil
		},
	}
	cmd.Flags().BoolVar(&asJSON, "json", false, "print as JSON")
	return cmd
}

func orNone(s string) string {
	if s == "" {
		return "none"
	}
	return s
}

func newProviderWaitCmd(g *globals) *cobra.Command {
	var timeout time.Duration
	var serving bool
	cmd := &cobra.Command{
		Use:   "wait",
		Short: "Wait until the provider answers, its zones started",
		Long: `wait blocks until the running provider answers on its socket, which it
does once every zone's hub has started (or failed to: 'zone list' says
why), then exits 0; after --timeout it exits 1.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			dir, err := g.dataDir()
			if err != nil {
				return err
			}
			ctx, cancel := context.WithTimeout(cmd.Context(), timeout)
			defer cancel()
			var st api.ProviderStatus
			c := api.NewClient(api.SocketPath(dir, api.ProviderSocketName))
			if err := waitReady(ctx, c, "/v1/status", &st); err != nil {
				return fmt.Errorf("provider in %s not ready after %v: %w", dir, timeout, err)
			}
			if !serving || st.Node == "" {
				return nil
			}
			// A cluster's node: until it holds the lease and serves.
			for st.Role != "active" || st.Listen == "" {
				select {
				case <-ctx.Done():
					return fmt.Errorf("node %s in %s is still on standby after %v (serving node: %s)", st.Node, dir, timeout, orNone(st.ActiveNode))
				case <-time.After(100 * time.Millisecond):
				}
				if err := c.Do(ctx, http.MethodGet, "/v1/status", nil, &st); err != nil && ctx.Err() == nil {
					return err
				}
			}
			return nil
		},
	}
	cmd.Flags().DurationVar(&timeout, "timeout", 30*time.Second, "give up after this long")
	cmd.Flags().BoolVar(&serving, "serving", false, "on a cluster's node, wait until it serves (holds the cluster's lease)")
	return cmd
}

// limitFlags are the flags of a zone's limits.
type limitFlags struct {
	devices, calls int
	state, queue   byteSize
}

func (l *limitFlags) register(f *pflag.FlagSet) {
	d := api.DefaultZoneLimits
	l.devices, l.calls, l.state, l.queue = d.MaxDevices, d.CallsPerSecond, byteSize(d.ZoneQuota), byteSize(d.QueueBytes)
	f.IntVar(&l.devices, "max-devices", l.devices, "devices the zone may pair (0: no limit)")
	f.Var(&l.state, "state-bytes", "zone state (keys and values) the zone may hold, in bytes or KiB, MiB, GiB")
	f.Var(&l.queue, "queue-bytes", "messages kept for the zone's devices, all together, in bytes or KiB, MiB, GiB (0: no limit beyond each device's)")
	f.IntVar(&l.calls, "calls-per-second", l.calls, "calls, messages and streams the zone's hub admits per second (0: no limit)")
}

func (l *limitFlags) limits() api.ZoneLimits {
	return api.ZoneLimits{MaxDevices: l.devices, ZoneQuota: int64(l.state), QueueBytes: int64(l.queue), CallsPerSecond: l.calls}
}

func (l *limitFlags) check() error {
	if l.devices < 0 || l.calls < 0 {
		return usagef("--max-devices and --calls-per-second must not be negative (0: no limit)")
	}
	if l.state < 1 {
		return usagef("--state-bytes must be at least 1 byte")
	}
	return nil
}

func newProviderZoneAddCmd(g *globals) *cobra.Command {
	var lf limitFlags
	var asJSON bool
	cmd := &cobra.Command{
		Use:   "add NAME",
		Short: "Make a zone and serve it",
		Long: `add makes a new zone, its CA and hub, in DATA/zones/NAME, and serves it at
once. It prints the zone ID; the zone's owner manages it with
pzh --data DATA/zones/NAME (invite, devices, policy, friends, operators).`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if err := lf.check(); err != nil {
				return err
			}
			var v api.ProviderZone
			if err := providerDo(cmd.Context(), g, http.MethodPost, "/v1/zones", api.ZoneAddRequest{Name: args[0], Limits: lf.limits()}, &v); err != nil {
				return err
			}
			if asJSON {
				return printJSON(cmd.OutOrStdout(), v)
			}
			fmt.Fprintf(cmd.OutOrStdout(), "zone %q added, zone ID %s\nits data: %s\nnext: pzh invite --data %s --device NAME\n", v.Name, v.ZoneID, v.Dir, v.Dir)
			return nil
		},
	}
	lf.register(cmd.Flags())
	cmd.Flags().BoolVar(&asJSON, "json", false, "print as JSON")
	return cmd
}

func newProviderZoneRmCmd(g *globals) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "rm ZONE",
		Short: "Stop serving a zone, keeping its data aside",
		Long: `rm stops the zone's hub (its devices are told "shutdown" and can no longer
connect) and moves its data to DATA/removed/NAME-TIME: delete that when
sure. ZONE is the zone's name or ID.`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			var v api.ZoneRemoved
			if err := providerDo(cmd.Context(), g, http.MethodDelete, "/v1/zones/"+url.PathEscape(args[0]), nil, &v); err != nil {
				return err
			}
			fmt.Fprintf(cmd.OutOrStdout(), "zone %q (%s) removed; its data is kept in %s\n", v.Name, v.ZoneID, v.KeptIn)
			return nil
		},
	}
	return cmd
}

func newProviderZoneListCmd(g *globals) *cobra.Command {
	var asJSON bool
	cmd := &cobra.Command{
		Use:   "list",
		Short: "List the provider's zones",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			var zs []api.ProviderZone
			if err := providerDo(cmd.Context(), g, http.MethodGet, "/v1/zones", nil, &zs); err != nil {
				return err
			}
			if asJSON {
				if zs == nil {
					zs = []api.ProviderZone{}
				}
				return printJSON(cmd.OutOrStdout(), zs)
			}
			if len(zs) == 0 {
				fmt.Fprintln(cmd.OutOrStdout(), "no zones yet: pzh provider zone add NAME")
				return nil
			}
			tw := tabwriter.NewWriter(cmd.OutOrStdout(), 0, 4, 2, ' ', 0)
			fmt.Fprintln(tw, "ZONE\tZONE ID\tSTATE\tDEVICES\tONLINE\tLIMITS")
			for _, z := range zs {
				state := z.State
				if z.Error != "" {
					state += ": " + z.Error
				}
				fmt.Fprintf(tw, "%s\t%s\t%s\t%d\t%d\t%s\n", z.Name, z.ZoneID, state, z.Devices, z.Online, formatLimits(z.Limits))
			}
			return tw.Flush()
		},
	}
	cmd.Flags().BoolVar(&asJSON, "json", false, "print as JSON")
	return cmd
}

func formatLimits(l api.ZoneLimits) string {
	n := func(v int) string {
		if v == 0 {
			return "any"
		}
		return fmt.Sprint(v)
	}
	q := "any"
	if l.QueueBytes > 0 {
		q = zsync.FormatSize(l.QueueBytes)
	}
	return fmt.Sprintf("%s devices, %s state, %s queued, %s calls/s", n(l.MaxDevices), zsync.FormatSize(l.ZoneQuota), q, n(l.CallsPerSecond))
}

func newProviderZoneLimitsCmd(g *globals) *cobra.Command {
	var lf limitFlags
	cmd := &cobra.Command{
		Use:   "limits ZONE [--max-devices N] [--state-bytes SIZE] [--queue-bytes SIZE] [--calls-per-second N]",
		Short: "Change a zone's limits",
		Long: `limits changes the limits given and restarts the zone's hub with them: its
devices reconnect by themselves. Devices paired already stay when
--max-devices goes below their number; new ones are refused.`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if err := lf.check(); err != nil {
				return err
			}
			var req api.ZoneLimitsRequest
			l := lf.limits()
			f := cmd.Flags()
			if f.Changed("max-devices") {
				req.MaxDevices = &l.MaxDevices
			}
			if f.Changed("state-bytes") {
				req.ZoneQuota = &l.ZoneQuota
			}
			if f.Changed("queue-bytes") {
				req.QueueBytes = &l.QueueBytes
			}
			if f.Changed("calls-per-second") {
				req.CallsPerSecond = &l.CallsPerSecond
			}
			if req == (api.ZoneLimitsRequest{}) {
				return usagef("give a limit to change: --max-devices, --state-bytes, --queue-bytes or --calls-per-second")
			}
			var v api.ProviderZone
			if err := providerDo(cmd.Context(), g, http.MethodPut, "/v1/zones/"+url.PathEscape(args[0])+"/limits", req, &v); err != nil {
				return err
			}
			fmt.Fprintf(cmd.OutOrStdout(), "zone %q: %s\n", v.Name, formatLimits(v.Limits))
			return nil
		},
	}
	lf.register(cmd.Flags())
	return cmd
}
