// Package services hosts applications' services on a node, device or
// hub: the registry of apps serving a service name over the local API,
// their event streams and replies, delivery of a call read from a stream
// (with a friend zone's envelope checked and the answer signed), and the
// listing of services published in the zone state. Routing calls between
// nodes is not here; that is the runtimes' job.
package services

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"sort"
	"strings"
	"sync"
	"time"

	zsync "github.com/pzone/pzone/sync"
	"github.com/pzone/pzone/zone/api"
	"github.com/pzone/pzone/zone/localapi"
	"github.com/pzone/pzone/zone/wire"
)

// hostedEvent is an event on its way to the application serving its
// service. written, for a queued message, is closed once the event is
// written to the application's stream: only then does the device confirm
// it.
type hostedEvent struct {
	api.Event
	written chan struct{}
}

// listener is an application serving one service on this device.
type listener struct {
	app, service string
	streams      bool // it takes streams (Listen), not calls and messages
	events       chan hostedEvent
	done         chan struct{} // closed when the application stops serving
}

// pendingCall is a call delivered to an application, awaiting its reply.
type pendingCall struct {
	service string
	app     string // the application serving it: only it may answer
	reply   chan api.Reply
}

// Host holds the services this device serves and the calls in
// flight to them.
type Host struct {
	mu        sync.Mutex
	listeners map[string]*listener // by service name
	calls     map[string]*pendingCall
	streams   map[string]*pendingStream // offered, not yet accepted (streams.go)
}

func NewHost() *Host {
	return &Host{listeners: map[string]*listener{}, calls: map[string]*pendingCall{}, streams: map[string]*pendingStream{}}
}

var errServiceTaken = errors.New("service already served")

func (sh *Host) listen(app, service string, streams bool) (*listener, error) {
	sh.mu.Lock()
	defer sh.mu.Unlock()
	if l := sh.listeners[service]; l != nil {
		return nil, fmt.Errorf("%w: app %q serves %q on this device already", errServiceTaken, l.app, service)
	}
	l := &listener{app: app, service: service, streams: streams, events: make(chan hostedEvent, api.EventBuffer), done: make(chan struct{})}
	sh.listeners[service] = l
	return l, nil
}

func (sh *Host) stop(l *listener) {
	sh.mu.Lock()
	defer sh.mu.Unlock()
	if sh.listeners[l.service] == l {
		delete(sh.listeners, l.service)
	}
	close(l.done)
}

func (sh *Host) Running(service string) bool {
	sh.mu.Lock()
	defer sh.mu.Unlock()
	return sh.listeners[service] != nil
}

// deliver hands a call or message to the application serving hdr's
// service and, for a call, waits for its reply until ctx ends.
func (sh *Host) Deliver(ctx context.Context, hdr *wire.CallHeader, body []byte) ([]byte, *wire.CallError) {
	if !json.Valid(body) {
		return nil, &wire.CallError{Status: wire.CallBadRequest, Message: "the body is not JSON"}
	}
	deadline, _ := ctx.Deadline()
	ev := hostedEvent{Event: api.Event{ID: hdr.ID, From: callerName(hdr), Service: hdr.ToService, Method: hdr.Method, Body: body, Deadline: deadline.UTC(), Token: hdr.TokenID}}
	if hdr.QueuedMs != 0 {
		t := time.UnixMilli(hdr.QueuedMs).UTC()
		ev.Queued, ev.written = &t, make(chan struct{})
	}
	var pc *pendingCall
	// A call is known to its application by an ID of this node's own:
	// the caller picks hdr.ID, and two callers could pick the same.
	id := wire.NewCallID()
	sh.mu.Lock()
	l := sh.listeners[hdr.ToService]
	if l != nil && hdr.Kind == wire.CallRequest {
		ev.Type, ev.ID = "call", id
		pc = &pendingCall{service: hdr.ToService, app: l.app, reply: make(chan api.Reply, 1)}
		sh.calls[id] = pc
	} else {
		ev.Type = "message"
	}
	sh.mu.Unlock()
	if l == nil {
		return nil, &wire.CallError{Status: wire.CallOffline, Message: fmt.Sprintf("service %q is not running on device %q", hdr.ToService, hdr.ToDevice)}
	}
	if l.streams {
		if pc != nil {
			sh.mu.Lock()
			delete(sh.calls, id)
			sh.mu.Unlock()
		}
		return nil, &wire.CallError{Status: wire.CallBadRequest, Message: fmt.Sprintf("service %q on device %q takes streams (Dial, pzp connect), not calls or messages", hdr.ToService, hdr.ToDevice)}
	}
	if pc != nil {
		defer func() {
			sh.mu.Lock()
			delete(sh.calls, id)
			sh.mu.Unlock()
		}()
	}
	select {
	case l.events <- ev:
	default:
		return nil, &wire.CallError{Status: wire.CallUnavailable, Message: fmt.Sprintf("service %q is busy: %d calls and messages wait for it", hdr.ToService, api.EventBuffer)}
	}
	if ev.written != nil {
		// A queued message is confirmed, and so removed from the hub, only
		// once the application's stream has it.
		select {
		case <-ev.written:
			return nil, nil
		case <-l.done:
			select {
			case <-ev.written: // it took it, then stopped
				return nil, nil
			default:
			}
			return nil, &wire.CallError{Status: wire.CallOffline, Message: fmt.Sprintf("service %q stopped before it took the message", hdr.ToService)}
		case <-ctx.Done():
			return nil, &wire.CallError{Status: wire.CallDeadline, Message: fmt.Sprintf("service %q did not take the message in time", hdr.ToService)}
		}
	}
	if pc == nil {
		return nil, nil
	}
	select {
	case r := <-pc.reply:
		return replied(r)
	case <-l.done:
		select {
		case r := <-pc.reply: // it answered, then stopped
			return replied(r)
		default:
		}
		return nil, &wire.CallError{Status: wire.CallOffline, Message: fmt.Sprintf("service %q stopped before it answered", hdr.ToService)}
	case <-ctx.Done():
		if errors.Is(ctx.Err(), context.DeadlineExceeded) {
			return nil, &wire.CallError{Status: wire.CallDeadline, Message: fmt.Sprintf("service %q did not answer in time", hdr.ToService)}
		}
		// Tell the application to stop working on it.
		select {
		case l.events <- hostedEvent{Event: api.Event{Type: "cancel", ID: id, Service: hdr.ToService}}:
		default:
		}
		return nil, &wire.CallError{Status: wire.CallUnavailable, Message: "the call was cancelled"}
	}
}

// replied is a call's outcome from the application's reply.
func replied(r api.Reply) ([]byte, *wire.CallError) {
	if r.Error != "" {
		return nil, &wire.CallError{Status: wire.CallFailed, Message: r.Error}
	}
	if len(r.Result) == 0 {
		return []byte("null"), nil
	}
	return r.Result, nil
}

// answer delivers app's reply to call id; app "" is the node's operator
// (pzh.sock), who may answer any.
func (sh *Host) answer(id, app string, r api.Reply) bool {
	sh.mu.Lock()
	pc := sh.calls[id]
	sh.mu.Unlock()
	if pc == nil || app != "" && pc.app != app {
		return false
	}
	select {
	case pc.reply <- r:
		return true
	default:
		return false // answered already
	}
}

func callerName(h *wire.CallHeader) string {
	s := h.FromZone + "/" + h.FromDevice
	if h.FromApp != "" {
		s += "/" + h.FromApp
	}
	return s
}

// HostRoutes adds the endpoints of applications serving services on this
// node (a device, or the hub): their event streams and their replies.
// appOf says which app a request serves as (or why it may not); publish
// records a service in the zone state; call, if not nil, makes the calls
// and messages apps send on their channels (a device's router).
func HostRoutes(mux *http.ServeMux, sh *Host, appOf func(*http.Request) (string, error), publish func(app string, info api.ServiceInfo) error, call Caller, log *slog.Logger) {
	mux.HandleFunc("GET /v1/channel", func(w http.ResponseWriter, r *http.Request) {
		serveChannel(w, r, sh, appOf, publish, call, log)
	})
	mux.HandleFunc("GET /v1/services/{service}/events", func(w http.ResponseWriter, r *http.Request) {
		serveEvents(w, r, sh, appOf, publish, log)
	})
	mux.HandleFunc("GET /v1/streams/{id}/accept", func(w http.ResponseWriter, r *http.Request) {
		serveAccept(w, r, sh, appOf)
	})
	mux.HandleFunc("POST /v1/calls/{id}/reply", func(w http.ResponseWriter, r *http.Request) {
		var rep api.Reply
		if err := localapi.ReadJSON(r, &rep); err != nil {
			localapi.WriteErr(w, http.StatusBadRequest, err)
			return
		}
		if rep.Error == "" && len(rep.Result) > 0 && !json.Valid(rep.Result) {
			localapi.WriteErr(w, http.StatusBadRequest, errors.New("result is not JSON"))
			return
		}
		app, err := appOf(r)
		if err != nil {
			localapi.WriteErr(w, http.StatusForbidden, err)
			return
		}
		if !sh.answer(r.PathValue("id"), app, rep) {
			localapi.WriteErr(w, http.StatusNotFound, fmt.Errorf("no call %q waits for a reply (answered already, or past its deadline)", r.PathValue("id")))
			return
		}
		localapi.WriteJSON(w, http.StatusOK, map[string]bool{"ok": true})
	})
}

// serveEvents serves GET /v1/services/{service}/events[?description=D][&methods=a,b][&streams=accept]:
// the application serves the service for as long as it holds this
// stream, which carries one JSON event per line; with streams=accept it
// takes streams (events of type "stream") instead of calls and messages.
func serveEvents(w http.ResponseWriter, r *http.Request, sh *Host, appOf func(*http.Request) (string, error), publish func(app string, info api.ServiceInfo) error, log *slog.Logger) {
	service, q := r.PathValue("service"), r.URL.Query()
	app, err := appOf(r)
	if err != nil {
		localapi.WriteErr(w, http.StatusForbidden, err)
		return
	}
	info := api.ServiceInfo{Name: service, Description: q.Get("description"), TokenRequired: q.Get("token") == "required", Streams: q.Get("streams") == "accept"}
	if m := q.Get("methods"); m != "" {
		info.Methods = strings.Split(m, ",")
	}
	for _, n := range append([]string{service, app}, info.Methods...) {
		if err := wire.ValidateServiceName(n); err != nil {
			localapi.WriteErr(w, http.StatusBadRequest, err)
			return
		}
	}
	l, err := sh.listen(app, service, info.Streams)
	if err != nil {
		localapi.WriteErr(w, http.StatusConflict, err)
		return
	}
	defer sh.stop(l)
	if err := publish(app, info); err != nil {
		log.Warn("publish service", "service", service, "err", err)
	}
	fl, _ := w.(http.Flusher)
	w.Header().Set("Content-Type", "application/x-ndjson")
	w.WriteHeader(http.StatusOK)
	if fl != nil {
		fl.Flush()
	}
	enc := json.NewEncoder(w)
	for {
		select {
		case <-r.Context().Done():
			return
		case ev := <-l.events:
			if enc.Encode(ev.Event) != nil {
				return
			}
			if fl != nil {
				fl.Flush()
			}
			if ev.written != nil {
				close(ev.written)
			}
		}
	}
}

// Publish records that app on node offers info, in the zone
// state, so other devices can find it.
func Publish(state *zsync.Store, node, app string, info api.ServiceInfo) error {
	if state == nil {
		return nil
	}
	key := node + "/" + app
	var rec wire.AppRecord
	if cur, ok, err := state.Get(zsync.BucketApps, key); err == nil && ok && !cur.Deleted {
		json.Unmarshal(cur.Value, &rec)
	}
	i := sort.Search(len(rec.Services), func(i int) bool { return rec.Services[i].Name >= info.Name })
	if i < len(rec.Services) && rec.Services[i].Name == info.Name {
		if fmt.Sprint(rec.Services[i]) == fmt.Sprint(info) {
			return nil
		}
		rec.Services[i] = info
	} else {
		rec.Services = append(rec.Services[:i], append([]api.ServiceInfo{info}, rec.Services[i:]...)...)
	}
	v, err := json.Marshal(rec)
	if err != nil {
		return err
	}
	_, err = state.Put(zsync.BucketApps, key, v)
	return err
}

// ListServices lists the services published in a zone state.
func ListServices(state *zsync.Store) []api.ServiceView {
	if state == nil {
		return nil
	}
	var out []api.ServiceView
	state.List(zsync.BucketApps, "", func(r zsync.Record) error {
		device, app, ok := strings.Cut(r.Key, "/")
		if !ok || r.Deleted {
			return nil
		}
		var rec wire.AppRecord
		if json.Unmarshal(r.Value, &rec) != nil {
			return nil
		}
		for _, s := range rec.Services {
			out = append(out, api.ServiceView{Addr: device + "/" + s.Name, Device: device, App: app, Service: s.Name, Description: s.Description, Methods: s.Methods, TokenRequired: s.TokenRequired, Streams: s.Streams})
		}
		return nil
	})
	return out
}
