package provider

import (
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"sync"
	"time"

	"golang.org/x/sync/errgroup"

	"github.com/pzone/pzone/certs"
	"github.com/pzone/pzone/storefile"
	"github.com/pzone/pzone/storefile/kv"
	"github.com/pzone/pzone/storefile/pgkv"
	"github.com/pzone/pzone/zone/api"
	"github.com/pzone/pzone/zone/hub"
	"github.com/pzone/pzone/zone/localapi"
	"github.com/pzone/pzone/zone/stores"
)

// A cluster: several nodes of one provider, its catalog and every zone's
// stores in PostgreSQL (storefile/pgkv), so that any node can serve any
// zone. One node serves at a time, the one holding the cluster's lease;
// the others wait on standby and the first to get the lease takes over
// when the serving node dies. Devices have every node's public address
// (the cluster's, in each zone's addresses) and dial the next when one
// does not answer; a standby node does not listen, so they find the
// serving one.
//
// Store names in the database:
//
//	provider            the cluster's catalog (settings, zones, limits)
//	zones/NAME/pzh.db   zone NAME's anchor (CA, devices, invites, friends)
//	zones/NAME/sync.db  its zone state
//	zones/NAME/mailbox.db its queued messages and wake registrations
//	removed/NAME-UNIX/… a removed zone's, kept until deleted by hand
const (
	catalogStore = "provider"
	leaseName    = "provider"
	// retryServe is how long a node that failed to serve waits before it
	// asks for the lease again.
	retryServe = 5 * time.Second
)

// node is a cluster node's part of a Provider.
type node struct {
	name  string
	own   []string // this node's public addresses
	pool  *pgkv.Pool
	mu    sync.Mutex
	role  string // "standby" or "active"
	since time.Time
	// active and activeSince name the serving node, as last read.
	active      string
	activeSince time.Time
}

func (n *node) setRole(role string) {
	n.mu.Lock()
	n.role, n.since = role, time.Now()
	n.mu.Unlock()
}

// InitNode makes dir a node of the cluster whose database is storeURL,
// reached by devices at publicAddrs; the first node makes the cluster's
// catalog, each later one adds its addresses to it.
func InitNode(ctx context.Context, dir, storeURL, name string, publicAddrs []string, now time.Time) error {
	if name == "" {
		h, err := os.Hostname()
		if err != nil {
			return fmt.Errorf("no --node name given and no host name to use: %w", err)
		}
		name = h
	}
	if err := certs.ValidateName("node", name); err != nil {
		return err
	}
	if err := checkProviderDir(dir, publicAddrs); err != nil {
		return err
	}
	if _, err := os.Lstat(filepath.Join(dir, DBName)); err == nil {
		return fmt.Errorf("%s holds a provider already; use another --data directory", dir)
	}
	pool, err := pgkv.Connect(ctx, storeURL)
	if err != nil {
		return err
	}
	defer pool.Close()
	db, err := pool.Open(ctx, catalogStore, true)
	if err != nil {
		return err
	}
	defer db.Close()
	err = db.Update(func(tx kv.Tx) error {
		meta, err := tx.CreateBucketIfNotExists(bucketMeta)
		if err != nil {
			return err
		}
		if _, err := tx.CreateBucketIfNotExists(bucketZones); err != nil {
			return err
		}
		var s settings
		if meta.Get(keySettings) == nil {
			s = settings{ResetSecret: make([]byte, 32), Created: now.UTC()}
			rand.Read(s.ResetSecret)
		} else if err := stores.GetCBOR(meta, keySettings, &s); err != nil {
			return err
		}
		for _, a := range publicAddrs {
			if !slices.Contains(s.PublicAddrs, a) {
				s.PublicAddrs = append(s.PublicAddrs, a)
			}
		}
		if len(s.PublicAddrs) > hub.MaxPublicAddrs {
			return fmt.Errorf("the cluster would have %d public addresses; at most %d fit in an invite", len(s.PublicAddrs), hub.MaxPublicAddrs)
		}
		return stores.PutCBOR(meta, keySettings, &s)
	})
	if err != nil {
		return fmt.Errorf("record the node in the cluster's catalog: %w", err)
	}
	// The node's own provider.db: its name and addresses, which say
	// that the zones are in the cluster's database.
	local, err := storefile.Open(filepath.Join(dir, DBName), storefile.Options{Create: true})
	if err != nil {
		return err
	}
	defer local.Close()
	s := settings{PublicAddrs: publicAddrs, ResetSecret: make([]byte, 32), Created: now.UTC(), Node: name}
	rand.Read(s.ResetSecret)
	return writeCatalog(kv.OfBolt(local), &s)
}

// runNode runs a cluster's node: on standby until it holds the lease,
// then serving every zone until it loses it or ctx ends.
func runNode(ctx context.Context, cfg Config, local *catalog) error {
	if cfg.Store == "" {
		return fmt.Errorf("%s is a node of a cluster (node %s): give its database with --store postgres://… (or PZH_STORE)", cfg.DataDir, local.set.Node)
	}
	pool, err := pgkv.Connect(ctx, cfg.Store)
	if err != nil {
		return err
	}
	defer pool.Close()
	lease := pool.NewLease(leaseName, local.set.Node)
	pool.SetFence(lease.Fence())
	n := &node{name: local.set.Node, own: local.set.PublicAddrs, pool: pool, role: "standby", since: time.Now()}
	p := newProvider(cfg, &catalog{})
	p.node = n
	sock, err := localapi.Listen(api.SocketPath(cfg.DataDir, api.ProviderSocketName))
	if err != nil {
		return err
	}
	defer os.Remove(api.SocketPath(cfg.DataDir, api.ProviderSocketName))
	g, gctx := errgroup.WithContext(ctx)
	g.Go(func() error { return localapi.Serve(gctx, sock, p.apiHandler()) })
	g.Go(func() error {
		defer sock.Close()
		for gctx.Err() == nil {
			n.setRole("standby")
			n.readActive(gctx)
			p.log.Info("node on standby, waiting for the cluster's lease", "node", n.name, "active", n.active)
			if err := lease.Take(gctx); err != nil {
				if gctx.Err() != nil {
					break
				}
				p.log.Warn("could not take the cluster's lease; trying again", "err", err)
				select {
				case <-gctx.Done():
				case <-time.After(pgkv.WatchInterval):
				}
				continue
			}
			err := p.active(gctx, lease)
			lease.Release()
			if err == nil || gctx.Err() != nil {
				continue
			}
			p.log.Error("node stopped serving", "node", n.name, "err", err)
			if !errors.Is(err, pgkv.ErrLeaseLost) {
				// It could not serve (its port taken, the catalog
				// unreadable): let another node take the lease first
				// rather than take it straight back.
				select {
				case <-gctx.Done():
				case <-time.After(retryServe):
				}
			}
		}
		return nil
	})
	err = g.Wait()
	err = localapi.StopErr(ctx, err)
	p.log.Info("node stopped", "node", n.name)
	return err
}

// active serves the cluster while this node holds the lease.
func (p *Provider) active(ctx context.Context, lease *pgkv.Lease) error {
	n := p.node
	db, err := n.pool.Open(ctx, catalogStore, false)
	if err != nil {
		return err
	}
	cat, err := readCatalog(db)
	if err != nil {
		db.Close()
		return fmt.Errorf("the cluster's catalog: %w", err)
	}
	defer cat.Close()
	p.mu.Lock()
	p.cat = cat
	p.mu.Unlock()
	n.mu.Lock()
	n.active, n.activeSince = n.name, time.Now()
	n.mu.Unlock()
	p.log.Info("node took the cluster's lease: starting the zones", "node", n.name, "epoch", lease.Epoch())
	sctx, cancel := context.WithCancel(ctx)
	defer cancel()
	lost := make(chan error, 1)
	go func() { lost <- lease.Watch(sctx); cancel() }()
	// Active once every zone has started (or failed to), as a
	// provider's socket answers only then.
	err = p.serve(sctx, func() { n.setRole("active") })
	cancel()
	if werr := <-lost; werr != nil {
		return werr
	}
	return err
}

// readActive reads which node serves, for a standby's status.
func (n *node) readActive(ctx context.Context) {
	holder, since, err := n.pool.LeaseHolder(ctx, leaseName)
	if err != nil {
		return
	}
	n.mu.Lock()
	n.active, n.activeSince = holder, since
	n.mu.Unlock()
}

// zoneStores are a cluster zone's stores in the database.
type zoneStores struct {
	pool   *pgkv.Pool
	prefix string // zones/NAME/
	zone   string
}

func (s zoneStores) Open(name string, create bool) (kv.DB, error) {
	db, err := s.pool.Open(context.Background(), s.prefix+name, create)
	if errors.Is(err, pgkv.ErrMissing) {
		return nil, fmt.Errorf("%s: %w", s.prefix+name, storefile.ErrMissing)
	}
	return db, err
}

func (s zoneStores) Where() string { return "the cluster's database (zone " + s.zone + ")" }

func (p *Provider) storesOf(name string) hub.Stores {
	if p.node == nil {
		return nil
	}
	return zoneStores{pool: p.node.pool, prefix: zonePrefix(name), zone: name}
}

// zonePrefix begins the names of zone name's stores in the database.
func zonePrefix(name string) string { return "zones/" + name + "/" }

// where names the catalog in messages.
func (p *Provider) where() string {
	if p.node != nil {
		return "the cluster's database"
	}
	return filepath.Join(p.cfg.DataDir, DBName)
}

// ownAddrs are the public addresses this process is reached at.
func (p *Provider) ownAddrs() []string {
	if p.node != nil {
		return p.node.own
	}
	return p.cat.set.PublicAddrs
}

// keepRemovedStores renames a removed cluster zone's stores aside.
func (p *Provider) keepRemovedStores(name string, now time.Time) (string, error) {
	kept := "removed/" + name + "-" + strconv.FormatInt(now.Unix(), 10) + "/"
	if _, err := p.node.pool.RenamePrefix(context.Background(), zonePrefix(name), kept); err != nil {
		return "", err
	}
	return kept, nil
}

// addClusterZone makes zone name's stores in the cluster's database, and
// its directory on this node (for its admin socket).
func (p *Provider) addClusterZone(name string, now time.Time) (*hub.ZoneInfo, string, error) {
	final := p.zoneDir(name)
	info, err := hub.InitZoneIn(p.storesOf(name), name, p.cat.set.PublicAddrs, now)
	if err != nil {
		return nil, "", err
	}
	if err := os.MkdirAll(final, 0o700); err != nil {
		p.dropZoneStores(name)
		return nil, "", fmt.Errorf("make %s: %w", final, err)
	}
	return info, final, nil
}

// dropZoneStores removes a zone's stores that were made in vain.
func (p *Provider) dropZoneStores(name string) {
	if err := p.node.pool.DropPrefix(context.Background(), zonePrefix(name)); err != nil {
		p.log.Warn("a zone made in vain is left in the cluster's database", "zone", name, "err", err)
	}
}

// removeClusterZone moves a stopped zone's stores aside in the database
// and forgets it; p.mu is held.
func (p *Provider) removeClusterZone(z *zoneRun) (*api.ZoneRemoved, error) {
	kept, err := p.keepRemovedStores(z.entry.Name, time.Now())
	if err != nil {
		p.start(z, false)
		return nil, fmt.Errorf("move the zone's stores aside: %w; the zone is served on", err)
	}
	if err := p.cat.remove(z.entry.Name); err != nil {
		return nil, fmt.Errorf("record the removal (its stores are kept as %s): %w", kept, err)
	}
	os.RemoveAll(z.dir)
	delete(p.zones, z.entry.Name)
	p.codes.drop(z.entry.ID)
	p.log.Info("zone removed", "zone", z.entry.Name, "zone_id", z.entry.ID, "kept_as", kept)
	return &api.ZoneRemoved{Name: z.entry.Name, ZoneID: string(z.entry.ID), KeptIn: "the cluster's database, as " + kept}, nil
}
