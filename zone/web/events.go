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
	"github.com/pzone/pzone/zone/mgmt"
)

// The dashboard's live view: an event stream (server-sent events) that
// pushes the devices and the hub's status whenever the hub's state
// changes (the admin API's long poll, in-process), and a sample of
// devices online and calls routed every sampleEvery, of which the last
// hour is kept for the chart.

const (
	sampleEvery = 10 * time.Second
	samplesKept = int(time.Hour / sampleEvery)
	// eventWriteTimeout: a browser that takes no event for this long is
	// gone, and its stream is closed.
	eventWriteTimeout = 30 * time.Second
	// keepAlive is how often an idle event stream sends a comment, so
	// that proxies and the browser keep it open.
	keepAlive = 25 * time.Second
)

// Sample is one point of the chart.
type Sample struct {
	At     time.Time `json:"at"`
	Online int       `json:"online"`
	Calls  uint64    `json:"calls"` // routed since the hub started
}

type samples struct {
	mu   sync.Mutex
	ring []Sample
}

func (s *samples) add(x Sample) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if len(s.ring) == samplesKept {
		copy(s.ring, s.ring[1:])
		s.ring = s.ring[:samplesKept-1]
	}
	s.ring = append(s.ring, x)
}

func (s *samples) all() []Sample {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]Sample{}, s.ring...)
}

func (s *samples) last() (Sample, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if len(s.ring) == 0 {
		return Sample{}, false
	}
	return s.ring[len(s.ring)-1], true
}

// Run samples the hub for the chart until ctx ends.
func (h *Handler) Run(ctx context.Context) error {
	t := time.NewTicker(sampleEvery)
	defer t.Stop()
	for {
		h.sample(ctx)
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		}
	}
}

func (h *Handler) sample(ctx context.Context) {
	var st api.HubStatus
	if err := h.adminGet(ctx, "/v1/status", &st); err != nil {
		return
	}
	h.samples.add(Sample{At: time.Now().UTC(), Online: st.Online, Calls: st.Calls})
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
	mux.Handle("POST /api/v1/qr", h.authed(mgmt.ScopeRead, func(w http.ResponseWriter, r *http.Request, c *caller) {
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
	if !send("history", h.samples.all()) {
		return
	}
	type view struct {
		status  api.HubStatus
		devices api.DevicesView
	}
	views := make(chan view)
	go func() {
		defer close(views)
		var ver uint64
		for first := true; ctx.Err() == nil; first = false {
			var v view
			path := "/v1/devices"
			if !first {
				path += "?wait=" + strconv.FormatUint(ver, 10) + "&timeout=" + keepAlive.String()
			}
			if err := h.adminGet(ctx, path, &v.devices); err != nil {
				return
			}
			if !first && v.devices.Version == ver {
				continue // the wait timed out
			}
			ver = v.devices.Version
			if err := h.adminGet(ctx, "/v1/status", &v.status); err != nil {
				return
			}
			select {
			case views <- v:
			case <-ctx.Done():
				return
			}
		}
	}()
	tick := time.NewTicker(sampleEvery)
	defer tick.Stop()
	alive := time.NewTicker(keepAlive)
	defer alive.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case v, ok := <-views:
			if !ok || !send("status", v.status) || !send("devices", v.devices) {
				return
			}
		case <-tick.C:
			if s, ok := h.samples.last(); ok && !send("sample", s) {
				return
			}
		case <-alive.C:
			rc.SetWriteDeadline(time.Now().Add(eventWriteTimeout))
			if _, err := fmt.Fprint(w, ": alive\n\n"); err != nil || rc.Flush() != nil {
				return
			}
		}
	}
}
