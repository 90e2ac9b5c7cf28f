package api

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"net"
	"net/http"
	"os"
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

// startingDaemon plays a daemon that writes its CLI's credential to
// credFile as the first request without it arrives, refusing that one; it
// notes each request's Authorization in asked, and reports whether the
// request may go on.
func startingDaemon(w http.ResponseWriter, r *http.Request, credFile, cred string, asked *[]string) bool {
	got := r.Header.Get("Authorization")
	*asked = append(*asked, got)
	if got == "Bearer "+cred {
		return true
	}
	if _, err := os.Stat(credFile); err != nil {
		os.WriteFile(credFile, []byte(cred+"\n"), 0o600)
	}
	w.WriteHeader(http.StatusUnauthorized)
	w.Write([]byte(`{"error":"no credential"}`))
	return false
}

// A CLI reading its daemon's credential file just before the daemon wrote
// it (and then reaching the daemon's new socket) asks again with the file
// as it is now, once, instead of failing as an app without a credential.
func TestClientCredentialFileRace(t *testing.T) {
	credFile := filepath.Join(t.TempDir(), "cli.credential")
	const cred = "pzapp.pzp.secret"
	var asked []string
	mux := http.NewServeMux()
	mux.HandleFunc("POST /v1/echo", func(w http.ResponseWriter, r *http.Request) {
		if !startingDaemon(w, r, credFile, cred, &asked) {
			return
		}
		b, _ := io.ReadAll(r.Body)
		w.Header().Set("Content-Type", "application/json")
		w.Write(b)
	})
	c := serve(t, mux)
	c.credFile = credFile
	var out map[string]int
	if err := c.Do(testCtx(t), http.MethodPost, "/v1/echo", map[string]int{"a": 1}, &out); err != nil || out["a"] != 1 {
		t.Fatalf("Do: %v %v, want the answer once the credential is in place", out, err)
	}
	if len(asked) != 2 || asked[0] != "" {
		t.Fatalf("asked with %q, want once without a credential, then with it", asked)
	}
	// A credential that is simply wrong is not asked again.
	os.WriteFile(credFile, []byte("pzapp.pzp.other\n"), 0o600)
	asked = nil
	var ae *APIError
	if err := c.Do(testCtx(t), http.MethodPost, "/v1/echo", nil, nil); !errors.As(err, &ae) || ae.Status != http.StatusUnauthorized || len(asked) != 1 {
		t.Fatalf("a wrong credential: %v after %d requests, want one 401", err, len(asked))
	}
}

// The same on the upgrade that opens an app channel.
func TestClientCredentialFileRaceUpgrade(t *testing.T) {
	credFile := filepath.Join(t.TempDir(), "cli.credential")
	const cred = "pzapp.pzp.secret"
	var asked []string
	mux := http.NewServeMux()
	mux.HandleFunc("GET /v1/channel", func(w http.ResponseWriter, r *http.Request) {
		if !startingDaemon(w, r, credFile, cred, &asked) {
			return
		}
		w.WriteHeader(http.StatusNotFound) // a daemon without channels: HTTP from here
	})
	mux.HandleFunc("POST /v1/call", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		w.Write([]byte(`{"result":1}`))
	})
	c := serve(t, mux)
	c.credFile = credFile
	if res, err := c.Call(testCtx(t), "laptop/echo", "echo", 1); err != nil || string(res) != "1" {
		t.Fatalf("call: %s, %v", res, err)
	}
	if len(asked) != 2 || asked[0] != "" || asked[1] != "Bearer "+cred {
		t.Fatalf("upgrade asked with %q, want once without a credential, then with it", asked)
	}
}
