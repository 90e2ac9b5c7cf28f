package peer

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net"
	"runtime"
	"slices"

	"github.com/pzone/pzone/zone/session"

	zsync "github.com/pzone/pzone/sync"
	"github.com/pzone/pzone/transport"
	"github.com/pzone/pzone/zone/wire"
)

// The device's side of the zone state: its copy, the sync stream of its
// session, and what it publishes of itself.

// CertRevoked reports whether the zone state this device holds revokes
// the certificate with serial (hex): the check a device makes before it
// trusts another device directly.
func (p *Peer) CertRevoked(serial string) bool {
	if p.state == nil {
		return false
	}
	r, ok, err := p.state.Get(zsync.BucketCerts, wire.CertKeyRevokedPrefix+serial)
	return err == nil && ok && !r.Deleted
}

// openState opens the device's copy of the zone state.
func (p *Peer) openState() error {
	id := p.id.Load()
	st, err := openPeerState(&p.cfg, p.store, id, zsync.Options{
		Node: id.Device, Now: p.cfg.Now, Logger: p.log.With("part", "sync"), OnChange: p.syncChanged,
	})
	if err != nil {
		return err
	}
	p.state = st
	p.publishIdentity()
	return nil
}

func (p *Peer) syncChanged() {
	if p.state != nil {
		p.followHubAddrs()
	}
	p.changes.Bump()
	if p.state == nil {
		return
	}
	if p.direct != nil {
		p.direct.changed() // a revocation cuts direct connections at once
	}
	p.touch()
	st := p.state.State()
	if st.Pending > 0 && p.sleep.isAsleep() {
		p.sleep.need() // a local edit wakes the device to push it
	}
	if p.cfg.OnSync != nil {
		p.cfg.OnSync(st)
	}
	if p.cfg.ExitWhenSynced && st.Synced() {
		p.syncedOnce.Do(func() { close(p.synced) })
	}
}

// maxHubAddrs bounds the hub addresses a device takes from the zone
// record (the hub keeps at most 4).
const maxHubAddrs = 8

// followHubAddrs takes the hub's addresses from the zone record when they
// changed (pzh addr): the device dials them, in order, from then on, and
// keeps them across restarts. A record that makes no sense is ignored.
func (p *Peer) followHubAddrs() {
	r, ok, err := p.state.Get(zsync.BucketUser, wire.UserKeyZone)
	if err != nil || !ok || r.Deleted || r.Seq == p.zoneSeq.Load() {
		return // unchanged since last looked at: most changes are other records
	}
	p.zoneSeq.Store(r.Seq)
	var z wire.ZoneRecord
	if json.Unmarshal(r.Value, &z) != nil || len(z.HubAddrs) == 0 || len(z.HubAddrs) > maxHubAddrs {
		return
	}
	for _, a := range z.HubAddrs {
		if host, _, err := net.SplitHostPort(a); err != nil || host == "" || len(a) > 255 {
			return
		}
	}
	id := p.id.Load()
	if slices.Equal(id.HubAddrs, z.HubAddrs) || z.ZoneID != "" && z.ZoneID.Compact() != id.ZoneID.Compact() {
		return
	}
	nid, err := p.store.SaveHubAddrs(slices.Clone(z.HubAddrs))
	if err != nil {
		p.log.Warn("keep the hub's new addresses", "addrs", z.HubAddrs, "err", err)
		return
	}
	p.id.Store(nid)
	p.log.Info("hub addresses changed", "addrs", z.HubAddrs, "was", id.HubAddrs)
}

// publishIdentity writes the device's own record if it changed.
func (p *Peer) publishIdentity() {
	v, _ := json.Marshal(wire.DeviceInfo{OS: runtime.GOOS, Arch: runtime.GOARCH, Software: wire.SoftwareVersion, Direct: p.directAddrs()})
	name := p.id.Load().Device
	if cur, ok, err := p.state.Get(zsync.BucketDevices, name); err == nil && ok && !cur.Deleted && bytes.Equal(cur.Value, v) {
		return
	}
	if _, err := p.state.Put(zsync.BucketDevices, name, v); err != nil {
		p.log.Warn("publish device record", "err", err)
	}
}

// runSync runs the session's sync stream until the session ends.
func (p *Peer) runSync(ctx context.Context, ps *peerSession) error {
	octx, cancel := context.WithTimeout(ctx, wire.StreamTimeout)
	st, err := ps.conn.OpenStream(octx)
	cancel()
	if err != nil {
		return fmt.Errorf("open sync stream: %w", err)
	}
	if err := transport.WriteFrame(st, &wire.StreamHeader{Kind: wire.StreamSync}); err != nil {
		st.Reset()
		return err
	}
	return p.state.Sync(ctx, session.SyncStream{Stream: st})
}
