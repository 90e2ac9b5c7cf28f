package sync

import (
	"bytes"
	"fmt"
)

// Edit is one write of a batch: a value to put, or a deletion.
type Edit struct {
	Bucket, Key string
	Value       []byte
	Delete      bool
}

// maxEditBatch bounds one Apply: a batch is one transaction, held in
// memory until it commits.
const maxEditBatch = 10000

// Apply makes several edits as this node, atomically: all are durable
// when it returns, or none is made. A deletion of a key that holds
// nothing is skipped. It is for importing many records at once, where one
// transaction per record would be needlessly slow.
func (s *Store) Apply(edits []Edit) ([]Record, error) {
	if len(edits) > maxEditBatch {
		return nil, fmt.Errorf("%w: %d edits in one batch; at most %d", ErrInvalid, len(edits), maxEditBatch)
	}
	recs := make([]Record, len(edits))
	for i, e := range edits {
		if len(e.Value) > MaxValue {
			return nil, fmt.Errorf("%w: value of %s/%q is %d bytes, over the %d-byte limit", ErrInvalid, e.Bucket, e.Key, len(e.Value), MaxValue)
		}
		if err := CheckWrite(s.opts.Node, e.Bucket, e.Key); err != nil {
			return nil, err
		}
		recs[i] = Record{Bucket: e.Bucket, Key: e.Key, Value: bytes.Clone(e.Value), Deleted: e.Delete}
	}
	var out []Record
	err := s.write(func(t *txn) error {
		out = out[:0]
		now := uint64(s.opts.Now().UnixMilli())
		for _, rec := range recs {
			bk := bucketKey(rec.Bucket, rec.Key)
			cur, err := getStored(t.tx, bk)
			if err != nil {
				return err
			}
			if rec.Deleted && (cur == nil || cur.Deleted) {
				continue
			}
			rec.Version = s.clock.next(s.opts.Node)
			if s.hub {
				rec.Seq = t.hubPut(bk, cur, &rec, now)
			} else if err := t.peerLocal(bk, cur, &rec); err != nil {
				return err
			}
			out = append(out, rec)
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	return out, nil
}
