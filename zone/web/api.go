package web

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"strings"
	"time"

	"github.com/pzone/pzone/zone/mgmt"
)

// The API's own endpoints: logging in and out, the session itself, the
// sessions an operator may see and end. Everything else under /api/v1/
// is the hub's admin API (proxy.go).

// CookieName is the one cookie: the session's id, nothing else.
const CookieName = "pzsession"

// CSRFHeader carries a cookie session's CSRF token on every request that
// changes anything.
const CSRFHeader = "X-CSRF-Token"

// AuthQuery is an outstanding authentication step of a partial session,
// and where to answer it.
type AuthQuery struct {
	Type       string `json:"type"`     // MFA
	Provider   string `json:"provider"` // pzone
	Format     string `json:"format"`   // numeric
	MinLength  int    `json:"min_length"`
	MaxLength  int    `json:"max_length"`
	HTTPMethod string `json:"http_method"`
	HTTPURL    string `json:"http_url"`
}

// totpQuery is the TOTP query: 6 digits, or a recovery code in its place.
var totpQuery = AuthQuery{Type: "MFA", Provider: "pzone", Format: "numeric", MinLength: mgmt.TOTPDigits, MaxLength: mgmt.TOTPDigits,
	HTTPMethod: http.MethodPost, HTTPURL: "/api/v1/authenticate/mfa"}

// SessionBody is a session as the API shows it to itself.
type SessionBody struct {
	mgmt.Session
	// CSRFToken goes in X-CSRF-Token on each request that changes
	// something, with the cookie.
	CSRFToken   string      `json:"csrf_token,omitempty"`
	AuthQueries []AuthQuery `json:"auth_queries"`
}

// ErrorBody is a refusal; a partial session's says what to answer.
type ErrorBody struct {
	Error       string      `json:"error"`
	AuthQueries []AuthQuery `json:"auth_queries,omitempty"`
	RetryAfter  int         `json:"retry_after_seconds,omitempty"`
}

func sessionBody(s *mgmt.Session) SessionBody {
	b := SessionBody{Session: *s, CSRFToken: s.CSRFToken(), AuthQueries: []AuthQuery{}}
	if s.State == mgmt.StatePartial {
		b.AuthQueries = append(b.AuthQueries, totpQuery)
	}
	return b
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	json.NewEncoder(w).Encode(v)
}

// writeErr answers err with its status and, for a back-off, when to retry.
func writeErr(w http.ResponseWriter, err error) {
	status := http.StatusInternalServerError
	body := ErrorBody{Error: err.Error()}
	var be *mgmt.BackoffError
	switch {
	case errors.As(err, &be):
		status = http.StatusTooManyRequests
		secs := int((be.RetryAfter + time.Second - 1) / time.Second)
		w.Header().Set("Retry-After", fmt.Sprint(secs))
		body.RetryAfter = secs
	case errors.Is(err, mgmt.ErrPartial):
		status = http.StatusUnauthorized
		body.AuthQueries = []AuthQuery{totpQuery}
	case errors.Is(err, mgmt.ErrBadLogin), errors.Is(err, mgmt.ErrBadCode), errors.Is(err, mgmt.ErrNoSession), errors.Is(err, mgmt.ErrNoToken), errors.Is(err, errNoCredential):
		status = http.StatusUnauthorized
	case errors.Is(err, errForbidden):
		status = http.StatusForbidden
	case errors.Is(err, mgmt.ErrNotPartial), errors.Is(err, mgmt.ErrOperatorExists):
		status = http.StatusConflict
	case errors.Is(err, mgmt.ErrBadRequest), errors.Is(err, errBadBody):
		status = http.StatusBadRequest
	case errors.Is(err, mgmt.ErrNoOperator), errors.Is(err, mgmt.ErrNotFound):
		status = http.StatusNotFound
	case errors.Is(err, mgmt.ErrBusy):
		status = http.StatusServiceUnavailable
		w.Header().Set("Retry-After", "2")
	}
	writeJSON(w, status, body)
}

var (
	errNoCredential = errors.New("not logged in: POST /api/v1/authenticate with your name and password, or send an API token (Authorization: Bearer)")
	errForbidden    = errors.New("forbidden")
	errBadBody      = errors.New("bad request body")
)

func readBody(r *http.Request, v any) error {
	dec := json.NewDecoder(io.LimitReader(r.Body, maxBody))
	if err := dec.Decode(v); err != nil {
		return fmt.Errorf("%w: %v (send a JSON object)", errBadBody, err)
	}
	return nil
}

// clientIP is the address the request came from: the connection's, as
// no proxy in front is trusted to say otherwise.
func clientIP(r *http.Request) string {
	host, _, err := net.SplitHostPort(r.RemoteAddr)
	if err != nil {
		return r.RemoteAddr
	}
	return host
}

// caller is who a request is: a session (by cookie or Bearer) or an API
// token.
type caller struct {
	id      string // the session's id, if a session
	cookie  bool   // the id came in the cookie: CSRF rules apply
	session *mgmt.Session
	token   *mgmt.Token
}

func (c *caller) scope() mgmt.Scope {
	if c.token != nil {
		return c.token.Scope
	}
	return c.session.Scope
}

func (c *caller) name() string {
	if c.token != nil {
		return "token " + c.token.Name
	}
	return "operator " + c.session.Operator
}

// credential is the session id or API token a request carries.
func credential(r *http.Request) (secret string, cookie bool) {
	if h := r.Header.Get("Authorization"); h != "" {
		s, _ := strings.CutPrefix(h, "Bearer ")
		return strings.TrimSpace(s), false
	}
	if c, err := r.Cookie(CookieName); err == nil {
		return c.Value, true
	}
	return "", false
}

// identify authenticates a request fully (and counts it as activity).
func (h *Handler) identify(r *http.Request) (*caller, error) {
	secret, cookie := credential(r)
	if secret == "" {
		return nil, errNoCredential
	}
	if strings.HasPrefix(secret, mgmt.TokenPrefix) {
		t, err := h.M.VerifyToken(secret, clientIP(r))
		if err != nil {
			return nil, err
		}
		return &caller{token: t}, nil
	}
	s, err := h.M.Authenticate(secret)
	if err != nil {
		return nil, err
	}
	return &caller{id: secret, cookie: cookie, session: s}, nil
}

// changes reports whether a request may change something.
func changes(r *http.Request) bool {
	switch r.Method {
	case http.MethodGet, http.MethodHead, http.MethodOptions:
		return false
	}
	return true
}

// sameOrigin refuses a request that changes something sent from another
// site: its Origin (every browser sends one on such requests) must be
// this listener, and a browser's Sec-Fetch-Site must not say cross-site.
func sameOrigin(r *http.Request) error {
	if site := r.Header.Get("Sec-Fetch-Site"); site != "" && site != "same-origin" && site != "none" {
		return fmt.Errorf("%w: a %s request from another site (Sec-Fetch-Site: %s)", errForbidden, r.Method, site)
	}
	origin := r.Header.Get("Origin")
	if origin == "" {
		return nil // not a browser's, or a same-origin GET
	}
	u, err := url.Parse(origin)
	if err != nil || !strings.EqualFold(u.Host, r.Host) {
		return fmt.Errorf("%w: Origin %q is not this listener (%s)", errForbidden, origin, r.Host)
	}
	return nil
}

// checkCSRF: a cookie session's changing request carries its token.
func checkCSRF(r *http.Request, s *mgmt.Session) error {
	if r.Header.Get(CSRFHeader) != s.CSRFToken() {
		return fmt.Errorf("%w: the request lacks the session's CSRF token (%s)", errForbidden, CSRFHeader)
	}
	return nil
}

// checkChange applies the rules for a request that changes something:
// its origin, and for a cookie session (s) its CSRF token.
func checkChange(r *http.Request, cookie bool, s *mgmt.Session) error {
	if err := sameOrigin(r); err != nil {
		return err
	}
	if cookie {
		return checkCSRF(r, s)
	}
	return nil
}

// ownSession is the id of the session, partial or full, a request that
// acts on it comes with (answering its query, logging out), checked as a
// changing request.
func (h *Handler) ownSession(r *http.Request) (string, error) {
	id, cookie := credential(r)
	cur, err := h.M.Current(id)
	if err != nil {
		return "", err
	}
	return id, checkChange(r, cookie, cur)
}

// loggedIn answers a login: the session with its cookie, or the error.
func loggedIn(w http.ResponseWriter, r *http.Request, s *mgmt.Session, id string, err error) {
	if err != nil {
		writeErr(w, err)
		return
	}
	setCookie(w, r, id, int(time.Until(s.Expires)/time.Second))
	writeJSON(w, http.StatusOK, sessionBody(s))
}

// setCookie gives the browser the session's id; maxAge -1 removes it.
func setCookie(w http.ResponseWriter, r *http.Request, value string, maxAge int) {
	http.SetCookie(w, &http.Cookie{Name: CookieName, Value: value, Path: "/", MaxAge: maxAge,
		HttpOnly: true, SameSite: http.SameSiteStrictMode, Secure: r.TLS != nil})
}

// routes adds the API's own endpoints to mux.
func (h *Handler) routes(mux *http.ServeMux) {
	mux.HandleFunc("POST /api/v1/authenticate", func(w http.ResponseWriter, r *http.Request) {
		if err := sameOrigin(r); err != nil {
			writeErr(w, err)
			return
		}
		var req struct {
			Name     string `json:"name"`
			Password string `json:"password"`
		}
		if err := readBody(r, &req); err != nil {
			writeErr(w, err)
			return
		}
		s, id, err := h.M.Login(r.Context(), req.Name, req.Password, clientIP(r), r.UserAgent())
		loggedIn(w, r, s, id, err)
	})
	mux.HandleFunc("POST /api/v1/authenticate/link", func(w http.ResponseWriter, r *http.Request) {
		if err := sameOrigin(r); err != nil {
			writeErr(w, err)
			return
		}
		var req struct {
			Token string `json:"token"`
		}
		if err := readBody(r, &req); err != nil {
			writeErr(w, err)
			return
		}
		s, id, err := h.M.RedeemLink(req.Token, clientIP(r), r.UserAgent())
		loggedIn(w, r, s, id, err)
	})
	mux.HandleFunc("POST /api/v1/authenticate/mfa", func(w http.ResponseWriter, r *http.Request) {
		id, err := h.ownSession(r)
		if err != nil {
			writeErr(w, err)
			return
		}
		var req struct {
			Code string `json:"code"`
		}
		if err := readBody(r, &req); err != nil {
			writeErr(w, err)
			return
		}
		s, err := h.M.AnswerMFA(id, strings.TrimSpace(req.Code), clientIP(r))
		if err != nil {
			writeErr(w, err)
			return
		}
		writeJSON(w, http.StatusOK, sessionBody(s))
	})
	mux.HandleFunc("GET /api/v1/current-session", func(w http.ResponseWriter, r *http.Request) {
		id, _ := credential(r)
		if id == "" {
			writeErr(w, errNoCredential)
			return
		}
		s, err := h.M.Current(id)
		if err == nil && s.State == mgmt.StateFull {
			s, err = h.M.Authenticate(id) // a full session's read is activity
		}
		if err != nil {
			writeErr(w, err)
			return
		}
		writeJSON(w, http.StatusOK, sessionBody(s))
	})
	mux.HandleFunc("DELETE /api/v1/current-session", func(w http.ResponseWriter, r *http.Request) {
		id, err := h.ownSession(r)
		if err != nil {
			writeErr(w, err)
			return
		}
		if err := h.M.Logout(id); err != nil {
			writeErr(w, err)
			return
		}
		setCookie(w, r, "", -1)
		w.WriteHeader(http.StatusNoContent)
	})
	mux.Handle("POST /api/v1/current-session/children", h.authed(mgmt.ScopeRead, func(w http.ResponseWriter, r *http.Request, c *caller) {
		if c.session == nil {
			writeErr(w, fmt.Errorf("%w: an API token has no session to make children of", mgmt.ErrBadRequest))
			return
		}
		var req struct {
			Scope string `json:"scope"`
		}
		if err := readBody(r, &req); err != nil {
			writeErr(w, err)
			return
		}
		scope, err := mgmt.ParseScope(req.Scope)
		if err != nil {
			writeErr(w, err)
			return
		}
		s, id, err := h.M.Child(c.id, scope, clientIP(r), r.UserAgent())
		if err != nil {
			writeErr(w, err)
			return
		}
		writeJSON(w, http.StatusCreated, struct {
			Session mgmt.Session `json:"session"`
			Token   string       `json:"token"` // its id: Authorization: Bearer TOKEN
		}{*s, id})
	}))
	mux.Handle("GET /api/v1/sessions", h.authed(mgmt.ScopeAdmin, func(w http.ResponseWriter, r *http.Request, c *caller) {
		writeJSON(w, http.StatusOK, h.M.Sessions())
	}))
	mux.Handle("DELETE /api/v1/sessions/{id}", h.authed(mgmt.ScopeAdmin, func(w http.ResponseWriter, r *http.Request, c *caller) {
		if err := h.M.End(r.PathValue("id")); err != nil {
			writeErr(w, err)
			return
		}
		h.Logger.Info("web session ended by an operator", "session", r.PathValue("id"), "by", c.name())
		w.WriteHeader(http.StatusNoContent)
	}))
	mux.Handle("GET /api/v1/api-tokens", h.authed(mgmt.ScopeAdmin, func(w http.ResponseWriter, r *http.Request, c *caller) {
		writeJSON(w, http.StatusOK, h.M.Tokens())
	}))
	mux.Handle("DELETE /api/v1/api-tokens/{id}", h.authed(mgmt.ScopeAdmin, func(w http.ResponseWriter, r *http.Request, c *caller) {
		if _, err := h.M.RevokeToken(r.PathValue("id")); err != nil {
			writeErr(w, err)
			return
		}
		w.WriteHeader(http.StatusNoContent)
	}))
}

// authed wraps an endpoint that needs a caller of at least scope (read:
// any caller; admin: an admin one), with the CSRF and Origin rules for
// one that changes something.
func (h *Handler) authed(need mgmt.Scope, f func(http.ResponseWriter, *http.Request, *caller)) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		c, err := h.identify(r)
		if err != nil {
			writeErr(w, err)
			return
		}
		if need == mgmt.ScopeAdmin && c.scope() != mgmt.ScopeAdmin || changes(r) && c.scope() != mgmt.ScopeAdmin {
			writeErr(w, fmt.Errorf("%w: %s has scope %s, which may not %s %s", errForbidden, c.name(), c.scope(), r.Method, r.URL.Path))
			return
		}
		if changes(r) {
			if err := checkChange(r, c.cookie, c.session); err != nil {
				writeErr(w, err)
				return
			}
		}
		f(w, r, c)
	})
}

func mgmtBad(format string, a ...any) error {
	return fmt.Errorf("%w: %s", mgmt.ErrBadRequest, fmt.Sprintf(format, a...))
}
