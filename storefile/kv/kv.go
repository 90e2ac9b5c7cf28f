// Package kv is the transactional, ordered key-value model the daemons'
// stores are written against: named buckets (which may nest) of byte keys
// kept in order, read in snapshot transactions and written in serialised
// ones. bbolt implements it in a file (Bolt, the default); a zone of a
// provider's cluster keeps the same buckets in PostgreSQL (storefile/pgkv),
// so the stores' logic, and every guarantee it gives, is one code for
// both.
//
// The model is bbolt's, cut to what the stores use:
//
//   - Update runs fn in the one write transaction: no two overlap, for a
//     store, on any node of a cluster. It commits, durably, only when fn
//     returns nil; otherwise nothing fn wrote is kept.
//   - View runs fn on a snapshot: it sees every Update that committed
//     before it began and none after.
//   - Values returned by Get and by cursors are valid only inside the
//     transaction, and must not be changed.
//   - A bucket inside a bucket shows in its parent as a key whose value is
//     nil.
//
// A backend that can fail mid-transaction (a database across a network)
// reports the failure from View or Update even when fn returned nil: what
// fn read after the failure is empty, and nothing fn wrote is kept.
package kv

import (
	"errors"
)

// Errors common to the backends.
var (
	// ErrClosed: the store was closed.
	ErrClosed = errors.New("store closed")
	// ErrBucketExists: CreateBucket of a bucket that exists.
	ErrBucketExists = errors.New("bucket already exists")
	// ErrBucketNotFound: DeleteBucket of a bucket that does not exist.
	ErrBucketNotFound = errors.New("bucket not found")
	// ErrReadOnly: a write in a View.
	ErrReadOnly = errors.New("write in a read-only transaction")
	// ErrEmptyKey: a key of no bytes.
	ErrEmptyKey = errors.New("empty key")
)

// DB is a store.
type DB interface {
	// View runs fn in a read-only snapshot transaction.
	View(fn func(Tx) error) error
	// Update runs fn in the write transaction and commits it if fn
	// returns nil.
	Update(fn func(Tx) error) error
	// Close releases the store; later transactions fail with ErrClosed.
	Close() error
}

// Tx is a transaction.
type Tx interface {
	// Bucket returns the top-level bucket of that name, or nil.
	Bucket(name []byte) Bucket
	// CreateBucket makes a top-level bucket (ErrBucketExists if it is there).
	CreateBucket(name []byte) (Bucket, error)
	// CreateBucketIfNotExists returns the top-level bucket, made if need be.
	CreateBucketIfNotExists(name []byte) (Bucket, error)
	// DeleteBucket removes a top-level bucket and all it holds.
	DeleteBucket(name []byte) error
}

// Bucket is a set of keys in byte order.
type Bucket interface {
	// Get returns the key's value, or nil when the key is absent or names
	// a nested bucket.
	Get(key []byte) []byte
	// Put sets the key's value.
	Put(key, value []byte) error
	// Delete removes the key; an absent key is no error.
	Delete(key []byte) error
	// ForEach calls fn for every key in order (nested buckets with a nil
	// value); an error from fn stops it and is returned.
	ForEach(fn func(k, v []byte) error) error
	// ForEachBucket calls fn for every nested bucket's name, in order.
	ForEachBucket(fn func(name []byte) error) error
	// Cursor walks the keys in order.
	Cursor() Cursor
	// NextSequence returns the bucket's next sequence number, from 1.
	NextSequence() (uint64, error)
	// KeyN counts the keys directly in the bucket, nested buckets as one each.
	KeyN() int
	// Bucket returns the nested bucket of that name, or nil.
	Bucket(name []byte) Bucket
	// CreateBucketIfNotExists returns the nested bucket, made if need be.
	CreateBucketIfNotExists(name []byte) (Bucket, error)
	// DeleteBucket removes a nested bucket and all it holds.
	DeleteBucket(name []byte) error
}

// Cursor walks a bucket's keys in order. Each method returns the key and
// value it lands on, or a nil key past the end.
type Cursor interface {
	First() (k, v []byte)
	Seek(seek []byte) (k, v []byte)
	Next() (k, v []byte)
}

// Filler is a bucket that can be told how full to pack its pages: bbolt's
// default half-fills, which doubles an index whose keys only grow. Other
// backends ignore the hint.
type Filler interface {
	SetFillPercent(f float64)
}

// SetFill gives the hint to a bucket that takes it.
func SetFill(b Bucket, f float64) {
	if fb, ok := b.(Filler); ok {
		fb.SetFillPercent(f)
	}
}
