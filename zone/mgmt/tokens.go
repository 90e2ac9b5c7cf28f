package mgmt

import (
	"fmt"
	"sort"
	"strings"
	"time"

	"github.com/pzone/pzone/storefile/kv"

	"github.com/pzone/pzone/certs"
	"github.com/pzone/pzone/zone/stores"
)

// API tokens let scripts and other systems use the API without a login:
// Authorization: Bearer TOKEN. A token is shown once, at creation, and
// stored as a hash; its scope is read (look only) or admin.

// TokenPrefix starts every API token, so that one pasted by mistake is
// recognised (and secret scanners can find it).
const TokenPrefix = "pzweb_"

// MaxTokenTTL bounds a token's lifetime: long-lived credentials are how
// systems are lost, and a script's token is easily renewed within a year.
const MaxTokenTTL = 366 * 24 * time.Hour

// Token is an API token's record.
type Token struct {
	Ref      string    `cbor:"1,keyasint" json:"id"`
	Name     string    `cbor:"2,keyasint" json:"name"`
	Scope    Scope     `cbor:"3,keyasint" json:"scope"`
	Created  time.Time `cbor:"4,keyasint" json:"created"`
	Expires  time.Time `cbor:"5,keyasint" json:"expires"`
	LastUsed time.Time `cbor:"6,keyasint,omitempty" json:"last_used,omitzero"`
	LastIP   string    `cbor:"7,keyasint,omitempty" json:"last_ip,omitempty"`

	hash string
}

// CreateToken makes an API token and returns its record and its secret.
func (m *Manager) CreateToken(name string, scope Scope, ttl time.Duration) (*Token, string, error) {
	if err := certs.ValidateName("token", name); err != nil {
		return nil, "", badRequest("%v", err)
	}
	if _, err := ParseScope(string(scope)); err != nil {
		return nil, "", err
	}
	if ttl <= 0 || ttl > MaxTokenTTL {
		return nil, "", badRequest("token lifetime %v: give one from 1s to %v", ttl, MaxTokenTTL)
	}
	secret, hash, err := newSecret(TokenPrefix)
	if err != nil {
		return nil, "", err
	}
	now := m.cfg.Now()
	t := &Token{Ref: newRef(), Name: name, Scope: scope, Created: now, Expires: now.Add(ttl), hash: hash}
	m.mu.Lock()
	defer m.mu.Unlock()
	for _, o := range m.tokens {
		if o.Name == name && now.Before(o.Expires) {
			return nil, "", badRequest("a token named %q exists; revoke it first (pzh web token revoke %s) or choose another name", name, name)
		}
	}
	err = m.db.Update(func(tx kv.Tx) error {
		return stores.PutCBOR(tx.Bucket(bucketTokens), []byte(hash), t)
	})
	if err != nil {
		return nil, "", fmt.Errorf("store the token: %w", err)
	}
	m.tokens[hash] = t
	m.cfg.Logger.Info("API token created", "token", name, "scope", scope, "expires", t.Expires)
	c := *t
	return &c, secret, nil
}

// VerifyToken returns the live token of secret and records its use.
func (m *Manager) VerifyToken(secret, ip string) (*Token, error) {
	if !strings.HasPrefix(secret, TokenPrefix) {
		return nil, ErrNoToken
	}
	now := m.cfg.Now()
	m.mu.Lock()
	defer m.mu.Unlock()
	t := m.tokens[secretHash(secret)]
	if t == nil || !now.Before(t.Expires) {
		return nil, ErrNoToken
	}
	t.LastUsed, t.LastIP = now, ip
	m.dirty[t.hash] = true
	c := *t
	return &c, nil
}

// Tokens lists the API tokens, expired ones too (until revoked), by name.
func (m *Manager) Tokens() []Token {
	m.mu.Lock()
	out := make([]Token, 0, len(m.tokens))
	for _, t := range m.tokens {
		out = append(out, *t)
	}
	m.mu.Unlock()
	sort.Slice(out, func(i, j int) bool {
		if out[i].Name != out[j].Name {
			return out[i].Name < out[j].Name
		}
		return out[i].Created.Before(out[j].Created)
	})
	return out
}

// RevokeToken deletes the token named by its id or its name.
func (m *Manager) RevokeToken(which string) (*Token, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	var t *Token
	for _, o := range m.tokens {
		if o.Ref == which || o.Name == which {
			if t != nil {
				return nil, badRequest("more than one token is named %q: revoke it by its id (pzh web token list)", which)
			}
			t = o
		}
	}
	if t == nil {
		return nil, fmt.Errorf("%w: no API token %q (pzh web token list)", ErrNotFound, which)
	}
	err := m.db.Update(func(tx kv.Tx) error {
		return tx.Bucket(bucketTokens).Delete([]byte(t.hash))
	})
	if err != nil {
		return nil, err
	}
	delete(m.tokens, t.hash)
	delete(m.dirty, t.hash)
	m.cfg.Logger.Info("API token revoked", "token", t.Name)
	c := *t
	return &c, nil
}
