// Package api is the daemons' local API as its clients see it: the
// request and response types of pzh.sock and pzp.sock (HTTP with JSON
// bodies over a Unix socket in the data directory, mode 0600), and Client,
// the Go client that the CLI and applications use. It holds no daemon
// state: the daemons import it for the types they answer with, never the
// other way round. See docs/PROTOCOL.md, "Local API".
package api

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/pzone/pzone/zone/wire"
)

// maxBody bounds a body read from the local API.
const maxBody = wire.MaxCallBody

// Socket names inside a data directory.
const (
	HubSocketName  = "pzh.sock"
	PeerSocketName = "pzp.sock"
)

// PeerStoreName is a device's own store in its data directory: its
// presence says the directory holds a paired device.
const PeerStoreName = "pzp.db"

// ErrNotRunning: no daemon answers on the socket.
var ErrNotRunning = errors.New("daemon is not running")

// ErrorBody is the JSON body of every non-2xx answer.
type ErrorBody struct {
	Error string `json:"error"`
}

// send makes one request with a body of type contentType (if body is
// non-nil); a daemon that is not there is ErrNotRunning.
func (c *Client) send(ctx context.Context, method, path, contentType string, body io.Reader) (*http.Response, error) {
	req, err := http.NewRequestWithContext(ctx, method, "http://local"+path, body)
	if err != nil {
		return nil, err
	}
	if body != nil {
		req.Header.Set("Content-Type", contentType)
	}
	for retried := false; ; retried = true {
		cred := c.cred()
		if cred != "" {
			req.Header.Set("Authorization", "Bearer "+cred)
		}
		resp, err := c.hc.Do(req)
		if err != nil {
			return nil, c.dialErr(err)
		}
		if retried || !c.credChanged(resp, cred) || (body != nil && req.GetBody == nil) {
			return resp, nil
		}
		resp.Body.Close()
		if body != nil {
			if req.Body, err = req.GetBody(); err != nil {
				return nil, err
			}
		}
	}
}

// credChanged says a refusal came from a credential file read just as a
// daemon started: read before the daemon wrote its own, while the socket
// it then reached was the new one. Asked again, the file has changed.
func (c *Client) credChanged(resp *http.Response, sent string) bool {
	return resp.StatusCode == http.StatusUnauthorized && c.credFile != "" && c.cred() != sent
}

// dialErr says ErrNotRunning for a socket that nothing answers on.
func (c *Client) dialErr(err error) error {
	if errors.Is(err, syscall.ENOENT) || errors.Is(err, syscall.ECONNREFUSED) {
		return fmt.Errorf("%w (nothing answers on %s)", ErrNotRunning, c.socket)
	}
	return err
}

// Fetch copies the body of a non-JSON answer (a pprof profile) to w.
func (c *Client) Fetch(ctx context.Context, path string, w io.Writer) error {
	resp, err := c.send(ctx, http.MethodGet, path, "", nil)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode/100 != 2 {
		return &APIError{Status: resp.StatusCode, Message: fmt.Sprintf("daemon answered %s", resp.Status)}
	}
	_, err = io.Copy(w, resp.Body)
	return err
}

// Client talks to a daemon's local API.
type Client struct {
	socket     string
	credential string
	credFile   string // read at each request, if set
	hc         *http.Client

	// The channel for calls and messages (channelclient.go).
	chmu      sync.Mutex
	ch        *appChannel
	noChannel bool          // the daemon has none: HTTP requests instead
	chIdle    time.Duration // closed once unused this long (WithChannelIdle)
}

// cred is the credential to present, if any.
func (c *Client) cred() string {
	if c.credFile != "" {
		b, err := os.ReadFile(c.credFile)
		if err != nil {
			return ""
		}
		return strings.TrimSpace(string(b))
	}
	return c.credential
}

// Option sets up a Client.
type Option func(*Client)

// WithCredential makes every request present an app's credential (what
// pzp app add printed): the device then knows the client as that app.
// Without one, a device's API knows it as app anonymous, or refuses it.
func WithCredential(cred string) Option {
	return func(c *Client) { c.credential = strings.TrimSpace(cred) }
}

// WithCredentialFile is WithCredential with the credential read from
// path at every request, so a credential that changes (the one a device's
// pzp writes for its CLI at each start) is always the current one; with
// path missing, requests present none.
func WithCredentialFile(path string) Option {
	return func(c *Client) { c.credFile = path }
}

// DefaultChannelIdle is how long a Client keeps its connection for calls
// and messages open with nothing in flight: as long as net/http keeps an
// idle connection.
const DefaultChannelIdle = 90 * time.Second

// WithChannelIdle sets how long the client's connection for calls and
// messages stays open with nothing in flight (DefaultChannelIdle); the
// next call opens another.
func WithChannelIdle(d time.Duration) Option {
	return func(c *Client) {
		if d > 0 {
			c.chIdle = d
		}
	}
}

// NewClient returns a client for the socket at path.
func NewClient(path string, opts ...Option) *Client {
	c := &Client{socket: path, chIdle: DefaultChannelIdle, hc: &http.Client{Transport: &http.Transport{
		DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			var d net.Dialer
			return d.DialContext(ctx, "unix", path)
		},
		// Many goroutines of one app share a client: each keeps its
		// connection instead of dialling one per request past two.
		MaxIdleConnsPerHost: 64,
		IdleConnTimeout:     90 * time.Second,
	}}}
	for _, o := range opts {
		o(c)
	}
	return c
}

// APIError is a refusal from the daemon. Status is the HTTP status; it is
// 200 for an error that ended a streamed answer (a listing or a watch).
type APIError struct {
	Status  int
	Message string
}

func (e *APIError) Error() string { return e.Message }

// Do sends a request with an optional JSON body and decodes the JSON answer
// into out (if non-nil).
func (c *Client) Do(ctx context.Context, method, path string, in, out any) error {
	var body io.Reader
	if in != nil {
		b, err := json.Marshal(in)
		if err != nil {
			return err
		}
		body = bytes.NewReader(b)
	}
	return c.DoRaw(ctx, method, path, "application/json", body, out)
}

// DoRaw sends body, of type contentType (a value, an NDJSON import, or
// bytes that are not JSON at all), and decodes the JSON answer into out
// (if non-nil).
func (c *Client) DoRaw(ctx context.Context, method, path, contentType string, body io.Reader, out any) error {
	resp, err := c.send(ctx, method, path, contentType, body)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(io.LimitReader(resp.Body, 64<<20))
	if err != nil {
		return err
	}
	if resp.StatusCode/100 != 2 {
		return answerError(resp, data)
	}
	if out == nil {
		return nil
	}
	return json.Unmarshal(data, out)
}

// Download copies the answer to a GET of path, bytes as they come, to w;
// a refusal is an *APIError.
func (c *Client) Download(ctx context.Context, path string, w io.Writer) (int64, error) {
	resp, err := c.stream(ctx, path)
	if err != nil {
		return 0, err
	}
	defer resp.Body.Close()
	return io.Copy(w, resp.Body)
}

// stream sends a GET whose answer the caller reads as it arrives (and
// closes); a refusal is an *APIError.
func (c *Client) stream(ctx context.Context, path string) (*http.Response, error) {
	resp, err := c.send(ctx, http.MethodGet, path, "", nil)
	if err != nil {
		return nil, err
	}
	if resp.StatusCode/100 != 2 {
		defer resp.Body.Close()
		data, err := io.ReadAll(io.LimitReader(resp.Body, maxBody))
		if err != nil {
			return nil, err
		}
		return nil, answerError(resp, data)
	}
	return resp, nil
}

// answerError is the *APIError of a non-2xx answer whose body is data.
func answerError(resp *http.Response, data []byte) error {
	var e ErrorBody
	if json.Unmarshal(data, &e) != nil || e.Error == "" {
		e.Error = fmt.Sprintf("daemon answered %s", resp.Status)
	}
	return &APIError{Status: resp.StatusCode, Message: e.Error}
}

// SocketPath is where the daemon of kind ("pzh" or "pzp") listens in dir.
func SocketPath(dir, name string) string { return filepath.Join(dir, name) }
