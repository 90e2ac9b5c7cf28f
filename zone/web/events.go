package web

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"net/http"
	"strconv"
	"sync"
	"time"

	"rsc.io/qr"

	"github.com/pzone/pzone/zone/api"
	"github.com/pzone/pzone/zone/localapi"
	"github.com/pzone/pzone/zone/mgmt"
)

// The dashboard's live view: an event stream (server-sent events) that
// pushes the devices and the hub's status whenever the hub's state
// changes, and a sample of devices online and calls routed every
// sampleEvery, of which the last hour is kept for the chart. One watcher
// (Handler.Run) follows the hub, through the admin API's long poll
// in-process, for every stream open.

const (
	sampleEvery = 10 * time.Second
	samplesKept = int(time.Hour / sampleEvery)
	// eventWriteTimeout: a browser that takes no event for this long is
	// gone, and its stream is closed.
	eventWriteTimeout = 30 * time.Second
	// keepAlive is how often an event stream sends a comment, so that
	// proxies and the browser keep it open (samples come more often, but
	// a comment costs nothing and does not depend on them).
	keepAlive = 25 * time.Second
)

// Sample is one point of the chart.
type Sample struct {
	At     time.Time `json:"at"`
	Online int       `json:"online"`
	Calls  uint64    `json:"calls"` // routed since the hub started
}

// liveView is what the watcher last saw, for every stream; changed
// bumps at each new view and each new sample.
type liveView struct {
	mu      sync.Mutex
	ring    []Sample
	status  *api.HubStatus
	devices *api.DevicesView
	changed localapi.Notifier
}

func (v *liveView) add(x Sample) {
	v.mu.Lock()
	if len(v.ring) == samplesKept {
		copy(v.ring, v.ring[1:])
		v.ring = v.ring[:samplesKept-1]
	}
	v.ring = append(v.ring, x)
	v.mu.Unlock()
	v.changed.Bump()
}

func (v *liveView) set(st *api.HubStatus, d *api.DevicesView) {
	v.mu.Lock()
	v.status, v.devices = st, d
	v.mu.Unlock()
	v.changed.Bump()
}

func (v *liveView) history() []Sample {
	v.mu.Lock()
	defer v.mu.Unlock()
	return append([]Sample{}, v.ring...)
}

// since returns the view and the samples newer than after.
func (v *liveView) since(after time.Time) (*api.HubStatus, *api.DevicesView, []Sample) {
	v.mu.Lock()
	defer v.mu.Unlock()
	i := len(v.ring)
	for i > 0 && v.ring[i-1].At.After(after) {
		i--
	}
	return v.status, v.devices, append([]Sample{}, v.ring[i:]...)
}

// Run follows the hub for the live view until ctx ends: its devices and
// status at each change, and a sample every sampleEvery.
func (h *Handler) Run(ctx context.Context) error {
	go h.watch(ctx)
	t := time.NewTicker(sampleEvery)
	defer t.Stop()
	for {
		var st api.HubStatus
		if err := h.adminGet(ctx, "/v1/status", &st); err == nil {
			h.live.add(Sample{At: time.Now().UTC(), Online: st.Online, Calls: st.Calls})
		}
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		}
	}
}

// watch long-polls the hub's devices and, at each change, reads its
// status, until ctx ends.
func (h *Handler) watch(ctx context.Context) {
	var ver uint64
	for first := true; ctx.Err() == nil; first = false {
		var d api.DevicesView
		path := "/v1/devices"
		if !first {
			path += "?wait=" + strconv.FormatUint(ver, 10) + "&timeout=" + localapi.MaxLongPoll.String()
		}
		if err := h.adminGet(ctx, path, &d); err != nil {
			if ctx.Err() == nil {
				h.Logger.Warn("live view: reading the devices", "err", err)
				select { // not in a loop of failures
				case <-ctx.Done():
				case <-time.After(time.Second):
				}
			}
			continue
		}
		if !first && d.Version == ver {
			continue // the wait timed out
		}
		ver = d.Version
		var st api.HubStatus
		if err := h.adminGet(ctx, "/v1/status", &st); err != nil {
			continue
		}
		h.live.set(&st, &d)
	}
}

// recorder takes an in-process answer of the admin API.
type recorder struct {
	h      http.Header
	status int
	body   bytes.Buffer
}

func (r *recorder) Header() http.Header         { return r.h }
func (r *recorder) Write(b []byte) (int, error) { return r.body.Write(b) }
func (r *recorder) WriteHeader(status int)      { r.status = status }

// adminGet asks the admin API for path, in-process, and decodes the answer.
func (h *Handler) adminGet(ctx context.Context, path string, out any) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, path, nil)
	if err != nil {
		return err
	}
	rec := &recorder{h: http.Header{}, status: http.StatusOK}
	h.Admin.ServeHTTP(rec, req)
	if rec.status != http.StatusOK {
		return fmt.Errorf("%s: %d %s", path, rec.status, rec.body.String())
	}
	return json.Unmarshal(rec.body.Bytes(), out)
}

// eventRoutes adds the event stream and the QR codes.
func (h *Handler) eventRoutes(mux *http.ServeMux) {
	mux.Handle("GET /api/v1/events", h.authed(mgmt.ScopeRead, h.events))
	mux.Handle("POST /api/v1/qr", h.authed(mgmt.ScopeAdmin, func(w http.ResponseWriter, r *http.Request, c *caller) {
		var req struct {
			Text string `json:"text"`
		}
		if err := readBody(r, &req); err != nil {
			writeErr(w, err)
			return
		}
		if req.Text == "" || len(req.Text) > 2048 {
			writeErr(w, mgmtBad("text of %d bytes: give 1 to 2048", len(req.Text)))
			return
		}
		code, err := qr.Encode(req.Text, qr.M)
		if err != nil {
			writeErr(w, mgmtBad("%v", err))
			return
		}
		code.Scale = 6
		writeJSON(w, http.StatusOK, map[string]string{"png": "data:image/png;base64," + base64.StdEncoding.EncodeToString(code.PNG())})
	}))
}

// events streams the dashboard's live view: "history" (the chart's
// samples) first, then "status" and "devices" at once and at every
// change, and "sample" as each is taken. The stream is a live stream of
// its session: it ends when the session does.
func (h *Handler) events(w http.ResponseWriter, r *http.Request, c *caller) {
	ctx, release, err := h.liveStream(r.Context(), c)
	if err != nil {
		writeErr(w, err)
		return
	}
	defer release()
	rc := http.NewResponseController(w)
	w.Header().Set("Content-Type", "text/event-stream")
	w.WriteHeader(http.StatusOK)
	send := func(event string, v any) bool {
		b, err := json.Marshal(v)
		if err != nil {
			return false
		}
		rc.SetWriteDeadline(time.Now().Add(eventWriteTimeout))
		if _, err := fmt.Fprintf(w, "event: %s\ndata: %s\n\n", event, b); err != nil {
			return false
		}
		return rc.Flush() == nil
	}
	hist := h.live.history()
	if !send("history", hist) {
		return
	}
	var sentStatus *api.HubStatus
	var sentDevices *api.DevicesView
	var lastSample time.Time
	if len(hist) > 0 {
		lastSample = hist[len(hist)-1].At
	}
	alive := time.NewTicker(keepAlive)
	defer alive.Stop()
	for {
		_, changed := h.live.changed.Changed()
		st, devices, fresh := h.live.since(lastSample)
		if st != sentStatus && !send("status", st) || devices != sentDevices && !send("devices", devices) {
			return
		}
		sentStatus, sentDevices = st, devices
		for _, x := range fresh {
			if !send("sample", x) {
				return
			}
			lastSample = x.At
		}
		select {
		case <-ctx.Done():
			return
		case <-changed:
		case <-alive.C:
			rc.SetWriteDeadline(time.Now().Add(eventWriteTimeout))
			if _, err := fmt.Fprint(w, ": alive\n\n"); err != nil || rc.Flush() != nil {
				return
			}
		}
	}
}
