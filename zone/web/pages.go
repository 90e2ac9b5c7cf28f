package web

import (
	"embed"
	"html/template"
	"io/fs"
	"net/http"
	"strings"
)

// The dashboard: one page, rendered here with the zone's name, whose own
// script (assets/app.js) logs in and draws every view from the API and
// its event stream. No inline script or style: the page's
// Content-Security-Policy allows only what it loads from here.

//go:embed assets
var assets embed.FS

var indexPage = template.Must(template.ParseFS(assets, "assets/index.html"))

func (h *Handler) pageRoutes(mux *http.ServeMux) {
	static, _ := fs.Sub(assets, "assets")
	files := http.FileServerFS(static)
	mux.Handle("GET /assets/", http.StripPrefix("/assets/", http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		// Files only: the page's template unrendered, or a directory
		// (whose index is that template), is not one of them.
		if p := r.URL.Path; p == "index.html" || p == "" || strings.HasSuffix(p, "/") {
			http.NotFound(w, r)
			return
		}
		w.Header().Set("Cache-Control", "no-cache")
		files.ServeHTTP(w, r)
	})))
	mux.HandleFunc("GET /{$}", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/html; charset=utf-8")
		w.Header().Set("Cache-Control", "no-store")
		indexPage.Execute(w, struct{ Zone string }{h.Zone})
	})
}
