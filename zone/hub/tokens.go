package hub

import (
	"encoding/json"
	"errors"
	"fmt"
	"sync"

	zsync "github.com/pzone/pzone/sync"
	"github.com/pzone/pzone/zone/token"
)

// tokens issues, lists and revokes the zone's service tokens, checks the
// token a call presents, and keeps each token's usage as bindings of it
// start and end (bindings.go holds the bindings themselves).
type tokens struct {
	h  *Hub
	mu sync.Mutex // usage records: read, add, write
}

// tokenRecord reads and decodes one record of the tokens bucket.
func tokenRecord(s *zsync.Store, key string, v any) (bool, error) {
	r, ok, err := s.Get(zsync.BucketTokens, key)
	if err != nil || !ok || r.Deleted {
		return false, err
	}
	return true, json.Unmarshal(r.Value, v)
}

func putTokenRecord(s *zsync.Store, key string, v any) error {
	b, err := json.Marshal(v)
	if err != nil {
		return err
	}
	_, err = s.Put(zsync.BucketTokens, key, b)
	return err
}

// ---- the hub: tokens on calls ----

// needsToken reports whether device published service as requiring a
// token.
func (tk *tokens) needed(device, service string) bool {
	return tk.h.calls.Get(tk.h.state, tk.h.log).TokenRequired[device+"/"+service]
}

// presentedToken checks a token presented for a call to device/service.
func (tk *tokens) presented(presented, device, service string) (*token.Token, error) {
	if presented == "" {
		return nil, fmt.Errorf("service %s/%s requires a token: present one (pzp call --token, or \"token\" in the API)", device, service)
	}
	id, secret, err := token.Split(presented)
	if err != nil {
		return nil, err
	}
	var t token.Token
	ok, err := tokenRecord(tk.h.state, token.KeyToken+id, &t)
	if err != nil || !ok || !t.Matches(secret) {
		return nil, errors.New("unknown token: check it was copied whole from pzh tokens issue")
	}
	return &t, nil
}

// bindToken computes a new binding's limits from t and records the use.
func (tk *tokens) bind(t *token.Token, device string) (token.Grant, error) {
	tk.mu.Lock()
	defer tk.mu.Unlock()
	now := tk.h.cfg.Now()
	var u token.Usage
	if _, err := tokenRecord(tk.h.state, token.KeyUsage+t.ID, &u); err != nil {
		return token.Grant{}, err
	}
	l, err := t.Grant(u, device, now)
	if err != nil {
		return token.Grant{}, err
	}
	u.Bindings++
	if u.FirstUse.IsZero() {
		u.FirstUse = now.UTC()
	}
	if err := putTokenRecord(tk.h.state, token.KeyUsage+t.ID, &u); err != nil {
		return token.Grant{}, err
	}
	return l, nil
}

// tokenBindingEnded adds what a token's binding used to the token's usage.
func (tk *tokens) bindingEnded(b *binding) {
	if b.key.token == "" {
		return
	}
	tk.mu.Lock()
	defer tk.mu.Unlock()
	var u token.Usage
	if _, err := tokenRecord(tk.h.state, token.KeyUsage+b.key.token, &u); err != nil {
		tk.h.log.Warn("token usage", "token", b.key.token, "err", err)
		return
	}
	u.BytesIn += int64(b.in.Load())
	u.BytesOut += int64(b.out.Load())
	b.mu.Lock()
	u.Used += token.Duration(b.ended.Sub(b.since))
	b.mu.Unlock()
	if err := putTokenRecord(tk.h.state, token.KeyUsage+b.key.token, &u); err != nil {
		tk.h.log.Warn("token usage", "token", b.key.token, "err", err)
	}
}
