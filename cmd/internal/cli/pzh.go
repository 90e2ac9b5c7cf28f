package cli

import (
	"context"
	"os"
	"path/filepath"

	"github.com/pzone/pzone/zone/api"
	"github.com/spf13/cobra"
)

// HubCommand is the pzh root command.
func HubCommand(exts ...ServeExtension) *cobra.Command {
	g := &globals{envVar: "PZH_DATA", sub: "hub"}
	root := &cobra.Command{
		Use:   "pzh",
		Short: "pzone hub: the always-reachable centre of a personal zone",
		Long: `pzh runs the hub of a personal zone. Create a zone once with 'pzh init',
run the hub with 'pzh serve', and pair each device with 'pzh invite' (and
'pzp pair' on the device). Every other subcommand talks to the running hub
through the socket in its data directory.`,
	}
	g.register(root)
	root.AddCommand(newHubInitCmd(g), newHubServeCmd(g, exts), newHubInviteCmd(g), newHubInvitesCmd(g),
		newHubDevicesCmd(g), newHubRevokeCmd(g), newHubWakeCmd(g), newHubStatusCmd(g), newHubWaitCmd(g), newHubDataCmd(g), newHubPolicyCmd(g), newHubBindingsCmd(g), newHubTokensCmd(g),
		newHubFriendCmd(g), newHubFriendsCmd(g), newHubCompactCmd(g), newHubOperatorCmd(g), newHubWebCmd(g), newHubAddrCmd(g),
		newHubBackupCmd(g), newHubRestoreCmd(g), newHubProviderCmd(g))
	root.AddCommand(newConfigCmd(func() *cobra.Command {
		c, _, _ := root.Find([]string{"serve"})
		return c
	}, "PZH"))
	setVersion(root)
	return root
}

// hubClient returns a client for the running hub of g's data directory.
func hubClient(g *globals) (*api.Client, string, error) {
	dir, err := g.dataDir()
	if err != nil {
		return nil, "", err
	}
	return api.NewClient(api.SocketPath(dir, api.HubSocketName)), dir, nil
}

// hubDo calls the running hub and explains a hub that is not running.
func hubDo(ctx context.Context, g *globals, method, path string, in, out any) error {
	c, dir, err := hubClient(g)
	if err != nil {
		return err
	}
	err = c.Do(ctx, method, path, in, out)
	if prov, ok := providerOf(dir); ok {
		return notRunningHint(err, "the provider serving this zone", "pzh provider serve --data "+prov)
	}
	return notRunningHint(err, "the hub", "pzh serve --data "+dir)
}

// providerOf is the data directory of the provider whose zone dir is,
// when it is one.
func providerOf(dir string) (string, bool) {
	zones := filepath.Dir(dir)
	prov := filepath.Dir(zones)
	if filepath.Base(zones) != api.ProviderZonesDir {
		return "", false
	}
	if _, err := os.Stat(filepath.Join(prov, api.ProviderStoreName)); err != nil {
		return "", false
	}
	return prov, true
}
