package localapi

import (
	"bufio"
	"bytes"
	"net/http"
	"net/http/pprof"
	"os"
	"runtime"
	"strconv"
)

// MemStats is the answer of GET /v1/debug/memstats: what an operator (or
// the benchmark) needs to see what sessions cost.
type MemStats struct {
	HeapAlloc   uint64 `json:"heap_alloc"`   // bytes of live heap objects (after the GC the endpoint runs with ?gc=1)
	HeapInuse   uint64 `json:"heap_inuse"`   // bytes in in-use heap spans
	HeapObjects uint64 `json:"heap_objects"` // live heap objects
	Sys         uint64 `json:"sys"`          // bytes obtained from the OS by the Go runtime
	RSS         uint64 `json:"rss"`          // resident set size of the process, bytes (Linux; 0 elsewhere)
	Goroutines  int    `json:"goroutines"`
	Sessions    int    `json:"sessions"` // live sessions
}

// RegisterDebug adds the debug endpoints to a daemon's local API. The
// socket is private to its owner (0600), so exposing pprof there is safe.
func RegisterDebug(mux *http.ServeMux, sessions func() int) {
	mux.HandleFunc("GET /v1/debug/memstats", func(w http.ResponseWriter, r *http.Request) {
		WriteJSON(w, http.StatusOK, ReadMemStats(r.URL.Query().Get("gc") == "1", sessions()))
	})
	mux.HandleFunc("/debug/pprof/", pprof.Index)
	mux.HandleFunc("/debug/pprof/profile", pprof.Profile)
	mux.HandleFunc("/debug/pprof/symbol", pprof.Symbol)
	mux.HandleFunc("/debug/pprof/trace", pprof.Trace)
}

// ReadMemStats reads this process's memory figures, after a full GC if gc.
func ReadMemStats(gc bool, sessions int) MemStats {
	if gc {
		runtime.GC()
	}
	var m runtime.MemStats
	runtime.ReadMemStats(&m)
	return MemStats{HeapAlloc: m.HeapAlloc, HeapInuse: m.HeapInuse, HeapObjects: m.HeapObjects, Sys: m.Sys,
		RSS: readRSS(), Goroutines: runtime.NumGoroutine(), Sessions: sessions}
}

// readRSS reads VmRSS from /proc/self/status.
func readRSS() uint64 {
	data, err := os.ReadFile("/proc/self/status")
	if err != nil {
		return 0
	}
	sc := bufio.NewScanner(bytes.NewReader(data))
	for sc.Scan() {
		f := bytes.Fields(sc.Bytes())
		if len(f) >= 2 && string(f[0]) == "VmRSS:" {
			kb, _ := strconv.ParseUint(string(f[1]), 10, 64)
			return kb << 10
		}
	}
	return 0
}
