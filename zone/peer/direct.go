package peer

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"sync"
	"sync/atomic"
	"time"

	"github.com/pzone/pzone/zone/session"
	"github.com/pzone/pzone/zone/stores"

	"github.com/pzone/pzone/certs"
	zsync "github.com/pzone/pzone/sync"
	"github.com/pzone/pzone/transport"
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
	// (DefaultCallsPerTarget/CallTargetShare), so that one device cannot
	// take all of a service's room for waiting calls (api.EventBuffer) by the
	// direct path either.
	maxDirectCalls = wire.DefaultCallsPerTarget / wire.CallTargetShare
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

	wmu    sync.Mutex
	active atomic.Int64 // call streams open on it, either way
	// retiring: replaced by another connection; closed once active is 0,
	// so that the streams on it finish first.
	retiring atomic.Bool
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
	case p.CertRevoked(stores.SerialHex(v.Cert)):
		return nil, fmt.Errorf("direct: device %q's certificate is revoked", dev)
	}
	rec, ok, err := p.state.Get(zsync.BucketCerts, wire.CertKeyDevice+dev)
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
	hctx, cancel := context.WithTimeout(context.Background(), wire.HelloTimeout)
	defer cancel()
	ctrl, err := conn.AcceptStream(hctx)
	if err != nil {
		conn.CloseWithError(uint64(wire.ReasonProtocol), "no control stream")
		return
	}
	ctrl.SetDeadline(time.Now().Add(wire.HelloTimeout))
	c.ctrl, c.fr = ctrl, transport.NewFrameReader(ctrl, wire.MaxControlFrame)
	var sh wire.StreamHeader
	var hello wire.Control
	if c.fr.ReadFrame(&sh) != nil || sh.Kind != wire.StreamControl || c.fr.ReadFrame(&hello) != nil || hello.Type != wire.MsgHello || hello.Version < 1 {
		conn.CloseWithError(uint64(wire.ReasonProtocol), "direct session must start with hello")
		return
	}
	if err := c.send(&wire.Control{Type: wire.MsgWelcome, Version: directVersion, Software: wire.SoftwareVersion, HeartbeatMs: uint64(directHeartbeat / time.Millisecond)}); err != nil {
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
	c := &directConn{device: v.Identity.Device, serial: stores.SerialHex(v.Cert), conn: conn, inbound: inbound, since: time.Now()}
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
		old.retire()
	}
	d.p.log.Info("direct connection up", "device", c.device, "via", c.conn.Kind(), "remote", c.conn.RemoteAddr().String(), "inbound", c.inbound)
	d.p.changes.Bump()
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
		d.p.changes.Bump()
	}()
	return true
}

// serve runs c's control stream and takes the call streams the other
// device opens, until c closes.
func (d *directNet) serve(c *directConn) {
	dead := wire.DeadAfter(directHeartbeat)
	if c.inbound {
		// The dialling end pings; this end answers and watches for
		// silence.
		for {
			var m wire.Control
			if err := session.ReadControl(c.conn, c.ctrl, c.fr, dead, &m); err != nil {
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
			if session.ReadControl(c.conn, c.ctrl, c.fr, dead, &m) != nil {
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
	c.ctrl.SetWriteDeadline(time.Now().Add(wire.StreamTimeout))
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
		case <-time.After(wire.CloseLinger):
		}
	}
	c.conn.CloseWithError(uint64(reason), msg)
}

// retire closes a connection that another replaced once the exchanges on
// it are done (at once if there are none): a stream on it may last long.
func (c *directConn) retire() {
	c.retiring.Store(true)
	if c.active.Load() == 0 {
		go c.close(wire.ReasonReplaced, "replaced by another direct connection")
	}
}

// done ends one exchange on c: the last one closes a retiring connection.
func (c *directConn) done() {
	c.lastUse.Store(time.Now().UnixNano())
	if c.active.Add(-1) == 0 && c.retiring.Load() {
		go c.close(wire.ReasonReplaced, "replaced by another direct connection")
	}
}
