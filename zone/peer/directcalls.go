package peer

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"sort"
	"strings"
	"time"

	"github.com/pzone/pzone/zone/services"
	"github.com/pzone/pzone/zone/session"

	"github.com/pzone/pzone/certs"
	zsync "github.com/pzone/pzone/sync"
	"github.com/pzone/pzone/transport"
	"github.com/pzone/pzone/zone/api"
	"github.com/pzone/pzone/zone/wire"
)

// Calls on direct connections: serving the calls another device sends
// directly, choosing the direct path or the hub for an outgoing call,
// dialling, and the direct part of the status.

// acceptCalls serves the call streams the other device opens on c. (The
// wait group counts this loop, so adding to it here is never too late.)
func (d *directNet) acceptCalls(c *directConn) {
	for {
		st, err := c.conn.AcceptStream(context.Background())
		if err != nil {
			return
		}
		d.wg.Add(1)
		go func() { defer d.wg.Done(); d.serveStream(c, st) }()
	}
}

// serveStream serves one call from the other device of c. Its zone and
// device are those of c's verified certificate, whatever the header says;
// the app is the one that device vouches for. A call that would need the
// hub (a service token, delivery later) is refused: the hub accounts for
// those. Like the hub, it bounds the calls one device has in flight
// (maxDirectCalls; each other device has a connection of its own), and
// ServeCall ends a call whose body does not follow its header.
func (d *directNet) serveStream(c *directConn, st transport.Stream) {
	p := d.p
	c.active.Add(1)
	p.inflight.Add(1)
	n := c.serving.Add(1)
	defer func() {
		c.done()
		c.serving.Add(-1)
		p.inflight.Add(-1)
	}()
	hdr, ok := p.router.readIncomingCall(st)
	if !ok {
		return
	}
	if n > maxDirectCalls {
		session.RefuseCall(st, wire.CallUnavailable, fmt.Sprintf("too many calls in flight from device %q (at most %d directly); try again when some have finished", c.device, maxDirectCalls))
		return
	}
	id := p.id.Load()
	// Who calls is the verified certificate's device, of this zone.
	hdr.FromZone, hdr.FromDevice, hdr.FromZoneID, hdr.ToZone, hdr.Envelope = id.Zone, c.device, id.ZoneID.Compact(), "", nil
	if hdr.Token != "" || hdr.TokenID != "" || hdr.TTLMs != 0 || hdr.QueuedMs != 0 || p.router.tokenRequired(id.Device, hdr.ToService) {
		session.RefuseCall(st, wire.CallDenied, fmt.Sprintf("service %q on device %q takes calls with a token or for later only through the hub", hdr.ToService, id.Device))
		return
	}
	if cerr := p.router.authorize(hdr, fmt.Sprintf("device %q's", hdr.ToDevice)); cerr != nil {
		session.RefuseCall(st, cerr.Status, cerr.Message)
		return
	}
	if hdr.Kind == wire.CallStream {
		services.ServeStream(st, p.services, hdr, time.Now().Add(wire.CallTimeout(hdr)), services.ServeOpts{}, fmt.Sprintf("device %q", c.device))
		return
	}
	services.ServeCall(st, p.services, hdr, time.Now().Add(wire.CallTimeout(hdr)), services.ServeOpts{})
}

// callDirect runs the exchange hdr over a direct connection to its device
// when that is possible, and answers errViaHub when the hub must carry it:
// another zone's device or the hub, a service token, delivery later, no
// direct connection to be had within directDialTimeout, or one that broke
// before the answer began (then hdr gets a fresh ID: the service may have
// seen the first).
func (p *Peer) callDirect(ctx context.Context, hdr *wire.CallHeader, body []byte, deadline time.Time) ([]byte, *wire.CallReply, error) {
	c, ok := p.directFor(ctx, hdr)
	if !ok {
		return nil, nil, errViaHub
	}
	defer c.release()
	st, fr, rep, err := p.openDirect(ctx, c, hdr, body, deadline)
	if err != nil {
		return nil, nil, err
	}
	stop := context.AfterFunc(ctx, st.Reset)
	defer stop()
	res, err := session.ReadBody(fr, wire.MaxCallBody)
	if err != nil {
		st.Reset()
		return nil, nil, callErr(ctx, deadline, err)
	}
	st.Close()
	return res, rep, nil
}

// directFor returns the direct connection an exchange hdr can take, held
// (release it), or false when the hub must carry it: another zone's
// device or the hub, a service token, delivery later, or no direct
// connection to be had within directDialTimeout.
func (p *Peer) directFor(ctx context.Context, hdr *wire.CallHeader) (*directConn, bool) {
	d := p.direct
	if d == nil || hdr.ToDevice == certs.HubDevice || hdr.ToDevice == p.id.Load().Device {
		return nil, false
	}
	if hdr.Token != "" || hdr.TTLMs != 0 || p.router.tokenRequired(hdr.ToDevice, hdr.ToService) {
		d.count(hdr.ToDevice, false, false)
		return nil, false
	}
	c := d.connTo(ctx, hdr.ToDevice)
	if c == nil {
		d.count(hdr.ToDevice, false, false)
		return nil, false
	}
	c.active.Add(1)
	return c, true
}

// release gives back a hold on c that directFor took.
func (c *directConn) release() { c.done() }

// openDirect opens the exchange hdr on c, sends body (nil: a stream's
// opening, which has none) and reads the reply; a reply that is not
// CallOK is the error. It answers errViaHub, with hdr given a fresh ID
// (the service may have seen the first), when the connection broke before
// the reply.
func (p *Peer) openDirect(ctx context.Context, c *directConn, hdr *wire.CallHeader, body []byte, deadline time.Time) (transport.Stream, *transport.FrameReader, *wire.CallReply, error) {
	d := p.direct
	fallback := func(err error) (transport.Stream, *transport.FrameReader, *wire.CallReply, error) {
		if ctx.Err() != nil || !time.Now().Before(deadline) {
			return nil, nil, nil, callErr(ctx, deadline, err)
		}
		p.log.Info("direct exchange failed before its answer; through the hub instead", "device", hdr.ToDevice, "err", err)
		d.count(hdr.ToDevice, false, true)
		hdr.ID = wire.NewCallID()
		return nil, nil, nil, errViaHub
	}
	st, err := c.conn.OpenStream(ctx)
	if err != nil {
		return fallback(err)
	}
	stop := context.AfterFunc(ctx, st.Reset)
	defer stop()
	st.SetDeadline(deadline)
	if err := session.OpenCall(st, hdr, body); err != nil {
		st.Reset()
		return fallback(err)
	}
	fr := transport.NewFrameReader(st, wire.CallChunk+16)
	var rep wire.CallReply
	if err := fr.ReadFrame(&rep); err != nil {
		st.Reset()
		return fallback(err)
	}
	d.count(hdr.ToDevice, true, false)
	if rep.Status != wire.CallOK {
		st.Reset()
		return nil, nil, nil, &wire.CallError{Status: rep.Status, Message: rep.Message}
	}
	return st, fr, &rep, nil
}

func (d *directNet) count(device string, direct, fallback bool) {
	switch {
	case direct:
		d.callsDirect.Add(1)
	case fallback:
		d.fallbacks.Add(1)
		d.callsHub.Add(1)
	default:
		d.callsHub.Add(1)
	}
	d.mu.Lock()
	n := d.counts[device]
	if n == nil {
		n = &directCounts{}
		d.counts[device] = n
	}
	switch {
	case direct:
		n.direct++
	case fallback:
		n.fallbacks++
		n.hub++
	default:
		n.hub++
	}
	d.mu.Unlock()
}

// connTo returns the live direct connection to device, or makes one
// within directDialTimeout from the device's published addresses; nil if
// there is none to be had now.
func (d *directNet) connTo(ctx context.Context, device string) *directConn {
	d.mu.Lock()
	if d.closed {
		d.mu.Unlock()
		return nil
	}
	if c := d.conns[device]; c != nil && !c.dead() {
		d.mu.Unlock()
		return c
	}
	hints := d.hints.get(d.p.state).addrs[device]
	if len(hints) == 0 {
		d.mu.Unlock()
		return nil
	}
	key := strings.Join(hints, " ")
	if f := d.fails[device]; f != nil && f.hints == key && time.Now().Before(f.retry) {
		d.mu.Unlock()
		return nil
	}
	if ch := d.dialing[device]; ch != nil {
		// Another call is dialling: wait for it, within the same bound.
		d.mu.Unlock()
		t := time.NewTimer(directDialTimeout)
		defer t.Stop()
		select {
		case <-ch:
		case <-t.C:
		case <-ctx.Done():
		}
		d.mu.Lock()
		defer d.mu.Unlock()
		if c := d.conns[device]; c != nil && !c.dead() {
			return c
		}
		return nil
	}
	ch := make(chan struct{})
	d.dialing[device] = ch
	d.mu.Unlock()

	dctx, cancel := context.WithTimeout(ctx, directDialTimeout)
	c, err := d.dial(dctx, device, hints)
	cancel()
	if err == nil && !d.register(c) {
		c = nil // the other device's connection, dialled at the same time, is kept
	}
	d.mu.Lock()
	delete(d.dialing, device)
	close(ch)
	if err != nil && ctx.Err() == nil {
		f := d.fails[device]
		if f == nil || f.hints != key {
			f = &directFailure{hints: key}
			d.fails[device] = f
		}
		f.step = min(max(f.step*2, directRetryMin), directRetryMax)
		f.retry, f.err = time.Now().Add(f.step), err.Error()
		d.p.log.Info("no direct connection; calls go through the hub", "device", device, "addrs", hints, "retry_in", f.step, "err", err)
	}
	if c == nil {
		// A connection the other device dialled meanwhile will do.
		c = d.conns[device]
	}
	d.mu.Unlock()
	d.p.changes.Bump()
	if c == nil || c.dead() {
		return nil
	}
	return c
}

// dial tries every address at once and keeps the first direct session
// that says Welcome.
func (d *directNet) dial(ctx context.Context, device string, addrs []string) (*directConn, error) {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	type result struct {
		c   *directConn
		err error
	}
	results := make(chan result, len(addrs))
	tc := d.transportConfig(device)
	for _, a := range addrs {
		go func() {
			c, err := d.dialOne(ctx, a, device, tc)
			if err != nil {
				err = fmt.Errorf("%s: %w", a, err)
			}
			results <- result{c, err}
		}()
	}
	var errs []error
	for i := range addrs {
		r := <-results
		if r.err == nil {
			if rest := len(addrs) - i - 1; rest > 0 {
				go func() {
					for range rest {
						if l := <-results; l.c != nil {
							l.c.conn.CloseWithError(uint64(wire.ReasonReplaced), "lost the dial race")
						}
					}
				}()
			}
			return r.c, nil
		}
		errs = append(errs, r.err)
	}
	return nil, errors.Join(errs...)
}

func (d *directNet) dialOne(ctx context.Context, addr, want string, tc transport.Config) (*directConn, error) {
	conn, err := transport.Dial(ctx, addr, d.p.cfg.Mode, tc)
	if err != nil {
		return nil, err
	}
	c, err := d.newConn(conn, false)
	if err == nil && c.device != want {
		err = fmt.Errorf("expected device %q, the other end is device %q", want, c.device)
	}
	if err != nil {
		conn.CloseWithError(uint64(wire.ReasonProtocol), "refused")
		return nil, err
	}
	ctrl, err := conn.OpenStream(ctx)
	if err != nil {
		conn.CloseWithError(uint64(wire.ReasonProtocol), "no control stream")
		return nil, err
	}
	c.ctrl, c.fr = ctrl, transport.NewFrameReader(ctrl, wire.MaxControlFrame)
	if dl, ok := ctx.Deadline(); ok {
		ctrl.SetDeadline(dl)
	}
	var w wire.Control
	err = transport.WriteFrame(ctrl, &wire.StreamHeader{Kind: wire.StreamControl})
	if err == nil {
		err = c.send(&wire.Control{Type: wire.MsgHello, Version: directVersion, Software: wire.SoftwareVersion})
	}
	if err == nil {
		err = c.fr.ReadFrame(&w)
	}
	switch {
	case err != nil:
	case w.Type == wire.MsgClose:
		err = fmt.Errorf("the other device closed: %s: %s", w.Reason, w.Message)
	case w.Type != wire.MsgWelcome:
		err = fmt.Errorf("the other device answered hello with message %d", w.Type)
	}
	if err != nil {
		conn.CloseWithError(uint64(wire.ReasonProtocol), "hello failed")
		return nil, err
	}
	ctrl.SetDeadline(time.Time{})
	return c, nil
}

// status reports the listener and the path to every other device of the
// zone (nil for a device without direct connections).
func (d *directNet) status() *api.DirectStatus {
	if d == nil {
		return nil
	}
	st := &api.DirectStatus{Listen: d.addr, CallsDirect: d.callsDirect.Load(), CallsHub: d.callsHub.Load(), Fallbacks: d.fallbacks.Load()}
	self := d.p.id.Load().Device
	d.mu.Lock()
	defer d.mu.Unlock()
	view := d.hints.get(d.p.state)
	names := map[string]bool{}
	for n := range view.devices {
		names[n] = true
	}
	for n := range d.conns {
		names[n] = true
	}
	for n := range d.counts {
		names[n] = true
	}
	delete(names, self)
	now := time.Now()
	for n := range names {
		ps := api.DirectPeerStatus{Device: n, Path: "hub", Hints: view.addrs[n]}
		if c := d.conns[n]; c != nil && !c.dead() {
			since := c.since
			ps.Path, ps.Transport, ps.Addr, ps.Inbound, ps.Since = "direct", string(c.conn.Kind()), c.conn.RemoteAddr().String(), c.inbound, &since
			if r := c.rttNs.Load(); r > 0 {
				ms := float64(r) / float64(time.Millisecond)
				ps.RTTMs = &ms
			}
		}
		if k := d.counts[n]; k != nil {
			ps.CallsDirect, ps.CallsHub, ps.Fallbacks = k.direct, k.hub, k.fallbacks
		}
		if f := d.fails[n]; f != nil {
			ps.LastError = f.err
			if f.retry.After(now) {
				r := f.retry
				ps.RetryAfter = &r
			}
		}
		st.Peers = append(st.Peers, ps)
	}
	sort.Slice(st.Peers, func(i, j int) bool { return st.Peers[i].Device < st.Peers[j].Device })
	return st
}

// hintView is what direct connections read from the zone state: the
// devices that hold a current certificate, and the addresses each
// published.
type hintView struct {
	devices map[string]bool
	addrs   map[string][]string
}

// hintCache holds a hintView as of a store version, so a call reads no
// records (guarded by directNet.mu).
type hintCache struct {
	version uint64
	view    *hintView
}

func (c *hintCache) get(s *zsync.Store) *hintView {
	if s == nil {
		return &hintView{}
	}
	ver := s.Version()
	if c.view != nil && c.version == ver {
		return c.view
	}
	v := &hintView{devices: map[string]bool{}, addrs: map[string][]string{}}
	s.List(zsync.BucketCerts, wire.CertKeyDevice, func(r zsync.Record) error {
		v.devices[strings.TrimPrefix(r.Key, wire.CertKeyDevice)] = true
		return nil
	})
	s.List(zsync.BucketDevices, "", func(r zsync.Record) error {
		var info wire.DeviceInfo
		if !v.devices[r.Key] || json.Unmarshal(r.Value, &info) != nil {
			return nil
		}
		var ok []string
		for _, a := range info.Direct {
			if _, _, err := net.SplitHostPort(a); err == nil && len(ok) < maxDirectAddrs {
				ok = append(ok, a)
			}
		}
		if len(ok) > 0 {
			v.addrs[r.Key] = ok
		}
		return nil
	})
	c.view, c.version = v, ver
	return v
}

// directAddrs are the addresses this device publishes (none without a
// direct listener).
func (p *Peer) directAddrs() []string {
	if p.direct == nil || p.direct.ln == nil {
		return nil
	}
	return p.direct.addr
}
