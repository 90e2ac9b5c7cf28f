package api

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"time"
	"unicode/utf8"

	zsync "github.com/pzone/pzone/sync"
)

// RecordView is a record as the local API shows it.
type RecordView struct {
	Bucket string `json:"bucket"`
	Key    string `json:"key"`
	// Value is base64 in JSON; null for a deletion.
	Value []byte `json:"value"`
	// Text is the value again when it is valid UTF-8 (possibly empty).
	Text    *string     `json:"text,omitempty"`
	Deleted bool        `json:"deleted,omitempty"`
	Seq     uint64      `json:"seq,omitempty"` // 0: not yet accepted by the hub
	Version VersionView `json:"version"`
	// Verdict is the hub's answer to a device's edit made with
	// ?verdict=DURATION: "accepted", "superseded" (a newer edit of the
	// key won) or "pending" (no answer yet: the device is offline, or the
	// wait ran out). A refused edit is an error (409) instead.
	Verdict string `json:"verdict,omitempty"`
}

// VersionView is a record's version (zsync.Version).
type VersionView struct {
	Time    time.Time `json:"time"`
	Logical uint32    `json:"logical"`
	Node    string    `json:"node"`
}

// NewRecordView shows r.
func NewRecordView(r zsync.Record) RecordView {
	v := RecordView{Bucket: r.Bucket, Key: r.Key, Deleted: r.Deleted, Seq: r.Seq,
		Version: VersionView{Time: r.Version.Time(), Logical: r.Version.Logical, Node: r.Version.Node}}
	if !r.Deleted {
		// An empty value is "", not null: only a deletion has no value.
		v.Value = r.Value
		if v.Value == nil {
			v.Value = []byte{}
		}
		if utf8.Valid(r.Value) {
			t := string(r.Value)
			v.Text = &t
		}
	}
	return v
}

func dataPath(bucket, key string) string {
	// The key is one escaped segment, slashes included, so keys with "//",
	// "." or ".." survive the server's path cleaning.
	return "/v1/data/" + url.PathEscape(bucket) + "/" + url.PathEscape(key)
}

// DataGet reads the live record of (bucket, key); an absent or deleted key
// is an *APIError with Status 404.
func (c *Client) DataGet(ctx context.Context, bucket, key string) (*RecordView, error) {
	var v RecordView
	if err := c.Do(ctx, http.MethodGet, dataPath(bucket, key), nil, &v); err != nil {
		return nil, err
	}
	return &v, nil
}

// DataPut writes value under (bucket, key) and returns the new record.
func (c *Client) DataPut(ctx context.Context, bucket, key string, value []byte) (*RecordView, error) {
	var v RecordView
	if err := c.DoRaw(ctx, http.MethodPut, dataPath(bucket, key), "application/octet-stream", bytes.NewReader(value), &v); err != nil {
		return nil, err
	}
	return &v, nil
}

// DataPutVerdict is DataPut that, on a device whose hub is online, waits
// up to wait for the hub's verdict (RecordView.Verdict). An edit the hub
// refused is an *APIError with Status 409 saying why.
func (c *Client) DataPutVerdict(ctx context.Context, bucket, key string, value []byte, wait time.Duration) (*RecordView, error) {
	var v RecordView
	path := dataPath(bucket, key) + "?verdict=" + url.QueryEscape(wait.String())
	if err := c.DoRaw(ctx, http.MethodPut, path, "application/octet-stream", bytes.NewReader(value), &v); err != nil {
		return nil, err
	}
	return &v, nil
}

// DataDelete deletes (bucket, key) and returns the tombstone; a key with no
// live record is an *APIError with Status 404.
func (c *Client) DataDelete(ctx context.Context, bucket, key string) (*RecordView, error) {
	var v RecordView
	if err := c.Do(ctx, http.MethodDelete, dataPath(bucket, key), nil, &v); err != nil {
		return nil, err
	}
	return &v, nil
}

func dataQuery(path string, q url.Values) string {
	if len(q) == 0 {
		return path
	}
	return path + "?" + q.Encode()
}

// DataList calls fn for every live record of bucket under prefix, in key
// order, as the daemon sends them. An error from fn stops the listing and
// is returned.
func (c *Client) DataList(ctx context.Context, bucket, prefix string, fn func(RecordView) error) error {
	q := url.Values{}
	if prefix != "" {
		q.Set("prefix", prefix)
	}
	resp, err := c.stream(ctx, dataQuery("/v1/data/"+url.PathEscape(bucket), q))
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	dec := json.NewDecoder(resp.Body)
	if err := expectDelim(dec, '{'); err != nil {
		return err
	}
	for dec.More() {
		name, err := dec.Token()
		if err != nil {
			return fmt.Errorf("read listing: %w", err)
		}
		switch name {
		case "records":
			if err := expectDelim(dec, '['); err != nil {
				return err
			}
			for dec.More() {
				var v RecordView
				if err := dec.Decode(&v); err != nil {
					return fmt.Errorf("read listing: %w", err)
				}
				if err := fn(v); err != nil {
					return err
				}
			}
			if err := expectDelim(dec, ']'); err != nil {
				return err
			}
		case "error":
			var msg string
			if err := dec.Decode(&msg); err != nil {
				return fmt.Errorf("read listing: %w", err)
			}
			return &APIError{Status: resp.StatusCode, Message: msg}
		default: // a member a newer daemon added
			var skip json.RawMessage
			if err := dec.Decode(&skip); err != nil {
				return fmt.Errorf("read listing: %w", err)
			}
		}
	}
	return expectDelim(dec, '}')
}

func expectDelim(dec *json.Decoder, want json.Delim) error {
	t, err := dec.Token()
	if err != nil {
		return fmt.Errorf("read listing: %w", err)
	}
	if t != want {
		return fmt.Errorf("read listing: got %v, want %v", t, want)
	}
	return nil
}

// DataWatch calls fn for the live records of bucket under prefix (unless
// changesOnly), then for every change, deletions included, as they come.
// It returns when ctx ends (ctx.Err()), when fn returns an error (that
// error), or when the daemon ends the watch (an *APIError saying why, for
// instance that the watcher fell behind).
func (c *Client) DataWatch(ctx context.Context, bucket, prefix string, changesOnly bool, fn func(RecordView) error) error {
	q := url.Values{}
	if prefix != "" {
		q.Set("prefix", prefix)
	}
	if changesOnly {
		q.Set("changes", "1")
	}
	resp, err := c.stream(ctx, dataQuery("/v1/watch/"+url.PathEscape(bucket), q))
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	dec := json.NewDecoder(resp.Body)
	for {
		var line struct {
			RecordView
			Error string `json:"error"`
		}
		if err := dec.Decode(&line); err != nil {
			if ctx.Err() != nil {
				return ctx.Err()
			}
			if errors.Is(err, io.EOF) {
				return errors.New("the daemon ended the watch (is it stopping?)")
			}
			return fmt.Errorf("read watch: %w", err)
		}
		if line.Error != "" {
			return &APIError{Status: resp.StatusCode, Message: line.Error}
		}
		if err := fn(line.RecordView); err != nil {
			return err
		}
	}
}

// ImportLine is one line of POST /v1/import. A RecordView line (as a watch
// prints it) is one too; its other fields are ignored.
type ImportLine struct {
	// Bucket, if set, overrides the request's bucket for this line.
	Bucket string `json:"bucket,omitempty"`
	Key    string `json:"key"`
	// Text or Value is the value, as text or as base64. A line may give
	// both only when they hold the same bytes (RecordView does).
	Text  *string `json:"text,omitempty"`
	Value *[]byte `json:"value,omitempty"`
	// Deleted: delete the key (no value). A key that holds nothing is
	// left alone and not counted.
	Deleted bool `json:"deleted,omitempty"`
}

// ImportResult is the answer of POST /v1/import; on a refusal it is also
// in the error body, beside "error".
type ImportResult struct {
	// Applied counts the records written: every line before Line, less
	// deletions of keys that held nothing.
	Applied int `json:"applied"`
	// Line is the 1-based line that stopped the import (refusals only;
	// 0 when no one line is to blame, as for a store failure).
	Line int `json:"line,omitempty"`
}

// ImportError is the body of a refused import.
type ImportError struct {
	Error string `json:"error"`
	ImportResult
}

// DataImport imports NDJSON records from r (ImportLine, one a line; lines
// without a bucket go to appdata) and returns how many were written.
func (c *Client) DataImport(ctx context.Context, r io.Reader) (int, error) {
	n, _, err := c.DataImportInto(ctx, "", r)
	return n, err
}

// DataImportInto is DataImport with bucket for lines that name none
// ("": appdata). On a refusal it also returns the line that stopped the
// import (0 if none did), and the count is of the records written before
// it.
func (c *Client) DataImportInto(ctx context.Context, bucket string, r io.Reader) (applied, line int, err error) {
	q := url.Values{}
	if bucket != "" {
		q.Set("bucket", bucket)
	}
	resp, err := c.send(ctx, http.MethodPost, dataQuery("/v1/import", q), "application/x-ndjson", r)
	if err != nil {
		return 0, 0, err
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(io.LimitReader(resp.Body, maxBody))
	if err != nil {
		return 0, 0, err
	}
	var ans ImportError
	json.Unmarshal(data, &ans)
	if resp.StatusCode/100 != 2 {
		return ans.Applied, ans.Line, answerError(resp, data)
	}
	return ans.Applied, 0, nil
}
