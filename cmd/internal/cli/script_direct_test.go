package cli

import (
	"context"
	"fmt"
	"strings"
	"time"

	"github.com/rogpeppe/go-internal/testscript"

	"github.com/pzone/pzone/zone/api"
)

// waitpath DIR DEVICE PATH: long-poll the status of the device in DIR until
// its path to DEVICE is PATH (direct or hub).
func cmdWaitPath(ts *testscript.TestScript, neg bool, args []string) {
	if neg || len(args) != 3 {
		ts.Fatalf("usage: waitpath DIR DEVICE direct|hub")
	}
	dir, device, want := ts.MkAbs(args[0]), args[1], args[2]
	ctx, cancel := context.WithTimeout(context.Background(), defaultWait)
	defer cancel()
	c := api.NewClient(api.SocketPath(dir, api.PeerSocketName))
	path := func(s *api.PeerStatus) string {
		if s.Direct == nil {
			return "(no direct status)"
		}
		for _, p := range s.Direct.Peers {
			if p.Device == device {
				return p.Path
			}
		}
		return "(not listed)"
	}
	st, err := watch(ctx, c, "/v1/status", func(s *api.PeerStatus) uint64 { return s.Version }, func(s *api.PeerStatus) bool { return path(s) == want })
	if err != nil {
		last := "none"
		if st != nil {
			last = path(st)
		}
		ts.Fatalf("path from %s to %s not %s after %v: %v (last: %s)", args[0], device, want, defaultWait, err, last)
	}
	ts.Logf("%s", fmt.Sprintf("path to %s: %s (%s)", device, want, time.Now().Format(time.StampMilli)))
}

// waithubaddrs DIR ADDR...: wait until the device in DIR dials exactly
// these hub addresses, in this order (it learns them from the zone state).
func cmdWaitHubAddrs(ts *testscript.TestScript, neg bool, args []string) {
	if neg || len(args) < 2 {
		ts.Fatalf("usage: waithubaddrs DIR ADDR...")
	}
	want := strings.Join(args[1:], " ")
	ctx, cancel := context.WithTimeout(context.Background(), defaultWait)
	defer cancel()
	c := api.NewClient(api.SocketPath(ts.MkAbs(args[0]), api.PeerSocketName))
	st, err := watch(ctx, c, "/v1/status", func(s *api.PeerStatus) uint64 { return s.Version }, func(s *api.PeerStatus) bool {
		return strings.Join(s.HubAddrs, " ") == want
	})
	if err != nil {
		var last []string
		if st != nil {
			last = st.HubAddrs
		}
		ts.Fatalf("device %s does not dial %s after %v: %v (it dials %v)", args[0], want, defaultWait, err, last)
	}
}

// waitfriendaddrs DIR FRIEND ADDR...: wait until the hub in DIR holds
// exactly ADDR... as where friend FRIEND's hub listens.
func cmdWaitFriendAddrs(ts *testscript.TestScript, neg bool, args []string) {
	if neg || len(args) < 3 {
		ts.Fatalf("usage: waitfriendaddrs DIR FRIEND ADDR...")
	}
	want := strings.Join(args[2:], " ")
	ctx, cancel := context.WithTimeout(context.Background(), defaultWait)
	defer cancel()
	c := api.NewClient(api.SocketPath(ts.MkAbs(args[0]), api.HubSocketName))
	var last []string
	_, err := watch(ctx, c, "/v1/friends", func(v *api.FriendsView) uint64 { return v.Version }, func(v *api.FriendsView) bool {
		for _, f := range v.Friends {
			if f.Petname == args[1] {
				last = f.HubAddrs
				return strings.Join(f.HubAddrs, " ") == want
			}
		}
		return false
	})
	if err != nil {
		ts.Fatalf("hub %s does not hold %s for friend %s after %v: %v (it holds %v)", args[0], want, args[1], defaultWait, err, last)
	}
}
