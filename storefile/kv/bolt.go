package kv

import (
	"errors"

	bolt "go.etcd.io/bbolt"
)

// Bolt is a store in a bbolt file: the default, and the only one for a
// device. The file is opened (and checked) by storefile.
type Bolt struct{ DB *bolt.DB }

// OfBolt wraps an open bbolt database.
func OfBolt(db *bolt.DB) *Bolt { return &Bolt{DB: db} }

// BoltOf returns the bbolt database behind db, for what only a file can
// do (a backup copy, compaction), or nil when db is not a file.
func BoltOf(db DB) *bolt.DB {
	if b, ok := db.(*Bolt); ok {
		return b.DB
	}
	return nil
}

func (b *Bolt) View(fn func(Tx) error) error {
	return boltErr(b.DB.View(func(tx *bolt.Tx) error { return fn(boltTx{tx}) }))
}

func (b *Bolt) Update(fn func(Tx) error) error {
	return boltErr(b.DB.Update(func(tx *bolt.Tx) error { return fn(boltTx{tx}) }))
}

func (b *Bolt) Close() error { return b.DB.Close() }

// BoltTx wraps a bbolt transaction begun elsewhere (a backup's snapshot).
func BoltTx(tx *bolt.Tx) Tx { return boltTx{tx} }

func boltErr(err error) error {
	switch {
	case errors.Is(err, bolt.ErrDatabaseNotOpen):
		return ErrClosed
	case errors.Is(err, bolt.ErrBucketExists):
		return errors.Join(ErrBucketExists, err)
	case errors.Is(err, bolt.ErrBucketNotFound):
		return errors.Join(ErrBucketNotFound, err)
	case errors.Is(err, bolt.ErrTxNotWritable):
		return errors.Join(ErrReadOnly, err)
	}
	return err
}

type boltTx struct{ tx *bolt.Tx }

func (t boltTx) Bucket(name []byte) Bucket { return wrapBucket(t.tx.Bucket(name)) }

func (t boltTx) CreateBucket(name []byte) (Bucket, error) {
	b, err := t.tx.CreateBucket(name)
	return wrapBucket(b), boltErr(err)
}

func (t boltTx) CreateBucketIfNotExists(name []byte) (Bucket, error) {
	b, err := t.tx.CreateBucketIfNotExists(name)
	return wrapBucket(b), boltErr(err)
}

func (t boltTx) DeleteBucket(name []byte) error { return boltErr(t.tx.DeleteBucket(name)) }

// wrapBucket keeps a missing bucket a nil interface, not a wrapped nil.
func wrapBucket(b *bolt.Bucket) Bucket {
	if b == nil {
		return nil
	}
	return boltBucket{b}
}

type boltBucket struct{ b *bolt.Bucket }

func (b boltBucket) Get(k []byte) []byte { return b.b.Get(k) }
func (b boltBucket) Put(k, v []byte) error {
	return boltErr(b.b.Put(k, v))
}
func (b boltBucket) Delete(k []byte) error { return boltErr(b.b.Delete(k)) }
func (b boltBucket) ForEach(fn func(k, v []byte) error) error {
	return b.b.ForEach(fn)
}
func (b boltBucket) ForEachBucket(fn func(name []byte) error) error {
	return b.b.ForEachBucket(fn)
}
func (b boltBucket) Cursor() Cursor                 { return b.b.Cursor() }
func (b boltBucket) NextSequence() (uint64, error)  { return b.b.NextSequence() }
func (b boltBucket) Bucket(name []byte) Bucket      { return wrapBucket(b.b.Bucket(name)) }
func (b boltBucket) SetFillPercent(f float64)       { b.b.FillPercent = f }
func (b boltBucket) DeleteBucket(name []byte) error { return boltErr(b.b.DeleteBucket(name)) }
func (b boltBucket) CreateBucketIfNotExists(name []byte) (Bucket, error) {
	nb, err := b.b.CreateBucketIfNotExists(name)
	return wrapBucket(nb), boltErr(err)
}

// KeyN counts the bucket's own keys (bbolt's Stats counts those of the
// buckets inside it too).
func (b boltBucket) KeyN() int {
	n := 0
	c := b.b.Cursor()
	for k, _ := c.First(); k != nil; k, _ = c.Next() {
		n++
	}
	return n
}
