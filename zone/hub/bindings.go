package hub

import (
	"errors"
	"fmt"
	"net/http"
	"sort"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/pzone/pzone/transport"
	"github.com/pzone/pzone/zone/api"
	"github.com/pzone/pzone/zone/localapi"
	"github.com/pzone/pzone/zone/session"
	"github.com/pzone/pzone/zone/token"
	"github.com/pzone/pzone/zone/wire"
)

// Bindings: an application's use of a service on another device, as the
// hub relays it. A binding is made by the first call from (device, app) to
// (device, service) and holds every later one; it lives on the two device
// sessions it runs over, so it ends with either of them (a session that
// ends, a revoked device), or when the hub's operator ends it. Ending a
// binding cuts every exchange in flight on it, and records why.

type bindKey struct{ fromDevice, fromApp, toDevice, toService, token string }

type binding struct {
	id    string
	key   bindKey
	since time.Time

	calls, in, out atomic.Uint64

	// limits, from the binding's token (zero: none), computed when it
	// was made.
	limits token.Grant
	timer  *time.Timer

	mu      sync.Mutex
	streams map[*relay]struct{} // exchanges in flight
	ended   time.Time
	reason  string
}

// over says which byte limit b has passed, if any.
func (b *binding) over() string {
	in, out := int64(b.in.Load()), int64(b.out.Load())
	switch l := b.limits; {
	case l.BytesIn > 0 && in > l.BytesIn:
		return fmt.Sprintf("quota: %d bytes in", l.BytesIn)
	case l.BytesOut > 0 && out > l.BytesOut:
		return fmt.Sprintf("quota: %d bytes out", l.BytesOut)
	case l.BytesTotal > 0 && in+out > l.BytesTotal:
		return fmt.Sprintf("quota: %d bytes in all", l.BytesTotal)
	}
	return ""
}

// relay is one exchange in flight: the caller's stream and the service's.
type relay struct {
	a, b transport.Stream
	mu   sync.Mutex
	pipe *session.Pipe // a stream's, once it is open (streams.go)
	why  string        // cut before its pipe was set
}

// bindingCut is why a stream on a binding that ended is cut.
func bindingCut(why string) *wire.CallError {
	return &wire.CallError{Status: wire.CallDenied, Message: "the binding ended: " + why}
}

// setPipe records the pipe of an open stream, so that a cut reaches both
// ends with its reason.
func (r *relay) setPipe(p *session.Pipe) {
	r.mu.Lock()
	r.pipe = p
	why := r.why
	r.mu.Unlock()
	if why != "" {
		p.Cut(bindingCut(why))
	}
}

func (r *relay) cut(why string) {
	r.mu.Lock()
	p := r.pipe
	r.why = why
	r.mu.Unlock()
	if p != nil {
		p.Cut(bindingCut(why))
		return
	}
	r.a.Reset()
	r.b.Reset()
}

// keptEnded is how many ended bindings the hub remembers for pzh bindings
// --all: enough to see why recent ones ended.
const keptEnded = 256

// bindingTable is the hub's bindings.
type bindingTable struct {
	mu    sync.Mutex
	live  map[bindKey]*binding
	byID  map[string]*binding
	ended []*binding // most recent last
	// changes moves with every call and every end, for long polls.
	changes localapi.Notifier
	// onEnd, if set, runs after a binding ended (token usage).
	onEnd func(*binding)
}

func newBindingTable() *bindingTable {
	return &bindingTable{live: map[bindKey]*binding{}, byID: map[string]*binding{}}
}

// attach returns the binding for k, made if there is none, with r added
// to its exchanges in flight. The caller removes r with detach. A new
// binding takes its limits from limitsOf (nil: none), which may refuse it.
func (t *bindingTable) attach(k bindKey, r *relay, now time.Time, limitsOf func() (token.Grant, error)) (*binding, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	b := t.live[k]
	if b == nil {
		b = &binding{id: wire.NewCallID(), key: k, since: now, streams: map[*relay]struct{}{}}
		if limitsOf != nil {
			l, err := limitsOf()
			if err != nil {
				return nil, err
			}
			b.limits = l
			if !l.Deadline.IsZero() {
				why := l.Expiry
				b.timer = time.AfterFunc(l.Deadline.Sub(now), func() { t.end(b, why, time.Now()) })
			}
		}
		t.live[k], t.byID[b.id] = b, b
	}
	b.mu.Lock()
	b.streams[r] = struct{}{}
	b.mu.Unlock()
	b.calls.Add(1)
	t.changes.Bump()
	return b, nil
}

func (b *binding) detach(r *relay) {
	b.mu.Lock()
	delete(b.streams, r)
	b.mu.Unlock()
}

// end ends b once, cutting its exchanges, and reports whether this call
// ended it.
func (t *bindingTable) end(b *binding, reason string, now time.Time) bool {
	t.mu.Lock()
	if t.live[b.key] != b {
		t.mu.Unlock()
		return false
	}
	delete(t.live, b.key)
	delete(t.byID, b.id)
	t.ended = append(t.ended, b)
	if len(t.ended) > keptEnded {
		t.ended = append([]*binding(nil), t.ended[len(t.ended)-keptEnded:]...)
	}
	t.mu.Unlock()
	b.mu.Lock()
	b.ended, b.reason = now, reason
	streams := b.streams
	b.streams = map[*relay]struct{}{}
	b.mu.Unlock()
	if b.timer != nil {
		b.timer.Stop()
	}
	for r := range streams {
		r.cut(reason)
	}
	if t.onEnd != nil {
		t.onEnd(b)
	}
	t.changes.Bump()
	return true
}

// withToken lists the live bindings made with token id.
func (t *bindingTable) withToken(id string) []*binding {
	t.mu.Lock()
	defer t.mu.Unlock()
	var out []*binding
	for k, b := range t.live {
		if k.token == id {
			out = append(out, b)
		}
	}
	return out
}

// endDevice ends every binding over device's session.
func (t *bindingTable) endDevice(device, reason string, now time.Time) []*binding {
	t.mu.Lock()
	var hit []*binding
	for k, b := range t.live {
		if k.fromDevice == device || k.toDevice == device {
			hit = append(hit, b)
		}
	}
	t.mu.Unlock()
	var ended []*binding
	for _, b := range hit {
		if t.end(b, reason, now) {
			ended = append(ended, b)
		}
	}
	return ended
}

func (t *bindingTable) lookup(id string) *binding {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.byID[id]
}

func (b *binding) view() api.BindingView {
	from := b.key.fromDevice
	if b.key.fromApp != "" {
		from += "/" + b.key.fromApp
	}
	v := api.BindingView{ID: b.id, From: from, To: b.key.toDevice + "/" + b.key.toService, Since: b.since,
		Calls: b.calls.Load(), BytesIn: b.in.Load(), BytesOut: b.out.Load(), Token: b.key.token}
	b.mu.Lock()
	if !b.ended.IsZero() {
		e := b.ended
		v.Ended, v.Reason = &e, b.reason
	}
	b.mu.Unlock()
	return v
}

// views lists the live bindings, and the recently ended ones with all.
func (t *bindingTable) views(all bool) []api.BindingView {
	t.mu.Lock()
	bs := make([]*binding, 0, len(t.live))
	for _, b := range t.live {
		bs = append(bs, b)
	}
	if all {
		bs = append(bs, t.ended...)
	}
	t.mu.Unlock()
	out := make([]api.BindingView, 0, len(bs))
	for _, b := range bs {
		out = append(out, b.view())
	}
	sort.Slice(out, func(i, j int) bool {
		if !out[i].Since.Equal(out[j].Since) {
			return out[i].Since.Before(out[j].Since)
		}
		return out[i].ID < out[j].ID
	})
	return out
}

// countingWriter counts what passes through it into n and total, then
// calls check, which fails the write once a limit is passed.
type countingWriter struct {
	w     transport.Stream
	n     *atomic.Uint64
	total prometheus.Counter
	check func() error
}

func (c countingWriter) Write(p []byte) (int, error) {
	k, err := c.w.Write(p)
	c.n.Add(uint64(k))
	c.total.Add(float64(k))
	if err == nil && c.check != nil {
		err = c.check()
	}
	return k, err
}

// ---- admin API ----

var errNoBinding = errors.New("no such binding")

// endBinding ends a binding by id for the hub's operator.
func (tk *tokens) endBinding(id string) (*api.BindingView, error) {
	b := tk.h.bindings.lookup(id)
	if b == nil || !tk.h.bindings.end(b, "ended by the hub operator", tk.h.cfg.Now()) {
		return nil, fmt.Errorf("%w %q (pzh bindings lists the live ones)", errNoBinding, id)
	}
	v := b.view()
	tk.h.log.Info("binding ended", "binding", id, "from", v.From, "to", v.To, "reason", v.Reason)
	return &v, nil
}

func (tk *tokens) bindingRoutes(mux *http.ServeMux) {
	mux.HandleFunc("GET /v1/bindings", func(w http.ResponseWriter, r *http.Request) {
		ver := localapi.LongPoll(r, &tk.h.bindings.changes)
		localapi.WriteJSON(w, http.StatusOK, api.BindingsView{Version: ver, Bindings: tk.h.bindings.views(r.URL.Query().Get("all") == "1")})
	})
	mux.HandleFunc("POST /v1/bindings/{id}/end", func(w http.ResponseWriter, r *http.Request) {
		v, err := tk.endBinding(r.PathValue("id"))
		if err != nil {
			localapi.WriteErr(w, http.StatusNotFound, err)
			return
		}
		localapi.WriteJSON(w, http.StatusOK, v)
	})
}
