// Package provider runs many zones in one process: one listener (QUIC and
// TCP on one port) whose connections are routed to their zone's hub by
// TLS server name before anything zone-specific is read (transport.Router,
// certs.ServerName). Each zone is a whole hub (zone/hub) with its own CA,
// stores, admin socket and limits, in its own data directory; the
// provider adds, removes and limits zones over its own admin socket.
package provider

import (
	"context"
	"crypto/ed25519"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"errors"
	"fmt"
	"log/slog"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"sync"
	"time"

	"golang.org/x/sync/errgroup"

	"github.com/pzone/pzone/certs"
	zsync "github.com/pzone/pzone/sync"
	"github.com/pzone/pzone/transport"
	"github.com/pzone/pzone/zone/api"
	"github.com/pzone/pzone/zone/hub"
	"github.com/pzone/pzone/zone/localapi"
	"github.com/pzone/pzone/zone/wire"
)

// Config configures Run.
type Config struct {
	DataDir string
	// Listen is host:port for UDP (QUIC) and TCP. Empty: all interfaces,
	// on the port of the first public address.
	Listen string
	// Transports to serve; empty means both.
	Transports []transport.Kind
	// Heartbeat is the ping interval every zone's devices are told to use;
	// zero means wire.DefaultHeartbeat.
	Heartbeat time.Duration
	Logger    *slog.Logger
	// Ready, if set, is called once the provider listens and every zone
	// has started (or failed to); on a cluster's node, each time it
	// becomes the active node.
	Ready func(net.Addr)
	// Store is the cluster's database (postgres://…) for a node made by
	// InitNode; empty for a provider of its own.
	Store string
}

// Init makes a provider in dir, serving no zone yet.
func Init(dir string, publicAddrs []string, now time.Time) error {
	if err := checkProviderDir(dir, publicAddrs); err != nil {
		return err
	}
	return createCatalog(dir, publicAddrs, now)
}

// checkProviderDir checks a new provider's (or node's) directory and
// addresses.
func checkProviderDir(dir string, publicAddrs []string) error {
	if len(publicAddrs) == 0 {
		return errors.New("no public address given: use --public-addr HOST:PORT, the address devices will reach the provider at")
	}
	for _, a := range publicAddrs {
		if err := hub.ValidateHubAddr(a); err != nil {
			return err
		}
	}
	if err := localapi.CheckDataDir(dir, api.ProviderSocketName); err != nil {
		return err
	}
	if _, err := os.Stat(filepath.Join(dir, hub.HubDBName)); err == nil {
		return fmt.Errorf("%s holds a single zone's hub; a provider needs a directory of its own", dir)
	}
	// The zones' directories must fit their sockets too, for names of a
	// dozen letters at least (zone add checks each name's).
	probe := filepath.Join(dir, ZonesDir, ".new-abcdefghijkl")
	err := localapi.CheckDataDir(probe, api.HubSocketName)
	os.Remove(probe)
	os.Remove(filepath.Join(dir, ZonesDir))
	if err != nil {
		return fmt.Errorf("%w (zones live in %s/NAME)", err, filepath.Join(dir, ZonesDir))
	}
	return nil
}

// Provider is a running provider.
type Provider struct {
	cfg Config
	log *slog.Logger
	cat *catalog
	// node is set on a cluster's node (cluster.go).
	node    *node
	router  *transport.Router
	codes   *codeBook
	started time.Time

	// ctx ends every zone when the provider stops.
	ctx context.Context
	wg  sync.WaitGroup

	// mu guards zones and orders the changes of the zone set.
	mu     sync.Mutex
	zones  map[string]*zoneRun
	adding map[string]bool // names of zones being made
}

// zoneRun is one zone's hub, running or not.
type zoneRun struct {
	entry  zoneEntry
	dir    string
	mu     sync.Mutex
	cancel context.CancelFunc // of the hub's run, and done when it ended
	done   chan struct{}
	hub    *hub.Hub // while it runs
	state  string   // starting, serving, failed, stopped
	err    error
}

func (z *zoneRun) setState(s string, err error) {
	z.mu.Lock()
	z.state, z.err = s, err
	z.mu.Unlock()
}

func (z *zoneRun) view() (state string, err error) {
	z.mu.Lock()
	defer z.mu.Unlock()
	return z.state, z.err
}

// Run serves every zone of the provider in cfg.DataDir until ctx ends.
func Run(ctx context.Context, cfg Config) error {
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if cfg.Heartbeat == 0 {
		cfg.Heartbeat = wire.DefaultHeartbeat
	}
	if len(cfg.Transports) == 0 {
		cfg.Transports = []transport.Kind{transport.KindQUIC, transport.KindTCP}
	}
	if cfg.Listen != "" {
		if _, _, err := net.SplitHostPort(cfg.Listen); err != nil {
			return fmt.Errorf("listen address %q: %v (want HOST:PORT, e.g. 0.0.0.0:7443)", cfg.Listen, err)
		}
	}
	cat, err := openCatalog(cfg.DataDir)
	if err != nil {
		return err
	}
	defer cat.Close()
	if cat.set.Node != "" {
		return runNode(ctx, cfg, cat)
	}
	if cfg.Store != "" {
		return fmt.Errorf("%s is a provider of its own, its zones in files: --store is for a node made with pzh provider init --store", cfg.DataDir)
	}
	p := newProvider(cfg, cat)
	sock, err := localapi.Listen(api.SocketPath(cfg.DataDir, api.ProviderSocketName))
	if err != nil {
		return err
	}
	defer os.Remove(api.SocketPath(cfg.DataDir, api.ProviderSocketName))
	g, gctx := errgroup.WithContext(ctx)
	// The admin socket answers once every zone has started or failed, so
	// pzh provider wait waits for the zones too.
	g.Go(func() error {
		err := p.serve(gctx, func() { g.Go(func() error { return localapi.Serve(gctx, sock, p.apiHandler()) }) })
		if err == nil {
			sock.Close()
		}
		return err
	})
	err = g.Wait()
	err = localapi.StopErr(ctx, err)
	p.log.Info("provider stopped")
	return err
}

func newProvider(cfg Config, cat *catalog) *Provider {
	return &Provider{cfg: cfg, log: cfg.Logger, cat: cat, codes: newCodeBook(), started: time.Now(), zones: map[string]*zoneRun{}, adding: map[string]bool{}}
}

// serve listens and runs every zone of the catalog until ctx ends;
// started is called once they have started (or failed to).
func (p *Provider) serve(ctx context.Context, started func()) error {
	cfg := p.cfg
	entries, err := p.cat.zones()
	if err != nil {
		return fmt.Errorf("read the zones of %s: %w", p.where(), err)
	}
	checkFileLimit(len(entries), cfg.Logger)
	p.mu.Lock()
	p.zones = map[string]*zoneRun{}
	p.codes = newCodeBook()
	p.mu.Unlock()

	listen := cfg.Listen
	if listen == "" {
		_, port, _ := net.SplitHostPort(p.ownAddrs()[0])
		listen = net.JoinHostPort("", port)
	}
	fallback, err := unknownNameTLS()
	if err != nil {
		return err
	}
	tc := transport.Config{TLS: fallback, Logger: p.log, IdleTimeout: wire.TransportIdle, StatelessResetKey: resetKey(p.cat.set.ResetSecret)}
	router, err := transport.ListenRouted(listen, tc, p.codes.resolve, cfg.Transports...)
	if err != nil {
		return fmt.Errorf("listen on %s: %w", listen, err)
	}
	p.mu.Lock()
	p.router = router
	p.mu.Unlock()
	defer router.Close()

	g, gctx := errgroup.WithContext(ctx)
	p.ctx = gctx
	g.Go(func() error { return router.Run(gctx) })

	// Zones start side by side, a few at a time: each opens its stores.
	starts := make(chan *zoneRun)
	var startWG sync.WaitGroup
	for range 8 {
		startWG.Add(1)
		go func() {
			defer startWG.Done()
			for z := range starts {
				p.start(z, true)
			}
		}()
	}
	p.mu.Lock()
	for _, e := range entries {
		z := &zoneRun{entry: e, dir: p.zoneDir(e.Name), state: "starting"}
		p.zones[e.Name] = z
		starts <- z
	}
	p.mu.Unlock()
	close(starts)
	startWG.Wait()

	serving := 0
	for _, z := range p.zones {
		if s, _ := z.view(); s == "serving" {
			serving++
		}
	}
	started()
	p.log.Info("provider serving", "listen", router.Addr().String(), "zones", len(entries), "serving", serving, "transports", cfg.Transports)
	if cfg.Ready != nil {
		cfg.Ready(router.Addr())
	}
	g.Go(func() error {
		<-gctx.Done()
		p.stopAll()
		router.Close()
		p.mu.Lock()
		p.zones, p.router = map[string]*zoneRun{}, nil
		p.mu.Unlock()
		return nil
	})
	err = g.Wait()
	err = localapi.StopErr(ctx, err)
	return err
}

func (p *Provider) zoneDir(name string) string { return filepath.Join(p.cfg.DataDir, ZonesDir, name) }

// hubConfig is the configuration of zone z's hub.
func (p *Provider) hubConfig(z *zoneRun, ready func(net.Addr)) hub.Config {
	l := z.entry.Limits
	cfg := hub.Config{DataDir: z.dir, Stores: p.storesOf(z.entry.Name), Transports: p.cfg.Transports, Heartbeat: p.cfg.Heartbeat, Shared: p.router, Codes: p.codes,
		Logger: p.log.With("zone", z.entry.Name), Ready: ready,
		MaxDevices: l.MaxDevices, ZoneQuota: l.ZoneQuota, ZoneQueueBytes: l.QueueBytes, CallsPerSecond: l.CallsPerSecond}
	if l.ZoneQuota > 0 {
		cfg.DeviceQuota = min(zsync.DefaultDeviceQuota, l.ZoneQuota)
	}
	return cfg
}

// start runs zone z's hub. With wait, it returns once the hub serves or
// has failed.
func (p *Provider) start(z *zoneRun, wait bool) error {
	if p.node != nil {
		// A node serving a zone for the first time makes its directory,
		// which holds its admin socket.
		if err := os.MkdirAll(z.dir, 0o700); err != nil {
			err = fmt.Errorf("make %s: %w", z.dir, err)
			z.setState("failed", err)
			return err
		}
	}
	ctx, cancel := context.WithCancel(p.ctx)
	done := make(chan struct{})
	z.mu.Lock()
	z.cancel, z.done = cancel, done
	z.mu.Unlock()
	up := make(chan struct{})
	var once sync.Once
	cfg := p.hubConfig(z, func(net.Addr) { z.setState("serving", nil); once.Do(func() { close(up) }) })
	cfg.Serving = func(h *hub.Hub) { z.mu.Lock(); z.hub = h; z.mu.Unlock() }
	p.wg.Add(1)
	go func() {
		defer p.wg.Done()
		defer close(done)
		defer func() { z.mu.Lock(); z.hub = nil; z.mu.Unlock() }()
		defer once.Do(func() { close(up) })
		err := hub.Run(ctx, cfg)
		if err != nil && ctx.Err() == nil {
			// One zone failing does not stop the others: it is said in
			// the log and in pzh provider zone list.
			p.log.Error("zone stopped", "zone", z.entry.Name, "err", err)
			z.setState("failed", err)
			return
		}
		z.setState("stopped", nil)
	}()
	if !wait {
		return nil
	}
	<-up
	if s, err := z.view(); s == "failed" {
		return err
	}
	return nil
}

// stop stops zone z's hub and waits for it.
func (z *zoneRun) stop() {
	z.mu.Lock()
	cancel, done := z.cancel, z.done
	z.mu.Unlock()
	if cancel != nil {
		cancel()
		<-done
	}
}

func (p *Provider) stopAll() {
	p.mu.Lock()
	defer p.mu.Unlock()
	var wg sync.WaitGroup
	for _, z := range p.zones {
		wg.Add(1)
		go func() { defer wg.Done(); z.stop() }()
	}
	wg.Wait()
	p.wg.Wait()
}

// resetKey derives the QUIC stateless reset key from the provider's
// secret: the same after a restart, so devices of every zone learn at
// once that their connection died.
func resetKey(secret []byte) *[32]byte {
	m := hmac.New(sha256.New, secret)
	m.Write([]byte("pzone provider quic stateless reset v1"))
	var k [32]byte
	copy(k[:], m.Sum(nil))
	return &k
}

// UnknownZoneName is the common name of the certificate a provider shows
// for a server name it serves no zone by; a pinning client refuses it,
// and its error quotes the name.
const UnknownZoneName = "pzone provider: no zone served here by that name"

// unknownNameTLS is the listener's configuration for names no zone has:
// a throwaway self-signed certificate, no client certificate asked.
func unknownNameTLS() (*tls.Config, error) {
	pub, key, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		return nil, err
	}
	now := time.Now()
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: UnknownZoneName},
		NotBefore: now.Add(-time.Hour), NotAfter: now.Add(100 * 365 * 24 * time.Hour)}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, pub, key)
	if err != nil {
		return nil, err
	}
	return &tls.Config{MinVersion: tls.VersionTLS13, Certificates: []tls.Certificate{{Certificate: [][]byte{der}, PrivateKey: key}},
		NextProtos: []string{transport.ALPNSession, transport.ALPNPairing, transport.ALPNPairCode, transport.ALPNFriend, transport.ALPNFriendCode, transport.ALPNLink}}, nil
}

// zone is the provider's zone named, or with the ID, nameOrID; nil when
// none.
func (p *Provider) zone(nameOrID string) *zoneRun {
	p.mu.Lock()
	defer p.mu.Unlock()
	if z := p.zones[nameOrID]; z != nil {
		return z
	}
	if id, err := certs.ParseZoneID(nameOrID); err == nil {
		for _, z := range p.zones {
			if z.entry.ID == id {
				return z
			}
		}
	}
	return nil
}
