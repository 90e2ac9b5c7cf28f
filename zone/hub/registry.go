package hub

import (
	"context"
	"fmt"
	"log/slog"
	"sort"
	"sync"
	"time"

	"github.com/pzone/pzone/certs"
	"github.com/pzone/pzone/zone/api"
	"github.com/pzone/pzone/zone/localapi"
	"github.com/pzone/pzone/zone/stores"
	"github.com/pzone/pzone/zone/wire"
)

// registry is the hub's table of paired devices and their live sessions:
// who may hold a session (admission), which session is each device's,
// the revoked certificates, and where devices were last seen (kept in
// memory, flushed to the store now and then). Its lock is taken after the
// links' and the friends', never before them.
type registry struct {
	store      *hubStore
	log        *slog.Logger
	now        func() time.Time
	renewGrace time.Duration
	changes    *localapi.Notifier

	mu       sync.Mutex
	closing  bool                   // shutdown has begun: no session is registered
	sessions map[string]*hubSession // live sessions by device
	devices  map[string]*DeviceRecord
	revoked  map[string]bool // serials
	// lastSeen holds where devices were last connected from until the
	// next flush: it is not worth an fsync per session end.
	lastSeen map[string]seenRecord
}

// newRegistry reads the devices and revoked serials from the store.
func newRegistry(store *hubStore, cfg *Config, changes *localapi.Notifier) (*registry, error) {
	rg := &registry{store: store, log: cfg.Logger, now: cfg.Now, renewGrace: cfg.RenewGrace, changes: changes,
		sessions: map[string]*hubSession{}, devices: map[string]*DeviceRecord{}, lastSeen: map[string]seenRecord{}}
	devs, err := store.Devices()
	if err != nil {
		return nil, err
	}
	for _, d := range devs {
		rg.devices[d.Name] = d
	}
	if rg.revoked, err = store.RevokedSerials(); err != nil {
		return nil, err
	}
	return rg, nil
}

// admit decides whether an authenticated device may hold a session.
func (rg *registry) admit(v *certs.Verified) (wire.CloseReason, string) {
	serial := stores.SerialHex(v.Cert)
	rg.mu.Lock()
	defer rg.mu.Unlock()
	rec := rg.devices[v.Identity.Device]
	switch {
	case rg.revoked[serial] || rec != nil && rec.Revoked && rec.hasSerial(serial):
		when := ""
		if rec != nil && rec.Revoked {
			when = " on " + rec.RevokedAt.Format(time.RFC3339)
		}
		return wire.ReasonRevoked, fmt.Sprintf("device %q was revoked%s", v.Identity.Device, when)
	case rec == nil || !rec.hasSerial(serial):
		return wire.ReasonUnknown, fmt.Sprintf("the hub has no pairing for this certificate of device %q; pair again with a new invite", v.Identity.Device)
	case v.Expired && rg.now().Sub(v.Cert.NotAfter) > rg.renewGrace:
		return wire.ReasonExpired, fmt.Sprintf("certificate expired on %s, past the hub's %v grace period; pair again with a new invite", v.Cert.NotAfter.Format(time.RFC3339), rg.renewGrace)
	}
	return wire.ReasonNone, ""
}

// retireOlder forgets the certificates a device held before serial, once
// it has connected with serial: a renewed device has proven it saved the
// new certificate, so the old one (and its key) can no longer be used.
func (rg *registry) retireOlder(device, serial string) {
	rg.mu.Lock()
	rec := rg.devices[device]
	due := rec != nil && len(rec.Serials) > 1 && rec.Serials[len(rec.Serials)-1] == serial
	rg.mu.Unlock()
	if !due {
		return
	}
	nrec, err := rg.store.RetireOlder(device, serial)
	if err != nil {
		rg.log.Warn("retire old certificates", "device", device, "err", err)
		return
	}
	rg.mu.Lock()
	rg.putLocked(nrec)
	rg.mu.Unlock()
}

// register makes s the device's live session and returns the one it
// replaced, if any. It registers nothing, and says why, once shutdown has
// begun (shutdown has already taken its list of sessions to close) or if
// the device was revoked since admission (the revocation looked for a
// session to close before this one was in the table).
func (rg *registry) register(s *hubSession) (*hubSession, wire.CloseReason) {
	rg.mu.Lock()
	if rg.closing {
		rg.mu.Unlock()
		return nil, wire.ReasonShutdown
	}
	if rec := rg.devices[s.device]; rec == nil || rec.Revoked || rg.revoked[s.serial] {
		rg.mu.Unlock()
		return nil, wire.ReasonRevoked
	}
	old := rg.sessions[s.device]
	rg.sessions[s.device] = s
	rg.mu.Unlock()
	rg.changes.Bump()
	return old, wire.ReasonNone
}

// unregister removes s if it is still the device's live session.
func (rg *registry) unregister(s *hubSession) bool {
	rg.mu.Lock()
	cur := rg.sessions[s.device] == s
	if cur {
		delete(rg.sessions, s.device)
	}
	rg.mu.Unlock()
	if cur {
		rg.changes.Bump()
	}
	return cur
}

// putDevice caches a record read back from the store, keeping the
// last-seen fields that are newer in memory than on disk (rg.mu held).
func (rg *registry) putLocked(rec *DeviceRecord) {
	if old := rg.devices[rec.Name]; old != nil && old.LastSeen.After(rec.LastSeen) {
		rec.LastSeen, rec.LastAddr, rec.LastVia = old.LastSeen, old.LastAddr, old.LastVia
	}
	rg.devices[rec.Name] = rec
}

// seen notes where a device was connected from when its session ended.
func (rg *registry) seen(device, addr, via string) {
	rg.mu.Lock()
	defer rg.mu.Unlock()
	rg.lastSeen[device] = seenRecord{at: rg.now(), addr: addr, via: via}
	if d := rg.devices[device]; d != nil {
		c := *d
		c.LastSeen, c.LastAddr, c.LastVia = rg.now().UTC(), addr, via
		rg.devices[device] = &c
	}
}

// flushSeen writes pending last-seen records in one transaction.
func (rg *registry) flushSeen() {
	rg.mu.Lock()
	pending := rg.lastSeen
	rg.lastSeen = map[string]seenRecord{}
	rg.mu.Unlock()
	if len(pending) == 0 {
		return
	}
	err := rg.store.SeenMany(func(yield func(string, time.Time, string, string) bool) {
		for d, r := range pending {
			if !yield(d, r.at, r.addr, r.via) {
				return
			}
		}
	})
	if err != nil {
		rg.log.Warn("record last seen", "devices", len(pending), "err", err)
	}
}

// session is a device's registered session, nil if none (it may be
// closing).
func (rg *registry) session(device string) *hubSession {
	rg.mu.Lock()
	defer rg.mu.Unlock()
	return rg.sessions[device]
}

// online reports whether a device has a session that is not closing.
func (rg *registry) online(device string) bool {
	s := rg.session(device)
	return s != nil && s.syncCtx.Err() == nil
}

// paired reports whether a device is paired and not revoked.
func (rg *registry) paired(device string) bool {
	rg.mu.Lock()
	defer rg.mu.Unlock()
	d := rg.devices[device]
	return d != nil && !d.Revoked
}

type seenRecord struct {
	at        time.Time
	addr, via string
}

// seenFlush is how often last-seen records reach the store; at most this
// much of "last seen" is lost if the hub crashes.
const seenFlush = time.Minute

func (rg *registry) seenLoop(ctx context.Context) error { return every(ctx, seenFlush, rg.flushSeen) }

// put caches a record read back from the store (see putLocked).
func (rg *registry) put(rec *DeviceRecord) {
	rg.mu.Lock()
	rg.putLocked(rec)
	rg.mu.Unlock()
}

// markRevoked caches a revoked device's record and its serials, and
// returns its live session, if any, for the caller to cut.
func (rg *registry) markRevoked(rec *DeviceRecord) *hubSession {
	rg.mu.Lock()
	defer rg.mu.Unlock()
	rg.putLocked(rec)
	for _, serial := range rec.Serials {
		rg.revoked[serial] = true
	}
	return rg.sessions[rec.Name]
}

// lookup returns a device's session (nil if none; it may be closing) and
// record (nil if never paired) as of one moment.
func (rg *registry) lookup(device string) (*hubSession, *DeviceRecord) {
	rg.mu.Lock()
	defer rg.mu.Unlock()
	return rg.sessions[device], rg.devices[device]
}

// records lists every device's record, revoked ones too.
func (rg *registry) records() []*DeviceRecord {
	rg.mu.Lock()
	defer rg.mu.Unlock()
	out := make([]*DeviceRecord, 0, len(rg.devices))
	for _, d := range rg.devices {
		out = append(out, d)
	}
	return out
}

// active lists the devices paired and not revoked.
func (rg *registry) active() []string {
	rg.mu.Lock()
	defer rg.mu.Unlock()
	var out []string
	for name, d := range rg.devices {
		if !d.Revoked {
			out = append(out, name)
		}
	}
	return out
}

// counts is how many devices are paired (not revoked) and how many online.
func (rg *registry) counts() (paired, online int) {
	rg.mu.Lock()
	defer rg.mu.Unlock()
	for _, d := range rg.devices {
		if !d.Revoked {
			paired++
		}
	}
	return paired, len(rg.sessions)
}

// isClosing reports whether shutdown has begun.
func (rg *registry) isClosing() bool {
	rg.mu.Lock()
	defer rg.mu.Unlock()
	return rg.closing
}

// close begins shutdown: no session registers from now on. It returns the
// live sessions, for the caller to close, and whether this was the first
// call.
func (rg *registry) close() (live []*hubSession, first bool) {
	rg.mu.Lock()
	defer rg.mu.Unlock()
	first = !rg.closing
	rg.closing = true
	live = make([]*hubSession, 0, len(rg.sessions))
	for _, s := range rg.sessions {
		live = append(live, s)
	}
	return live, first
}

// views is the devices' rows of pzh devices, by name, as far as the
// registry knows them (state, session, last seen).
func (rg *registry) views() []api.DeviceView {
	rg.mu.Lock()
	defer rg.mu.Unlock()
	out := []api.DeviceView{}
	for _, d := range rg.devices {
		v := api.DeviceView{Name: d.Name, State: "offline", CertExpires: d.CertExpires, Paired: d.Paired}
		if !d.LastSeen.IsZero() {
			t := d.LastSeen
			v.LastSeen = &t
		}
		if d.Revoked {
			v.State = "revoked"
			t := d.RevokedAt
			v.RevokedAt, v.RevokeReason = &t, d.RevokeReason
		} else if s := rg.sessions[d.Name]; s != nil {
			v.State = "online"
			v.Transport = string(s.conn.Kind())
			v.RemoteAddr = s.conn.RemoteAddr().String()
			v.Software, v.Protocol = s.software, s.protocol
			v.OtherVersion = s.protocol < wire.SessionVersion || s.software != wire.SoftwareVersion
			since := s.since
			la := time.Unix(0, s.lastActive.Load())
			v.Since, v.LastActivity = &since, &la
			if us := s.rttUs.Load(); us > 0 {
				ms := float64(us) / 1000
				v.RTTMs = &ms
			}
		}
		out = append(out, v)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out
}

// add caches the record of a device paired just now.
func (rg *registry) add(rec *DeviceRecord) {
	rg.mu.Lock()
	rg.devices[rec.Name] = rec
	rg.mu.Unlock()
}

// whileOpen runs f under the registry's lock unless shutdown has begun,
// and reports whether it ran: what f counts (a connection handler, say)
// is counted before shutdown, which takes the lock first, waits for it.
func (rg *registry) whileOpen(f func()) bool {
	rg.mu.Lock()
	defer rg.mu.Unlock()
	if rg.closing {
		return false
	}
	f()
	return true
}
