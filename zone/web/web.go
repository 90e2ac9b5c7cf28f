// Package web is the hub's management listener: the HTTP API under
// /api/v1/ (and, served from it, the dashboard) for operators in a browser
// and for scripts with API tokens. Who may do what comes from zone/mgmt;
// what an action does comes from the hub's own admin API, which this
// package calls in-process (the same code path as the pzh command), never
// a copy of it.
//
// It is off unless pzh serve --web ADDR asks for it, and it serves plain
// HTTP only on a loopback address: anywhere else it needs a certificate.
package web

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"strings"
	"time"

	"github.com/pzone/pzone/zone/mgmt"
)

// Config sets up the listener.
type Config struct {
	// Addr is where to listen (host:port).
	Addr string
	// CertFile and KeyFile, PEM, make it HTTPS; without them Addr must be
	// a loopback address.
	CertFile, KeyFile string
	// URL is the listener's address as browsers reach it
	// (https://hub.example.net:7080), for the links the hub hands out;
	// without it one is made from Addr's host, or from the certificate's
	// first DNS name when Addr names every address.
	URL    string
	Logger *slog.Logger
}

// Timeouts of the listener. The server sets no write timeout, since
// event streams, watches and long polls last: an event stream gives each
// write its own deadline, and every live stream ends with its session.
const (
	readHeaderTimeout = 10 * time.Second
	readTimeout       = 30 * time.Second
	idleTimeout       = 2 * time.Minute
	maxHeaderBytes    = 16 << 10
	// maxBody bounds a JSON request body: the largest the API takes is a
	// data record (1 MiB); everything else is a few hundred bytes.
	maxBody = 1<<20 + 4<<10
)

// Listener is the bound, not yet serving, management listener.
type Listener struct {
	ln     net.Listener
	tls    *tls.Config
	cfg    Config
	public string
}

// Listen binds cfg.Addr, refusing plain HTTP on anything but loopback.
func Listen(cfg Config) (*Listener, error) {
	host, _, err := net.SplitHostPort(cfg.Addr)
	if err != nil {
		return nil, fmt.Errorf("web listener %q: %w (give HOST:PORT, e.g. 127.0.0.1:7080)", cfg.Addr, err)
	}
	if (cfg.CertFile == "") != (cfg.KeyFile == "") {
		return nil, errors.New("web listener: give both --web-cert and --web-key, or neither (plain HTTP, on a loopback address only)")
	}
	if cfg.URL != "" {
		u, err := url.Parse(cfg.URL)
		if err != nil || (u.Scheme != "https" && u.Scheme != "http") || u.Host == "" || (u.Path != "" && u.Path != "/") || u.RawQuery != "" || u.Fragment != "" {
			return nil, fmt.Errorf("web URL %q: give the address browsers reach the listener at, scheme and host only (e.g. https://hub.example.net:7080)", cfg.URL)
		}
		if (u.Scheme == "https") != (cfg.CertFile != "") {
			return nil, fmt.Errorf("web URL %q: its scheme must be https with --web-cert, http without", cfg.URL)
		}
		cfg.URL = u.Scheme + "://" + u.Host
	}
	var tc *tls.Config
	var certName string
	if cfg.CertFile != "" {
		cert, err := tls.LoadX509KeyPair(cfg.CertFile, cfg.KeyFile)
		if err != nil {
			return nil, fmt.Errorf("web listener certificate: %w", err)
		}
		if leaf, err := x509.ParseCertificate(cert.Certificate[0]); err == nil && len(leaf.DNSNames) > 0 && !strings.Contains(leaf.DNSNames[0], "*") {
			certName = leaf.DNSNames[0]
		}
		tc = &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12, NextProtos: []string{"h2", "http/1.1"}}
	} else if !loopback(host) {
		return nil, fmt.Errorf("web listener %s: plain HTTP is served only on a loopback address (127.0.0.1, ::1, localhost); for %q give a certificate with --web-cert and --web-key", cfg.Addr, host)
	}
	ln, err := net.Listen("tcp", cfg.Addr)
	if err != nil {
		return nil, fmt.Errorf("web listener: %w", err)
	}
	l := &Listener{ln: ln, tls: tc, cfg: cfg, public: cfg.URL}
	if l.public == "" {
		_, port, _ := net.SplitHostPort(ln.Addr().String())
		switch {
		case host != "" && !net.ParseIP(host).IsUnspecified():
			l.public = l.scheme() + "://" + net.JoinHostPort(host, port)
		case certName != "":
			l.public = l.scheme() + "://" + net.JoinHostPort(certName, port)
		}
	}
	return l, nil
}

// loopback reports whether host names only loopback addresses.
func loopback(host string) bool {
	if strings.EqualFold(host, "localhost") {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}

// Addr is the bound address.
func (l *Listener) Addr() net.Addr { return l.ln.Addr() }

func (l *Listener) scheme() string {
	if l.tls != nil {
		return "https"
	}
	return "http"
}

// URL is the listener's base URL as browsers reach it, or, when nothing
// names its host (it listens on every address and neither --web-url nor
// its certificate says a name), its bound address.
func (l *Listener) URL() string {
	if l.public != "" {
		return l.public
	}
	return l.scheme() + "://" + l.ln.Addr().String()
}

// PublicURL is the base URL for links handed out, "" when nothing names
// the listener's host.
func (l *Listener) PublicURL() string { return l.public }

// Close closes a listener that never served.
func (l *Listener) Close() error { return l.ln.Close() }

// Serve serves h until ctx ends.
func (l *Listener) Serve(ctx context.Context, h http.Handler) error {
	srv := &http.Server{Handler: h, ReadHeaderTimeout: readHeaderTimeout, ReadTimeout: readTimeout,
		IdleTimeout: idleTimeout, MaxHeaderBytes: maxHeaderBytes, TLSConfig: l.tls,
		ErrorLog: slog.NewLogLogger(l.logger().Handler(), slog.LevelDebug),
		// Requests end with the hub: event streams too.
		BaseContext: func(net.Listener) context.Context { return ctx }}
	errc := make(chan error, 1)
	go func() {
		if l.tls != nil {
			errc <- srv.ServeTLS(l.ln, "", "")
		} else {
			errc <- srv.Serve(l.ln)
		}
	}()
	select {
	case err := <-errc:
		return fmt.Errorf("web listener: %w", err)
	case <-ctx.Done():
		sctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		srv.Shutdown(sctx) // event streams end with their context
		srv.Close()
		return nil
	}
}

func (l *Listener) logger() *slog.Logger {
	if l.cfg.Logger != nil {
		return l.cfg.Logger
	}
	return slog.New(slog.DiscardHandler)
}

// Handler is the API and the dashboard, over M for who may act and Admin
// (the hub's admin API) for what acting does.
type Handler struct {
	M      *mgmt.Manager
	Admin  http.Handler
	Logger *slog.Logger
	// Zone names the zone in the dashboard's title.
	Zone string

	mux  *http.ServeMux
	live liveView
}

// NewHandler returns the listener's handler.
func NewHandler(m *mgmt.Manager, admin http.Handler, zone string, logger *slog.Logger) *Handler {
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	h := &Handler{M: m, Admin: admin, Logger: logger, Zone: zone, mux: http.NewServeMux()}
	h.routes(h.mux)
	h.proxyRoutes(h.mux)
	h.eventRoutes(h.mux)
	h.pageRoutes(h.mux)
	h.mux.HandleFunc("/api/", func(w http.ResponseWriter, r *http.Request) {
		writeJSON(w, http.StatusNotFound, ErrorBody{Error: fmt.Sprintf("no such endpoint: %s %s", r.Method, r.URL.Path)})
	})
	return h
}

// ServeHTTP adds the security headers every answer carries.
func (h *Handler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	hd := w.Header()
	hd.Set("Content-Security-Policy", contentSecurityPolicy)
	hd.Set("X-Content-Type-Options", "nosniff")
	hd.Set("Referrer-Policy", "no-referrer")
	hd.Set("X-Frame-Options", "DENY")
	hd.Set("Cross-Origin-Opener-Policy", "same-origin")
	if r.TLS != nil {
		hd.Set("Strict-Transport-Security", "max-age=31536000")
	}
	if strings.HasPrefix(r.URL.Path, "/api/") {
		hd.Set("Cache-Control", "no-store")
	}
	h.mux.ServeHTTP(w, r)
}

// contentSecurityPolicy allows the page its own scripts, styles and
// images (and data: images, the invite QR codes) and nothing else: no
// inline script, no other origin, no framing.
const contentSecurityPolicy = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; " +
	"form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
