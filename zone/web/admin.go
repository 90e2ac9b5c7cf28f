package web

import (
	"net/http"
	"time"

	"github.com/pzone/pzone/zone/mgmt"
)

// The management plane's accounts on the hub's admin socket (the host's
// operator, 0600): what pzh operator and pzh web manage. Passwords come
// over the socket; nothing here is reachable from the web listener.

// OperatorRequest adds an operator or changes its password.
type OperatorRequest struct {
	Name     string `json:"name,omitempty"`
	Password string `json:"password"`
}

// CodeRequest confirms an enrolment.
type CodeRequest struct {
	Code string `json:"code"`
}

// RecoveryCodes are shown once, at enrolment.
type RecoveryCodes struct {
	Operator string   `json:"operator"`
	Codes    []string `json:"recovery_codes"`
}

// TokenRequest creates an API token.
type TokenRequest struct {
	Name  string `json:"name"`
	Scope string `json:"scope"`
	TTL   string `json:"ttl"` // a Go duration
}

// TokenCreated is a new token with its secret, shown once.
type TokenCreated struct {
	mgmt.Token
	Secret string `json:"token"`
}

// LinkRequest asks for a one-time login link.
type LinkRequest struct {
	Operator string `json:"operator"`
	TTL      string `json:"ttl,omitempty"` // a Go duration; empty: mgmt.DefaultLinkTTL
}

// LinkCreated is a login link, shown once.
type LinkCreated struct {
	URL     string    `json:"url"`
	Expires time.Time `json:"expires"`
}

// Unnamed is the web URL a hub gives AdminRoutes when its listener's
// host has no name to put in a link.
const Unnamed = "unnamed"

// AdminRoutes adds the account endpoints to the admin socket's mux;
// webURL is the web listener's base URL as browsers reach it, "" when it
// is off.
func AdminRoutes(mux *http.ServeMux, m *mgmt.Manager, webURL func() string) {
	mux.HandleFunc("POST /v1/web/login-links", func(w http.ResponseWriter, r *http.Request) {
		var req LinkRequest
		if err := readBody(r, &req); err != nil {
			writeErr(w, err)
			return
		}
		base := webURL()
		if base == "" {
			writeJSON(w, http.StatusConflict, ErrorBody{Error: "this hub serves no web listener: start it with pzh serve --web ADDR"})
			return
		}
		if base == Unnamed {
			writeJSON(w, http.StatusConflict, ErrorBody{Error: "the web listener listens on every address and nothing names its host, so a link would not reach it: start the hub with pzh serve --web-url https://HOST:PORT (the address browsers use), or give --web a host name"})
			return
		}
		ttl := mgmt.DefaultLinkTTL
		if req.TTL != "" {
			var err error
			if ttl, err = time.ParseDuration(req.TTL); err != nil {
				writeErr(w, mgmtBad("ttl %q: not a duration (e.g. 10m)", req.TTL))
				return
			}
		}
		secret, exp, err := m.LoginLink(req.Operator, ttl)
		if err != nil {
			writeErr(w, err)
			return
		}
		// In the fragment: never sent to the server in a request line or
		// a Referer; the page's script sends it once and forgets it.
		writeJSON(w, http.StatusCreated, LinkCreated{URL: base + "/#login=" + secret, Expires: exp})
	})
	mux.HandleFunc("GET /v1/operators", func(w http.ResponseWriter, r *http.Request) {
		ops, err := m.Operators()
		if err != nil {
			writeErr(w, err)
			return
		}
		if ops == nil {
			ops = []mgmt.OperatorView{}
		}
		writeJSON(w, http.StatusOK, ops)
	})
	mux.HandleFunc("POST /v1/operators", func(w http.ResponseWriter, r *http.Request) {
		var req OperatorRequest
		if err := readBody(r, &req); err != nil {
			writeErr(w, err)
			return
		}
		if err := m.AddOperator(r.Context(), req.Name, req.Password); err != nil {
			writeErr(w, err)
			return
		}
		w.WriteHeader(http.StatusNoContent)
	})
	mux.HandleFunc("PUT /v1/operators/{name}/password", func(w http.ResponseWriter, r *http.Request) {
		var req OperatorRequest
		if err := readBody(r, &req); err != nil {
			writeErr(w, err)
			return
		}
		if err := m.SetPassword(r.Context(), r.PathValue("name"), req.Password); err != nil {
			writeErr(w, err)
			return
		}
		w.WriteHeader(http.StatusNoContent)
	})
	mux.HandleFunc("DELETE /v1/operators/{name}", func(w http.ResponseWriter, r *http.Request) {
		if err := m.RemoveOperator(r.PathValue("name")); err != nil {
			writeErr(w, err)
			return
		}
		w.WriteHeader(http.StatusNoContent)
	})
	mux.HandleFunc("POST /v1/operators/{name}/mfa", func(w http.ResponseWriter, r *http.Request) {
		e, err := m.EnrollMFA(r.PathValue("name"))
		if err != nil {
			writeErr(w, err)
			return
		}
		writeJSON(w, http.StatusOK, e)
	})
	mux.HandleFunc("POST /v1/operators/{name}/mfa/confirm", func(w http.ResponseWriter, r *http.Request) {
		var req CodeRequest
		if err := readBody(r, &req); err != nil {
			writeErr(w, err)
			return
		}
		codes, err := m.ConfirmMFA(r.PathValue("name"), req.Code)
		if err != nil {
			writeErr(w, err)
			return
		}
		writeJSON(w, http.StatusOK, RecoveryCodes{Operator: r.PathValue("name"), Codes: codes})
	})
	mux.HandleFunc("DELETE /v1/operators/{name}/mfa", func(w http.ResponseWriter, r *http.Request) {
		if err := m.DisableMFA(r.PathValue("name")); err != nil {
			writeErr(w, err)
			return
		}
		w.WriteHeader(http.StatusNoContent)
	})
	mux.HandleFunc("GET /v1/web/sessions", func(w http.ResponseWriter, r *http.Request) {
		writeJSON(w, http.StatusOK, nonNil(m.Sessions()))
	})
	mux.HandleFunc("DELETE /v1/web/sessions/{id}", func(w http.ResponseWriter, r *http.Request) {
		if err := m.End(r.PathValue("id")); err != nil {
			writeErr(w, err)
			return
		}
		w.WriteHeader(http.StatusNoContent)
	})
	mux.HandleFunc("GET /v1/web/tokens", func(w http.ResponseWriter, r *http.Request) {
		writeJSON(w, http.StatusOK, nonNil(m.Tokens()))
	})
	mux.HandleFunc("POST /v1/web/tokens", func(w http.ResponseWriter, r *http.Request) {
		var req TokenRequest
		if err := readBody(r, &req); err != nil {
			writeErr(w, err)
			return
		}
		scope, err := mgmt.ParseScope(req.Scope)
		if err != nil {
			writeErr(w, err)
			return
		}
		ttl, err := time.ParseDuration(req.TTL)
		if err != nil {
			writeErr(w, mgmtBad("ttl %q: not a duration (e.g. 2160h)", req.TTL))
			return
		}
		t, secret, err := m.CreateToken(req.Name, scope, ttl)
		if err != nil {
			writeErr(w, err)
			return
		}
		writeJSON(w, http.StatusCreated, TokenCreated{Token: *t, Secret: secret})
	})
	mux.HandleFunc("DELETE /v1/web/tokens/{id}", func(w http.ResponseWriter, r *http.Request) {
		t, err := m.RevokeToken(r.PathValue("id"))
		if err != nil {
			writeErr(w, err)
			return
		}
		writeJSON(w, http.StatusOK, t)
	})
}

func nonNil[T any](s []T) []T {
	if s == nil {
		return []T{}
	}
	return s
}
