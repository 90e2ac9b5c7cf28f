package zone

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/pzone/pzone/certs"
	zsync "github.com/pzone/pzone/sync"
	"github.com/pzone/pzone/transport"
	"github.com/pzone/pzone/zone/api"
	"github.com/pzone/pzone/zone/wire"
)

// Direct device-to-device connections inside one zone (docs/PROTOCOL.md,
// "Direct sessions"): a device with a direct listener publishes where it
// can be reached in its own record of the devices bucket; another device
// of the zone that calls one of its services connects there with its zone
// certificate, and the call takes that connection instead of the hub.
// Each end checks the other's certificate against the zone CA and the
// revocations in the zone state it holds, at every handshake and again
// whenever the zone state changes. When no direct connection can be had
// within directDialTimeout, or one breaks before the answer began, the
// call goes through the hub as it always did.

// Direct session timing and limits, with why.
const (
	// directVersion is the direct session protocol's version, in Hello
	// and Welcome. History: 1 — control stream with Hello, Welcome,
	// Ping/Pong and Close; call streams as in sessions with the hub.
	directVersion = 1
	// directDialTimeout bounds the wait of a call for a new direct
	// connection. A LAN handshake takes a few milliseconds; ModeAuto gives
	// QUIC a 300 ms head start before TCP; past 500 ms the device is not
	// near, and the hub serves the call at once instead.
	directDialTimeout = 500 * time.Millisecond
	// directHeartbeat is how often the dialling end pings. Over a LAN a
	// ping/pong costs ~110 bytes, so ~3 KB a minute while the connection
	// lasts (no longer than directIdle after the last call); a connection
	// that died silently is found out after DeadAfter (6 s), and its calls
	// in flight go through the hub instead of waiting for their deadline.
	directHeartbeat = 2 * time.Second
	// directIdle closes a connection no call has used for this long: a
	// burst of calls shares one handshake, but an idle connection is not
	// kept (its memory and heartbeats) on the chance of another.
	directIdle = 2 * time.Minute
	// directTransportIdle is the transport's own idle timeout: a backstop
	// well above DeadAfter(directHeartbeat), so the session layer, which
	// can say why, notices first.
	directTransportIdle = 30 * time.Second
	// directRetryMin and directRetryMax bound the backoff after a failed
	// attempt to connect to a device: calls meanwhile go through the hub
	// at once rather than each paying directDialTimeout. A device that
	// publishes new addresses is tried again at once.
	directRetryMin = 5 * time.Second
	directRetryMax = 5 * time.Minute
	// maxDirectAddrs bounds the addresses a device publishes and the ones
	// another device dials at once from a record.
	maxDirectAddrs = 8
	// maxDirectCalls bounds the calls one other device has in flight to
	// this one directly: what the hub lets one caller have at one target
	// (DefaultCallsPerTarget/callTargetShare), so that one device cannot
	// take all of a service's room for waiting calls (api.EventBuffer) by the
	// direct path either.
	maxDirectCalls = DefaultCallsPerTarget / callTargetShare
)

// errViaHub is callDirect's answer for a call the hub must carry.
var errViaHub = errors.New("via the hub")

// directNet is a device's direct connections: its listener, the
// connection to each other device, and what it remembers of failures.
type directNet struct {
	p    *Peer
	ln   transport.Listener
	addr []string // published

	mu      sync.Mutex
	closed  bool
	conns   map[string]*directConn    // by device
	dialing map[string]chan struct{}  // closed when the dial ends
	fails   map[string]*directFailure // by device
	counts  map[string]*directCounts  // by device
	hints   hintCache

	callsDirect, callsHub, fallbacks atomic.Uint64
	recheck                          chan struct{} // the zone state changed
	wg                               sync.WaitGroup
}

type directCounts struct{ direct, hub, fallbacks uint64 }

// directFailure remembers a failed attempt, so that calls go through the
// hub without trying again until retry (or new hints).
type directFailure struct {
	hints string // the hints tried, joined
	err   string
	retry time.Time
	step  time.Duration
}

// directConn is one direct connection to another device.
type directConn struct {
	device  string // from its verified certificate
	serial  string
	conn    transport.Conn
	ctrl    transport.Stream
	fr      *transport.FrameReader
	inbound bool
	since   time.Time

	wmu      sync.Mutex
	active   atomic.Int64 // call streams open on it, either way
	serving  atomic.Int64 // call streams the other device opened, being served
	lastUse  atomic.Int64 // unix ns
	rttNs    atomic.Int64
	once     sync.Once
	closedBy atomic.Value // string: why this end closed it
}

func newDirectNet(p *Peer) *directNet {
	return &directNet{p: p, conns: map[string]*directConn{}, dialing: map[string]chan struct{}{},
		fails: map[string]*directFailure{}, counts: map[string]*directCounts{}, recheck: make(chan struct{}, 1)}
}

// listen binds the direct listener (QUIC and TCP on one port) and works
// out the addresses to publish.
func (d *directNet) listen(addr string) error {
	ln, err := transport.ListenBoth(addr, d.transportConfig(""))
	if err != nil {
		return fmt.Errorf("direct listener: %w (choose another address with --direct-listen, or turn it off with --direct=false)", err)
	}
	d.ln, d.addr = ln, publishableAddrs(ln.Addr())
	return nil
}

// publishableAddrs is where other devices may reach a listener bound to
// bound: that address, or for an unspecified one every address of this
// host's interfaces that another host could use (not loopback, not link
// local, which needs an interface name).
func publishableAddrs(bound net.Addr) []string {
	ta, ok := bound.(*net.TCPAddr)
	if !ok {
		return []string{bound.String()}
	}
	if !ta.IP.IsUnspecified() {
		return []string{ta.String()}
	}
	port := fmt.Sprint(ta.Port)
	ifaddrs, _ := net.InterfaceAddrs()
	var out []string
	for _, a := range ifaddrs {
		ipn, ok := a.(*net.IPNet)
		if !ok {
			continue
		}
		ip := ipn.IP
		if ip.IsLoopback() || ip.IsLinkLocalUnicast() || ip.IsMulticast() || ip.IsUnspecified() {
			continue
		}
		if ta.IP.To4() != nil && ip.To4() == nil {
			continue // bound to 0.0.0.0: IPv4 only
		}
		if out = append(out, net.JoinHostPort(ip.String(), port)); len(out) == maxDirectAddrs {
			break
		}
	}
	return out
}

// transportConfig is the TLS and transport setup of direct connections;
// want names the device a dialler expects ("" on the listener).
func (d *directNet) transportConfig(want string) transport.Config {
	p := d.p
	own := func() *tls.Certificate {
		cur := p.id.Load()
		return &tls.Certificate{Certificate: [][]byte{cur.Cert.Raw}, PrivateKey: cur.Key, Leaf: cur.Cert}
	}
	conf := &tls.Config{
		MinVersion: tls.VersionTLS13,
		NextProtos: []string{transport.ALPNDirect},
		// Trust is the zone CA and the zone state's revocations, checked
		// below, not a web PKI name.
		InsecureSkipVerify: true,
		ServerName:         "pzone-device",
		ClientAuth:         tls.RequireAnyClientCert,
		GetCertificate:     func(*tls.ClientHelloInfo) (*tls.Certificate, error) { return own(), nil },
		GetClientCertificate: func(*tls.CertificateRequestInfo) (*tls.Certificate, error) {
			return own(), nil
		},
		VerifyPeerCertificate: func(raw [][]byte, _ [][]*x509.Certificate) error {
			_, err := p.checkDirectPeer(raw, want)
			return err
		},
	}
	return transport.Config{TLS: conf, Logger: p.log, IdleTimeout: directTransportIdle, HandshakeTimeout: directDialTimeout}
}

// checkDirectPeer verifies the certificate another device presents on a
// direct connection, against this device's own zone CA and its copy of
// the zone state: a device of this zone (not the hub, not this device),
// the one expected (want, when dialling), not revoked, and its current
// certificate or a newer one (renewal retires the older ones).
func (p *Peer) checkDirectPeer(raw [][]byte, want string) (*certs.Verified, error) {
	if p.state == nil {
		return nil, errors.New("direct: no zone state to check revocations against")
	}
	id := p.id.Load()
	v, err := certs.Verify(id.CA, raw, p.cfg.Now(), 0)
	if err != nil {
		return nil, fmt.Errorf("direct: %w", err)
	}
	dev := v.Identity.Device
	switch {
	case dev == certs.HubDevice:
		return nil, errors.New("direct: the hub's certificate is not a device's")
	case dev == id.Device:
		return nil, fmt.Errorf("direct: the other end presented this device's own name %q", dev)
	case want != "" && dev != want:
		return nil, fmt.Errorf("direct: expected device %q, the other end is device %q", want, dev)
	case p.CertRevoked(serialHex(v.Cert)):
		return nil, fmt.Errorf("direct: device %q's certificate is revoked", dev)
	}
	rec, ok, err := p.state.Get(zsync.BucketCerts, certKeyDevice+dev)
	if err != nil || !ok || rec.Deleted {
		return nil, fmt.Errorf("direct: the zone state here has no current certificate of device %q (revoked, unpaired, or not synced yet)", dev)
	}
	cur, err := x509.ParseCertificate(rec.Value)
	if err != nil {
		return nil, fmt.Errorf("direct: device %q's certificate in the zone state: %w", dev, err)
	}
	if !bytes.Equal(cur.Raw, v.Cert.Raw) && v.Cert.NotBefore.Before(cur.NotBefore) {
		return nil, fmt.Errorf("direct: device %q presented a certificate older than its current one (retired at renewal)", dev)
	}
	return v, nil
}

// Run serves the listener until ctx ends, then closes every direct
// connection and waits for them.
func (d *directNet) Run(ctx context.Context) error {
	d.p.log.Info("direct listener", "addr", d.ln.Addr().String(), "published", d.addr)
	d.wg.Add(1)
	go func() {
		defer d.wg.Done()
		d.recheckLoop(ctx)
	}()
	for {
		conn, err := d.ln.Accept(ctx)
		if err != nil {
			break
		}
		d.wg.Add(1)
		go func() {
			defer d.wg.Done()
			d.admit(conn)
		}()
	}
	d.closeAll(wire.ReasonShutdown, "device shutting down")
	d.ln.Close()
	d.wg.Wait()
	return nil
}

// closeAll closes every direct connection, saying why, and takes no new
// ones.
func (d *directNet) closeAll(reason wire.CloseReason, msg string) {
	d.mu.Lock()
	d.closed = true
	conns := make([]*directConn, 0, len(d.conns))
	for _, c := range d.conns {
		conns = append(conns, c)
	}
	d.mu.Unlock()
	var cw sync.WaitGroup
	for _, c := range conns {
		cw.Add(1)
		go func() { defer cw.Done(); c.close(reason, msg) }()
	}
	cw.Wait()
}

// changed tells the direct connections that the zone state changed (a
// revocation may have arrived).
func (d *directNet) changed() {
	select {
	case d.recheck <- struct{}{}:
	default:
	}
}

// recheckLoop closes, at once, the connections of devices whose
// certificates the zone state now revokes.
func (d *directNet) recheckLoop(ctx context.Context) {
	for {
		select {
		case <-ctx.Done():
			return
		case <-d.recheck:
		}
		d.mu.Lock()
		var revoked []*directConn
		for _, c := range d.conns {
			if d.p.CertRevoked(c.serial) {
				revoked = append(revoked, c)
			}
		}
		d.mu.Unlock()
		for _, c := range revoked {
			d.p.log.Info("direct connection cut: certificate revoked", "device", c.device)
			go c.close(wire.ReasonRevoked, fmt.Sprintf("device %q was revoked", c.device))
		}
	}
}

// admit takes a connection another device dialled: its Hello, then it
// serves it.
func (d *directNet) admit(conn transport.Conn) {
	c, err := d.newConn(conn, true)
	if err != nil {
		d.p.log.Info("direct connection refused", "remote", conn.RemoteAddr().String(), "err", err)
		conn.CloseWithError(uint64(wire.ReasonProtocol), "refused")
		return
	}
	hctx, cancel := context.WithTimeout(context.Background(), helloTimeout)
	defer cancel()
	ctrl, err := conn.AcceptStream(hctx)
	if err != nil {
		conn.CloseWithError(uint64(wire.ReasonProtocol), "no control stream")
		return
	}
	ctrl.SetDeadline(time.Now().Add(helloTimeout))
	c.ctrl, c.fr = ctrl, transport.NewFrameReader(ctrl, maxControlFrame)
	var sh wire.StreamHeader
	var hello wire.Control
	if c.fr.ReadFrame(&sh) != nil || sh.Kind != wire.StreamControl || c.fr.ReadFrame(&hello) != nil || hello.Type != wire.MsgHello || hello.Version < 1 {
		conn.CloseWithError(uint64(wire.ReasonProtocol), "direct session must start with hello")
		return
	}
	if err := c.send(&wire.Control{Type: wire.MsgWelcome, Version: directVersion, Software: SoftwareVersion, HeartbeatMs: uint64(directHeartbeat / time.Millisecond)}); err != nil {
		conn.CloseWithError(uint64(wire.ReasonProtocol), "welcome failed")
		return
	}
	ctrl.SetDeadline(time.Time{})
	d.register(c)
}

// newConn checks the verified certificate of conn again (the handshake
// did) and reads the other device's identity from it: never from what
// it says.
func (d *directNet) newConn(conn transport.Conn, inbound bool) (*directConn, error) {
	cs := conn.ConnectionState()
	if cs.NegotiatedProtocol != transport.ALPNDirect || len(cs.PeerCertificates) == 0 {
		return nil, errors.New("not a direct session")
	}
	raw := make([][]byte, len(cs.PeerCertificates))
	for i, c := range cs.PeerCertificates {
		raw[i] = c.Raw
	}
	v, err := d.p.checkDirectPeer(raw, "")
	if err != nil {
		return nil, err
	}
	c := &directConn{device: v.Identity.Device, serial: serialHex(v.Cert), conn: conn, inbound: inbound, since: time.Now()}
	c.lastUse.Store(time.Now().UnixNano())
	return c, nil
}

// register makes c the connection to its device. Of two connections
// between the same pair (both dialled at once), both ends keep the one
// dialled by the device whose name sorts first, so they agree.
func (d *directNet) register(c *directConn) bool {
	self := d.p.id.Load().Device
	dialer := func(x *directConn) string {
		if x.inbound {
			return x.device
		}
		return self
	}
	d.mu.Lock()
	if d.closed {
		d.mu.Unlock()
		go c.close(wire.ReasonShutdown, "device shutting down")
		return false
	}
	old := d.conns[c.device]
	if old != nil && !old.dead() && dialer(c) > dialer(old) {
		d.mu.Unlock()
		go c.close(wire.ReasonReplaced, "a direct connection between these devices exists")
		return false
	}
	d.conns[c.device] = c
	delete(d.fails, c.device)
	d.wg.Add(3) // while d.mu is held, so never after Run's wait began
	d.mu.Unlock()
	if old != nil {
		go old.close(wire.ReasonReplaced, "replaced by another direct connection")
	}
	d.p.log.Info("direct connection up", "device", c.device, "via", c.conn.Kind(), "remote", c.conn.RemoteAddr().String(), "inbound", c.inbound)
	d.p.changes.bump()
	go func() { defer d.wg.Done(); d.serve(c) }()
	go func() { defer d.wg.Done(); d.acceptCalls(c) }()
	go func() {
		defer d.wg.Done()
		<-c.conn.Done()
		d.mu.Lock()
		if d.conns[c.device] == c {
			delete(d.conns, c.device)
		}
		d.mu.Unlock()
		why, _ := c.closedBy.Load().(string)
		if why == "" {
			why = fmt.Sprint(c.conn.Err())
		}
		d.p.log.Info("direct connection down", "device", c.device, "reason", why)
		d.p.changes.bump()
	}()
	return true
}

// serve runs c's control stream and takes the call streams the other
// device opens, until c closes.
func (d *directNet) serve(c *directConn) {
	dead := DeadAfter(directHeartbeat)
	if c.inbound {
		// The dialling end pings; this end answers and watches for
		// silence.
		for {
			var m wire.Control
			if err := readControl(c.conn, c.ctrl, c.fr, dead, &m); err != nil {
				c.close(wire.ReasonTimeout, "the other device stopped answering")
				return
			}
			switch m.Type {
			case wire.MsgPing:
				if c.send(&wire.Control{Type: wire.MsgPong, Seq: m.Seq}) != nil {
					c.close(wire.ReasonTimeout, "the other device stopped answering")
					return
				}
			case wire.MsgClose:
				c.markClosed("closed by " + c.device + ": " + m.Reason.String())
				c.conn.CloseWithError(uint64(m.Reason), m.Reason.String())
				return
			}
		}
	}
	frames := make(chan wire.Control)
	go func() {
		defer close(frames)
		for {
			var m wire.Control
			if readControl(c.conn, c.ctrl, c.fr, dead, &m) != nil {
				return
			}
			select {
			case frames <- m:
			case <-c.conn.Done():
				return
			}
		}
	}()
	tick := time.NewTicker(directHeartbeat)
	defer tick.Stop()
	var seq uint64
	var sent time.Time
	for {
		select {
		case <-c.conn.Done():
			return
		case m, ok := <-frames:
			if !ok {
				c.close(wire.ReasonTimeout, "the other device stopped answering")
				return
			}
			switch m.Type {
			case wire.MsgPong:
				if m.Seq == seq {
					c.rttNs.Store(int64(time.Since(sent)))
				}
			case wire.MsgClose:
				c.markClosed("closed by " + c.device + ": " + m.Reason.String())
				c.conn.CloseWithError(uint64(m.Reason), m.Reason.String())
				return
			}
		case <-tick.C:
			if c.active.Load() == 0 && time.Since(time.Unix(0, c.lastUse.Load())) > directIdle {
				c.close(wire.ReasonTimeout, fmt.Sprintf("idle for %v", directIdle))
				return
			}
			seq++
			sent = time.Now()
			if c.send(&wire.Control{Type: wire.MsgPing, Seq: seq}) != nil {
				c.close(wire.ReasonTimeout, "the other device stopped answering")
				return
			}
		}
	}
}

func (c *directConn) send(m *wire.Control) error {
	c.wmu.Lock()
	defer c.wmu.Unlock()
	c.ctrl.SetWriteDeadline(time.Now().Add(streamTimeout))
	return transport.WriteFrame(c.ctrl, m)
}

func (c *directConn) dead() bool {
	select {
	case <-c.conn.Done():
		return true
	default:
		return false
	}
}

func (c *directConn) markClosed(why string) { c.once.Do(func() { c.closedBy.Store(why) }) }

// close says why on the control stream, gives the other end a moment to
// read it, and closes the connection (its calls in flight fail, and those
// not yet answered go through the hub).
func (c *directConn) close(reason wire.CloseReason, msg string) {
	first := false
	c.once.Do(func() { first = true; c.closedBy.Store(reason.String() + ": " + msg) })
	if !first {
		c.conn.CloseWithError(uint64(reason), msg)
		return
	}
	if c.ctrl != nil && c.send(&wire.Control{Type: wire.MsgClose, Reason: reason, Message: msg}) == nil {
		c.ctrl.Close()
		select {
		case <-c.conn.Done():
		case <-time.After(closeLinger):
		}
	}
	c.conn.CloseWithError(uint64(reason), msg)
}

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
// serveCall ends a call whose body does not follow its header.
func (d *directNet) serveStream(c *directConn, st transport.Stream) {
	p := d.p
	c.active.Add(1)
	p.inflight.Add(1)
	n := c.serving.Add(1)
	defer func() {
		c.lastUse.Store(time.Now().UnixNano())
		c.active.Add(-1)
		c.serving.Add(-1)
		p.inflight.Add(-1)
	}()
	hdr, ok := p.readIncomingCall(st)
	if !ok {
		return
	}
	if n > maxDirectCalls {
		refuseCall(st, wire.CallUnavailable, fmt.Sprintf("too many calls in flight from device %q (at most %d directly); try again when some have finished", c.device, maxDirectCalls))
		return
	}
	id := p.id.Load()
	// Who calls is the verified certificate's device, of this zone.
	hdr.FromZone, hdr.FromDevice, hdr.FromZoneID, hdr.ToZone, hdr.Envelope = id.Zone, c.device, id.ZoneID.Compact(), "", nil
	if hdr.Token != "" || hdr.TokenID != "" || hdr.TTLMs != 0 || hdr.QueuedMs != 0 || p.tokenRequired(id.Device, hdr.ToService) {
		refuseCall(st, wire.CallDenied, fmt.Sprintf("service %q on device %q takes calls with a token or for later only through the hub", hdr.ToService, id.Device))
		return
	}
	if cerr := p.authorize(hdr, fmt.Sprintf("device %q's", hdr.ToDevice)); cerr != nil {
		refuseCall(st, cerr.Status, cerr.Message)
		return
	}
	serveCall(st, p.services, hdr, time.Now().Add(wire.CallTimeout(hdr)), serveOpts{})
}

// callDirect runs the exchange hdr over a direct connection to its device
// when that is possible, and answers errViaHub when the hub must carry it:
// another zone's device or the hub, a service token, delivery later, no
// direct connection to be had within directDialTimeout, or one that broke
// before the answer began (then hdr gets a fresh ID: the service may have
// seen the first).
func (p *Peer) callDirect(ctx context.Context, hdr *wire.CallHeader, body []byte, deadline time.Time) ([]byte, *wire.CallReply, error) {
	d := p.direct
	if d == nil || hdr.ToDevice == certs.HubDevice || hdr.ToDevice == p.id.Load().Device {
		return nil, nil, errViaHub
	}
	if hdr.Token != "" || hdr.TTLMs != 0 || p.tokenRequired(hdr.ToDevice, hdr.ToService) {
		d.count(hdr.ToDevice, false, false)
		return nil, nil, errViaHub
	}
	c := d.connTo(ctx, hdr.ToDevice)
	if c == nil {
		d.count(hdr.ToDevice, false, false)
		return nil, nil, errViaHub
	}
	c.active.Add(1)
	defer func() {
		c.lastUse.Store(time.Now().UnixNano())
		c.active.Add(-1)
	}()
	fallback := func(err error) ([]byte, *wire.CallReply, error) {
		if ctx.Err() != nil || !time.Now().Before(deadline) {
			return nil, nil, callErr(ctx, deadline, err)
		}
		p.log.Info("direct call failed before its answer; through the hub instead", "device", hdr.ToDevice, "err", err)
		d.count(hdr.ToDevice, false, true)
		hdr.ID = wire.NewCallID()
		return nil, nil, errViaHub
	}
	st, err := c.conn.OpenStream(ctx)
	if err != nil {
		return fallback(err)
	}
	stop := context.AfterFunc(ctx, st.Reset)
	defer stop()
	st.SetDeadline(deadline)
	if err := transport.WriteFrame(st, &wire.StreamHeader{Kind: wire.StreamCall}); err != nil {
		st.Reset()
		return fallback(err)
	}
	if err := transport.WriteFrame(st, hdr); err != nil {
		st.Reset()
		return fallback(err)
	}
	if err := writeBody(st, body, false); err != nil {
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
		return nil, nil, &wire.CallError{Status: rep.Status, Message: rep.Message}
	}
	res, err := readBody(fr, wire.MaxCallBody)
	if err != nil {
		st.Reset()
		return nil, nil, callErr(ctx, deadline, err)
	}
	st.Close()
	return res, &rep, nil
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
	d.p.changes.bump()
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
	c.ctrl, c.fr = ctrl, transport.NewFrameReader(ctrl, maxControlFrame)
	if dl, ok := ctx.Deadline(); ok {
		ctrl.SetDeadline(dl)
	}
	var w wire.Control
	err = transport.WriteFrame(ctrl, &wire.StreamHeader{Kind: wire.StreamControl})
	if err == nil {
		err = c.send(&wire.Control{Type: wire.MsgHello, Version: directVersion, Software: SoftwareVersion})
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
	s.List(zsync.BucketCerts, certKeyDevice, func(r zsync.Record) error {
		v.devices[strings.TrimPrefix(r.Key, certKeyDevice)] = true
		return nil
	})
	s.List(zsync.BucketDevices, "", func(r zsync.Record) error {
		var info DeviceInfo
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
