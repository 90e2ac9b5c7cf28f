// Package pgkv keeps stores of the kv model in PostgreSQL, for a
// provider's cluster: every node reaches the same zones' state, and a
// zone's writes stay serialised across all of them.
//
// Schema (made by Connect if missing; docs/CLUSTER.md describes it):
//
//	pzone_stores  (store text PRIMARY KEY, created timestamptz)
//	pzone_buckets (store, bucket bytea, seq bigint)  PRIMARY KEY (store, bucket)
//	pzone_kv      (store, bucket bytea, key bytea, value bytea)  PRIMARY KEY (store, bucket, key)
//
// A store is one of a zone's stores ("<zone ID>/sync.db"). A bucket is its
// path of names from the top, each name prefixed by its length (a uvarint),
// so that a bucket's own path is a prefix of its nested buckets' paths
// and of no other's. A nested bucket is also a row of its parent with a
// NULL value, as bbolt shows it.
//
// A write transaction first locks its store's row in pzone_stores (SELECT
// … FOR UPDATE), so writers of one store run one at a time whichever node
// they are on, and each sees every write committed before it: the kv
// model's single writer, across the cluster. Its writes are sent in
// pipelined batches, flushed before the next read and at commit; the
// commit returns once PostgreSQL has made it durable. A read transaction
// is a REPEATABLE READ snapshot.
package pgkv

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/pzone/pzone/storefile/kv"
)

// DefaultTxTimeout bounds one transaction, its wait for the store's lock
// included: a database that does not answer fails the write with an
// error rather than holding the caller for ever.
const DefaultTxTimeout = 10 * time.Second

// ErrUnreachable wraps a failure to reach the database at all.
var ErrUnreachable = errors.New("the cluster's PostgreSQL database is unreachable")

const schema = `
CREATE TABLE IF NOT EXISTS pzone_stores (
	store   text PRIMARY KEY,
	created timestamptz NOT NULL DEFAULT now()
);
CREATE TABLE IF NOT EXISTS pzone_buckets (
	store  text   NOT NULL REFERENCES pzone_stores ON DELETE CASCADE ON UPDATE CASCADE,
	bucket bytea  NOT NULL,
	seq    bigint NOT NULL DEFAULT 0,
	PRIMARY KEY (store, bucket)
);
CREATE TABLE IF NOT EXISTS pzone_kv (
	store  text  NOT NULL REFERENCES pzone_stores ON DELETE CASCADE ON UPDATE CASCADE,
	bucket bytea NOT NULL,
	key    bytea NOT NULL,
	value  bytea,
	PRIMARY KEY (store, bucket, key)
);
CREATE TABLE IF NOT EXISTS pzone_leases (
	name   text PRIMARY KEY,
	holder text NOT NULL,
	epoch  bigint NOT NULL,
	since  timestamptz NOT NULL DEFAULT now()
);
`

// Pool is a connection pool to the cluster's database.
type Pool struct {
	pool   *pgxpool.Pool
	url    string
	closed atomic.Bool
	// TxTimeout bounds each transaction (DefaultTxTimeout if 0).
	TxTimeout time.Duration
	// fence, if set, is the lease every write transaction must find
	// still held by this pool's holder (Fence).
	fence *Fence
}

// Fence makes every write transaction of a pool check, under a shared
// lock on the lease's row, that the lease is still Holder's: a node
// that lost its lease to another (a network cut, a pause) has its writes
// refused rather than mixed with the new holder's. Taking the lease
// (Lease.Take) waits for the writes that hold the row shared.
type Fence struct {
	Lease  string
	Holder string
}

// ErrFenced: a write of a node that no longer holds its lease.
var ErrFenced = errors.New("this node no longer holds the cluster's lease (another node took over): the write was refused")

// SetFence fences the pool's writes by f (nil: none).
func (p *Pool) SetFence(f *Fence) { p.fence = f }

// Connect opens a pool to url (postgres://… or key=value) and makes the
// schema if it is missing.
func Connect(ctx context.Context, url string) (*Pool, error) {
	cfg, err := pgxpool.ParseConfig(url)
	if err != nil {
		return nil, fmt.Errorf("the store address %q is not a PostgreSQL connection string: %w", redact(url), err)
	}
	pool, err := pgxpool.NewWithConfig(ctx, cfg)
	if err != nil {
		return nil, fmt.Errorf("%w (%s): %v", ErrUnreachable, redact(url), err)
	}
	p := &Pool{pool: pool, url: url}
	ctx, cancel := context.WithTimeout(ctx, p.timeout())
	defer cancel()
	if _, err := pool.Exec(ctx, schema); err != nil {
		pool.Close()
		return nil, p.wrap(fmt.Sprintf("make the schema in %s", redact(url)), err)
	}
	return p, nil
}

// Close closes the pool; stores opened on it fail from then on.
func (p *Pool) Close() {
	p.closed.Store(true)
	p.pool.Close()
}

// Exists reports whether the store has been made.
func (p *Pool) Exists(ctx context.Context, store string) (bool, error) {
	ctx, cancel := context.WithTimeout(ctx, p.timeout())
	defer cancel()
	var n int
	err := p.pool.QueryRow(ctx, `SELECT count(*) FROM pzone_stores WHERE store = $1`, store).Scan(&n)
	if err != nil {
		return false, p.wrap("look up store "+store, err)
	}
	return n > 0, nil
}

// Open returns the store of that name, made (empty) if create is set;
// without create, a store never made is ErrMissing.
func (p *Pool) Open(ctx context.Context, store string, create bool) (*DB, error) {
	if create {
		ctx, cancel := context.WithTimeout(ctx, p.timeout())
		defer cancel()
		if _, err := p.pool.Exec(ctx, `INSERT INTO pzone_stores (store) VALUES ($1) ON CONFLICT DO NOTHING`, store); err != nil {
			return nil, p.wrap("make store "+store, err)
		}
	} else if ok, err := p.Exists(ctx, store); err != nil {
		return nil, err
	} else if !ok {
		return nil, fmt.Errorf("store %s: %w", store, ErrMissing)
	}
	return &DB{p: p, store: store}, nil
}

// RenamePrefix renames, in one statement (all or none), every store whose
// name begins with from to begin with to instead: a removed zone's
// stores, kept aside. It returns how many it renamed.
func (p *Pool) RenamePrefix(ctx context.Context, from, to string) (int64, error) {
	ctx, cancel := context.WithTimeout(ctx, p.timeout())
	defer cancel()
	tag, err := p.pool.Exec(ctx, `UPDATE pzone_stores SET store = $2 || substr(store, length($1) + 1) WHERE starts_with(store, $1)`, from, to)
	if err != nil {
		return 0, p.wrap("rename the stores "+from+"…", err)
	}
	return tag.RowsAffected(), nil
}

// DropPrefix removes every store whose name begins with prefix, and all
// they hold, in one statement.
func (p *Pool) DropPrefix(ctx context.Context, prefix string) error {
	ctx, cancel := context.WithTimeout(ctx, p.timeout())
	defer cancel()
	if _, err := p.pool.Exec(ctx, `DELETE FROM pzone_stores WHERE starts_with(store, $1)`, prefix); err != nil {
		return p.wrap("remove the stores "+prefix+"…", err)
	}
	return nil
}

// ErrMissing: Open without create of a store never made.
var ErrMissing = errors.New("not in the cluster's database")

func (p *Pool) timeout() time.Duration {
	if p.TxTimeout > 0 {
		return p.TxTimeout
	}
	return DefaultTxTimeout
}

// wrap names what failed, and says when the database could not be
// reached at all (so callers can tell a network fault from a refusal).
func (p *Pool) wrap(what string, err error) error {
	var pgErr *pgconn.PgError
	if errors.As(err, &pgErr) {
		return fmt.Errorf("%s: PostgreSQL refused: %w", what, err)
	}
	if errors.Is(err, kv.ErrClosed) {
		return err
	}
	if p.closed.Load() {
		return fmt.Errorf("%s: %w", what, kv.ErrClosed)
	}
	return fmt.Errorf("%s: %w: %v", what, ErrUnreachable, err)
}

// redact hides a password in a connection URL for messages.
func redact(url string) string {
	cfg, err := pgconn.ParseConfig(url)
	if err != nil || cfg.Password == "" {
		return url
	}
	return fmt.Sprintf("host=%s port=%d user=%s dbname=%s password=…", cfg.Host, cfg.Port, cfg.User, cfg.Database)
}

// DB is one store in the database.
type DB struct {
	p      *Pool
	store  string
	mu     sync.RWMutex
	closed bool
	// top holds the top-level buckets known to exist: made once and
	// never deleted in use, so each transaction need not ask again
	// (a Get is then one round trip, not two). Only this DB's committed
	// changes enter it; a DeleteBucket here takes its bucket out.
	top sync.Map // string(path) → struct{}
}

// Name is the store's name.
func (d *DB) Name() string { return d.store }

// Close makes later transactions fail with kv.ErrClosed; the pool stays.
func (d *DB) Close() error {
	d.mu.Lock()
	d.closed = true
	d.mu.Unlock()
	return nil
}

// View runs fn on a snapshot.
func (d *DB) View(fn func(kv.Tx) error) error { return d.run(false, fn) }

// Update runs fn holding the store's write lock, and commits if fn and
// every statement it made succeeded.
func (d *DB) Update(fn func(kv.Tx) error) error { return d.run(true, fn) }

func (d *DB) run(write bool, fn func(kv.Tx) error) (err error) {
	d.mu.RLock()
	closed := d.closed
	d.mu.RUnlock()
	if closed {
		return kv.ErrClosed
	}
	ctx, cancel := context.WithTimeout(context.Background(), d.p.timeout())
	defer cancel()
	opts := pgx.TxOptions{IsoLevel: pgx.RepeatableRead, AccessMode: pgx.ReadOnly}
	if write {
		opts = pgx.TxOptions{IsoLevel: pgx.ReadCommitted}
	}
	ptx, err := d.p.pool.BeginTx(ctx, opts)
	if err != nil {
		return d.p.wrap("store "+d.store, err)
	}
	t := &tx{ctx: ctx, tx: ptx, db: d, write: write, buckets: map[string]bool{}}
	defer func() {
		if t.tx != nil {
			ptx.Rollback(context.Background())
		}
	}()
	if write {
		if err := d.lock(ctx, ptx); err != nil {
			return err
		}
	}
	ferr := fn(t)
	t.flush()
	if t.err != nil {
		return t.err
	}
	if ferr != nil {
		return ferr
	}
	if !write {
		t.learnTop()
		return nil
	}
	if err := ptx.Commit(ctx); err != nil {
		t.tx = nil
		return d.p.wrap("commit to store "+d.store, err)
	}
	t.tx = nil
	t.learnTop()
	return nil
}

// path appends a bucket name to a parent's path.
func path(parent []byte, name []byte) []byte {
	p := make([]byte, 0, len(parent)+binary.MaxVarintLen32+len(name))
	p = append(p, parent...)
	p = binary.AppendUvarint(p, uint64(len(name)))
	return append(p, name...)
}

// lock takes the store's write lock, and checks the pool's fence.
func (d *DB) lock(ctx context.Context, ptx pgx.Tx) error {
	var one int
	err := ptx.QueryRow(ctx, `SELECT 1 FROM pzone_stores WHERE store = $1 FOR UPDATE`, d.store).Scan(&one)
	if errors.Is(err, pgx.ErrNoRows) {
		return fmt.Errorf("store %s: %w", d.store, ErrMissing)
	}
	if err != nil {
		return d.p.wrap("lock store "+d.store, err)
	}
	f := d.p.fence
	if f == nil {
		return nil
	}
	err = ptx.QueryRow(ctx, `SELECT 1 FROM pzone_leases WHERE name = $1 AND holder = $2 FOR SHARE`, f.Lease, f.Holder).Scan(&one)
	if errors.Is(err, pgx.ErrNoRows) {
		return fmt.Errorf("store %s: %w", d.store, ErrFenced)
	}
	if err != nil {
		return d.p.wrap("check the lease for store "+d.store, err)
	}
	return nil
}
