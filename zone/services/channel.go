package services

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"sync"
	"time"

	"github.com/pzone/pzone/zone/api"
	"github.com/pzone/pzone/zone/appid"
	"github.com/pzone/pzone/zone/localapi"
	"github.com/pzone/pzone/zone/session"
	"github.com/pzone/pzone/zone/wire"
)

// The daemon's side of app channels (api/channel.go; docs/PROTOCOL.md,
// "App channels"): one upgraded connection carrying an app's calls,
// messages, the services it serves, their events and its replies.

// Caller makes a call (kind wire.CallRequest) or sends a message for app
// on this node: the device's router. It returns the call's result, or for
// a message what became of it; a refusal is an HTTP status and why.
type Caller func(ctx context.Context, app string, kind wire.CallKind, req api.CallRequestBody) (result []byte, sent *api.SendResult, status int, err error)

// maxChannelCalls bounds the calls and messages in flight on one channel:
// past it, an app is told to wait for some to end.
const maxChannelCalls = 1024

// isChannelUpgrade reports whether r asks to become an app's channel.
func isChannelUpgrade(r *http.Request) bool {
	return headerHas(r.Header, "Connection", "upgrade") && headerHas(r.Header, "Upgrade", api.ChannelProtocol)
}

// appChannel is one app's channel, on the daemon.
type appChannel struct {
	sh      *Host
	app     string // "" on pzh.sock: the node's operator
	call    Caller
	publish func(app string, info api.ServiceInfo) error
	log     *slog.Logger
	conn    net.Conn
	ctx     context.Context // the channel's life
	cancel  context.CancelFunc
	recheck func() error

	w api.ChannelWriter

	mu     sync.Mutex
	calls  map[uint64]context.CancelFunc
	serves map[uint64]*listener
	wg     sync.WaitGroup
}

// serveChannel serves GET /v1/channel: the connection becomes the app's
// channel until either side closes it or the daemon stops.
func serveChannel(w http.ResponseWriter, r *http.Request, sh *Host, appOf func(*http.Request) (string, error), publish func(string, api.ServiceInfo) error, call Caller, log *slog.Logger) {
	if !isChannelUpgrade(r) {
		localapi.WriteErr(w, http.StatusBadRequest, fmt.Errorf("open a channel with an HTTP upgrade: Connection: Upgrade, Upgrade: %s", api.ChannelProtocol))
		return
	}
	hj, ok := w.(http.Hijacker)
	if !ok {
		localapi.WriteErr(w, http.StatusInternalServerError, errors.New("this connection cannot be upgraded"))
		return
	}
	app, err := appOf(r)
	if err != nil {
		localapi.WriteErr(w, http.StatusForbidden, err)
		return
	}
	conn, brw, err := hj.Hijack()
	if err != nil {
		return
	}
	conn.SetWriteDeadline(time.Now().Add(api.ChannelWriteTimeout))
	if _, err := fmt.Fprintf(conn, "HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: %s\r\n\r\n", api.ChannelProtocol); err != nil {
		conn.Close()
		return
	}
	// The request's context ends with the daemon's local API, and so
	// does the channel.
	ctx, cancel := context.WithCancel(r.Context())
	ch := &appChannel{sh: sh, app: app, call: call, publish: publish, log: log, conn: conn, w: api.ChannelWriter{Conn: conn}, ctx: ctx, cancel: cancel,
		recheck: func() error { return appid.Recheck(r.Context()) },
		calls:   map[uint64]context.CancelFunc{}, serves: map[uint64]*listener{}}
	stop := context.AfterFunc(ctx, func() { conn.Close() })
	defer stop()
	ch.run(brw.Reader)
}

// run serves the channel until it ends, then ends what the app had going
// on it. Its frames are read by one goroutine at a time (read).
func (ch *appChannel) run(br *bufio.Reader) {
	ch.wg.Add(1)
	ch.read(br)
	<-ch.ctx.Done()
	ch.conn.Close()
	ch.mu.Lock()
	for _, l := range ch.serves {
		ch.sh.stop(l)
	}
	ch.serves = nil
	ch.mu.Unlock()
	ch.wg.Wait()
}

// read reads the app's frames and acts on them until the channel ends,
// or until a call: then it leaves the reading to another goroutine and
// makes the call itself, sparing a call's path the wake-up of another.
func (ch *appChannel) read(br *bufio.Reader) {
	defer ch.wg.Done()
	for {
		f, err := api.ReadChannelFrame(br)
		if err != nil {
			if errors.Is(err, api.ErrChannelFrame) {
				ch.log.Warn("app channel closed: a bad frame", "app", ch.app, "err", err)
			}
			ch.cancel()
			return
		}
		if err := ch.recheck(); err != nil {
			ch.result(f.ID, http.StatusUnauthorized, err)
			ch.cancel()
			return
		}
		switch f.Op {
		case api.OpCall, api.OpSend:
			ctx, cancel, ok := ch.admitCall(f)
			if !ok {
				continue
			}
			ch.wg.Add(1)
			session.Go(func() { ch.read(br) })
			ch.makeCall(ctx, cancel, f)
			return
		case api.OpCancel:
			ch.mu.Lock()
			if cancel := ch.calls[f.ID]; cancel != nil {
				cancel()
			}
			ch.mu.Unlock()
		case api.OpServe:
			ch.serve(f)
		case api.OpUnserve:
			ch.mu.Lock()
			l := ch.serves[f.ID]
			delete(ch.serves, f.ID)
			ch.mu.Unlock()
			if l != nil {
				ch.sh.stop(l)
			}
		case api.OpReply:
			rep := api.Reply{Result: f.Body, Error: f.Error}
			if rep.Error == "" && len(rep.Result) > 0 && !json.Valid(rep.Result) {
				rep = api.Reply{Error: "the service's result is not JSON"}
			}
			// A reply to a call that is over (answered, past its
			// deadline, or not this app's) has no one to go to.
			ch.sh.answer(f.CallID, ch.app, rep)
		default:
			ch.result(f.ID, http.StatusBadRequest, fmt.Errorf("unknown channel op %d", f.Op))
		}
	}
}

// write sends one frame to the app, in one write; a channel that cannot
// take it is closed.
func (ch *appChannel) write(f *api.ChannelFrame) error {
	err := ch.w.Write(f)
	if err != nil && !errors.Is(err, api.ErrChannelFrame) {
		ch.cancel()
	}
	return err
}

// result answers request id with a refusal, or (status 200, err nil)
// with success.
func (ch *appChannel) result(id uint64, status int, err error) {
	f := &api.ChannelFrame{Op: api.OpResult, ID: id, Status: status}
	if err != nil {
		f.Error = err.Error()
	}
	ch.write(f)
}

// admitCall takes a call or message from the app, within the channel's
// bound, or answers it with why not.
func (ch *appChannel) admitCall(f *api.ChannelFrame) (context.Context, context.CancelFunc, bool) {
	if ch.call == nil {
		ch.result(f.ID, http.StatusNotFound, errors.New("calls are made from a device's pzp.sock, not the hub's"))
		return nil, nil, false
	}
	// A refusal is written once the lock is given back: an app slow to
	// read must not hold up the channel's other calls.
	var status int
	var why error
	ch.mu.Lock()
	switch {
	case len(ch.calls) >= maxChannelCalls:
		status, why = http.StatusServiceUnavailable, fmt.Errorf("%d calls and messages are in flight on this connection already: wait for some to end", maxChannelCalls)
	case ch.calls[f.ID] != nil:
		status, why = http.StatusBadRequest, fmt.Errorf("call %d is in flight already: give each its own ID", f.ID)
	}
	if why != nil {
		ch.mu.Unlock()
		ch.result(f.ID, status, why)
		return nil, nil, false
	}
	ctx, cancel := context.WithCancel(ch.ctx)
	ch.calls[f.ID] = cancel
	ch.mu.Unlock()
	return ctx, cancel, true
}

// makeCall makes a call or sends a message admitted, and writes how it
// went.
func (ch *appChannel) makeCall(ctx context.Context, cancel context.CancelFunc, f *api.ChannelFrame) {
	defer func() {
		ch.mu.Lock()
		delete(ch.calls, f.ID)
		ch.mu.Unlock()
		cancel()
	}()
	kind := wire.CallRequest
	if f.Op == api.OpSend {
		kind = wire.CallMessage
	}
	req := api.CallRequestBody{To: f.To, Method: f.Method, Body: f.Body, TimeoutMs: f.TimeoutMs, Token: f.Token, TTLMs: f.TTLMs}
	res, sent, status, err := ch.call(ctx, ch.app, kind, req)
	if err != nil {
		if ch.ctx.Err() == nil { // not when the app went away
			ch.result(f.ID, status, err)
		}
		return
	}
	out := &api.ChannelFrame{Op: api.OpResult, ID: f.ID, Status: http.StatusOK, Body: res}
	if sent != nil && sent.Queued {
		out.Queued = true
		if sent.Expires != nil {
			out.ExpiresMs = sent.Expires.UnixMilli()
		}
	}
	ch.write(out)
}

// serve registers the service an OpServe names, as the channel's app, and
// forwards its events until it stops.
func (ch *appChannel) serve(f *api.ChannelFrame) {
	if f.Service == nil {
		ch.result(f.ID, http.StatusBadRequest, errors.New("serve what? the frame names no service"))
		return
	}
	info := *f.Service
	info.Streams = false // streams are taken with Listen (GET /v1/services/NAME/events?streams=accept)
	app := ch.app
	if app == "" {
		app = info.Name // pzh.sock: a hub's service is its own app
	}
	for _, n := range append([]string{info.Name, app}, info.Methods...) {
		if err := wire.ValidateServiceName(n); err != nil {
			ch.result(f.ID, http.StatusBadRequest, err)
			return
		}
	}
	ch.mu.Lock()
	dup := ch.serves[f.ID] != nil
	ch.mu.Unlock()
	if dup {
		ch.result(f.ID, http.StatusBadRequest, fmt.Errorf("service registration %d exists already: give each its own ID", f.ID))
		return
	}
	l, err := ch.sh.listen(app, info.Name, false)
	if err != nil {
		ch.result(f.ID, http.StatusConflict, err)
		return
	}
	ch.mu.Lock()
	if ch.serves == nil { // the channel ended meanwhile
		ch.mu.Unlock()
		ch.sh.stop(l)
		return
	}
	ch.serves[f.ID] = l
	ch.mu.Unlock()
	if err := ch.publish(app, info); err != nil {
		ch.log.Warn("publish service", "service", info.Name, "err", err)
	}
	ch.result(f.ID, http.StatusOK, nil)
	ch.wg.Add(1)
	go func() {
		defer ch.wg.Done()
		ch.forward(f.ID, l)
	}()
}

// forward writes the events of listener l, registered as id, to the app
// until it stops serving or the channel ends.
func (ch *appChannel) forward(id uint64, l *listener) {
	for {
		select {
		case <-l.done:
			return
		case <-ch.ctx.Done():
			return
		case ev := <-l.events:
			if err := ch.recheck(); err != nil {
				// The event is not handed over: its caller hears that the
				// service stopped (Deliver watches the listener).
				ch.log.Info("app channel closed: its credential no longer holds", "app", ch.app, "err", err)
				ch.cancel()
				return
			}
			f := &api.ChannelFrame{Op: api.OpEvent, ID: id, Type: ev.Type, CallID: ev.ID, From: ev.From, ToService: ev.Service,
				Method: ev.Method, Body: ev.Body, Token: ev.Token}
			if !ev.Deadline.IsZero() {
				f.DeadlineMs = ev.Deadline.UnixMilli()
			}
			if ev.Queued != nil {
				f.QueuedMs = ev.Queued.UnixMilli()
			}
			if ch.write(f) != nil {
				return
			}
			if ev.written != nil {
				close(ev.written)
			}
		}
	}
}
