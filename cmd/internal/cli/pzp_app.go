package cli

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/pzone/pzone/zone/api"
	"github.com/pzone/pzone/zone/appid"
)

func newPeerAppCmd(g *globals) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "app",
		Short: "Register the applications of this device: each gets a credential",
		Long: `An application proves who it is to this device's pzp with a credential that
'pzp app add NAME' prints once (only its hash is kept). The app presents it on
every request to pzp.sock (Authorization: Bearer CREDENTIAL; the Go client's
api.WithCredential); its calls and services are then app NAME, which policy
rules (ZONE/DEVICE/APP) match. Without one it is app anonymous, or refused
under 'pzp run --require-app-auth'. The device's own CLI is app pzp.
Adding or removing an app takes effect at once, while pzp runs.`,
	}
	cmd.AddCommand(newPeerAppAddCmd(g), newPeerAppListCmd(g), newPeerAppRmCmd(g))
	return cmd
}

// appRegistry is the app registry of g's data directory, which must hold
// a paired device.
func appRegistry(g *globals) (*appid.Registry, error) {
	dir, err := g.dataDir()
	if err != nil {
		return nil, err
	}
	if _, err := os.Stat(filepath.Join(dir, api.PeerStoreName)); err != nil {
		if errors.Is(err, os.ErrNotExist) {
			return nil, fmt.Errorf("no device is paired in %s: pair it first (pzp pair TOKEN --data %s)", dir, dir)
		}
		return nil, err
	}
	return appid.Open(dir), nil
}

func newPeerAppAddCmd(g *globals) *cobra.Command {
	return &cobra.Command{
		Use:   "add NAME",
		Short: "Register app NAME and print its credential (shown this once)",
		Args: func(cmd *cobra.Command, args []string) error {
			if len(args) != 1 {
				return usagef("app add takes NAME")
			}
			if err := appid.ValidateName(args[0]); err != nil {
				return usageError{err}
			}
			return nil
		},
		RunE: func(cmd *cobra.Command, args []string) error {
			reg, err := appRegistry(g)
			if err != nil {
				return err
			}
			cred, err := reg.Add(args[0], time.Now())
			if err != nil {
				return err
			}
			fmt.Fprintln(cmd.OutOrStdout(), cred)
			fmt.Fprintf(cmd.ErrOrStderr(), "app %s registered: give it this credential (it is not shown again; pzp app rm %s revokes it)\n", args[0], args[0])
			return nil
		},
	}
}

func newPeerAppListCmd(g *globals) *cobra.Command {
	var asJSON bool
	cmd := &cobra.Command{
		Use:   "list",
		Short: "List the apps registered on this device",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			reg, err := appRegistry(g)
			if err != nil {
				return err
			}
			apps, err := reg.List()
			if err != nil {
				return err
			}
			type row struct {
				Name    string    `json:"name"`
				Created time.Time `json:"created"`
			}
			rows := []row{}
			for _, a := range apps {
				rows = append(rows, row{a.Name, a.Created})
			}
			if asJSON {
				return printJSON(cmd.OutOrStdout(), rows)
			}
			if len(rows) == 0 {
				fmt.Fprintln(cmd.OutOrStdout(), "no apps registered (pzp app add NAME registers one)")
				return nil
			}
			tw := tabwriter.NewWriter(cmd.OutOrStdout(), 0, 4, 2, ' ', 0)
			fmt.Fprintln(tw, "NAME\tCREATED")
			for _, r := range rows {
				fmt.Fprintf(tw, "%s\t%s\n", r.Name, r.Created.Local().Format(time.DateTime))
			}
			return tw.Flush()
		},
	}
	cmd.Flags().BoolVar(&asJSON, "json", false, "print JSON")
	return cmd
}

func newPeerAppRmCmd(g *globals) *cobra.Command {
	return &cobra.Command{
		Use:   "rm NAME",
		Short: "Unregister app NAME: its credential stops working at once",
		Args: func(cmd *cobra.Command, args []string) error {
			if len(args) != 1 {
				return usagef("app rm takes NAME")
			}
			return nil
		},
		RunE: func(cmd *cobra.Command, args []string) error {
			reg, err := appRegistry(g)
			if err != nil {
				return err
			}
			if err := reg.Remove(args[0]); err != nil {
				return err
			}
			fmt.Fprintf(cmd.OutOrStdout(), "app %s removed\n", args[0])
			return nil
		},
	}
}
