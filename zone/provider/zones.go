package provider

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"time"

	"github.com/pzone/pzone/certs"
	"github.com/pzone/pzone/storefile"
	"github.com/pzone/pzone/zone/api"
	"github.com/pzone/pzone/zone/hub"
)

// Adding, removing, limiting and listing the provider's zones.

var (
	errNoZone         = errors.New("no such zone")
	errZoneExists     = errors.New("zone exists")
	errBadZoneRequest = errors.New("bad zone request")
)

func checkLimits(l api.ZoneLimits) error {
	if l.MaxDevices < 0 || l.ZoneQuota < 0 || l.QueueBytes < 0 || l.CallsPerSecond < 0 {
		return fmt.Errorf("%w: limits must not be negative (0: none)", errBadZoneRequest)
	}
	return nil
}

// addZone makes zone name and starts its hub.
func (p *Provider) addZone(req api.ZoneAddRequest) (*api.ProviderZone, error) {
	if err := certs.ValidateName("zone", req.Name); err != nil {
		return nil, fmt.Errorf("%w: %w", errBadZoneRequest, err)
	}
	if err := checkLimits(req.Limits); err != nil {
		return nil, err
	}
	// The name is taken while the zone is made, so that zones are made
	// side by side, each name once.
	p.mu.Lock()
	if p.zones[req.Name] != nil || p.adding[req.Name] {
		p.mu.Unlock()
		return nil, fmt.Errorf("%w: this provider serves a zone named %q already; choose another name", errZoneExists, req.Name)
	}
	if n := len(p.zones) + len(p.adding) + 1; n*filesPerZone > fileLimit() {
		p.mu.Unlock()
		return nil, fmt.Errorf("%d zones need about %d open files, over this process's limit of %d: raise it (ulimit -n, or LimitNOFILE= in the service unit) and restart pzh provider serve", n, n*filesPerZone, fileLimit())
	}
	p.adding[req.Name] = true
	p.mu.Unlock()
	defer func() {
		p.mu.Lock()
		delete(p.adding, req.Name)
		p.mu.Unlock()
	}()
	now := time.Now()
	var info *hub.ZoneInfo
	var final string
	var err error
	if p.node != nil {
		info, final, err = p.addClusterZone(req.Name, now)
	} else {
		info, final, err = p.addZoneFiles(req.Name, now)
	}
	if err != nil {
		return nil, err
	}
	e := zoneEntry{Name: req.Name, ID: info.ID, Added: now.UTC(), Limits: req.Limits}
	if err := p.cat.put(e); err != nil {
		os.RemoveAll(final)
		if p.node != nil {
			p.dropZoneStores(req.Name)
		}
		return nil, fmt.Errorf("record the new zone: %w", err)
	}
	z := &zoneRun{entry: e, dir: final, state: "starting"}
	p.mu.Lock()
	p.zones[req.Name] = z
	p.mu.Unlock()
	p.log.Info("zone added", "zone", e.Name, "zone_id", e.ID)
	if err := p.start(z, true); err != nil {
		return nil, fmt.Errorf("zone %q was made but its hub did not start: %w (pzh provider zone list shows it)", e.Name, err)
	}
	v := z.viewOf()
	return &v, nil
}

// addZoneFiles makes zone name's data directory, with its stores.
func (p *Provider) addZoneFiles(name string, now time.Time) (*hub.ZoneInfo, string, error) {
	zones := filepath.Join(p.cfg.DataDir, ZonesDir)
	final := filepath.Join(zones, name)
	if _, err := os.Lstat(final); err == nil {
		return nil, "", fmt.Errorf("%w: %s exists but is no zone of this provider: move it away first", errZoneExists, final)
	}
	if err := os.MkdirAll(zones, 0o700); err != nil {
		return nil, "", fmt.Errorf("make %s: %w", zones, err)
	}
	// Made aside and renamed into place, so that a zone is there whole or
	// not at all.
	tmp := filepath.Join(zones, ".new-"+name)
	os.RemoveAll(tmp)
	info, err := hub.InitZone(tmp, name, p.cat.set.PublicAddrs, now)
	if err != nil {
		os.RemoveAll(tmp)
		return nil, "", err
	}
	if err := os.Rename(tmp, final); err != nil {
		os.RemoveAll(tmp)
		return nil, "", fmt.Errorf("put the new zone in place: %w", err)
	}
	if err := storefile.SyncDir(zones); err != nil {
		os.RemoveAll(final)
		return nil, "", fmt.Errorf("put the new zone in place: %w", err)
	}
	return info, final, nil
}

// removeZone stops zone nameOrID's hub and moves its data aside.
func (p *Provider) removeZone(nameOrID string) (*api.ZoneRemoved, error) {
	z := p.zone(nameOrID)
	if z == nil {
		return nil, fmt.Errorf("%w: this provider serves no zone %q (pzh provider zone list)", errNoZone, nameOrID)
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.zones[z.entry.Name] != z {
		return nil, fmt.Errorf("%w: zone %q was removed meanwhile", errNoZone, nameOrID)
	}
	z.stop()
	if p.node != nil {
		return p.removeClusterZone(z)
	}
	removed := filepath.Join(p.cfg.DataDir, RemovedDir)
	if err := os.MkdirAll(removed, 0o700); err != nil {
		p.start(z, false)
		return nil, fmt.Errorf("make %s: %w; the zone is served on", removed, err)
	}
	kept := filepath.Join(removed, z.entry.Name+"-"+strconv.FormatInt(time.Now().Unix(), 10))
	if err := os.Rename(z.dir, kept); err != nil {
		p.start(z, false)
		return nil, fmt.Errorf("move the zone's data aside: %w; the zone is served on", err)
	}
	if err := p.cat.remove(z.entry.Name); err != nil {
		if os.Rename(kept, z.dir) == nil {
			p.start(z, false)
		}
		return nil, fmt.Errorf("record the removal: %w", err)
	}
	delete(p.zones, z.entry.Name)
	p.codes.drop(z.entry.ID)
	p.log.Info("zone removed", "zone", z.entry.Name, "zone_id", z.entry.ID, "kept_in", kept)
	return &api.ZoneRemoved{Name: z.entry.Name, ZoneID: string(z.entry.ID), KeptIn: kept}, nil
}

// setLimits changes zone nameOrID's limits and restarts its hub with
// them: its devices reconnect by themselves.
func (p *Provider) setLimits(nameOrID string, req api.ZoneLimitsRequest) (*api.ProviderZone, error) {
	z := p.zone(nameOrID)
	if z == nil {
		return nil, fmt.Errorf("%w: this provider serves no zone %q (pzh provider zone list)", errNoZone, nameOrID)
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	e := z.entry
	if req.MaxDevices != nil {
		e.Limits.MaxDevices = *req.MaxDevices
	}
	if req.ZoneQuota != nil {
		e.Limits.ZoneQuota = *req.ZoneQuota
	}
	if req.QueueBytes != nil {
		e.Limits.QueueBytes = *req.QueueBytes
	}
	if req.CallsPerSecond != nil {
		e.Limits.CallsPerSecond = *req.CallsPerSecond
	}
	if err := checkLimits(e.Limits); err != nil {
		return nil, err
	}
	if err := p.cat.put(e); err != nil {
		return nil, fmt.Errorf("record the limits: %w", err)
	}
	z.stop()
	z.entry = e
	z.setState("starting", nil)
	if err := p.start(z, true); err != nil {
		return nil, fmt.Errorf("the zone's hub did not start again with the new limits: %w", err)
	}
	p.log.Info("zone limits changed", "zone", e.Name, "limits", e.Limits)
	v := z.viewOf()
	return &v, nil
}

// list is every zone, with its hub's device counts.
func (p *Provider) list() []api.ProviderZone {
	p.mu.Lock()
	out := make([]api.ProviderZone, 0, len(p.zones))
	for _, z := range p.zones {
		out = append(out, z.viewOf())
	}
	p.mu.Unlock()
	sort.Slice(out, func(i, j int) bool { return out[i].Added.Before(out[j].Added) })
	return out
}

// sessions counts the live sessions of every zone.
func (p *Provider) sessions() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	n := 0
	for _, z := range p.zones {
		z.mu.Lock()
		h := z.hub
		z.mu.Unlock()
		if h != nil {
			_, online := h.Counts()
			n += online
		}
	}
	return n
}

// viewOf is the zone as listed, with its hub's counts while it runs.
func (z *zoneRun) viewOf() api.ProviderZone {
	state, err := z.view()
	v := api.ProviderZone{Name: z.entry.Name, ZoneID: string(z.entry.ID), Dir: z.dir, Added: z.entry.Added, Limits: z.entry.Limits, State: state}
	if err != nil {
		v.Error = err.Error()
	}
	z.mu.Lock()
	h := z.hub
	z.mu.Unlock()
	if h != nil {
		v.Devices, v.Online = h.Counts()
	}
	return v
}
