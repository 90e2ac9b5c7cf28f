package localapi

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	zsync "github.com/pzone/pzone/sync"
	"github.com/pzone/pzone/zone/api"
)

// fakeData is an in-memory DataStore with the store's observable rules:
// edits are versioned and numbered, deletions leave tombstones, and every
// change goes to the watchers of its bucket and prefix.
type fakeData struct {
	node string

	mu      sync.Mutex
	recs    map[[2]string]zsync.Record
	seq     uint64
	watches []*fakeWatch
	listErr error         // List fails with it after listing what it has
	fail    error         // every call fails with it
	watched chan struct{} // receives once per Watch
	closed  chan struct{} // receives once per Watch closed by its user
}

func newFakeData(node string) *fakeData {
	return &fakeData{node: node, recs: map[[2]string]zsync.Record{}, watched: make(chan struct{}, 16), closed: make(chan struct{}, 16)}
}

func (f *fakeData) edit(bucket, key string, value []byte, deleted bool) (zsync.Record, error) {
	if f.fail != nil {
		return zsync.Record{}, f.fail
	}
	if err := zsync.CheckWrite(f.node, bucket, key); err != nil {
		return zsync.Record{}, err
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	if cur, ok := f.recs[[2]string{bucket, key}]; deleted && (!ok || cur.Deleted) {
		return zsync.Record{}, fmt.Errorf("%w: %s/%s", zsync.ErrNotFound, bucket, key)
	}
	f.seq++
	rec := zsync.Record{Bucket: bucket, Key: key, Value: value, Deleted: deleted, Seq: f.seq,
		Version: zsync.Version{Wall: 1700000000000 + f.seq, Node: f.node}}
	f.recs[[2]string{bucket, key}] = rec
	for _, w := range f.watches {
		if w.bucket == bucket && strings.HasPrefix(key, w.prefix) {
			w.ch <- rec
		}
	}
	return rec, nil
}

func (f *fakeData) Put(bucket, key string, value []byte) (zsync.Record, error) {
	return f.edit(bucket, key, value, false)
}

func (f *fakeData) Delete(bucket, key string) (zsync.Record, error) {
	return f.edit(bucket, key, nil, true)
}

func (f *fakeData) Get(bucket, key string) (zsync.Record, bool, error) {
	if f.fail != nil {
		return zsync.Record{}, false, f.fail
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	rec, ok := f.recs[[2]string{bucket, key}]
	return rec, ok, nil
}

func (f *fakeData) List(bucket, prefix string, fn func(zsync.Record) error) error {
	if f.fail != nil {
		return f.fail
	}
	f.mu.Lock()
	var recs []zsync.Record
	for k, rec := range f.recs {
		if k[0] == bucket && strings.HasPrefix(k[1], prefix) && !rec.Deleted {
			recs = append(recs, rec)
		}
	}
	f.mu.Unlock()
	slices.SortFunc(recs, func(a, b zsync.Record) int { return strings.Compare(a.Key, b.Key) })
	for _, rec := range recs {
		if err := fn(rec); err != nil {
			return err
		}
	}
	return f.listErr
}

func (f *fakeData) Watch(bucket, prefix string) (DataWatch, error) {
	if f.fail != nil {
		return nil, f.fail
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	w := &fakeWatch{f: f, bucket: bucket, prefix: prefix, ch: make(chan zsync.Record, 100)}
	f.watches = append(f.watches, w)
	f.watched <- struct{}{}
	return w, nil
}

// open reports how many watches are still subscribed.
func (f *fakeData) open() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return len(f.watches)
}

// endWatches ends every watch with err, as an overflow or a closing store
// would.
func (f *fakeData) endWatches(err error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	for _, w := range f.watches {
		w.err = err
		close(w.ch)
	}
	f.watches = nil
}

type fakeWatch struct {
	f              *fakeData
	bucket, prefix string
	ch             chan zsync.Record
	err            error
}

func (w *fakeWatch) Changes() <-chan zsync.Record { return w.ch }

func (w *fakeWatch) Err() error {
	w.f.mu.Lock()
	defer w.f.mu.Unlock()
	return w.err
}

func (w *fakeWatch) Close() {
	w.f.mu.Lock()
	defer w.f.mu.Unlock()
	if i := slices.Index(w.f.watches, w); i >= 0 {
		w.f.watches = slices.Delete(w.f.watches, i, i+1)
		close(w.ch)
		select {
		case w.f.closed <- struct{}{}:
		default:
		}
	}
}

// dataMux serves the data endpoints of store (nil: no store open) as the
// daemons do, unknown paths included.
func dataMux(store *fakeData, node string) *http.ServeMux {
	mux := http.NewServeMux()
	RouteData(mux, func() DataStore {
		if store == nil {
			return nil
		}
		return store
	}, node)
	mux.HandleFunc("/", NotFound)
	return mux
}

func dataCall(t *testing.T, h http.Handler, method, path, body string) (int, string) {
	t.Helper()
	var rd io.Reader
	if body != "" {
		rd = strings.NewReader(body)
	}
	w := httptest.NewRecorder()
	h.ServeHTTP(w, httptest.NewRequest(method, "http://local"+path, rd))
	return w.Code, w.Body.String()
}

func TestDataAPIStatus(t *testing.T) {
	store := newFakeData("phone")
	mux := dataMux(store, "phone")
	steps := []struct {
		method, path, body string
		status             int
		want               string // in the body
	}{
		{"GET", "/v1/data/appdata/app/k", "", 404, `"no key app/k in bucket appdata"`},
		{"PUT", "/v1/data/appdata/app/k", "v1", 200, `"text": "v1"`},
		{"PUT", "/v1/data/appdata/app%2Fk", "v2", 200, `"text": "v2"`},
		{"GET", "/v1/data/appdata/app/k", "", 200, `"value": "djI="`},
		{"GET", "/v1/data/appdata/app%2Fk", "", 200, `"seq": 2`},
		{"PUT", "/v1/data/appdata/app%2F%2Fx%2F..", "odd", 200, `"key": "app//x/.."`},
		{"GET", "/v1/data/appdata/app%2F%2Fx%2F..", "", 200, `"text": "odd"`},
		{"PUT", "/v1/data/appdata/App/k", "v", 400, "must be APP/KEY"},
		{"GET", "/v1/data/appdata/nokey", "", 400, "must be APP/KEY"},
		{"GET", "/v1/data/appdata/", "", 400, "key must be 1-512 bytes"},
		{"GET", "/v1/data/nosuch/k", "", 400, `unknown bucket \"nosuch\"`},
		{"PUT", "/v1/data/certs/ca", "x", 403, "written by the hub only"},
		{"PUT", "/v1/data/devices/laptop", "{}", 403, "only its own record"},
		{"PUT", "/v1/data/devices/phone", "{}", 200, `"node": "phone"`},
		{"DELETE", "/v1/data/appdata/app/k", "", 200, `"deleted": true`},
		{"DELETE", "/v1/data/appdata/app/k", "", 404, `"no key app/k in bucket appdata"`},
		{"GET", "/v1/data/appdata/app/k", "", 404, "no key"},
		{"GET", "/v1/data/appdata/app/k?deleted=1", "", 200, `"value": null`},
		{"DELETE", "/v1/data/certs/ca", "", 403, "written by the hub only"},
		{"POST", "/v1/data/appdata/app/k", "v", 404, "no such endpoint"},
		{"GET", "/v1/data/nosuch", "", 400, "unknown bucket"},
		{"GET", "/v1/watch/nosuch", "", 400, "unknown bucket"},
	}
	for _, s := range steps {
		status, body := dataCall(t, mux, s.method, s.path, s.body)
		if status != s.status || !strings.Contains(body, s.want) {
			t.Errorf("%s %s: %d %s\nwant %d and %s", s.method, s.path, status, body, s.status, s.want)
		}
	}
}

func TestDataAPIStoreErrors(t *testing.T) {
	for _, tc := range []struct {
		err    error
		status int
	}{
		{nil, 503}, // no store open
		{fmt.Errorf("put: %w", zsync.ErrClosed), 503},
		{fmt.Errorf("%w: value too odd", zsync.ErrInvalid), 400},
		{fmt.Errorf("%w: not yours", zsync.ErrPermission), 403},
		{errors.New("disk on fire"), 500},
	} {
		var store *fakeData
		if tc.err != nil {
			store = newFakeData(zsync.HubNode)
			store.fail = tc.err
		}
		mux := dataMux(store, zsync.HubNode)
		for _, req := range [][3]string{
			{"GET", "/v1/data/appdata/app/k"}, {"PUT", "/v1/data/appdata/app/k", "v"}, {"DELETE", "/v1/data/appdata/app/k"},
			{"GET", "/v1/data/appdata"}, {"GET", "/v1/watch/appdata"},
		} {
			status, body := dataCall(t, mux, req[0], req[1], req[2])
			var e api.ErrorBody
			if status != tc.status || json.Unmarshal([]byte(body), &e) != nil || e.Error == "" {
				t.Errorf("store error %v: %s %s: %d %s, want %d and a JSON error", tc.err, req[0], req[1], status, body, tc.status)
			}
		}
	}
}

func TestDataAPIValueLimit(t *testing.T) {
	mux := dataMux(newFakeData("phone"), "phone")
	for _, tc := range []struct {
		size    int
		chunked bool
		status  int
	}{
		{zsync.MaxValue, false, 200},
		{zsync.MaxValue, true, 200},
		{zsync.MaxValue + 1, false, 413},
		{zsync.MaxValue + 1, true, 413},
		{0, false, 200},
	} {
		r := httptest.NewRequest("PUT", "http://local/v1/data/appdata/app/big", bytes.NewReader(make([]byte, tc.size)))
		if tc.chunked {
			r.ContentLength = -1
		}
		w := httptest.NewRecorder()
		mux.ServeHTTP(w, r)
		if w.Code != tc.status {
			t.Errorf("PUT of %d bytes (chunked %v): %d %s, want %d", tc.size, tc.chunked, w.Code, w.Body, tc.status)
		}
		if w.Code == 413 && !strings.Contains(w.Body.String(), "262144-byte limit") {
			t.Errorf("413 does not say the limit: %s", w.Body)
		}
	}
}

func TestRecordViewJSON(t *testing.T) {
	v := zsync.Version{Wall: 1700000000123, Logical: 2, Node: "phone"}
	for _, tc := range []struct {
		rec  zsync.Record
		want string
	}{
		{zsync.Record{Bucket: "appdata", Key: "app/k", Value: []byte("hi"), Version: v, Seq: 7},
			`{"bucket":"appdata","key":"app/k","value":"aGk=","text":"hi","seq":7,"version":{"time":"2023-11-14T22:13:20.123Z","logical":2,"node":"phone"}}`},
		{zsync.Record{Bucket: "appdata", Key: "app/k", Version: v},
			`{"bucket":"appdata","key":"app/k","value":"","text":"","version":{"time":"2023-11-14T22:13:20.123Z","logical":2,"node":"phone"}}`},
		{zsync.Record{Bucket: "appdata", Key: "app/k", Value: []byte{0xff, 0}, Version: v},
			`{"bucket":"appdata","key":"app/k","value":"/wA=","version":{"time":"2023-11-14T22:13:20.123Z","logical":2,"node":"phone"}}`},
		{zsync.Record{Bucket: "appdata", Key: "app/k", Deleted: true, Version: v, Seq: 9},
			`{"bucket":"appdata","key":"app/k","value":null,"deleted":true,"seq":9,"version":{"time":"2023-11-14T22:13:20.123Z","logical":2,"node":"phone"}}`},
	} {
		b, err := json.Marshal(api.NewRecordView(tc.rec))
		if err != nil || string(b) != tc.want {
			t.Errorf("%+v:\n got %s (%v)\nwant %s", tc.rec, b, err, tc.want)
		}
	}
}

// dataClient serves the data endpoints of store on a real Unix socket, as
// a daemon does, and returns a client for it.
func dataClient(t *testing.T, store *fakeData) *api.Client {
	t.Helper()
	sock := filepath.Join(t.TempDir(), "d.sock")
	ln, err := Listen(sock)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- Serve(ctx, ln, dataMux(store, store.node)) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("serve: %v", err)
		}
	})
	return api.NewClient(sock)
}

func TestDataClient(t *testing.T) {
	ctx := testCtx(t)
	store := newFakeData("phone")
	c := dataClient(t, store)

	if _, err := c.DataGet(ctx, "appdata", "app/k"); !isAPIError(err, 404, "no key app/k in bucket appdata") {
		t.Fatalf("get before put: %v", err)
	}
	put, err := c.DataPut(ctx, "appdata", "app/k", []byte("v\n"))
	if err != nil || put.Text == nil || *put.Text != "v\n" || put.Seq != 1 || put.Version.Node != "phone" {
		t.Fatalf("put: %+v, %v", put, err)
	}
	got, err := c.DataGet(ctx, "appdata", "app/k")
	if err != nil || !bytes.Equal(got.Value, []byte("v\n")) || !got.Version.Time.Equal(put.Version.Time) {
		t.Fatalf("get: %+v, %v", got, err)
	}
	if _, err := c.DataPut(ctx, "certs", "ca", []byte("x")); !isAPIError(err, 403, "hub only") {
		t.Fatalf("put to a hub-only bucket: %v", err)
	}
	if _, err := c.DataPut(ctx, "appdata", "app/big", make([]byte, zsync.MaxValue+1)); !isAPIError(err, 413, "limit") {
		t.Fatalf("put over the limit: %v", err)
	}
	del, err := c.DataDelete(ctx, "appdata", "app/k")
	if err != nil || !del.Deleted || del.Value != nil || del.Text != nil {
		t.Fatalf("delete: %+v, %v", del, err)
	}
	if _, err := c.DataDelete(ctx, "appdata", "app/k"); !isAPIError(err, 404, "no key") {
		t.Fatalf("delete again: %v", err)
	}
}

func isAPIError(err error, status int, msg string) bool {
	var ae *api.APIError
	return errors.As(err, &ae) && ae.Status == status && strings.Contains(ae.Message, msg)
}

func TestDataClientList(t *testing.T) {
	ctx := testCtx(t)
	store := newFakeData("phone")
	c := dataClient(t, store)
	keys := func(prefix string) ([]string, error) {
		var ks []string
		err := c.DataList(ctx, "appdata", prefix, func(v api.RecordView) error {
			ks = append(ks, v.Key)
			return nil
		})
		return ks, err
	}
	if ks, err := keys(""); err != nil || len(ks) != 0 {
		t.Fatalf("empty listing: %v, %v", ks, err)
	}
	const n = 3000 // well over the response writer's buffer
	for i := range n {
		if _, err := store.Put("appdata", fmt.Sprintf("app/%05d", i), []byte("v")); err != nil {
			t.Fatal(err)
		}
	}
	store.Put("appdata", "other/x", nil)
	store.Delete("appdata", "app/00007")
	ks, err := keys("app/")
	if err != nil || len(ks) != n-1 || !slices.IsSorted(ks) || slices.Contains(ks, "app/00007") {
		t.Fatalf("listing: %d keys, sorted %v, err %v", len(ks), slices.IsSorted(ks), err)
	}
	if ks, err := keys("other/"); err != nil || !slices.Equal(ks, []string{"other/x"}) {
		t.Fatalf("listing under other/: %v, %v", ks, err)
	}

	stop := errors.New("enough")
	seen := 0
	err = c.DataList(ctx, "appdata", "", func(api.RecordView) error {
		if seen++; seen == 10 {
			return stop
		}
		return nil
	})
	if err != stop || seen != 10 {
		t.Fatalf("stopping a listing: %v after %d", err, seen)
	}

	store.listErr = errors.New("disk on fire")
	ks, err = keys("other/")
	if !isAPIError(err, 200, "disk on fire") || len(ks) != 1 {
		t.Fatalf("listing failing midway: %v, %v", ks, err)
	}
	if _, err := keys("none/"); !isAPIError(err, 500, "disk on fire") {
		t.Fatalf("listing failing at once: %v", err)
	}
	if err := c.DataList(ctx, "nosuch", "", func(api.RecordView) error { return nil }); !isAPIError(err, 400, "unknown bucket") {
		t.Fatalf("listing an unknown bucket: %v", err)
	}
}

// watchLines runs DataWatch in the background and hands over each record.
func watchLines(ctx context.Context, c *api.Client, prefix string, changesOnly bool) (<-chan api.RecordView, <-chan error) {
	recs, errc := make(chan api.RecordView, 100), make(chan error, 1)
	go func() {
		errc <- c.DataWatch(ctx, "appdata", prefix, changesOnly, func(v api.RecordView) error {
			recs <- v
			return nil
		})
	}()
	return recs, errc
}

func nextRecord(t *testing.T, recs <-chan api.RecordView) api.RecordView {
	t.Helper()
	select {
	case v := <-recs:
		return v
	case <-time.After(10 * time.Second):
		t.Fatal("no record")
	}
	return api.RecordView{}
}

func TestDataClientWatch(t *testing.T) {
	store := newFakeData("phone")
	c := dataClient(t, store)
	store.Put("appdata", "app/a", []byte("1"))
	store.Put("appdata", "app/b", []byte("2"))
	store.Put("appdata", "other/x", []byte("3"))

	ctx, cancel := context.WithCancel(testCtx(t))
	recs, errc := watchLines(ctx, c, "app/", false)
	if a, b := nextRecord(t, recs), nextRecord(t, recs); a.Key != "app/a" || b.Key != "app/b" {
		t.Fatalf("initial records: %s, %s", a.Key, b.Key)
	}
	store.Put("appdata", "other/y", []byte("not watched"))
	store.Put("appdata", "app/c", []byte("4"))
	store.Delete("appdata", "app/a")
	if v := nextRecord(t, recs); v.Key != "app/c" || *v.Text != "4" {
		t.Fatalf("first change: %+v", v)
	}
	if v := nextRecord(t, recs); v.Key != "app/a" || !v.Deleted {
		t.Fatalf("second change: %+v", v)
	}
	cancel()
	if err := <-errc; !errors.Is(err, context.Canceled) {
		t.Fatalf("watch after cancel: %v", err)
	}
	// The daemon notices the client left and ends the subscription.
	select {
	case <-store.closed:
	case <-time.After(10 * time.Second):
		t.Fatal("the daemon kept the watch of a client that left")
	}
	if n := store.open(); n != 0 {
		t.Fatalf("%d watches still open", n)
	}
}

func TestDataClientWatchChangesOnly(t *testing.T) {
	store := newFakeData("phone")
	c := dataClient(t, store)
	store.Put("appdata", "app/a", []byte("old"))
	recs, errc := watchLines(testCtx(t), c, "", true)
	<-store.watched
	store.Put("appdata", "app/b", []byte("new"))
	if v := nextRecord(t, recs); v.Key != "app/b" {
		t.Fatalf("changes only: first record %+v", v)
	}
	store.endWatches(zsync.ErrWatchOverflow)
	if err := <-errc; !isAPIError(err, 200, zsync.ErrWatchOverflow.Error()) {
		t.Fatalf("watch ended by the store: %v", err)
	}
}

func TestDataAPIWatchLines(t *testing.T) {
	store := newFakeData("phone")
	store.Put("appdata", "app/a", []byte("1"))
	store.listErr = errors.New("disk on fire")
	status, body := dataCall(t, dataMux(store, "phone"), "GET", "/v1/watch/appdata?prefix=app/", "")
	lines := strings.Split(strings.TrimSuffix(body, "\n"), "\n")
	if status != 200 || len(lines) != 2 || !strings.HasPrefix(lines[0], `{"bucket":"appdata","key":"app/a",`) || lines[1] != `{"error":"disk on fire"}` {
		t.Fatalf("watch whose listing fails: %d\n%s", status, body)
	}
	if store.open() != 0 {
		t.Fatal("watch left open")
	}
}

// testCtx bounds a test's waits generously: they end on events, and the
// deadline only stops a test that would otherwise hang.
func testCtx(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	t.Cleanup(cancel)
	return ctx
}
