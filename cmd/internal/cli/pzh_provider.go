package cli

import (
	"context"
	"fmt"
	"os"
	"time"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"

	"github.com/pzone/pzone/zone/api"
	"github.com/pzone/pzone/zone/provider"
	"github.com/pzone/pzone/zone/wire"
)

func newHubProviderCmd(g *globals) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "provider",
		Short: "Run many zones in one hub process, for others",
		Long: `provider runs the hubs of many zones in one process, on one port: a host
for family and friends, or for many people. Each zone has its own CA,
zone ID, stores, devices and admin socket, in DATA/zones/NAME; devices
and friends' hubs reach their zone by a TLS server name that names its
zone ID, so one zone's devices can reach nothing of another's.

  pzh provider init --data DIR --public-addr HOST:PORT
  pzh provider serve --data DIR
  pzh provider zone add alice --data DIR
  pzh --data DIR/zones/alice invite       (then pzp pair on a device)

Every pzh subcommand but init, serve and restore (which needs a stopped hub)
works on one zone
of a running provider with --data DIR/zones/NAME.

A provider may also run on several nodes sharing a PostgreSQL database
(init and serve with --store): the zones' stores are then in the database,
DATA/zones/NAME holds only each zone's admin socket, one node serves and
the others stand by; backup and restore of such a zone are the database's.`,
	}
	zone := &cobra.Command{Use: "zone", Short: "Add, remove, limit and list the provider's zones"}
	zone.AddCommand(newProviderZoneAddCmd(g), newProviderZoneRmCmd(g), newProviderZoneListCmd(g), newProviderZoneLimitsCmd(g))
	cmd.AddCommand(newProviderInitCmd(g), newProviderServeCmd(g), newProviderStatusCmd(g), newProviderWaitCmd(g), zone)
	return cmd
}

// providerDo calls the running provider of g's data directory.
func providerDo(ctx context.Context, g *globals, method, path string, in, out any) error {
	dir, err := g.dataDir()
	if err != nil {
		return err
	}
	err = api.NewClient(api.SocketPath(dir, api.ProviderSocketName)).Do(ctx, method, path, in, out)
	return notRunningHint(err, "the provider", "pzh provider serve --data "+dir)
}

// storeEnv is the environment variable that gives --store, which keeps
// a database's password out of the process list.
const storeEnv = "PZH_STORE"

func storeFlag(f *pflag.FlagSet, store *string) {
	f.StringVar(store, "store", os.Getenv(storeEnv), "the cluster's PostgreSQL database, postgres://USER@HOST/DB or key=value (default $"+storeEnv+")")
}

func newProviderInitCmd(g *globals) *cobra.Command {
	var addrs []string
	var store, nodeName string
	cmd := &cobra.Command{
		Use:   "init --public-addr HOST:PORT [--store postgres://…]",
		Short: "Make a provider in the data directory, serving no zone yet",
		Long: `init makes a provider in the data directory, serving no zone yet.

With --store, the directory is a node of a cluster whose catalog and
zones are kept in that PostgreSQL database: the first node makes the
cluster, each later one joins it, its --public-addr added to every zone's
addresses. One node serves at a time; the others stand by and take over
when it dies.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if len(addrs) == 0 {
				return usagef("--public-addr is required: where devices will reach the provider, e.g. --public-addr hub.example.net:7443")
			}
			dir, err := g.dataDir()
			if err != nil {
				return err
			}
			if store != "" {
				if err := provider.InitNode(cmd.Context(), dir, store, nodeName, addrs, time.Now()); err != nil {
					return err
				}
				fmt.Fprintf(cmd.OutOrStdout(), "cluster node made in %s, public address %v\nnext: pzh provider serve --data %s --store … (on each node), then pzh provider zone add NAME --data %s on the serving one\n", dir, addrs, dir, dir)
				return nil
			}
			if nodeName != "" {
				return usagef("--node names a node of a cluster: give --store too")
			}
			if err := provider.Init(dir, addrs, time.Now()); err != nil {
				return err
			}
			fmt.Fprintf(cmd.OutOrStdout(), "provider made in %s, public address %v\nnext: pzh provider serve --data %s, then pzh provider zone add NAME --data %s\n", dir, addrs, dir, dir)
			return nil
		},
	}
	cmd.Flags().StringArrayVar(&addrs, "public-addr", nil, "HOST:PORT devices reach the provider at (repeatable); every zone gets these")
	storeFlag(cmd.Flags(), &store)
	cmd.Flags().StringVar(&nodeName, "node", "", "this node's name in the cluster (default: the host name)")
	return cmd
}

func newProviderServeCmd(g *globals) *cobra.Command {
	var listen, store string
	var noQUIC, noTCP bool
	var heartbeat time.Duration
	cmd := &cobra.Command{
		Use:   "serve",
		Short: "Run the provider: every zone's hub, on one port",
		Long: `serve runs the hub of every zone of the provider: QUIC on UDP and TLS 1.3 +
yamux on TCP, both on one port, plus the provider's admin socket
(pzh-provider.sock) and each zone's own (DATA/zones/NAME/pzh.sock). A zone
whose hub fails to start is said in the log and in 'zone list'; the others
are served. It runs until SIGINT or SIGTERM, then closes every session with
reason "shutdown" and exits 0.

A cluster's node (made with init --store) needs --store: it waits on
standby, not listening, until it holds the cluster's lease, then serves
every zone from the database until it stops or loses the lease.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			kinds, err := serveKinds(noQUIC, noTCP)
			if err != nil {
				return err
			}
			dir, err := g.dataDir()
			if err != nil {
				return err
			}
			log, err := g.logger(cmd.ErrOrStderr())
			if err != nil {
				return err
			}
			if heartbeat < wire.MinHeartbeat || heartbeat > wire.MaxHeartbeat {
				return usagef("--heartbeat %v out of range: use %v to %v", heartbeat, wire.MinHeartbeat, wire.MaxHeartbeat)
			}
			return provider.Run(cmd.Context(), provider.Config{DataDir: dir, Listen: listen, Transports: kinds, Heartbeat: heartbeat, Logger: log, Store: store})
		},
	}
	f := cmd.Flags()
	f.StringVar(&listen, "listen", "", "HOST:PORT to listen on, UDP and TCP (default: all interfaces, the public address's port)")
	f.BoolVar(&noQUIC, "no-quic", false, "serve TCP only (devices fall back to it)")
	f.BoolVar(&noTCP, "no-tcp", false, "serve QUIC only")
	f.DurationVar(&heartbeat, "heartbeat", wire.DefaultHeartbeat, "how often devices must ping; a link is dead after 3 missed")
	storeFlag(f, &store)
	return cmd
}
