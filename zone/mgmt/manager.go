package mgmt

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/pzone/pzone/storefile/kv"

	"github.com/pzone/pzone/zone/stores"
)

// Defaults of the session rules.
const (
	// DefaultIdle ends a session nothing used for this long (OpenZiti's
	// default); every authenticated request or live stream resets it.
	DefaultIdle = 30 * time.Minute
	// DefaultLifetime ends any session this long after its login, used
	// or not: a working day and some.
	DefaultLifetime = 12 * time.Hour
	// DefaultPartialTime is how long a partially authenticated session has
	// to answer its TOTP query.
	DefaultPartialTime = 5 * time.Minute
	// concurrentHashes bounds the password hashes computed at once, each
	// taking DefaultHashParams' 64 MiB for a moment.
	concurrentHashes = 2
	// hashQueueWait is how long a login waits for its turn to be hashed
	// before it is told the hub is busy.
	hashQueueWait = 5 * time.Second
	// activityWrite: a session's or a token's last use is written to the
	// store at most this often (and when the hub stops): every request
	// would otherwise be an fsync'd commit. After a crash a session looks
	// at most this much older, which only ends it sooner.
	activityWrite = time.Minute
)

// Config sets up a Manager.
type Config struct {
	// Issuer names the zone in TOTP enrolments ("pzone home" in the
	// authenticator app).
	Issuer      string
	Idle        time.Duration
	Lifetime    time.Duration
	PartialTime time.Duration
	Hash        HashParams
	Now         func() time.Time
	Logger      *slog.Logger
}

func (c *Config) setDefaults() {
	if c.Idle == 0 {
		c.Idle = DefaultIdle
	}
	if c.Lifetime == 0 {
		c.Lifetime = DefaultLifetime
	}
	if c.PartialTime == 0 {
		c.PartialTime = DefaultPartialTime
	}
	if c.Hash == (HashParams{}) {
		c.Hash = DefaultHashParams
	}
	if c.Now == nil {
		c.Now = time.Now
	}
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
}

// Validate checks the configuration.
func (c *Config) Validate() error {
	if c.Idle < time.Minute || c.Lifetime < c.Idle || c.PartialTime < time.Minute {
		return fmt.Errorf("web sessions: idle timeout %v must be at least 1m and at most the lifetime %v", c.Idle, c.Lifetime)
	}
	return nil
}

// Buckets in the hub's store.
var (
	bucketOperators = []byte("operators")
	bucketSessions  = []byte("web-sessions")
	bucketTokens    = []byte("web-tokens")
)

// Manager holds the operators, sessions and API tokens of one hub.
type Manager struct {
	cfg Config
	db  kv.DB

	mu       sync.Mutex
	sessions map[string]*session // by the hash of the id
	byRef    map[string]*session
	tokens   map[string]*Token // by the hash of the secret
	dirty    map[string]bool   // session or token hashes whose last use is not written yet
	links    map[string]loginLink
	logins   map[string]uint64 // login steps by result (Stats)

	hashing chan struct{} // a slot per password hash computed at once
	fails   backoff

	dummyOnce sync.Once
	dummyHash string
}

// Open returns the manager of the records in db, making its buckets.
func Open(db kv.DB, cfg Config) (*Manager, error) {
	cfg.setDefaults()
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	m := &Manager{cfg: cfg, db: db, sessions: map[string]*session{}, byRef: map[string]*session{},
		tokens: map[string]*Token{}, dirty: map[string]bool{}, links: map[string]loginLink{}, logins: map[string]uint64{}, hashing: make(chan struct{}, concurrentHashes)}
	err := db.Update(func(tx kv.Tx) error {
		for _, b := range [][]byte{bucketOperators, bucketSessions, bucketTokens} {
			if _, err := tx.CreateBucketIfNotExists(b); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("web sessions store: %w", err)
	}
	if err := m.load(); err != nil {
		return nil, err
	}
	return m, nil
}

// load reads the sessions and tokens, dropping those that ended while the
// hub was down.
func (m *Manager) load() error {
	now := m.cfg.Now()
	var gone [][]byte
	err := m.db.View(func(tx kv.Tx) error {
		err := tx.Bucket(bucketSessions).ForEach(func(k, v []byte) error {
			var rec Session
			if err := stores.GetCBOR(tx.Bucket(bucketSessions), k, &rec); err != nil {
				return err
			}
			rec.hash = string(k)
			s := &session{rec: rec, done: make(chan struct{})}
			if m.over(s, now) != "" {
				gone = append(gone, stores.Clone(k))
				return nil
			}
			m.sessions[rec.hash], m.byRef[rec.Ref] = s, s
			return nil
		})
		if err != nil {
			return err
		}
		return tx.Bucket(bucketTokens).ForEach(func(k, v []byte) error {
			var t Token
			if err := stores.GetCBOR(tx.Bucket(bucketTokens), k, &t); err != nil {
				return err
			}
			t.hash = string(k)
			m.tokens[t.hash] = &t
			return nil
		})
	})
	if err != nil {
		return fmt.Errorf("read the web sessions and API tokens: %w", err)
	}
	// A child whose parent is gone goes too.
	for _, s := range m.sessions {
		if s.rec.Parent != "" && m.byRef[s.rec.Parent] == nil {
			gone = append(gone, []byte(s.rec.hash))
			delete(m.sessions, s.rec.hash)
			delete(m.byRef, s.rec.Ref)
		}
	}
	if len(gone) == 0 {
		return nil
	}
	return m.db.Update(func(tx kv.Tx) error {
		for _, k := range gone {
			if err := tx.Bucket(bucketSessions).Delete(k); err != nil {
				return err
			}
		}
		return nil
	})
}

// Run ends sessions as they expire and writes last uses, until ctx ends.
func (m *Manager) Run(ctx context.Context) error {
	t := time.NewTicker(activityWrite / 4)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			m.flush()
			return nil
		case <-t.C:
			m.expire()
			m.flush()
		}
	}
}

// expire ends the sessions whose time is over.
func (m *Manager) expire() {
	now := m.cfg.Now()
	m.mu.Lock()
	var ended []*session
	for _, s := range m.sessions {
		if why := m.over(s, now); why != "" {
			ended = append(ended, m.endLocked(s, why)...)
		}
	}
	m.mu.Unlock()
	m.forget(ended)
}

// flush writes the last uses not written yet.
func (m *Manager) flush() {
	m.mu.Lock()
	if len(m.dirty) == 0 {
		m.mu.Unlock()
		return
	}
	type put struct {
		bucket []byte
		key    string
		v      any
	}
	var puts []put
	for h := range m.dirty {
		if s := m.sessions[h]; s != nil {
			rec := s.rec
			puts = append(puts, put{bucketSessions, h, &rec})
		} else if t := m.tokens[h]; t != nil {
			tc := *t
			puts = append(puts, put{bucketTokens, h, &tc})
		}
	}
	clear(m.dirty)
	m.mu.Unlock()
	err := m.db.Update(func(tx kv.Tx) error {
		for _, p := range puts {
			b := tx.Bucket(p.bucket)
			if b.Get([]byte(p.key)) == nil {
				continue // ended meanwhile
			}
			if err := stores.PutCBOR(b, []byte(p.key), p.v); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		m.cfg.Logger.Warn("web sessions: writing last uses failed", "err", err)
	}
}

// newSecret returns a fresh secret with prefix and the hash it is stored
// under.
func newSecret(prefix string) (secret, hash string, err error) {
	b := make([]byte, 32)
	if _, err := rand.Read(b); err != nil {
		return "", "", err
	}
	secret = prefix + base64.RawURLEncoding.EncodeToString(b)
	return secret, secretHash(secret), nil
}

func secretHash(secret string) string {
	h := sha256.Sum256([]byte(secret))
	return hex.EncodeToString(h[:])
}

// newRef returns a short public identifier for a session or a token,
// shown in lists and used to end one: it grants nothing.
func newRef() string {
	b := make([]byte, 6)
	rand.Read(b)
	return hex.EncodeToString(b)
}

// Login results counted for Stats.
var loginResults = []string{LoginPasswordOK, LoginPasswordBad, LoginMFAOK, LoginMFABad, LoginLinkOK, LoginLinkBad, LoginBackoff}

// Stats are the manager's figures for the hub's metrics.
type Stats struct {
	Partial, Full int               // live sessions by state
	Logins        map[string]uint64 // login steps by result (loginResults)
}

// Stats reports the live sessions and the login steps counted.
func (m *Manager) Stats() Stats {
	st := Stats{Logins: map[string]uint64{}}
	m.mu.Lock()
	for _, s := range m.sessions {
		if s.rec.State == StatePartial {
			st.Partial++
		} else {
			st.Full++
		}
	}
	for _, r := range loginResults {
		st.Logins[r] = m.logins[r]
	}
	m.mu.Unlock()
	return st
}

// The results of login steps, as Stats counts them (and the metrics name
// them).
const (
	LoginPasswordOK  = "password_ok"
	LoginPasswordBad = "password_bad"
	LoginMFAOK       = "mfa_ok"
	LoginMFABad      = "mfa_bad"
	LoginLinkOK      = "link_ok"
	LoginLinkBad     = "link_bad"
	LoginBackoff     = "backoff" // refused by the back-off before anything was checked
)

// count counts a login step's result.
func (m *Manager) count(result string) {
	m.mu.Lock()
	m.logins[result]++
	m.mu.Unlock()
}
