package policy

import (
	"encoding/json"
	"log/slog"
	"strings"
	"sync"

	zsync "github.com/pzone/pzone/sync"
	"github.com/pzone/pzone/zone/wire"
)

// View is what every call reads from the zone state: the policy rules,
// and which services require a token. It is rebuilt only after the state
// changed, so a call neither reads nor parses records.
type View struct {
	Rules         []Rule
	TokenRequired map[string]bool // DEVICE/SERVICE
	Friends       *wire.Friends   // the friends bucket
}

// ViewCache holds a View as of a store version.
type ViewCache struct {
	mu      sync.Mutex
	version uint64
	view    *View
}

// get returns the view of s (an empty one for no store), rebuilt if s
// changed since.
func (c *ViewCache) Get(s *zsync.Store, log *slog.Logger) *View {
	if s == nil {
		return &View{Friends: wire.NewFriends()}
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	ver := s.Version()
	if c.view != nil && c.version == ver {
		return c.view
	}
	v := &View{TokenRequired: map[string]bool{}, Friends: wire.NewFriends()}
	rules, skipped, err := LoadRules(s)
	if err != nil {
		log.Warn("read policy rules", "err", err)
		if c.view != nil {
			return c.view // keep the last good rules rather than none
		}
	}
	for _, e := range skipped {
		log.Warn("policy rule ignored", "err", e)
	}
	v.Rules = rules
	err = s.List(zsync.BucketApps, "", func(r zsync.Record) error {
		device, _, _ := strings.Cut(r.Key, "/")
		var rec wire.AppRecord
		if json.Unmarshal(r.Value, &rec) == nil {
			for _, svc := range rec.Services {
				if svc.TokenRequired {
					v.TokenRequired[device+"/"+svc.Name] = true
				}
			}
		}
		return nil
	})
	if err != nil {
		log.Warn("read services", "err", err)
	}
	err = s.List(zsync.BucketFriends, "", func(r zsync.Record) error {
		if r.Deleted {
			return nil
		}
		f, err := wire.DecodeFriendInfo(r.Key, r.Value)
		if err != nil {
			log.Warn("friend record ignored", "err", err)
			return nil
		}
		v.Friends.Add(f)
		return nil
	})
	if err != nil {
		log.Warn("read friends", "err", err)
	}
	c.view, c.version = v, ver
	return v
}
