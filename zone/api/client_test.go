package api

import (
	"context"
	"encoding/json"
	"errors"
	"net"
	"net/http"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// serve answers on a Unix socket in a temporary directory with h.
func serve(t *testing.T, h http.Handler) *Client {
	t.Helper()
	sock := SocketPath(t.TempDir(), PeerSocketName)
	ln, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: h}
	go srv.Serve(ln)
	t.Cleanup(func() { srv.Close() })
	return NewClient(sock)
}

func testCtx(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	t.Cleanup(cancel)
	return ctx
}

func TestClientNotRunning(t *testing.T) {
	c := NewClient(filepath.Join(t.TempDir(), PeerSocketName))
	err := c.Do(testCtx(t), http.MethodGet, "/v1/status", nil, nil)
	if !errors.Is(err, ErrNotRunning) || !strings.Contains(err.Error(), PeerSocketName) {
		t.Fatalf("no daemon: %v, want ErrNotRunning naming the socket", err)
	}
}

func TestClientAnswers(t *testing.T) {
	mux := http.NewServeMux()
	mux.HandleFunc("POST /echo", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		var b [64]byte
		n, _ := r.Body.Read(b[:])
		json.NewEncoder(w).Encode(map[string]string{"got": r.Header.Get("Content-Type") + " " + string(b[:n])})
	})
	mux.HandleFunc("GET /refused", func(w http.ResponseWriter, r *http.Request) {
		w.WriteHeader(http.StatusConflict)
		w.Write([]byte(`{"error":"service \"echo\" is served already"}`))
	})
	mux.HandleFunc("GET /broken", func(w http.ResponseWriter, r *http.Request) {
		w.WriteHeader(http.StatusBadGateway)
		w.Write([]byte(`<html>`))
	})
	c := serve(t, mux)
	ctx := testCtx(t)
	var out struct{ Got string }
	if err := c.DoRaw(ctx, http.MethodPost, "/echo", "text/plain", strings.NewReader("hi"), &out); err != nil || out.Got != "text/plain hi" {
		t.Fatalf("DoRaw: %+v %v", out, err)
	}
	if err := c.Do(ctx, http.MethodPost, "/echo", map[string]int{"a": 1}, &out); err != nil || out.Got != `application/json {"a":1}` {
		t.Fatalf("Do: %+v %v", out, err)
	}
	var ae *APIError
	if err := c.Do(ctx, http.MethodGet, "/refused", nil, nil); !errors.As(err, &ae) || ae.Status != http.StatusConflict || ae.Message != `service "echo" is served already` {
		t.Fatalf("a refusal: %v, want the daemon's message as an *APIError", err)
	}
	if err := c.Do(ctx, http.MethodGet, "/broken", nil, nil); !errors.As(err, &ae) || ae.Status != http.StatusBadGateway || !strings.Contains(ae.Message, "502") {
		t.Fatalf("an answer that is not ours: %v", err)
	}
}
