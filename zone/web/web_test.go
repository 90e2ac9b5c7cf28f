package web

import (
	"bufio"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"io"
	"math/big"
	"net"
	"net/http"
	"net/http/cookiejar"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	bolt "go.etcd.io/bbolt"

	"github.com/pzone/pzone/storefile/kv"
	"github.com/pzone/pzone/zone/mgmt"
)

type fakeClock struct {
	mu  sync.Mutex
	now time.Time
}

func (c *fakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

func (c *fakeClock) Add(d time.Duration) {
	c.mu.Lock()
	c.now = c.now.Add(d)
	c.mu.Unlock()
}

// adminStub stands for the hub's admin API: what the web layer passes on
// is answered here, so the tests see what got through and as whom.
func adminStub() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /v1/status", func(w http.ResponseWriter, r *http.Request) {
		writeJSON(w, http.StatusOK, map[string]any{"zone": "home", "auth": r.Header.Get("Authorization") + r.Header.Get("Cookie")})
	})
	mux.HandleFunc("POST /v1/invites", func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		writeJSON(w, http.StatusCreated, map[string]any{"got": string(b)})
	})
	mux.HandleFunc("GET /v1/watch/{bucket}", func(w http.ResponseWriter, r *http.Request) {
		w.WriteHeader(http.StatusOK)
		fmt.Fprintln(w, "{}")
		w.(http.Flusher).Flush()
		<-r.Context().Done()
	})
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		writeJSON(w, http.StatusTeapot, map[string]string{"error": "the stub got " + r.URL.Path})
	})
	return mux
}

type webFixture struct {
	t     *testing.T
	m     *mgmt.Manager
	clock *fakeClock
	srv   *httptest.Server
}

func newWebFixture(t *testing.T) *webFixture {
	t.Helper()
	db, err := bolt.Open(filepath.Join(t.TempDir(), "pzh.db"), 0o600, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	// Near the real time: the cookie jar drops cookies whose expiry, set
	// by this clock, is past by the real one.
	clock := &fakeClock{now: time.Now().UTC().Truncate(time.Second)}
	m, err := mgmt.Open(kv.OfBolt(db), mgmt.Config{Issuer: "pzone home", Now: clock.Now, Hash: mgmt.HashParams{Time: 1, MemoryKiB: 64, Threads: 1}})
	if err != nil {
		t.Fatal(err)
	}
	if err := m.AddOperator(context.Background(), "alice", "correct horse battery"); err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(NewHandler(m, adminStub(), "home", nil))
	t.Cleanup(srv.Close)
	return &webFixture{t: t, m: m, clock: clock, srv: srv}
}

// browser is a client with a cookie jar that sends what a browser sends
// on the listener's own page: Origin, and the CSRF token once it has one.
type browser struct {
	f      *webFixture
	c      *http.Client
	csrf   string
	origin string
}

func (f *webFixture) browser() *browser {
	jar, _ := cookiejar.New(nil)
	return &browser{f: f, c: &http.Client{Jar: jar}, origin: f.srv.URL}
}

func (b *browser) do(method, path string, body any) (*http.Response, map[string]any) {
	b.f.t.Helper()
	var rd io.Reader
	if body != nil {
		j, _ := json.Marshal(body)
		rd = strings.NewReader(string(j))
	}
	req, _ := http.NewRequest(method, b.f.srv.URL+path, rd)
	if b.origin != "" && method != http.MethodGet {
		req.Header.Set("Origin", b.origin)
	}
	if b.csrf != "" {
		req.Header.Set(CSRFHeader, b.csrf)
	}
	resp, err := b.c.Do(req)
	if err != nil {
		b.f.t.Fatal(err)
	}
	defer resp.Body.Close()
	var out map[string]any
	data, _ := io.ReadAll(resp.Body)
	json.Unmarshal(data, &out)
	return resp, out
}

func (b *browser) want(method, path string, body any, status int) map[string]any {
	b.f.t.Helper()
	resp, out := b.do(method, path, body)
	if resp.StatusCode != status {
		b.f.t.Fatalf("%s %s: %d %v, want %d", method, path, resp.StatusCode, out, status)
	}
	return out
}

func (b *browser) login() map[string]any {
	b.f.t.Helper()
	out := b.want(http.MethodPost, "/api/v1/authenticate", map[string]string{"name": "alice", "password": "correct horse battery"}, http.StatusOK)
	b.csrf, _ = out["csrf_token"].(string)
	return out
}

func TestCookieAndHeaders(t *testing.T) {
	f := newWebFixture(t)
	b := f.browser()
	resp, out := b.do(http.MethodPost, "/api/v1/authenticate", map[string]string{"name": "alice", "password": "correct horse battery"})
	if resp.StatusCode != http.StatusOK || out["state"] != "full" {
		t.Fatalf("login: %d %v", resp.StatusCode, out)
	}
	cookies := resp.Cookies()
	if len(cookies) != 1 {
		t.Fatalf("cookies %v", cookies)
	}
	c := cookies[0]
	if c.Name != CookieName || !c.HttpOnly || c.SameSite != http.SameSiteStrictMode || c.Path != "/" || c.Secure || len(c.Value) < 43 {
		t.Fatalf("cookie %+v", c)
	}
	if strings.Contains(fmt.Sprint(out), c.Value) {
		t.Fatal("the session id is in the body")
	}
	for k, want := range map[string]string{"Content-Security-Policy": "default-src 'none'", "X-Content-Type-Options": "nosniff",
		"Referrer-Policy": "no-referrer", "Cache-Control": "no-store", "X-Frame-Options": "DENY"} {
		if !strings.Contains(resp.Header.Get(k), want) {
			t.Errorf("%s: %q", k, resp.Header.Get(k))
		}
	}
	// What the admin API gets carries no credential of the web's.
	st := b.want(http.MethodGet, "/api/v1/status", nil, http.StatusOK)
	if st["zone"] != "home" || st["auth"] != "" {
		t.Fatalf("status %v", st)
	}
	// Not passed on: anything outside the list.
	b.want(http.MethodGet, "/api/v1/debug/pprof/", nil, http.StatusNotFound)
	b.want(http.MethodGet, "/api/v1/services/x/events", nil, http.StatusNotFound)
	b.want(http.MethodGet, "/api/v1/data/../debug/pprof/", nil, http.StatusNotFound)
}

func TestCSRFAndOrigin(t *testing.T) {
	f := newWebFixture(t)
	b := f.browser()
	b.login()
	b.want(http.MethodPost, "/api/v1/invites", map[string]string{"device": "phone"}, http.StatusCreated)
	token := b.csrf
	b.csrf = ""
	out := b.want(http.MethodPost, "/api/v1/invites", map[string]string{"device": "phone"}, http.StatusForbidden)
	if !strings.Contains(out["error"].(string), "CSRF") {
		t.Fatalf("refusal %v", out)
	}
	b.csrf = "x" + token
	b.want(http.MethodPost, "/api/v1/invites", nil, http.StatusForbidden)
	b.csrf, b.origin = token, "https://evil.example"
	b.want(http.MethodPost, "/api/v1/invites", nil, http.StatusForbidden)
	b.want(http.MethodDelete, "/api/v1/current-session", nil, http.StatusForbidden)
	b.origin = f.srv.URL
	// A cross-site fetch, as the browser labels it.
	req, _ := http.NewRequest(http.MethodPost, f.srv.URL+"/api/v1/authenticate", strings.NewReader(`{"name":"alice","password":"correct horse battery"}`))
	req.Header.Set("Sec-Fetch-Site", "cross-site")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusForbidden {
		t.Fatalf("a cross-site login: %d", resp.StatusCode)
	}
	// Reading needs no token.
	b.csrf = ""
	b.want(http.MethodGet, "/api/v1/status", nil, http.StatusOK)
}

func TestPartialSession(t *testing.T) {
	f := newWebFixture(t)
	e, err := f.m.EnrollMFA("alice")
	if err != nil {
		t.Fatal(err)
	}
	code := func() string {
		c, err := mgmt.TOTPCode(e.Secret, f.clock.Now())
		if err != nil {
			t.Fatal(err)
		}
		return c
	}
	if _, err := f.m.ConfirmMFA("alice", code()); err != nil {
		t.Fatal(err)
	}
	f.clock.Add(30 * time.Second)
	b := f.browser()
	out := b.login()
	qs, _ := out["auth_queries"].([]any)
	if out["state"] != "partial" || len(qs) != 1 {
		t.Fatalf("login %v", out)
	}
	q := qs[0].(map[string]any)
	if q["type"] != "MFA" || q["http_url"] != "/api/v1/authenticate/mfa" || q["min_length"] != 6.0 || q["format"] != "numeric" {
		t.Fatalf("query %v", q)
	}
	// Everything else answers 401 with the query.
	out = b.want(http.MethodGet, "/api/v1/status", nil, http.StatusUnauthorized)
	if qs, _ := out["auth_queries"].([]any); len(qs) != 1 {
		t.Fatalf("refusal %v", out)
	}
	b.want(http.MethodGet, "/api/v1/sessions", nil, http.StatusUnauthorized)
	b.want(http.MethodGet, "/api/v1/current-session", nil, http.StatusOK)
	b.want(http.MethodPost, "/api/v1/authenticate/mfa", map[string]string{"code": "000000"}, http.StatusUnauthorized)
	c := code()
	out = b.want(http.MethodPost, "/api/v1/authenticate/mfa", map[string]string{"code": c}, http.StatusOK)
	if out["state"] != "full" {
		t.Fatalf("after the answer %v", out)
	}
	b.want(http.MethodGet, "/api/v1/status", nil, http.StatusOK)
	b.want(http.MethodPost, "/api/v1/authenticate/mfa", map[string]string{"code": c}, http.StatusConflict)
	// The same code for another login.
	b2 := f.browser()
	b2.login()
	b2.want(http.MethodPost, "/api/v1/authenticate/mfa", map[string]string{"code": c}, http.StatusUnauthorized)
}

func TestLogoutIdleAndRemoval(t *testing.T) {
	f := newWebFixture(t)
	b := f.browser()
	b.login()
	resp, _ := b.do(http.MethodDelete, "/api/v1/current-session", nil)
	if resp.StatusCode != http.StatusNoContent {
		t.Fatalf("logout %d", resp.StatusCode)
	}
	if c := resp.Cookies(); len(c) != 1 || c[0].MaxAge >= 0 {
		t.Fatalf("the cookie is not removed: %v", c)
	}
	b.want(http.MethodGet, "/api/v1/status", nil, http.StatusUnauthorized)

	b.login()
	f.clock.Add(mgmt.DefaultIdle - time.Minute)
	b.want(http.MethodGet, "/api/v1/status", nil, http.StatusOK)
	f.clock.Add(mgmt.DefaultIdle - time.Minute)
	b.want(http.MethodGet, "/api/v1/status", nil, http.StatusOK) // reset by the last
	f.clock.Add(mgmt.DefaultIdle)
	b.want(http.MethodGet, "/api/v1/status", nil, http.StatusUnauthorized)

	// One operator's browser ends another's session: its live stream is
	// cut at once, and its next request is refused.
	admin, other := f.browser(), f.browser()
	admin.login()
	me := other.login()
	req, _ := http.NewRequest(http.MethodGet, f.srv.URL+"/api/v1/watch/apps", nil)
	resp, err := other.c.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	br := bufio.NewReader(resp.Body)
	if line, err := br.ReadString('\n'); err != nil || line != "{}\n" {
		t.Fatalf("watch: %q %v", line, err)
	}
	streams := map[string]int{}
	for _, s := range f.m.Sessions() {
		streams[s.Ref] = s.Streams
	}
	if len(streams) != 2 || streams[me["id"].(string)] != 1 {
		t.Fatalf("sessions' streams %v", streams)
	}
	admin.want(http.MethodDelete, "/api/v1/sessions/"+me["id"].(string), nil, http.StatusNoContent)
	io.ReadAll(br) // returns once the stream is cut, cleanly or not
	other.want(http.MethodGet, "/api/v1/status", nil, http.StatusUnauthorized)
	admin.want(http.MethodDelete, "/api/v1/sessions/"+me["id"].(string), nil, http.StatusNotFound)
}

func TestTokens(t *testing.T) {
	f := newWebFixture(t)
	_, read, err := f.m.CreateToken("ci", mgmt.ScopeRead, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	_, admin, err := f.m.CreateToken("ops", mgmt.ScopeAdmin, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	call := func(tok, method, path string) int {
		req, _ := http.NewRequest(method, f.srv.URL+path, strings.NewReader(`{"device":"x"}`))
		req.Header.Set("Authorization", "Bearer "+tok)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		return resp.StatusCode
	}
	for _, c := range []struct {
		tok, method, path string
		want              int
	}{
		{read, http.MethodGet, "/api/v1/status", http.StatusOK},
		{read, http.MethodPost, "/api/v1/invites", http.StatusForbidden},
		{read, http.MethodGet, "/api/v1/sessions", http.StatusForbidden},
		{admin, http.MethodPost, "/api/v1/invites", http.StatusCreated}, // no CSRF: not a cookie
		{admin, http.MethodGet, "/api/v1/sessions", http.StatusOK},
		{"pzweb_nothing", http.MethodGet, "/api/v1/status", http.StatusUnauthorized},
		{"", http.MethodGet, "/api/v1/status", http.StatusUnauthorized},
	} {
		if got := call(c.tok, c.method, c.path); got != c.want {
			t.Errorf("%s %s with %.10q: %d, want %d", c.method, c.path, c.tok, got, c.want)
		}
	}
	if _, err := f.m.RevokeToken("ops"); err != nil {
		t.Fatal(err)
	}
	if got := call(admin, http.MethodGet, "/api/v1/status"); got != http.StatusUnauthorized {
		t.Fatalf("a revoked token: %d", got)
	}
	toks := f.m.Tokens()
	if len(toks) != 1 || toks[0].LastUsed.IsZero() {
		t.Fatalf("tokens %+v", toks)
	}
}

func TestBackoffAnswer(t *testing.T) {
	f := newWebFixture(t)
	b := f.browser()
	var resp *http.Response
	for range 5 {
		resp, _ = b.do(http.MethodPost, "/api/v1/authenticate", map[string]string{"name": "alice", "password": "wrong password!"})
	}
	if resp.StatusCode != http.StatusTooManyRequests || resp.Header.Get("Retry-After") == "" {
		t.Fatalf("after 5 failures: %d, Retry-After %q", resp.StatusCode, resp.Header.Get("Retry-After"))
	}
}

func TestListen(t *testing.T) {
	if _, err := Listen(Config{Addr: "0.0.0.0:0"}); err == nil || !strings.Contains(err.Error(), "loopback") {
		t.Fatalf("plain HTTP on all addresses: %v", err)
	}
	if _, err := Listen(Config{Addr: "127.0.0.1:0", CertFile: "x.pem"}); err == nil {
		t.Fatal("a certificate without its key")
	}
	l, err := Listen(Config{Addr: "localhost:0"})
	if err != nil {
		t.Fatal(err)
	}
	_, port, _ := net.SplitHostPort(l.Addr().String())
	if want := "http://localhost:" + port; l.PublicURL() != want || l.URL() != want {
		t.Fatalf("public URL %q, want %q", l.PublicURL(), want)
	}
	l.Close()
}

// TestListenURL: the links a hub hands out name a host browsers can
// reach, never the wildcard address it binds.
func TestListenURL(t *testing.T) {
	dir := t.TempDir()
	named := writeCert(t, dir, "named", []string{"hub.example.test"})
	bare := writeCert(t, dir, "bare", nil)
	for _, c := range []struct {
		name string
		cfg  Config
		want string // with PORT for the bound port; "" for none
		err  string
	}{
		{"wildcard, the certificate's name", Config{Addr: "0.0.0.0:0", CertFile: named + ".crt", KeyFile: named + ".key"}, "https://hub.example.test:PORT", ""},
		{"wildcard, no name", Config{Addr: "0.0.0.0:0", CertFile: bare + ".crt", KeyFile: bare + ".key"}, "", ""},
		{"given", Config{Addr: "0.0.0.0:0", CertFile: bare + ".crt", KeyFile: bare + ".key", URL: "https://hub.example.test/"}, "https://hub.example.test", ""},
		{"host given", Config{Addr: "127.0.0.1:0", CertFile: named + ".crt", KeyFile: named + ".key"}, "https://127.0.0.1:PORT", ""},
		{"scheme mismatch", Config{Addr: "127.0.0.1:0", URL: "https://hub.example.test"}, "", "scheme"},
		{"a path", Config{Addr: "127.0.0.1:0", URL: "http://localhost/dash"}, "", "scheme and host only"},
	} {
		l, err := Listen(c.cfg)
		if c.err != "" {
			if err == nil || !strings.Contains(err.Error(), c.err) {
				t.Errorf("%s: %v, want an error saying %q", c.name, err, c.err)
			}
			continue
		}
		if err != nil {
			t.Fatalf("%s: %v", c.name, err)
		}
		_, port, _ := net.SplitHostPort(l.Addr().String())
		if want := strings.ReplaceAll(c.want, "PORT", port); l.PublicURL() != want {
			t.Errorf("%s: public URL %q, want %q", c.name, l.PublicURL(), want)
		}
		l.Close()
	}
}

// writeCert writes a self-signed certificate for names (and a key) to
// dir/base.crt and dir/base.key.
func writeCert(t *testing.T, dir, base string, names []string) string {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "web"}, DNSNames: names,
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour)}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	kder, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	p := filepath.Join(dir, base)
	if err := os.WriteFile(p+".crt", pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(p+".key", pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: kder}), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

func TestLoginLinkAnswer(t *testing.T) {
	f := newWebFixture(t)
	secret, _, err := f.m.LoginLink("alice", time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	b := f.browser()
	out := b.want(http.MethodPost, "/api/v1/authenticate/link", map[string]string{"token": secret}, http.StatusOK)
	b.csrf, _ = out["csrf_token"].(string)
	b.want(http.MethodGet, "/api/v1/status", nil, http.StatusOK)
	f.browser().want(http.MethodPost, "/api/v1/authenticate/link", map[string]string{"token": secret}, http.StatusUnauthorized)
}

// TestAssets: the page's files are served, its template only rendered.
func TestAssets(t *testing.T) {
	f := newWebFixture(t)
	for path, want := range map[string]int{"/": http.StatusOK, "/assets/app.js": http.StatusOK,
		"/assets/": http.StatusNotFound, "/assets/index.html": http.StatusNotFound, "/assets/x/": http.StatusNotFound} {
		resp, err := http.Get(f.srv.URL + path)
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != want || strings.Contains(string(body), "{{") {
			t.Errorf("GET %s: %d, want %d (a template in the body: %v)", path, resp.StatusCode, want, strings.Contains(string(body), "{{"))
		}
	}
}
