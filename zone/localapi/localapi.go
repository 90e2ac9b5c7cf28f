// Package localapi is the serving side of the daemons' local API, shared
// by the hub and the device: the Unix socket (private to its user), the
// HTTP server on it, JSON answers and errors in one shape, and long polls
// over a Notifier. Its clients' side is package zone/api.
package localapi

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"sync"
	"time"

	"github.com/pzone/pzone/storefile"
	"github.com/pzone/pzone/zone/api"
	"github.com/pzone/pzone/zone/stores"
	"github.com/pzone/pzone/zone/wire"
)

// The daemons' local API, the serving side: HTTP with JSON bodies over a
// Unix socket in the data directory, mode 0600. Its types and the Go
// client are package zone/api. See docs/PROTOCOL.md, "Local API".

// maxSocketPath is the portable limit on a Unix socket path (sun_path is
// 108 bytes on Linux, 104 on BSDs).
const maxSocketPath = 104

// MaxBody bounds a request body on the local API.
const MaxBody = wire.MaxCallBody

// CheckDataDir makes sure dir can hold a daemon: it exists or can be
// created (0700), belongs to this user and nobody else may write it, is
// writable, and is short enough for its Unix socket.
// Commands that change something elsewhere first (pzp pair spends an
// invite) call it beforehand, so they do not fail after the fact.
func CheckDataDir(dir, socketName string) error {
	if sock := bindPath(api.SocketPath(dir, socketName)); len(sock) >= maxSocketPath {
		return fmt.Errorf("data directory %s is too long: its socket path would be %d bytes, over the %d-byte limit of Unix sockets; use a shorter --data", dir, len(sock), maxSocketPath)
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return fmt.Errorf("data directory %s cannot be created: %w", dir, err)
	}
	if err := storefile.CheckDir(dir); err != nil {
		return err
	}
	probe, err := os.CreateTemp(dir, ".probe-*")
	if err != nil {
		return fmt.Errorf("data directory %s is not writable: %w", dir, err)
	}
	probe.Close()
	return os.Remove(probe.Name())
}

// Listen binds the local API socket. A live daemon already answering
// there is an error; a stale socket file left by a crash is replaced.
//
// The socket is bound in a new directory only this user can enter, made
// 0600 there, and only then renamed into place: bound where it belongs,
// it would be connectable by anyone for the moment between bind and
// chmod (its mode comes from the umask, which may be 000).
func Listen(path string) (net.Listener, error) { return ListenPrepared(path, nil) }

// ListenPrepared is Listen calling prepare, if set, once no other daemon
// answers on path and before the socket appears there: what a client
// reads when it finds the socket (the CLI's credential) is then in place.
func ListenPrepared(path string, prepare func() error) (net.Listener, error) {
	dir := filepath.Dir(path)
	if len(bindPath(path)) >= maxSocketPath {
		return nil, fmt.Errorf("socket path %s is %d bytes, over the %d-byte limit of Unix sockets: use a shorter --data directory", path, len(path), maxSocketPath)
	}
	if err := storefile.CheckDir(dir); err != nil {
		return nil, err
	}
	if c, err := net.DialTimeout("unix", path, time.Second); err == nil {
		c.Close()
		return nil, fmt.Errorf("another daemon is already running with this data directory (it answers on %s)", path)
	}
	tmp := bindPath(path)
	private := filepath.Dir(tmp)
	os.RemoveAll(private) // left by a crash between bind and rename
	if err := os.Mkdir(private, 0o700); err != nil {
		return nil, fmt.Errorf("make a private place for the socket: %w", err)
	}
	defer os.RemoveAll(private)
	if err := os.Chmod(private, 0o700); err != nil { // whatever the umask took
		return nil, err
	}
	ln, err := net.Listen("unix", tmp)
	if err != nil {
		return nil, fmt.Errorf("listen on %s: %w", path, err)
	}
	ul := ln.(*net.UnixListener)
	ul.SetUnlinkOnClose(false) // the file moves; the daemon removes it at exit
	if err := os.Chmod(tmp, 0o600); err != nil {
		ln.Close()
		return nil, err
	}
	if prepare != nil {
		if err := prepare(); err != nil {
			ln.Close()
			return nil, err
		}
	}
	if err := os.Rename(tmp, path); err != nil {
		ln.Close()
		return nil, fmt.Errorf("put the socket in place at %s: %w", path, err)
	}
	return ln, nil
}

// bindPath is where Listen first binds the socket at path: inside a
// directory of its own, so that only this user can reach it.
func bindPath(path string) string {
	return filepath.Join(filepath.Dir(path), "."+filepath.Base(path)+".new", "s")
}

// StopErr is the error a daemon's run returns: once ctx has ended, the
// errors of things closing under it (a cancelled context, a closed
// listener) are no error.
func StopErr(ctx context.Context, err error) error {
	if ctx.Err() != nil && (err == nil || errors.Is(err, context.Canceled) || errors.Is(err, net.ErrClosed)) {
		return nil
	}
	return err
}

// Serve serves h on ln until ctx ends.
func Serve(ctx context.Context, ln net.Listener, h http.Handler) error {
	// Requests live within ctx, so that streams (watches, long polls) end
	// when the daemon stops instead of holding up its shutdown.
	srv := &http.Server{Handler: h, ReadHeaderTimeout: 10 * time.Second, BaseContext: func(net.Listener) context.Context { return ctx }, ConnContext: connContext}
	errc := make(chan error, 1)
	go func() { errc <- srv.Serve(ln) }()
	select {
	case err := <-errc:
		return err
	case <-ctx.Done():
		sctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		srv.Shutdown(sctx)
		<-errc
		return nil
	}
}

func WriteJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	enc.Encode(v)
}

// WriteErr answers err with status; a full disk, whatever the status,
// is 507 and says so.
func WriteErr(w http.ResponseWriter, status int, err error) {
	if stores.IsDiskFull(err) {
		status = http.StatusInsufficientStorage
		err = stores.ExplainWrite(err)
	}
	WriteJSON(w, status, api.ErrorBody{Error: err.Error()})
}

// NotFound answers unknown paths in the same JSON shape as other errors.
func NotFound(w http.ResponseWriter, r *http.Request) {
	WriteErr(w, http.StatusNotFound, fmt.Errorf("no such endpoint: %s %s", r.Method, r.URL.Path))
}

// ErrStatus maps an error to its HTTP status: the sentinels listed are the
// client's doing (404, 409); anything else is the daemon's own failure (500).
func ErrStatus(err error, notFoundErrs, conflictErrs []error) int {
	for _, e := range notFoundErrs {
		if errors.Is(err, e) {
			return http.StatusNotFound
		}
	}
	for _, e := range conflictErrs {
		if errors.Is(err, e) {
			return http.StatusConflict
		}
	}
	return http.StatusInternalServerError
}

func ReadJSON(r *http.Request, v any) error {
	// Unknown fields are ignored: a newer client may send fields an older
	// daemon does not know yet.
	dec := json.NewDecoder(io.LimitReader(r.Body, MaxBody))
	if err := dec.Decode(v); err != nil {
		return fmt.Errorf("bad request body: %w", err)
	}
	return nil
}

// Notifier versions a piece of state so API clients can long-poll for
// change instead of polling.
type Notifier struct {
	mu  sync.Mutex
	ver uint64
	ch  chan struct{}
}

// Bump marks a change: every Wait for an older version returns.
func (n *Notifier) Bump() {
	n.mu.Lock()
	n.ver++
	if n.ch != nil {
		close(n.ch)
		n.ch = nil
	}
	n.mu.Unlock()
}

// Changed returns the current version and a channel closed at the next
// Bump, for waiting in a select.
func (n *Notifier) Changed() (uint64, <-chan struct{}) {
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.ch == nil {
		n.ch = make(chan struct{})
	}
	return n.ver, n.ch
}

// Wait returns the current version once it differs from since, or when
// ctx ends (then with the unchanged version).
func (n *Notifier) Wait(ctx context.Context, since uint64) uint64 {
	for {
		n.mu.Lock()
		v := n.ver
		if v != since {
			n.mu.Unlock()
			return v
		}
		if n.ch == nil {
			n.ch = make(chan struct{})
		}
		ch := n.ch
		n.mu.Unlock()
		select {
		case <-ch:
		case <-ctx.Done():
			return v
		}
	}
}

// MaxLongPoll bounds one long-poll request; clients ask again.
const MaxLongPoll = 60 * time.Second

// LongPoll waits, if the request asks with ?wait=VERSION, until n moves
// past it (or ?timeout / MaxLongPoll passes), and returns the version to
// report.
func LongPoll(r *http.Request, n *Notifier) uint64 {
	q := r.URL.Query()
	if !q.Has("wait") {
		return n.Wait(context.Background(), ^uint64(0))
	}
	var since uint64
	fmt.Sscan(q.Get("wait"), &since)
	d := MaxLongPoll
	if t, err := time.ParseDuration(q.Get("timeout")); err == nil && t > 0 && t < d {
		d = t
	}
	ctx, cancel := context.WithTimeout(r.Context(), d)
	defer cancel()
	return n.Wait(ctx, since)
}
