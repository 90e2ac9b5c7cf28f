package mgmt

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"sort"
	"time"

	"github.com/pzone/pzone/storefile/kv"

	"github.com/pzone/pzone/zone/stores"
)

// Scope is what a session or an API token may do.
type Scope string

const (
	// ScopeAdmin may do everything the hub's CLI does.
	ScopeAdmin Scope = "admin"
	// ScopeRead may look, and change nothing.
	ScopeRead Scope = "read"
)

// ParseScope checks a scope given by name.
func ParseScope(s string) (Scope, error) {
	switch Scope(s) {
	case ScopeAdmin, ScopeRead:
		return Scope(s), nil
	}
	return "", badRequest("scope %q: use read or admin", s)
}

// covers reports whether s allows all that o does.
func (s Scope) covers(o Scope) bool { return s == ScopeAdmin || s == o }

// Session states.
const (
	// StatePartial: logged in with a password, the TOTP query outstanding.
	StatePartial = "partial"
	// StateFull: fully authenticated.
	StateFull = "full"
)

// Session is the server-side record of an API session. Its id, the
// secret the browser's cookie carries, is stored only as a hash.
type Session struct {
	Ref        string    `cbor:"1,keyasint" json:"id"` // public: names it in lists, grants nothing
	Operator   string    `cbor:"2,keyasint" json:"operator"`
	State      string    `cbor:"3,keyasint" json:"state"`
	Scope      Scope     `cbor:"4,keyasint" json:"scope"`
	Created    time.Time `cbor:"5,keyasint" json:"created"`
	LastActive time.Time `cbor:"6,keyasint" json:"last_active"`
	Expires    time.Time `cbor:"7,keyasint" json:"expires"` // the absolute end
	IP         string    `cbor:"8,keyasint" json:"ip"`
	UserAgent  string    `cbor:"9,keyasint" json:"user_agent"`
	Parent     string    `cbor:"10,keyasint,omitempty" json:"parent,omitempty"` // Ref of the session that made it
	CSRF       string    `cbor:"11,keyasint" json:"-"`
	// IdleEnds is when it ends unless used, filled in when shown.
	IdleEnds time.Time `cbor:"-" json:"idle_ends"`
	Streams  int       `cbor:"-" json:"live_streams"`

	hash string
}

// CSRFToken is the token state-changing requests of this session carry.
func (s *Session) CSRFToken() string { return s.CSRF }

type session struct {
	rec     Session
	streams int           // live streams, which keep it from idling
	done    chan struct{} // closed when it ends: its live streams stop
}

// MaxUserAgent bounds the user agent kept with a session.
const MaxUserAgent = 256

// over says why s has ended at now, or "".
func (m *Manager) over(s *session, now time.Time) string {
	switch {
	case !now.Before(s.rec.Expires):
		return "its lifetime is over"
	case s.streams > 0:
		return ""
	case s.rec.State == StatePartial && now.Sub(s.rec.Created) >= m.cfg.PartialTime:
		return "its second factor was not given in time"
	case now.Sub(s.rec.LastActive) >= m.cfg.Idle:
		return "it was idle"
	}
	return ""
}

func (m *Manager) view(s *session) Session {
	v := s.rec
	v.Streams = s.streams
	if s.streams > 0 {
		v.IdleEnds = v.Expires
	} else {
		idle := m.cfg.Idle
		if v.State == StatePartial {
			idle = m.cfg.PartialTime
			v.LastActive = v.Created
		}
		v.IdleEnds = v.LastActive.Add(idle)
		if v.IdleEnds.After(v.Expires) {
			v.IdleEnds = v.Expires
		}
	}
	return v
}

// AddrKey is the back-off key of a source address: an IPv6 address by its
// /64, which one user typically holds whole.
func AddrKey(ip string) string {
	a, err := netip.ParseAddr(ip)
	if err != nil {
		return "ip:" + ip
	}
	a = a.Unmap()
	if a.Is6() {
		p, _ := a.Prefix(64)
		return "ip:" + p.String()
	}
	return "ip:" + a.String()
}

// throttled returns the back-off in force for the account or the
// address, if any.
func (m *Manager) throttled(name, ip string, now time.Time) error {
	d := max(m.fails.wait("op:"+name, now), m.fails.wait(AddrKey(ip), now))
	if d > 0 {
		return &BackoffError{RetryAfter: d}
	}
	return nil
}

func (m *Manager) failed(name, ip string, now time.Time) {
	m.fails.fail("op:"+name, now)
	m.fails.fail(AddrKey(ip), now)
}

// Login checks a name and password and creates a session: full, or
// partial when the operator has a second factor. It returns the session
// and its id, the secret to hand the client (a cookie) and nowhere else.
func (m *Manager) Login(ctx context.Context, name, password, ip, userAgent string) (*Session, string, error) {
	now := m.cfg.Now()
	if err := m.throttled(name, ip, now); err != nil {
		m.count(LoginBackoff)
		return nil, "", err
	}
	var op *Operator
	err := m.db.View(func(tx kv.Tx) error {
		var err error
		op, err = m.getOperator(tx, name)
		return err
	})
	if err != nil && !errors.Is(err, ErrNoOperator) {
		return nil, "", err
	}
	var hash string
	if op != nil {
		hash = op.PasswordHash
	}
	// An unknown name costs a hash too, so timing does not tell names.
	var ok bool
	var cerr error
	herr := m.hash(ctx, func() {
		if hash == "" {
			hash = m.dummy()
		}
		ok, cerr = checkPassword(hash, password)
	})
	if herr != nil {
		return nil, "", herr
	}
	if cerr != nil && op != nil && op.PasswordHash != "" {
		m.cfg.Logger.Error("operator's password hash unreadable", "operator", name, "err", cerr)
	}
	if op == nil || !ok {
		m.count(LoginPasswordBad)
		m.failed(name, ip, now)
		m.cfg.Logger.Info("web login failed", "operator", name, "ip", ip)
		return nil, "", ErrBadLogin
	}
	m.count(LoginPasswordOK)
	m.fails.clear("op:" + name)
	m.fails.clear(AddrKey(ip))
	state := StateFull
	if op.TOTPSecret != "" {
		state = StatePartial
	}
	if len(userAgent) > MaxUserAgent {
		userAgent = userAgent[:MaxUserAgent]
	}
	s, secret, err := m.create(Session{Operator: name, State: state, Scope: ScopeAdmin, IP: ip, UserAgent: userAgent,
		Created: now, LastActive: now, Expires: now.Add(m.cfg.Lifetime)})
	if err != nil {
		return nil, "", err
	}
	m.cfg.Logger.Info("web login", "operator", name, "ip", ip, "state", state, "session", s.Ref)
	return s, secret, nil
}

// dummy is the hash checked for unknown names, made with the hub's
// parameters (cheaper ones would tell), once.
func (m *Manager) dummy() string {
	m.dummyOnce.Do(func() { m.dummyHash, _ = hashPassword("not a password of anyone", m.cfg.Hash) })
	return m.dummyHash
}

// create stores a new session and returns it with its id.
func (m *Manager) create(rec Session) (*Session, string, error) {
	secret, hash, err := newSecret("")
	if err != nil {
		return nil, "", err
	}
	csrf, _, err := newSecret("")
	if err != nil {
		return nil, "", err
	}
	rec.Ref, rec.CSRF, rec.hash = newRef(), csrf, hash
	err = m.db.Update(func(tx kv.Tx) error {
		return stores.PutCBOR(tx.Bucket(bucketSessions), []byte(hash), &rec)
	})
	if err != nil {
		return nil, "", fmt.Errorf("store the session: %w", err)
	}
	s := &session{rec: rec, done: make(chan struct{})}
	m.mu.Lock()
	m.sessions[hash], m.byRef[rec.Ref] = s, s
	v := m.view(s)
	m.mu.Unlock()
	return &v, secret, nil
}

// lookup returns the live session of id, ending it first if its time is
// over; m.mu is held. The caller forgets what it ended.
func (m *Manager) lookup(id string, now time.Time) (*session, []*session) {
	s := m.sessions[secretHash(id)]
	if s == nil {
		return nil, nil
	}
	if why := m.over(s, now); why != "" {
		return nil, m.endLocked(s, why)
	}
	return s, nil
}

// Authenticate returns the session of id, fully authenticated, and counts
// the request as activity. A partial one gets ErrPartial (with the
// session, so its query can be shown).
func (m *Manager) Authenticate(id string) (*Session, error) {
	now := m.cfg.Now()
	m.mu.Lock()
	s, ended := m.lookup(id, now)
	if s == nil {
		m.mu.Unlock()
		m.forget(ended)
		return nil, ErrNoSession
	}
	if s.rec.State != StateFull {
		v := m.view(s)
		m.mu.Unlock()
		return &v, ErrPartial
	}
	s.rec.LastActive = now
	m.dirty[s.rec.hash] = true
	v := m.view(s)
	m.mu.Unlock()
	return &v, nil
}

// Current returns the session of id in whatever state, without counting
// it as activity: what a partial session may read of itself.
func (m *Manager) Current(id string) (*Session, error) {
	m.mu.Lock()
	s, ended := m.lookup(id, m.cfg.Now())
	var v Session
	if s != nil {
		v = m.view(s)
	}
	m.mu.Unlock()
	m.forget(ended)
	if s == nil {
		return nil, ErrNoSession
	}
	return &v, nil
}

// AnswerMFA answers a partial session's TOTP query with a code, or a
// recovery code; the session is then fully authenticated.
func (m *Manager) AnswerMFA(id, code, ip string) (*Session, error) {
	now := m.cfg.Now()
	cur, err := m.Current(id)
	if err != nil {
		return nil, err
	}
	if cur.State != StatePartial {
		return nil, ErrNotPartial
	}
	if err := m.throttled(cur.Operator, ip, now); err != nil {
		m.count(LoginBackoff)
		return nil, err
	}
	used := ""
	err = m.editOperator(cur.Operator, func(op *Operator) error {
		if op.TOTPSecret == "" {
			return nil // removed meanwhile: the password was enough
		}
		if step := checkTOTP(op.TOTPSecret, code, now, op.TOTPLastStep); step != 0 {
			op.TOTPLastStep, used = step, "totp"
			return nil
		}
		if rc := normalRecovery(code); rc != "" {
			h := recoveryHash(rc)
			for i, x := range op.Recovery {
				if x == h {
					op.Recovery, used = append(op.Recovery[:i:i], op.Recovery[i+1:]...), "recovery code"
					return nil
				}
			}
		}
		return ErrBadCode
	})
	if errors.Is(err, ErrBadCode) {
		m.count(LoginMFABad)
		m.failed(cur.Operator, ip, now)
		m.cfg.Logger.Info("web second factor failed", "operator", cur.Operator, "ip", ip, "session", cur.Ref)
		return nil, err
	}
	if err != nil {
		return nil, err
	}
	m.count(LoginMFAOK)
	m.fails.clear("op:" + cur.Operator)
	m.mu.Lock()
	s := m.sessions[secretHash(id)]
	if s == nil {
		m.mu.Unlock()
		return nil, ErrNoSession
	}
	s.rec.State, s.rec.LastActive = StateFull, now
	rec := s.rec
	v := m.view(s)
	m.mu.Unlock()
	if err := m.db.Update(func(tx kv.Tx) error {
		return stores.PutCBOR(tx.Bucket(bucketSessions), []byte(rec.hash), &rec)
	}); err != nil {
		return nil, fmt.Errorf("store the session: %w", err)
	}
	m.cfg.Logger.Info("web second factor given", "operator", cur.Operator, "with", used, "session", cur.Ref)
	return &v, nil
}

// Child creates a session under the fully authenticated session of id,
// with scope at most its own, ending with it at the latest: a read-only
// view handed to another tab or tool. Ending the parent ends it.
func (m *Manager) Child(id string, scope Scope, ip, userAgent string) (*Session, string, error) {
	parent, err := m.Authenticate(id)
	if err != nil {
		return nil, "", err
	}
	if !parent.Scope.covers(scope) {
		return nil, "", badRequest("a %s session cannot make a %s one", parent.Scope, scope)
	}
	if len(userAgent) > MaxUserAgent {
		userAgent = userAgent[:MaxUserAgent]
	}
	now := m.cfg.Now()
	return m.create(Session{Operator: parent.Operator, State: StateFull, Scope: scope, IP: ip, UserAgent: userAgent,
		Created: now, LastActive: now, Expires: parent.Expires, Parent: parent.Ref})
}

// Stream marks a live stream of the fully authenticated session of id
// (an event stream): while it lasts the session does not idle. done
// closes when the session ends; release ends the stream.
func (m *Manager) Stream(id string) (done <-chan struct{}, release func(), err error) {
	now := m.cfg.Now()
	m.mu.Lock()
	s, ended := m.lookup(id, now)
	if s == nil || s.rec.State != StateFull {
		m.mu.Unlock()
		m.forget(ended)
		if s != nil {
			return nil, nil, ErrPartial
		}
		return nil, nil, ErrNoSession
	}
	s.streams++
	s.rec.LastActive = now
	m.mu.Unlock()
	var once bool
	return s.done, func() {
		m.mu.Lock()
		defer m.mu.Unlock()
		if once {
			return
		}
		once = true
		s.streams--
		s.rec.LastActive = m.cfg.Now()
		m.dirty[s.rec.hash] = true
	}, nil
}

// Logout ends the session of id and its children.
func (m *Manager) Logout(id string) error {
	m.mu.Lock()
	s := m.sessions[secretHash(id)]
	if s == nil {
		m.mu.Unlock()
		return ErrNoSession
	}
	ended := m.endLocked(s, "logged out")
	m.mu.Unlock()
	m.forget(ended)
	return nil
}

// End ends the session named ref (an administrator's removal) and its
// children.
func (m *Manager) End(ref string) error {
	m.mu.Lock()
	s := m.byRef[ref]
	if s == nil {
		m.mu.Unlock()
		return fmt.Errorf("%w: no session %q (pzh web sessions lists them)", ErrNotFound, ref)
	}
	ended := m.endLocked(s, "ended by an operator")
	m.mu.Unlock()
	m.forget(ended)
	return nil
}

// endOperator ends every session of operator name and voids the login
// links made for it: a link outlives neither its operator nor the
// password it was made under.
func (m *Manager) endOperator(name, why string) {
	m.mu.Lock()
	var ended []*session
	for _, s := range m.sessions {
		if s.rec.Operator == name {
			ended = append(ended, m.endLocked(s, why)...)
		}
	}
	for h, l := range m.links {
		if l.operator == name {
			delete(m.links, h)
		}
	}
	m.mu.Unlock()
	m.forget(ended)
}

// endLocked ends s and its children at once (their streams stop) and
// returns them, for forget to delete from the store; m.mu is held.
func (m *Manager) endLocked(s *session, why string) []*session {
	if m.sessions[s.rec.hash] != s {
		return nil // ended already
	}
	delete(m.sessions, s.rec.hash)
	delete(m.byRef, s.rec.Ref)
	delete(m.dirty, s.rec.hash)
	close(s.done)
	m.cfg.Logger.Info("web session ended", "session", s.rec.Ref, "operator", s.rec.Operator, "why", why)
	ended := []*session{s}
	for _, c := range m.sessions {
		if c.rec.Parent == s.rec.Ref {
			ended = append(ended, m.endLocked(c, "its parent session ended")...)
		}
	}
	return ended
}

// forget deletes ended sessions from the store.
func (m *Manager) forget(ended []*session) {
	if len(ended) == 0 {
		return
	}
	err := m.db.Update(func(tx kv.Tx) error {
		for _, s := range ended {
			if err := tx.Bucket(bucketSessions).Delete([]byte(s.rec.hash)); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		m.cfg.Logger.Warn("web sessions: deleting ended sessions failed (they are ended; they are dropped at the next start)", "err", err)
	}
}

// Sessions lists the live sessions, oldest first.
func (m *Manager) Sessions() []Session {
	now := m.cfg.Now()
	m.mu.Lock()
	var out []Session
	var ended []*session
	for _, s := range m.sessions {
		if why := m.over(s, now); why != "" {
			ended = append(ended, m.endLocked(s, why)...)
			continue
		}
		out = append(out, m.view(s))
	}
	m.mu.Unlock()
	m.forget(ended)
	sort.Slice(out, func(i, j int) bool { return out[i].Created.Before(out[j].Created) })
	return out
}

// One-time login links: made on the hub's host by its operator (pzh web
// login NAME), each logs one browser in as that operator, fully (the
// host's operator could do all the session can, and more), once, within
// its time. Kept in memory only: a restart voids them.
const (
	// DefaultLinkTTL is how long a login link works.
	DefaultLinkTTL = 10 * time.Minute
	// MaxLinkTTL bounds it: a link is for now, not for later.
	MaxLinkTTL = time.Hour
	// linkPrefix starts a login link's token.
	linkPrefix = "pzlogin_"
	// maxLinks bounds the links held at once.
	maxLinks = 64
)

type loginLink struct {
	operator string
	expires  time.Time
}

// LoginLink makes a one-time login for operator, valid for ttl.
func (m *Manager) LoginLink(operator string, ttl time.Duration) (string, time.Time, error) {
	if ttl <= 0 || ttl > MaxLinkTTL {
		return "", time.Time{}, badRequest("login link lifetime %v: give one up to %v", ttl, MaxLinkTTL)
	}
	if err := m.db.View(func(tx kv.Tx) error { _, err := m.getOperator(tx, operator); return err }); err != nil {
		return "", time.Time{}, err
	}
	secret, hash, err := newSecret(linkPrefix)
	if err != nil {
		return "", time.Time{}, err
	}
	now := m.cfg.Now()
	m.mu.Lock()
	defer m.mu.Unlock()
	for h, l := range m.links {
		if !now.Before(l.expires) {
			delete(m.links, h)
		}
	}
	if len(m.links) >= maxLinks {
		return "", time.Time{}, badRequest("%d login links are waiting to be used; let them expire (at most %v) first", len(m.links), MaxLinkTTL)
	}
	exp := now.Add(ttl)
	m.links[hash] = loginLink{operator: operator, expires: exp}
	m.cfg.Logger.Info("login link made", "operator", operator, "expires", exp)
	return secret, exp, nil
}

// RedeemLink logs in with a login link, once.
func (m *Manager) RedeemLink(secret, ip, userAgent string) (*Session, string, error) {
	now := m.cfg.Now()
	hash := secretHash(secret)
	m.mu.Lock()
	l, ok := m.links[hash]
	delete(m.links, hash)
	m.mu.Unlock()
	if !ok || !now.Before(l.expires) {
		m.count(LoginLinkBad)
		return nil, "", fmt.Errorf("%w: the login link was used already, expired, or is not this hub's (make another with pzh web login NAME)", ErrBadLogin)
	}
	if len(userAgent) > MaxUserAgent {
		userAgent = userAgent[:MaxUserAgent]
	}
	s, id, err := m.create(Session{Operator: l.operator, State: StateFull, Scope: ScopeAdmin, IP: ip, UserAgent: userAgent,
		Created: now, LastActive: now, Expires: now.Add(m.cfg.Lifetime)})
	if err == nil {
		m.count(LoginLinkOK)
		m.cfg.Logger.Info("web login with a login link", "operator", l.operator, "ip", ip, "session", s.Ref)
	}
	return s, id, err
}
