package web

import (
	"net/http"
	"strings"

	"github.com/pzone/pzone/zone/mgmt"
)

// What the API passes to the hub's admin API: /api/v1/PATH is the admin
// API's /v1/PATH, for these parts of it, so that an action from the web
// is exactly the one the pzh command does. Not passed: the admin API's
// service hosting and app channels (for programs on the hub's host), its
// profiles, and anything new until it is added here.
var proxied = []string{"status", "devices", "invites", "bindings", "policy", "tokens", "friends", "data", "watch", "import"}

func (h *Handler) proxyRoutes(mux *http.ServeMux) {
	for _, p := range proxied {
		f := h.authed(mgmt.ScopeRead, h.proxy)
		mux.Handle("/api/v1/"+p, f)
		mux.Handle("/api/v1/"+p+"/", f)
	}
}

// proxy passes a request to the admin API, as the socket would get it.
// A long poll or a watch is a live stream of its session: the session
// does not idle while it lasts, and ending the session ends it.
func (h *Handler) proxy(w http.ResponseWriter, r *http.Request, c *caller) {
	ctx := r.Context()
	if strings.HasPrefix(r.URL.Path, "/api/v1/watch/") || r.URL.Query().Has("wait") {
		var release func()
		var err error
		if ctx, release, err = h.liveStream(ctx, c); err != nil {
			writeErr(w, err)
			return
		}
		defer release()
	}
	r2 := r.Clone(ctx)
	r2.URL.Path = strings.TrimPrefix(r.URL.Path, "/api")
	r2.URL.RawPath = ""
	r2.RequestURI = ""
	r2.Header.Del("Authorization")
	r2.Header.Del("Cookie")
	r2.Body = http.MaxBytesReader(w, r.Body, maxBody)
	h.Admin.ServeHTTP(w, r2)
}
