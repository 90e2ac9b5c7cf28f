package pgkv

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"
)

// A lease is held by one node of a cluster at a time. Two things make it:
//
//   - a session advisory lock, taken on a connection of the holder's own:
//     PostgreSQL drops it the moment that connection ends, so a node
//     killed (kill -9, a crash, a power cut) frees the lease at once and
//     a waiting node takes it;
//   - the lease's row in pzone_leases, naming the holder, which every
//     write of a fenced pool checks (Fence): a node that lost its lock
//     without noticing (a cut, a pause) can write nothing after another
//     took over, and the taker waits for the writes in flight.

// WatchInterval is how often a holder checks that it still holds its
// lease.
const WatchInterval = time.Second

// ErrLeaseLost: the lease is another node's now.
var ErrLeaseLost = errors.New("the cluster's lease was taken by another node")

// Lease is one node's hold on a named lease.
type Lease struct {
	p      *Pool
	name   string
	holder string
	conn   *pgx.Conn
	epoch  int64
}

// NewLease returns holder's handle on the lease name; Take takes it.
func (p *Pool) NewLease(name, holder string) *Lease {
	return &Lease{p: p, name: name, holder: holder}
}

// Fence is the fence for this lease's holder's writes.
func (l *Lease) Fence() *Fence { return &Fence{Lease: l.name, Holder: l.holder} }

// Epoch is the lease's epoch since this holder took it (each taking adds
// one).
func (l *Lease) Epoch() int64 { return l.epoch }

// Take waits until this node holds the lease, or ctx ends.
func (l *Lease) Take(ctx context.Context) error {
	l.Release()
	conn, err := pgx.Connect(ctx, l.p.url)
	if err != nil {
		return l.p.wrap("connect to take the lease", err)
	}
	// Blocks while another node holds it; pgx cancels it with ctx.
	if _, err := conn.Exec(ctx, `SELECT pg_advisory_lock(hashtext($1))`, l.name); err != nil {
		conn.Close(context.Background())
		return l.p.wrap("wait for the lease", err)
	}
	tctx, cancel := context.WithTimeout(ctx, l.p.timeout()*3)
	defer cancel()
	// Waits for writes still fenced by the previous holder's name.
	err = conn.QueryRow(tctx, `INSERT INTO pzone_leases (name, holder, epoch) VALUES ($1, $2, 1)
		ON CONFLICT (name) DO UPDATE SET holder = EXCLUDED.holder, epoch = pzone_leases.epoch + 1, since = now()
		RETURNING epoch`, l.name, l.holder).Scan(&l.epoch)
	if err != nil {
		conn.Close(context.Background())
		return l.p.wrap("record the lease", err)
	}
	l.conn = conn
	return nil
}

// Watch returns once the lease is lost (ErrLeaseLost) or ctx ends (nil).
// While the database cannot be reached it keeps trying: the lease is
// lost only once another node is seen to hold it, and until then every
// write fails on its own with ErrUnreachable.
func (l *Lease) Watch(ctx context.Context) error {
	t := time.NewTicker(WatchInterval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		}
		held, err := l.check(ctx)
		if err != nil {
			continue // unreachable: try again
		}
		if !held {
			l.Release()
			return ErrLeaseLost
		}
	}
}

// check asks whether this node still holds the lease, taking the lock
// again on a new connection if the old one broke.
func (l *Lease) check(ctx context.Context) (bool, error) {
	cctx, cancel := context.WithTimeout(ctx, l.p.timeout())
	defer cancel()
	if l.conn != nil {
		var holder string
		err := l.conn.QueryRow(cctx, `SELECT holder FROM pzone_leases WHERE name = $1`, l.name).Scan(&holder)
		if err == nil {
			return holder == l.holder, nil
		}
		l.conn.Close(context.Background())
		l.conn = nil
	}
	// The connection broke (the database restarted, or a cut): the lock
	// went with it. Take it again if no one else has, and see whether
	// the row still names this node.
	conn, err := pgx.Connect(cctx, l.p.url)
	if err != nil {
		return false, err
	}
	var got bool
	if err := conn.QueryRow(cctx, `SELECT pg_try_advisory_lock(hashtext($1))`, l.name).Scan(&got); err != nil {
		conn.Close(context.Background())
		return false, err
	}
	if !got {
		conn.Close(context.Background())
		return false, nil
	}
	var holder string
	if err := conn.QueryRow(cctx, `SELECT holder FROM pzone_leases WHERE name = $1`, l.name).Scan(&holder); err != nil {
		conn.Close(context.Background())
		return false, err
	}
	if holder != l.holder {
		conn.Close(context.Background())
		return false, nil
	}
	l.conn = conn
	return true, nil
}

// Release gives the lease up (closing its connection frees the lock).
func (l *Lease) Release() {
	if l.conn != nil {
		l.conn.Close(context.Background())
		l.conn = nil
	}
}

// LeaseHolder names the lease's holder and since when, or "" if none
// ever took it.
func (p *Pool) LeaseHolder(ctx context.Context, name string) (string, time.Time, error) {
	ctx, cancel := context.WithTimeout(ctx, p.timeout())
	defer cancel()
	var holder string
	var since time.Time
	err := p.pool.QueryRow(ctx, `SELECT holder, since FROM pzone_leases WHERE name = $1`, name).Scan(&holder, &since)
	if errors.Is(err, pgx.ErrNoRows) {
		return "", time.Time{}, nil
	}
	if err != nil {
		return "", time.Time{}, p.wrap(fmt.Sprintf("read lease %s", name), err)
	}
	return holder, since, nil
}
