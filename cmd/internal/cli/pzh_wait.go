package cli

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/spf13/cobra"

	"github.com/pzone/pzone/certs"
	"github.com/pzone/pzone/zone/api"
)

func newHubWaitCmd(g *globals) *cobra.Command {
	var timeout time.Duration
	cmd := &cobra.Command{
		Use:   "wait ready | wait STATE DEVICE... | wait linked|unlinked FRIEND...",
		Short: "Wait until the hub answers, devices reach a state (online, offline, revoked), or friends' links are up or down",
		Long: `wait blocks until the condition holds, then exits 0; after --timeout it
exits 1 saying what it saw. 'pzh wait ready' waits for the hub's socket to
answer; 'pzh wait online phone laptop' for both devices' sessions. Useful in
scripts that start a hub and act once devices are up. 'pzh wait linked bob'
waits for the link with friend zone bob; 'unlinked' for no link (or no such
friend any more).`,
		Args: func(cmd *cobra.Command, args []string) error {
			if len(args) == 0 {
				return usagef("say what to wait for: ready, or online/offline/revoked and device names")
			}
			switch args[0] {
			case "ready":
				if len(args) != 1 {
					return usagef("wait ready takes no device names")
				}
			case "online", "offline", "revoked":
				if len(args) < 2 {
					return usagef("name the devices to wait for: pzh wait %s DEVICE...", args[0])
				}
				for _, d := range args[1:] {
					if err := certs.ValidateName("device", d); err != nil {
						return usageError{err}
					}
				}
			case "linked", "unlinked":
				if len(args) < 2 {
					return usagef("name the friends to wait for: pzh wait %s FRIEND...", args[0])
				}
				for _, d := range args[1:] {
					if err := certs.ValidateName("zone", d); err != nil {
						return usageError{err}
					}
				}
			default:
				return usagef("unknown state %q: use ready, online, offline, revoked, linked or unlinked", args[0])
			}
			return nil
		},
		RunE: func(cmd *cobra.Command, args []string) error {
			c, dir, err := hubClient(g)
			if err != nil {
				return err
			}
			ctx, cancel := context.WithTimeout(cmd.Context(), timeout)
			defer cancel()
			var st api.HubStatus
			if err := waitReady(ctx, c, "/v1/status", &st); err != nil {
				if !errors.Is(err, api.ErrNotRunning) {
					return fmt.Errorf("hub in %s: %w", dir, err)
				}
				return fmt.Errorf("hub in %s not ready after %v: %w", dir, timeout, err)
			}
			if args[0] == "ready" {
				return nil
			}
			want, names := args[0], args[1:]
			if want == "linked" || want == "unlinked" {
				return waitFriends(ctx, c, dir, timeout, want == "linked", names)
			}
			v, err := watch(ctx, c, "/v1/devices", func(v *api.DevicesView) uint64 { return v.Version }, func(v *api.DevicesView) bool {
				for _, n := range names {
					i := slices.IndexFunc(v.Devices, func(d api.DeviceView) bool { return d.Name == n })
					if i < 0 || v.Devices[i].State != want {
						return false
					}
				}
				return true
			})
			if err != nil {
				if v == nil {
					return notRunningHint(err, "the hub", "pzh serve --data "+dir)
				}
				return fmt.Errorf("devices not all %s after %v: %s", want, timeout, describeDevices(v, names))
			}
			return nil
		},
	}
	cmd.Flags().DurationVar(&timeout, "timeout", defaultWait, "give up after this long")
	return cmd
}

func describeDevices(v *api.DevicesView, names []string) string {
	s := ""
	for _, n := range names {
		state := "not paired"
		for _, d := range v.Devices {
			if d.Name == n {
				state = d.State
			}
		}
		s += fmt.Sprintf("%s is %s; ", n, state)
	}
	return s
}

// waitFriends waits until the named friends' links are all up (linked)
// or all down.
func waitFriends(ctx context.Context, c *api.Client, dir string, timeout time.Duration, linked bool, names []string) error {
	up := func(v *api.FriendsView, n string) bool {
		i := slices.IndexFunc(v.Friends, func(f api.FriendView) bool { return f.Petname == n })
		return i >= 0 && v.Friends[i].State == "online"
	}
	v, err := watch(ctx, c, "/v1/friends", func(v *api.FriendsView) uint64 { return v.Version }, func(v *api.FriendsView) bool {
		for _, n := range names {
			if up(v, n) != linked {
				return false
			}
		}
		return true
	})
	if err != nil {
		if v == nil {
			return notRunningHint(err, "the hub", "pzh serve --data "+dir)
		}
		s := ""
		for _, n := range names {
			state := "not a friend"
			for _, f := range v.Friends {
				if f.Petname == n {
					state = f.State
					if f.LastError != "" {
						state += " (" + f.LastError + ")"
					}
				}
			}
			s += fmt.Sprintf("%s is %s; ", n, state)
		}
		return fmt.Errorf("friend links not all %s after %v: %s", map[bool]string{true: "up", false: "down"}[linked], timeout, s)
	}
	return nil
}
