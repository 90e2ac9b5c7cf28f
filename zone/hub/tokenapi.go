package hub

import (
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"sort"
	"strings"

	zsync "github.com/pzone/pzone/sync"
	"github.com/pzone/pzone/zone/api"
	"github.com/pzone/pzone/zone/localapi"
	"github.com/pzone/pzone/zone/token"
	"github.com/pzone/pzone/zone/wire"
)

// The hub's admin API for service tokens (pzh tokens).

// maxIssue bounds one issue: a lot is one transaction.
const maxIssue = 1000

func (tk *tokens) routes(mux *http.ServeMux) {
	mux.HandleFunc("POST /v1/tokens/templates", func(w http.ResponseWriter, r *http.Request) {
		var req api.TokenTemplateRequest
		if err := localapi.ReadJSON(r, &req); err != nil {
			localapi.WriteErr(w, http.StatusBadRequest, err)
			return
		}
		if err := checkTemplate(&req); err != nil {
			localapi.WriteErr(w, http.StatusBadRequest, err)
			return
		}
		var cur token.Template
		if ok, err := tokenRecord(tk.h.state, token.KeyTemplate+req.Name, &cur); err != nil {
			localapi.WriteErr(w, http.StatusInternalServerError, err)
			return
		} else if ok && !req.Replace {
			localapi.WriteErr(w, http.StatusConflict, fmt.Errorf("template %q exists; replace it with --replace (tokens already issued keep their limits)", req.Name))
			return
		}
		tpl := token.Template{Name: req.Name, Created: tk.h.cfg.Now().UTC(), Limits: req.Limits}
		if err := putTokenRecord(tk.h.state, token.KeyTemplate+req.Name, &tpl); err != nil {
			localapi.WriteErr(w, localapi.DataStatus(err), err)
			return
		}
		localapi.WriteJSON(w, http.StatusOK, tpl)
	})
	mux.HandleFunc("GET /v1/tokens/templates", func(w http.ResponseWriter, r *http.Request) {
		var out []token.Template
		err := tk.h.state.List(zsync.BucketTokens, token.KeyTemplate, func(rec zsync.Record) error {
			var t token.Template
			if json.Unmarshal(rec.Value, &t) == nil {
				out = append(out, t)
			}
			return nil
		})
		if err != nil {
			localapi.WriteErr(w, localapi.DataStatus(err), err)
			return
		}
		localapi.WriteJSON(w, http.StatusOK, map[string][]token.Template{"templates": nonNil(out)})
	})
	mux.HandleFunc("POST /v1/tokens", func(w http.ResponseWriter, r *http.Request) {
		var req api.IssueRequest
		if err := localapi.ReadJSON(r, &req); err != nil {
			localapi.WriteErr(w, http.StatusBadRequest, err)
			return
		}
		res, status, err := tk.issue(req)
		if err != nil {
			localapi.WriteErr(w, status, err)
			return
		}
		localapi.WriteJSON(w, http.StatusOK, map[string][]api.IssuedToken{"tokens": res})
	})
	mux.HandleFunc("GET /v1/tokens", func(w http.ResponseWriter, r *http.Request) {
		views, err := tk.views(r.URL.Query().Get("lot"))
		if err != nil {
			localapi.WriteErr(w, localapi.DataStatus(err), err)
			return
		}
		localapi.WriteJSON(w, http.StatusOK, map[string][]api.TokenView{"tokens": nonNil(views)})
	})
	mux.HandleFunc("POST /v1/tokens/revoke", func(w http.ResponseWriter, r *http.Request) {
		var req struct {
			ID  string `json:"id,omitempty"`
			Lot string `json:"lot,omitempty"`
		}
		if err := localapi.ReadJSON(r, &req); err != nil {
			localapi.WriteErr(w, http.StatusBadRequest, err)
			return
		}
		n, err := tk.revoke(req.ID, req.Lot)
		switch {
		case err != nil:
			localapi.WriteErr(w, localapi.DataStatus(err), err)
		case n == 0:
			localapi.WriteErr(w, http.StatusNotFound, fmt.Errorf("no active token matches (id %q, lot %q)", req.ID, req.Lot))
		default:
			localapi.WriteJSON(w, http.StatusOK, map[string]int{"revoked": n})
		}
	})
}

func nonNil[T any](s []T) []T {
	if s == nil {
		return []T{}
	}
	return s
}

func checkTemplate(req *api.TokenTemplateRequest) error {
	if err := wire.ValidateServiceName(req.Name); err != nil {
		return fmt.Errorf("template: %w", err)
	}
	l := req.Limits
	if l.MaxBytesIn < 0 || l.MaxBytesOut < 0 || l.MaxBytesTotal < 0 {
		return errors.New("byte limits cannot be negative")
	}
	for _, d := range l.Devices {
		if err := wire.ValidateServiceName(d); err != nil {
			return fmt.Errorf("device: %w", err)
		}
	}
	return nil
}

func (tk *tokens) issue(req api.IssueRequest) ([]api.IssuedToken, int, error) {
	if req.Count == 0 {
		req.Count = 1
	}
	if req.Count < 0 || req.Count > maxIssue {
		return nil, http.StatusBadRequest, fmt.Errorf("count %d: issue 1 to %d tokens at once", req.Count, maxIssue)
	}
	if req.Lot != "" {
		if err := wire.ValidateServiceName(req.Lot); err != nil {
			return nil, http.StatusBadRequest, fmt.Errorf("lot: %w", err)
		}
	}
	var tpl token.Template
	ok, err := tokenRecord(tk.h.state, token.KeyTemplate+req.Template, &tpl)
	if err != nil {
		return nil, http.StatusInternalServerError, err
	}
	if !ok {
		return nil, http.StatusNotFound, fmt.Errorf("no template %q (pzh tokens template list)", req.Template)
	}
	now := tk.h.cfg.Now()
	var edits []zsync.Edit
	var out []api.IssuedToken
	for range req.Count {
		t, presented := token.New(&tpl, req.Lot, now)
		b, err := json.Marshal(t)
		if err != nil {
			return nil, http.StatusInternalServerError, err
		}
		edits = append(edits, zsync.Edit{Bucket: zsync.BucketTokens, Key: token.KeyToken + t.ID, Value: b})
		out = append(out, api.IssuedToken{ID: t.ID, Token: presented, Lot: req.Lot})
	}
	if _, err := tk.h.state.Apply(edits); err != nil {
		return nil, localapi.DataStatus(err), err
	}
	tk.h.log.Info("tokens issued", "template", req.Template, "lot", req.Lot, "count", req.Count)
	return out, 0, nil
}

func (tk *tokens) views(lot string) ([]api.TokenView, error) {
	now := tk.h.cfg.Now()
	var out []api.TokenView
	err := tk.h.state.List(zsync.BucketTokens, token.KeyToken, func(rec zsync.Record) error {
		var t token.Token
		if json.Unmarshal(rec.Value, &t) != nil || lot != "" && t.Lot != lot {
			return nil
		}
		var u token.Usage
		tokenRecord(tk.h.state, token.KeyUsage+t.ID, &u)
		v := api.TokenView{ID: t.ID, Template: t.Template, Lot: t.Lot, Issued: t.Issued, Usage: u, Limits: t.Limits, State: "active"}
		if _, err := t.Grant(u, "", now); err != nil {
			switch {
			case t.Revoked:
				v.State = "revoked"
			case strings.Contains(err.Error(), "expired"):
				v.State = "expired"
			case strings.Contains(err.Error(), "not valid on device"):
				// valid elsewhere: still active
			default:
				v.State = "used"
			}
		}
		out = append(out, v)
		return nil
	})
	sort.Slice(out, func(i, j int) bool {
		return out[i].Issued.Before(out[j].Issued) || out[i].Issued.Equal(out[j].Issued) && out[i].ID < out[j].ID
	})
	return out, err
}

// revokeTokens revokes a token by id, or every token of a lot, and ends
// the bindings using them.
func (tk *tokens) revoke(id, lot string) (int, error) {
	var edits []zsync.Edit
	var ids []string
	err := tk.h.state.List(zsync.BucketTokens, token.KeyToken, func(rec zsync.Record) error {
		var t token.Token
		if json.Unmarshal(rec.Value, &t) != nil || t.Revoked {
			return nil
		}
		if id != "" && t.ID != id || id == "" && (lot == "" || t.Lot != lot) {
			return nil
		}
		t.Revoked = true
		b, err := json.Marshal(&t)
		if err != nil {
			return err
		}
		edits = append(edits, zsync.Edit{Bucket: zsync.BucketTokens, Key: rec.Key, Value: b})
		ids = append(ids, t.ID)
		return nil
	})
	if err != nil || len(edits) == 0 {
		return 0, err
	}
	if _, err := tk.h.state.Apply(edits); err != nil {
		return 0, err
	}
	for _, tid := range ids {
		for _, b := range tk.h.bindings.withToken(tid) {
			if tk.h.bindings.end(b, "token revoked", tk.h.cfg.Now()) {
				tk.h.log.Info("binding ended", "binding", b.id, "reason", "token revoked")
			}
		}
	}
	tk.h.log.Info("tokens revoked", "id", id, "lot", lot, "count", len(ids))
	return len(ids), nil
}
