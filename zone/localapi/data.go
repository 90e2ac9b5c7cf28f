package localapi

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"slices"
	"strings"
	"time"

	zsync "github.com/pzone/pzone/sync"
	"github.com/pzone/pzone/zone/api"
)

// DataStore is what the data endpoints need of a node's store: a
// *zsync.Store, through syncData.
type DataStore interface {
	Put(bucket, key string, value []byte) (zsync.Record, error)
	Delete(bucket, key string) (zsync.Record, error)
	Get(bucket, key string) (rec zsync.Record, ok bool, err error)
	List(bucket, prefix string, fn func(zsync.Record) error) error
	Watch(bucket, prefix string) (DataWatch, error)
}

// DataWatch is a subscription to changes: a *zsync.Watch.
type DataWatch interface {
	Changes() <-chan zsync.Record
	Err() error
	Close()
}

// syncData adapts a *zsync.Store to DataStore: Go has no covariant
// results, so Watch must return the interface.
type syncData struct{ *zsync.Store }

func (s syncData) Watch(bucket, prefix string) (DataWatch, error) {
	w, err := s.Store.Watch(bucket, prefix)
	if err != nil {
		return nil, err // not a typed nil in an interface
	}
	return w, nil
}

// DataRoutes adds the data endpoints to mux. store returns nil while the
// node has no store open (answered with 503); node is who writes, for
// checking permissions before the store does.
func DataRoutes(mux *http.ServeMux, store func() *zsync.Store, node string) {
	RouteData(mux, func() DataStore {
		if s := store(); s != nil {
			return syncData{s}
		}
		return nil
	}, node)
}

// RouteData is DataRoutes on any DataStore.
func RouteData(mux *http.ServeMux, store func() DataStore, node string) {
	a := &dataAPI{store: store, node: node}
	mux.HandleFunc("GET /v1/data/{bucket}/{key...}", a.get)
	mux.HandleFunc("PUT /v1/data/{bucket}/{key...}", a.put)
	mux.HandleFunc("DELETE /v1/data/{bucket}/{key...}", a.del)
	mux.HandleFunc("GET /v1/data/{bucket}", a.list)
	mux.HandleFunc("GET /v1/watch/{bucket}", a.watch)
	mux.HandleFunc("POST /v1/import", a.importNDJSON)
}

type dataAPI struct {
	store func() DataStore
	node  string
}

var errNoStore = errors.New("the data store is not open: the daemon is starting or stopping; try again")

// open returns the store, or answers 503.
func (a *dataAPI) open(w http.ResponseWriter) DataStore {
	s := a.store()
	if s == nil {
		WriteErr(w, http.StatusServiceUnavailable, errNoStore)
	}
	return s
}

// DataStatus maps a store error to its HTTP status.
func DataStatus(err error) int {
	switch {
	case errors.Is(err, zsync.ErrInvalid):
		return http.StatusBadRequest
	case errors.Is(err, zsync.ErrPermission):
		return http.StatusForbidden
	case errors.Is(err, zsync.ErrClosed):
		return http.StatusServiceUnavailable
	}
	return ErrStatus(err, []error{zsync.ErrNotFound}, nil)
}

func checkBucket(bucket string) error {
	if !slices.Contains(zsync.Buckets(), bucket) {
		return fmt.Errorf("%w: unknown bucket %q (buckets: %s)", zsync.ErrInvalid, bucket, strings.Join(zsync.Buckets(), ", "))
	}
	return nil
}

// writeNoKey answers 404 for a key without a live record. Its message
// leaves out the "not found: " of zsync.ErrNotFound: "no key" says it.
func writeNoKey(w http.ResponseWriter, bucket, key string) {
	WriteErr(w, http.StatusNotFound, fmt.Errorf("no key %s in bucket %s", key, bucket))
}

func (a *dataAPI) get(w http.ResponseWriter, r *http.Request) {
	bucket, key := r.PathValue("bucket"), r.PathValue("key")
	if err := zsync.CheckKey(bucket, key); err != nil {
		WriteErr(w, http.StatusBadRequest, err)
		return
	}
	s := a.open(w)
	if s == nil {
		return
	}
	rec, ok, err := s.Get(bucket, key)
	if err != nil {
		WriteErr(w, DataStatus(err), err)
		return
	}
	if !ok || rec.Deleted && r.URL.Query().Get("deleted") != "1" {
		writeNoKey(w, bucket, key)
		return
	}
	WriteJSON(w, http.StatusOK, api.NewRecordView(rec))
}

// Verdicts, as RecordView.Verdict shows them.
const (
	verdictAccepted   = "accepted"
	verdictSuperseded = "superseded"
	verdictPending    = "pending"
)

// verdictStore is a device's store, where the hub may refuse an edit
// after it was made: a *zsync.Store, through syncData.
type verdictStore interface {
	WatchVerdicts(bucket, key string) *zsync.VerdictWatch
	awaitsHub() bool
}

// awaitsHub reports whether the hub will judge this node's edits soon: a
// device's store with its sync stream up.
func (s syncData) awaitsHub() bool { return !s.Hub() && s.State().Phase != zsync.PhaseOffline }

// errRefusedByHub marks an edit the hub refused (409).
var errRefusedByHub = errors.New("the hub refused the edit, and it was undone here")

// withVerdict makes an edit with do and, if the request asks with
// ?verdict=DURATION and the store is a device's with the hub online,
// waits up to DURATION (at most MaxLongPoll) for the hub's verdict.
func withVerdict(r *http.Request, s DataStore, bucket, key string, do func() (zsync.Record, error)) (api.RecordView, int, error) {
	q := r.URL.Query()
	if !q.Has("verdict") {
		rec, err := do()
		return api.NewRecordView(rec), 0, err
	}
	wait, err := time.ParseDuration(q.Get("verdict"))
	if err != nil || wait < 0 {
		return api.RecordView{}, http.StatusBadRequest, fmt.Errorf("verdict=%q: want how long to wait for the hub, e.g. 10s", q.Get("verdict"))
	}
	vs, ok := s.(verdictStore)
	if !ok || wait == 0 || !vs.awaitsHub() {
		rec, err := do()
		v := api.NewRecordView(rec)
		v.Verdict = verdictPending
		if rec.Seq != 0 { // the hub's own edits
			v.Verdict = verdictAccepted
		}
		return v, 0, err
	}
	vw := vs.WatchVerdicts(bucket, key) // before the edit: the answer can come first
	defer vw.Close()
	rec, err := do()
	if err != nil {
		return api.RecordView{}, 0, err
	}
	ctx, cancel := context.WithTimeout(r.Context(), min(wait, MaxLongPoll))
	defer cancel()
	v := api.NewRecordView(rec)
	verdict, err := vw.Wait(ctx, rec.Version)
	switch {
	case err != nil:
		v.Verdict = verdictPending
	case verdict.Status == zsync.PushAccepted:
		// The record stays as written here (seq 0); the hub's number
		// reaches the device with the changes.
		v.Verdict = verdictAccepted
	case verdict.Status == zsync.PushSuperseded:
		v.Verdict = verdictSuperseded
	default:
		return api.RecordView{}, http.StatusConflict, fmt.Errorf("%w: %s", errRefusedByHub, verdict.Reason)
	}
	return v, 0, nil
}

func (a *dataAPI) put(w http.ResponseWriter, r *http.Request) {
	a.edit(w, r, func(s DataStore, bucket, key string) (api.RecordView, int, error) {
		tooBig := fmt.Errorf("value is over the %d-byte limit (%d KiB); keep bulk data out of the zone state", zsync.MaxValue, zsync.MaxValue>>10)
		if r.ContentLength > zsync.MaxValue {
			return api.RecordView{}, http.StatusRequestEntityTooLarge, tooBig
		}
		value, err := io.ReadAll(io.LimitReader(r.Body, zsync.MaxValue+1))
		if err != nil {
			return api.RecordView{}, http.StatusBadRequest, fmt.Errorf("read the value: %w", err)
		}
		if len(value) > zsync.MaxValue {
			return api.RecordView{}, http.StatusRequestEntityTooLarge, tooBig
		}
		return withVerdict(r, s, bucket, key, func() (zsync.Record, error) { return s.Put(bucket, key, value) })
	})
}

func (a *dataAPI) del(w http.ResponseWriter, r *http.Request) {
	a.edit(w, r, func(s DataStore, bucket, key string) (api.RecordView, int, error) {
		return withVerdict(r, s, bucket, key, func() (zsync.Record, error) { return s.Delete(bucket, key) })
	})
}

// edit checks that this node may write the request's key, then makes the
// edit fn describes and answers with the record. fn's status, if not 0,
// overrides the one its error maps to.
func (a *dataAPI) edit(w http.ResponseWriter, r *http.Request, fn func(s DataStore, bucket, key string) (api.RecordView, int, error)) {
	bucket, key := r.PathValue("bucket"), r.PathValue("key")
	if err := CheckAPIWrite(a.node, bucket, key); err != nil {
		WriteErr(w, DataStatus(err), err)
		return
	}
	s := a.open(w)
	if s == nil {
		return
	}
	v, status, err := fn(s, bucket, key)
	switch {
	case errors.Is(err, zsync.ErrNotFound):
		writeNoKey(w, bucket, key)
	case err != nil:
		if status == 0 {
			status = DataStatus(err)
		}
		WriteErr(w, status, err)
	default:
		WriteJSON(w, http.StatusOK, v)
	}
}

// recordList is the answer of GET /v1/data/{bucket}. It is written record
// by record as the store is read, so a listing costs the daemon no more
// memory than one record; a failure after the first record ends the
// object with an "error" member instead of a status.
type recordList struct {
	Records []api.RecordView `json:"records"`
	Error   string           `json:"error,omitempty"`
}

// bucketStore checks the request's bucket and opens the store; it answers
// the request itself and returns nil when either fails.
func (a *dataAPI) bucketStore(w http.ResponseWriter, r *http.Request) (string, DataStore) {
	bucket := r.PathValue("bucket")
	if err := checkBucket(bucket); err != nil {
		WriteErr(w, http.StatusBadRequest, err)
		return "", nil
	}
	return bucket, a.open(w)
}

func (a *dataAPI) list(w http.ResponseWriter, r *http.Request) {
	bucket, s := a.bucketStore(w, r)
	if s == nil {
		return
	}
	n := 0
	err := s.List(bucket, r.URL.Query().Get("prefix"), func(rec zsync.Record) error {
		if err := r.Context().Err(); err != nil {
			return err
		}
		b, err := json.Marshal(api.NewRecordView(rec))
		if err != nil {
			return err
		}
		sep := ",\n"
		if n == 0 {
			w.Header().Set("Content-Type", "application/json")
			w.WriteHeader(http.StatusOK)
			sep = `{"records":[` + "\n"
		}
		n++
		if _, err := io.WriteString(w, sep); err != nil {
			return err
		}
		_, err = w.Write(b)
		return err
	})
	switch {
	case n == 0 && err != nil:
		WriteErr(w, DataStatus(err), err)
	case n == 0:
		WriteJSON(w, http.StatusOK, recordList{Records: []api.RecordView{}})
	case err == nil:
		io.WriteString(w, "\n]}\n")
	case r.Context().Err() == nil:
		msg, _ := json.Marshal(err.Error())
		fmt.Fprintf(w, "\n],\"error\":%s}\n", msg)
	}
}

func (a *dataAPI) watch(w http.ResponseWriter, r *http.Request) {
	bucket, s := a.bucketStore(w, r)
	if s == nil {
		return
	}
	q := r.URL.Query()
	prefix := q.Get("prefix")
	// Subscribe before listing, so no change falls between the two; a
	// change may show up in both, which a watcher applying records does
	// not mind.
	sub, err := s.Watch(bucket, prefix)
	if err != nil {
		WriteErr(w, DataStatus(err), err)
		return
	}
	defer sub.Close()
	w.Header().Set("Content-Type", "application/x-ndjson")
	w.WriteHeader(http.StatusOK)
	rc := http.NewResponseController(w)
	// The headers go out now: once a client has them, it is subscribed.
	if err := rc.Flush(); err != nil {
		return
	}
	enc := json.NewEncoder(w) // one compact value and a newline per Encode
	send := func(rec zsync.Record) error {
		if err := r.Context().Err(); err != nil {
			return err
		}
		if err := enc.Encode(api.NewRecordView(rec)); err != nil {
			return err
		}
		return rc.Flush()
	}
	end := func(err error) {
		if err != nil && r.Context().Err() == nil {
			enc.Encode(api.ErrorBody{Error: err.Error()})
			rc.Flush()
		}
	}
	if q.Get("changes") != "1" {
		if err := s.List(bucket, prefix, send); err != nil {
			end(err)
			return
		}
	}
	for {
		select {
		case <-r.Context().Done():
			return
		case rec, ok := <-sub.Changes():
			if !ok {
				end(sub.Err())
				return
			}
			if err := send(rec); err != nil {
				return
			}
		}
	}
}

// CheckAPIWrite is the write check of the local APIs: the node's rights,
// and nobody edits the certificates bucket by hand. The hub keeps it in
// step with its own records (pairing, renewal, revocation); an edit there
// could hide a revocation from the devices.
func CheckAPIWrite(node, bucket, key string) error {
	if err := zsync.CheckWrite(node, bucket, key); err != nil {
		return err
	}
	switch bucket {
	case zsync.BucketCerts:
		return fmt.Errorf("%w: bucket %s is kept by the hub itself from its pairings and revocations (use pzh revoke)", zsync.ErrPermission, bucket)
	case zsync.BucketFriends:
		// Its records are trust anchors: a friend's CA certificate.
		return fmt.Errorf("%w: bucket %s is kept by the hub itself from its friendships (use pzh friend)", zsync.ErrPermission, bucket)
	}
	return nil
}
