package hub

import (
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"sync"
	"time"

	zsync "github.com/pzone/pzone/sync"
	"github.com/pzone/pzone/zone/api"
	"github.com/pzone/pzone/zone/localapi"
	"github.com/pzone/pzone/zone/policy"
)

// The hub's admin API for the zone's policy rules: the one code path of
// pzh policy and the dashboard's policy page. Rules are records of the
// hub-only bucket policy (key = rule ID, value = a policy.Rule in JSON),
// so writing one here syncs it to every device.

// newRuleIDTries bounds the draws of a fresh rule ID: with 40 random bits,
// a second collision in a row means something other than chance.
const newRuleIDTries = 3

// errRuleExists marks an add whose ID a rule has already.
var errRuleExists = errors.New("rule exists")

// policyAPI serialises the hub's adds, so that a given ID is created once.
type policyAPI struct {
	h  *Hub
	mu sync.Mutex
}

func (p *policyAPI) routes(mux *http.ServeMux) {
	mux.HandleFunc("GET /v1/policy", func(w http.ResponseWriter, r *http.Request) {
		rules, skipped, err := policy.LoadRules(p.h.state)
		if err != nil {
			localapi.WriteErr(w, localapi.DataStatus(err), err)
			return
		}
		policy.SortRules(rules)
		out := api.PolicyList{Rules: rules}
		if out.Rules == nil {
			out.Rules = []policy.Rule{}
		}
		for _, e := range skipped {
			out.Skipped = append(out.Skipped, e.Error())
		}
		localapi.WriteJSON(w, http.StatusOK, out)
	})
	mux.HandleFunc("POST /v1/policy", func(w http.ResponseWriter, r *http.Request) {
		var req api.PolicyAddRequest
		if err := localapi.ReadJSON(r, &req); err != nil {
			localapi.WriteErr(w, http.StatusBadRequest, err)
			return
		}
		rule, err := p.add(req)
		switch {
		case errors.Is(err, errRuleExists):
			localapi.WriteErr(w, http.StatusConflict, err)
		case errors.As(err, new(badRule)):
			localapi.WriteErr(w, http.StatusBadRequest, err)
		case err != nil:
			localapi.WriteErr(w, localapi.DataStatus(err), err)
		default:
			p.h.log.Info("policy rule added", "rule", rule.ID, "effect", rule.Effect, "from", rule.From, "to", rule.To, "method", rule.Method)
			localapi.WriteJSON(w, http.StatusCreated, rule)
		}
	})
	mux.HandleFunc("DELETE /v1/policy/{id}", func(w http.ResponseWriter, r *http.Request) {
		id := r.PathValue("id")
		if err := policy.CheckRuleID(id); err != nil {
			localapi.WriteErr(w, http.StatusBadRequest, err)
			return
		}
		_, err := p.h.state.Delete(zsync.BucketPolicy, id)
		switch {
		case errors.Is(err, zsync.ErrNotFound):
			localapi.WriteErr(w, http.StatusNotFound, fmt.Errorf("no rule with ID %q; list the rules with: pzh policy list", id))
		case err != nil:
			localapi.WriteErr(w, localapi.DataStatus(err), err)
		default:
			p.h.log.Info("policy rule removed", "rule", id)
			localapi.WriteJSON(w, http.StatusOK, map[string]string{"id": id})
		}
	})
	mux.HandleFunc("POST /v1/policy/check", func(w http.ResponseWriter, r *http.Request) {
		var req api.PolicyCheckRequest
		if err := localapi.ReadJSON(r, &req); err != nil {
			localapi.WriteErr(w, http.StatusBadRequest, err)
			return
		}
		call, err := policy.ParseRequest(req.From, req.To, req.Method)
		if err != nil {
			localapi.WriteErr(w, http.StatusBadRequest, err)
			return
		}
		p.complete(&call)
		// The rules the hub's own calls use, read once per change of the
		// zone state.
		localapi.WriteJSON(w, http.StatusOK, policy.Decide(p.h.calls.Get(p.h.state, p.h.log).Rules, call))
	})
}

// badRule marks adds refused for what they ask.
type badRule struct{ error }

// add checks req, gives the rule its ID (req's, if no rule has it, else a
// fresh one) and creation time, and writes it.
func (p *policyAPI) add(req api.PolicyAddRequest) (policy.Rule, error) {
	if req.From == "" || req.To == "" {
		return policy.Rule{}, badRule{errors.New("--from WHO and --to TARGET are required (use '*' for anyone or anything)")}
	}
	rule, err := policy.ParseRule(req.From, req.To, req.Method, req.Effect)
	if err != nil {
		return policy.Rule{}, badRule{err}
	}
	if req.ID != "" {
		if err := policy.CheckRuleID(req.ID); err != nil {
			return policy.Rule{}, badRule{err}
		}
	}
	rule.Created = p.h.cfg.Now().UTC().Truncate(time.Second)
	p.mu.Lock()
	defer p.mu.Unlock()
	if rule.ID, err = p.freeID(req.ID); err != nil {
		return policy.Rule{}, err
	}
	value, err := json.Marshal(rule)
	if err != nil {
		return policy.Rule{}, err
	}
	if _, err := p.h.state.Put(zsync.BucketPolicy, rule.ID, value); err != nil {
		return policy.Rule{}, err
	}
	return rule, nil
}

// freeID returns want if no record has it yet, else, for want "", a fresh
// random ID no record has. Called with p.mu held.
func (p *policyAPI) freeID(want string) (string, error) {
	for range newRuleIDTries {
		id := want
		if id == "" {
			id = policy.NewRuleID()
		}
		rec, ok, err := p.h.state.Get(zsync.BucketPolicy, id)
		switch {
		case err != nil:
			return "", err
		case !ok || rec.Deleted:
			return id, nil
		case want != "":
			return "", fmt.Errorf("%w: a rule with ID %q exists already; remove it first with: pzh policy rm %s, or choose another --id", errRuleExists, id, id)
		}
	}
	return "", fmt.Errorf("no free rule ID after %d tries; try again", newRuleIDTries)
}

// complete fills in what the hub knows of a checked call's zone: this
// zone's name and ID (then the default is the zone's own), or a friend's
// petname and ID, so rules naming the zone either way match.
func (p *policyAPI) complete(call *policy.Request) {
	call.SameZoneAs(p.h.zone.Name, p.h.zone.ID)
	if call.SameZone {
		return
	}
	name := call.FromZone
	if name == "" {
		name = call.FromZoneID
	}
	if f := p.h.friends.named(name); f != nil {
		call.FromZone, call.FromZoneID = f.Petname, string(f.ZoneID)
	}
}
