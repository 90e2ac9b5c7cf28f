// Package metrics serves a daemon's Prometheus metrics (pzh serve
// --metrics ADDR, pzp run --metrics ADDR): the listener and the handler
// over the daemon's own registry, and the few helpers both daemons'
// collectors use. What is measured lives with each runtime
// (zone/hub/metrics.go, zone/peer/metrics.go); docs/METRICS.md lists it
// all.
//
// The listener has no authentication: it serves counts and states only,
// never a device's or an operator's name, so that scrapers may be given
// it without the zone's secrets; bind it to an address only they reach.
package metrics

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// NewRegistry is a registry with the Go runtime's and the process's own
// metrics (go_*, process_*), to which a daemon adds its collectors.
func NewRegistry() *prometheus.Registry {
	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	return reg
}

// Listener is a bound, not yet serving, metrics listener.
type Listener struct{ ln net.Listener }

// Listen binds addr (host:port).
func Listen(addr string) (*Listener, error) {
	if _, _, err := net.SplitHostPort(addr); err != nil {
		return nil, fmt.Errorf("metrics listener %q: %w (give HOST:PORT, e.g. 127.0.0.1:9477)", addr, err)
	}
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("metrics listener: %w", err)
	}
	return &Listener{ln: ln}, nil
}

// Addr is the bound address.
func (l *Listener) Addr() net.Addr { return l.ln.Addr() }

// Close closes a listener that never served.
func (l *Listener) Close() error { return l.ln.Close() }

// Serve answers /metrics from reg until ctx ends.
func (l *Listener) Serve(ctx context.Context, reg *prometheus.Registry, log *slog.Logger) error {
	mux := http.NewServeMux()
	mux.Handle("GET /metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{ErrorLog: slog.NewLogLogger(log.Handler(), slog.LevelWarn), Timeout: 10 * time.Second}))
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		http.Error(w, "metrics are at /metrics", http.StatusNotFound)
	})
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second, ReadTimeout: 10 * time.Second, WriteTimeout: 20 * time.Second, IdleTimeout: 2 * time.Minute}
	errc := make(chan error, 1)
	go func() { errc <- srv.Serve(l.ln) }()
	select {
	case err := <-errc:
		return fmt.Errorf("metrics listener: %w", err)
	case <-ctx.Done():
		srv.Close()
		return nil
	}
}

// Label turns a name ("protocol error") into a label value
// ("protocol_error").
func Label(s string) string { return strings.ReplaceAll(s, " ", "_") }

// Funcs is a collector whose metrics are read when scraped: each
// function sends the current values of the descriptions it owns (one
// function for several, when they come from one snapshot).
type Funcs struct {
	descs []*prometheus.Desc
	reads []func(ch chan<- prometheus.Metric)
}

// Add registers descs, read by f at each scrape.
func (c *Funcs) Add(f func(ch chan<- prometheus.Metric), descs ...*prometheus.Desc) {
	c.descs = append(c.descs, descs...)
	c.reads = append(c.reads, f)
}

// Gauge and Counter send one value of desc.
func Gauge(ch chan<- prometheus.Metric, desc *prometheus.Desc, v float64, labels ...string) {
	ch <- prometheus.MustNewConstMetric(desc, prometheus.GaugeValue, v, labels...)
}

func Counter(ch chan<- prometheus.Metric, desc *prometheus.Desc, v float64, labels ...string) {
	ch <- prometheus.MustNewConstMetric(desc, prometheus.CounterValue, v, labels...)
}

// Describe implements prometheus.Collector.
func (c *Funcs) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range c.descs {
		ch <- d
	}
}

// Collect implements prometheus.Collector.
func (c *Funcs) Collect(ch chan<- prometheus.Metric) {
	for _, f := range c.reads {
		f(ch)
	}
}
