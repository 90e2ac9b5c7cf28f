package pgkv

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"strconv"
	"strings"

	"github.com/jackc/pgx/v5"

	"github.com/pzone/pzone/storefile/kv"
)

// maxBatch is how many writes wait in a pipeline before they are sent
// anyway; pageSize is how many keys a cursor fetches at once.
const (
	maxBatch = 512
	pageSize = 256
)

// tx is one transaction. The first failure of any statement is kept:
// PostgreSQL aborts the transaction then, so later statements are not
// sent, reads return nothing and the transaction reports the failure.
type tx struct {
	ctx     context.Context
	tx      pgx.Tx
	db      *DB
	write   bool
	err     error
	batch   *pgx.Batch
	buckets map[string]bool // bucket path → exists, as known in this tx
}

func (t *tx) fail(what string, err error) {
	if t.err == nil {
		t.err = t.db.p.wrap(what+" in store "+t.db.store, err)
	}
}

// flush sends the queued writes.
func (t *tx) flush() {
	if t.batch == nil || t.batch.Len() == 0 || t.err != nil {
		return
	}
	b := t.batch
	t.batch = nil
	br := t.tx.SendBatch(t.ctx, b)
	for range b.Len() {
		if _, err := br.Exec(); err != nil {
			t.fail("write", err)
			break
		}
	}
	if err := br.Close(); err != nil {
		t.fail("write", err)
	}
}

// queue adds a write to the pipeline.
func (t *tx) queue(sql string, args ...any) error {
	if t.err != nil {
		return t.err
	}
	if !t.write {
		return kv.ErrReadOnly
	}
	if t.batch == nil {
		t.batch = &pgx.Batch{}
	}
	t.batch.Queue(sql, args...)
	if t.batch.Len() >= maxBatch {
		t.flush()
	}
	return t.err
}

// ready flushes the writes before a read, and says whether to read.
func (t *tx) ready() bool {
	t.flush()
	return t.err == nil
}

func (t *tx) hasBucket(p []byte) bool {
	if e, ok := t.buckets[string(p)]; ok {
		return e
	}
	if _, ok := t.db.top.Load(string(p)); ok {
		return true
	}
	if !t.ready() {
		return false
	}
	var n int
	if err := t.tx.QueryRow(t.ctx, `SELECT count(*) FROM pzone_buckets WHERE store = $1 AND bucket = $2`, t.db.store, p).Scan(&n); err != nil {
		t.fail("read", err)
		return false
	}
	t.buckets[string(p)] = n > 0
	return n > 0
}

func (t *tx) bucketAt(p []byte) kv.Bucket {
	if !t.hasBucket(p) {
		return nil
	}
	return &bucket{t: t, path: p}
}

func (t *tx) Bucket(name []byte) kv.Bucket { return t.bucketAt(path(nil, name)) }

// learnTop records, after a commit, the top-level buckets this
// transaction found or made, and forgets those it deleted.
func (t *tx) learnTop() {
	for p, exists := range t.buckets {
		if !isTop(p) {
			continue
		}
		if exists {
			t.db.top.Store(p, struct{}{})
		} else {
			t.db.top.Delete(p)
		}
	}
}

// isTop reports whether a bucket path has one name (a top-level bucket).
func isTop(p string) bool {
	n, k := binary.Uvarint([]byte(p))
	return k > 0 && uint64(len(p)-k) == n
}

func (t *tx) CreateBucket(name []byte) (kv.Bucket, error) { return t.create(nil, name, false) }

func (t *tx) CreateBucketIfNotExists(name []byte) (kv.Bucket, error) {
	return t.create(nil, name, true)
}

func (t *tx) DeleteBucket(name []byte) error { return t.drop(nil, name) }

// create makes the bucket name inside parent (nil: the top).
func (t *tx) create(parent, name []byte, existing bool) (kv.Bucket, error) {
	if len(name) == 0 {
		return nil, kv.ErrEmptyKey
	}
	p := path(parent, name)
	if t.hasBucket(p) {
		if existing {
			return &bucket{t: t, path: p}, nil
		}
		return nil, kv.ErrBucketExists
	}
	if t.err != nil {
		return nil, t.err
	}
	if err := t.queue(`INSERT INTO pzone_buckets (store, bucket) VALUES ($1, $2)`, t.db.store, p); err != nil {
		return nil, err
	}
	if parent != nil {
		if err := t.queue(`INSERT INTO pzone_kv (store, bucket, key, value) VALUES ($1, $2, $3, NULL)
			ON CONFLICT (store, bucket, key) DO UPDATE SET value = NULL`, t.db.store, parent, bytes.Clone(name)); err != nil {
			return nil, err
		}
	}
	t.buckets[string(p)] = true
	return &bucket{t: t, path: p}, nil
}

// drop removes the bucket name inside parent, and all under it.
func (t *tx) drop(parent, name []byte) error {
	p := path(parent, name)
	if !t.hasBucket(p) {
		if t.err != nil {
			return t.err
		}
		return kv.ErrBucketNotFound
	}
	under := `store = $1 AND substr(bucket, 1, $3) = $2`
	if err := t.queue(`DELETE FROM pzone_kv WHERE `+under, t.db.store, p, len(p)); err != nil {
		return err
	}
	if err := t.queue(`DELETE FROM pzone_buckets WHERE `+under, t.db.store, p, len(p)); err != nil {
		return err
	}
	if parent != nil {
		if err := t.queue(`DELETE FROM pzone_kv WHERE store = $1 AND bucket = $2 AND key = $3`, t.db.store, parent, bytes.Clone(name)); err != nil {
			return err
		}
	}
	for k := range t.buckets {
		if strings.HasPrefix(k, string(p)) {
			delete(t.buckets, k)
		}
	}
	t.buckets[string(p)] = false
	return nil
}

type bucket struct {
	t    *tx
	path []byte
}

func (b *bucket) Get(k []byte) []byte {
	t := b.t
	if !t.ready() {
		return nil
	}
	var v []byte
	err := t.tx.QueryRow(t.ctx, `SELECT value FROM pzone_kv WHERE store = $1 AND bucket = $2 AND key = $3`, t.db.store, b.path, k).Scan(&v)
	if errors.Is(err, pgx.ErrNoRows) {
		return nil
	}
	if err != nil {
		t.fail("read", err)
		return nil
	}
	return v
}

func (b *bucket) Put(k, v []byte) error {
	if len(k) == 0 {
		return kv.ErrEmptyKey
	}
	if v == nil {
		v = []byte{}
	}
	return b.t.queue(`INSERT INTO pzone_kv (store, bucket, key, value) VALUES ($1, $2, $3, $4)
		ON CONFLICT (store, bucket, key) DO UPDATE SET value = EXCLUDED.value`,
		b.t.db.store, b.path, bytes.Clone(k), bytes.Clone(v))
}

func (b *bucket) Delete(k []byte) error {
	return b.t.queue(`DELETE FROM pzone_kv WHERE store = $1 AND bucket = $2 AND key = $3`, b.t.db.store, b.path, bytes.Clone(k))
}

func (b *bucket) ForEach(fn func(k, v []byte) error) error {
	c := b.Cursor()
	for k, v := c.First(); k != nil; k, v = c.Next() {
		if err := fn(k, v); err != nil {
			return err
		}
	}
	return b.t.err
}

func (b *bucket) ForEachBucket(fn func(name []byte) error) error {
	c := b.Cursor()
	for k, v := c.First(); k != nil; k, v = c.Next() {
		if v != nil {
			continue
		}
		if err := fn(k); err != nil {
			return err
		}
	}
	return b.t.err
}

func (b *bucket) NextSequence() (uint64, error) {
	t := b.t
	if !t.write {
		return 0, kv.ErrReadOnly
	}
	if !t.ready() {
		return 0, t.err
	}
	var seq int64
	if err := t.tx.QueryRow(t.ctx, `UPDATE pzone_buckets SET seq = seq + 1 WHERE store = $1 AND bucket = $2 RETURNING seq`, t.db.store, b.path).Scan(&seq); err != nil {
		t.fail("next sequence", err)
		return 0, t.err
	}
	return uint64(seq), nil
}

func (b *bucket) KeyN() int {
	t := b.t
	if !t.ready() {
		return 0
	}
	var n int
	if err := t.tx.QueryRow(t.ctx, `SELECT count(*) FROM pzone_kv WHERE store = $1 AND bucket = $2`, t.db.store, b.path).Scan(&n); err != nil {
		t.fail("count", err)
		return 0
	}
	return n
}

func (b *bucket) Bucket(name []byte) kv.Bucket { return b.t.bucketAt(path(b.path, name)) }

func (b *bucket) CreateBucketIfNotExists(name []byte) (kv.Bucket, error) {
	return b.t.create(b.path, name, true)
}

func (b *bucket) DeleteBucket(name []byte) error { return b.t.drop(b.path, name) }

func (b *bucket) Cursor() kv.Cursor { return &cursor{b: b} }

// cursor reads its bucket a page at a time.
type cursor struct {
	b    *bucket
	page []row
	i    int
	full bool // the page was full: there may be more past it
}

type row struct{ k, v []byte }

func (c *cursor) First() ([]byte, []byte) { return c.fetch([]byte{}, true) }

func (c *cursor) Seek(seek []byte) ([]byte, []byte) { return c.fetch(seek, true) }

func (c *cursor) Next() ([]byte, []byte) {
	if c.i+1 < len(c.page) {
		c.i++
		return c.at()
	}
	if !c.full || len(c.page) == 0 {
		c.page, c.i = nil, 0
		return nil, nil
	}
	return c.fetch(c.page[len(c.page)-1].k, false)
}

func (c *cursor) at() ([]byte, []byte) {
	r := c.page[c.i]
	return r.k, r.v
}

// fetch reads the page from key from (itself included or not).
func (c *cursor) fetch(from []byte, inclusive bool) ([]byte, []byte) {
	t := c.b.t
	c.page, c.i, c.full = nil, 0, false
	if !t.ready() {
		return nil, nil
	}
	op := ">"
	if inclusive {
		op = ">="
	}
	rows, err := t.tx.Query(t.ctx, `SELECT key, value FROM pzone_kv WHERE store = $1 AND bucket = $2 AND key `+op+` $3 ORDER BY key LIMIT `+strconv.Itoa(pageSize),
		t.db.store, c.b.path, from)
	if err != nil {
		t.fail("read", err)
		return nil, nil
	}
	for rows.Next() {
		var r row
		if err := rows.Scan(&r.k, &r.v); err != nil {
			rows.Close()
			t.fail("read", err)
			c.page = nil
			return nil, nil
		}
		c.page = append(c.page, r)
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		t.fail("read", err)
		c.page = nil
		return nil, nil
	}
	c.full = len(c.page) == pageSize
	if len(c.page) == 0 {
		return nil, nil
	}
	return c.at()
}
