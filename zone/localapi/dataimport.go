package localapi

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"

	zsync "github.com/pzone/pzone/sync"
	"github.com/pzone/pzone/zone/api"
)

// Import limits, with why.
const (
	// importChunk is how many lines one transaction applies: one fsync
	// per thousand records instead of one per record, while a chunk stays
	// small next to what a device receives per batch, and well under the
	// store's cap on a batch.
	importChunk = 1000
	// importChunkBytes also ends a chunk: a chunk is held in memory until
	// it commits, and a thousand values near the 256 KiB limit would be a
	// quarter of a GiB.
	importChunkBytes = 8 << 20
	// maxImportLine bounds one line. The largest line a watch prints is a
	// 256 KiB value given twice, as base64 (342 KiB) and as JSON text,
	// where a control character escapes to 6 bytes (1.5 MiB): under 2 MiB.
	maxImportLine = 2 << 20
)

// dataApplier is what an import needs of a store besides DataStore: a
// *zsync.Store applies many edits in one transaction.
type dataApplier interface {
	Apply(edits []zsync.Edit) ([]zsync.Record, error)
}

// ParseImportLine turns one line into an edit for node to make, with
// bucket the default; its error is ErrInvalid or ErrPermission. It checks
// what PUT checks: the certificates bucket is not importable either.
func ParseImportLine(line []byte, bucket, node string) (zsync.Edit, error) {
	var l api.ImportLine
	if err := json.Unmarshal(line, &l); err != nil {
		return zsync.Edit{}, fmt.Errorf("%w: not JSON: %v", zsync.ErrInvalid, err)
	}
	if l.Bucket != "" {
		bucket = l.Bucket
	}
	if err := CheckAPIWrite(node, bucket, l.Key); err != nil {
		return zsync.Edit{}, err
	}
	e := zsync.Edit{Bucket: bucket, Key: l.Key, Delete: l.Deleted}
	switch {
	case l.Deleted && (l.Text != nil || l.Value != nil):
		return zsync.Edit{}, fmt.Errorf("%w: a deletion of %q carries a value", zsync.ErrInvalid, l.Key)
	case l.Deleted:
	case l.Text != nil && l.Value != nil && !bytes.Equal([]byte(*l.Text), *l.Value):
		return zsync.Edit{}, fmt.Errorf("%w: %q has a text and a value that differ; give one", zsync.ErrInvalid, l.Key)
	case l.Value != nil:
		e.Value = *l.Value
	case l.Text != nil:
		e.Value = []byte(*l.Text)
	default:
		return zsync.Edit{}, fmt.Errorf(`%w: %q has no value: give "text", "value" (base64) or "deleted": true`, zsync.ErrInvalid, l.Key)
	}
	if len(e.Value) > zsync.MaxValue {
		return zsync.Edit{}, fmt.Errorf("%w: the value of %q is %d bytes, over the %d-byte limit", zsync.ErrInvalid, l.Key, len(e.Value), zsync.MaxValue)
	}
	return e, nil
}

// importNDJSON serves POST /v1/import[?bucket=B]: it applies each chunk
// as it is read, so neither the body nor the import is ever held whole. A
// bad line stops it after everything before that line is applied.
func (a *dataAPI) importNDJSON(w http.ResponseWriter, r *http.Request) {
	bucket := r.URL.Query().Get("bucket")
	if bucket == "" {
		bucket = zsync.BucketAppData
	}
	if err := checkBucket(bucket); err != nil {
		WriteErr(w, http.StatusBadRequest, err)
		return
	}
	s := a.open(w)
	if s == nil {
		return
	}
	ap, ok := s.(dataApplier)
	if !ok {
		WriteErr(w, http.StatusNotImplemented, errors.New("this daemon's store cannot import"))
		return
	}
	var res api.ImportResult
	fail := func(status int, err error) {
		WriteJSON(w, status, api.ImportError{Error: err.Error(), ImportResult: res})
	}
	var chunk []zsync.Edit
	size := 0
	apply := func() error {
		if len(chunk) == 0 {
			return nil
		}
		recs, err := ap.Apply(chunk)
		if err != nil {
			return err
		}
		res.Applied += len(recs)
		chunk, size = chunk[:0], 0
		return nil
	}
	sc := bufio.NewScanner(r.Body)
	sc.Buffer(make([]byte, 64<<10), maxImportLine)
	n := 0
	for sc.Scan() {
		n++
		line := bytes.TrimSpace(sc.Bytes())
		if len(line) == 0 {
			continue
		}
		e, err := ParseImportLine(line, bucket, a.node)
		if err != nil {
			// What came before the bad line goes in, so that the import
			// can resume from it.
			if aerr := apply(); aerr != nil {
				fail(DataStatus(aerr), fmt.Errorf("import: %w", aerr))
				return
			}
			res.Line = n
			fail(DataStatus(err), fmt.Errorf("line %d: %w", n, err))
			return
		}
		chunk = append(chunk, e)
		size += len(e.Key) + len(e.Value)
		if len(chunk) == importChunk || size >= importChunkBytes {
			if err := apply(); err != nil {
				fail(DataStatus(err), fmt.Errorf("import: %w", err))
				return
			}
		}
	}
	if err := sc.Err(); err != nil {
		status := http.StatusBadRequest
		if errors.Is(err, bufio.ErrTooLong) {
			err = fmt.Errorf("%w: line %d is over the %d-byte limit of a line", zsync.ErrInvalid, n+1, maxImportLine)
			res.Line = n + 1
		} else {
			err = fmt.Errorf("read the request after line %d: %w", n, err)
		}
		// The lines read whole are applied: the request may have been cut
		// anywhere, but each line is a record of its own.
		if aerr := apply(); aerr != nil {
			fail(DataStatus(aerr), fmt.Errorf("import: %w", aerr))
			return
		}
		fail(status, err)
		return
	}
	if err := apply(); err != nil {
		fail(DataStatus(err), fmt.Errorf("import: %w", err))
		return
	}
	WriteJSON(w, http.StatusOK, res)
}
