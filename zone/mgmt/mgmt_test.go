package mgmt

import (
	"context"
	"errors"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/pzone/pzone/storefile/kv"

	bolt "go.etcd.io/bbolt"
)

// fakeClock is a clock the tests move.
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

// cheap hashes: the rules under test, not argon2's cost.
var testHash = HashParams{Time: 1, MemoryKiB: 64, Threads: 1}

type fixture struct {
	t     *testing.T
	path  string
	db    *bolt.DB
	m     *Manager
	clock *fakeClock
}

func newFixture(t *testing.T) *fixture {
	t.Helper()
	f := &fixture{t: t, path: filepath.Join(t.TempDir(), "pzh.db"), clock: &fakeClock{now: time.Date(2026, 12, 7, 9, 0, 0, 0, time.UTC)}}
	f.open()
	t.Cleanup(func() { f.db.Close() })
	return f
}

func (f *fixture) open() {
	f.t.Helper()
	db, err := bolt.Open(f.path, 0o600, nil)
	if err != nil {
		f.t.Fatal(err)
	}
	m, err := Open(kv.OfBolt(db), Config{Issuer: "pzone home", Now: f.clock.Now, Hash: testHash})
	if err != nil {
		f.t.Fatal(err)
	}
	f.db, f.m = db, m
}

// reopen is a hub restart.
func (f *fixture) reopen() {
	f.t.Helper()
	f.m.flush()
	f.db.Close()
	f.open()
}

func (f *fixture) addOperator(name string) {
	f.t.Helper()
	if err := f.m.AddOperator(context.Background(), name, "correct horse battery"); err != nil {
		f.t.Fatal(err)
	}
}

// enroll gives name a confirmed second factor and returns its secret and
// recovery codes.
func (f *fixture) enroll(name string) (string, []string) {
	f.t.Helper()
	e, err := f.m.EnrollMFA(name)
	if err != nil {
		f.t.Fatal(err)
	}
	if !strings.HasPrefix(e.URI, "otpauth://totp/") || !strings.Contains(e.URI, "secret="+e.Secret) {
		f.t.Fatalf("enrolment URI %q", e.URI)
	}
	codes, err := f.m.ConfirmMFA(name, f.code(e.Secret))
	if err != nil {
		f.t.Fatal(err)
	}
	return e.Secret, codes
}

func (f *fixture) code(secret string) string {
	f.t.Helper()
	c, err := TOTPCode(secret, f.clock.Now())
	if err != nil {
		f.t.Fatal(err)
	}
	return c
}

func (f *fixture) login(name string) (*Session, string) {
	f.t.Helper()
	s, id, err := f.m.Login(context.Background(), name, "correct horse battery", "192.0.2.1", "test")
	if err != nil {
		f.t.Fatal(err)
	}
	return s, id
}

func wantErr(t *testing.T, err, want error) {
	t.Helper()
	if !errors.Is(err, want) {
		t.Fatalf("got %v, want %v", err, want)
	}
}

func TestPasswordHash(t *testing.T) {
	h, err := hashPassword("a good long password", testHash)
	if err != nil {
		t.Fatal(err)
	}
	if ok, err := checkPassword(h, "a good long password"); !ok || err != nil {
		t.Fatalf("right password: %v %v", ok, err)
	}
	if ok, _ := checkPassword(h, "a good long passworD"); ok {
		t.Fatal("wrong password taken")
	}
	parts := strings.Split(h, "$")
	for _, bad := range []string{
		"", "$argon2i$v=19$m=64,t=1,p=1$c2FsdHNhbHQ$a2V5a2V5a2V5a2V5a2V5aw",
		strings.Join(append(append([]string{}, parts[:3]...), "m=99999999,t=1,p=1", parts[4], parts[5]), "$"),
		strings.Join(append(append([]string{}, parts[:3]...), "m=64,t=1000,p=1", parts[4], parts[5]), "$"),
		strings.Join(append(append([]string{}, parts[:4]...), "!!", parts[5]), "$"),
	} {
		if ok, err := checkPassword(bad, "a good long password"); ok || err == nil {
			t.Errorf("hash %q: %v %v", bad, ok, err)
		}
	}
	for _, pw := range []string{"short", strings.Repeat("x", MaxPasswordLen+1), "\xff\xfe invalid utf8"} {
		if CheckPassword(pw) == nil {
			t.Errorf("password %q taken", pw)
		}
	}
}

func TestLogin(t *testing.T) {
	f := newFixture(t)
	f.addOperator("alice")
	wantErr(t, f.m.AddOperator(context.Background(), "alice", "another long one"), ErrOperatorExists)
	wantErr(t, f.m.AddOperator(context.Background(), "Bad Name", "another long one"), ErrBadRequest)
	s, id := f.login("alice")
	if s.State != StateFull || s.Scope != ScopeAdmin || s.Operator != "alice" || len(id) < 43 || s.CSRF == "" {
		t.Fatalf("session %+v, id %q", s, id)
	}
	if got, err := f.m.Authenticate(id); err != nil || got.Ref != s.Ref {
		t.Fatalf("authenticate: %+v %v", got, err)
	}
	_, _, err := f.m.Login(context.Background(), "alice", "wrong password!", "192.0.2.1", "")
	wantErr(t, err, ErrBadLogin)
	_, _, err = f.m.Login(context.Background(), "bob", "correct horse battery", "192.0.2.1", "")
	wantErr(t, err, ErrBadLogin)
	_, err = f.m.Authenticate("not a session")
	wantErr(t, err, ErrNoSession)
	// Only the hash is stored.
	kv.OfBolt(f.db).View(func(tx kv.Tx) error {
		return tx.Bucket(bucketSessions).ForEach(func(k, v []byte) error {
			if strings.Contains(string(k)+string(v), id) {
				t.Error("the session id is stored")
			}
			return nil
		})
	})
}

// A login of an operator with a second factor is partial until it gives
// a code; a code is taken once; a recovery code stands in once.
func TestPartialAuthentication(t *testing.T) {
	f := newFixture(t)
	f.addOperator("alice")
	secret, recovery := f.enroll("alice")
	if len(recovery) != recoveryCodes {
		t.Fatalf("%d recovery codes", len(recovery))
	}
	// The code that confirmed the enrolment is used up.
	s, id := f.login("alice")
	if s.State != StatePartial {
		t.Fatalf("state %q, want partial", s.State)
	}
	_, err := f.m.Authenticate(id)
	wantErr(t, err, ErrPartial)
	if _, _, err := f.m.Child(id, ScopeRead, "", ""); !errors.Is(err, ErrPartial) {
		t.Fatalf("a partial session made a child: %v", err)
	}
	if _, _, err := f.m.Stream(id); !errors.Is(err, ErrPartial) {
		t.Fatalf("a partial session opened a stream: %v", err)
	}
	if cur, err := f.m.Current(id); err != nil || cur.State != StatePartial {
		t.Fatalf("a partial session reads itself: %+v %v", cur, err)
	}
	_, err = f.m.AnswerMFA(id, f.code(secret), "192.0.2.1")
	wantErr(t, err, ErrBadCode)
	_, err = f.m.AnswerMFA(id, "000000x", "192.0.2.1")
	wantErr(t, err, ErrBadCode)
	f.clock.Add(30 * time.Second)
	code := f.code(secret)
	if s, err := f.m.AnswerMFA(id, code, "192.0.2.1"); err != nil || s.State != StateFull {
		t.Fatalf("answer: %+v %v", s, err)
	}
	if _, err := f.m.Authenticate(id); err != nil {
		t.Fatal(err)
	}
	_, err = f.m.AnswerMFA(id, code, "192.0.2.1")
	wantErr(t, err, ErrNotPartial)
	// The same code for another login: refused.
	_, id2 := f.login("alice")
	_, err = f.m.AnswerMFA(id2, code, "192.0.2.1")
	wantErr(t, err, ErrBadCode)
	// A recovery code, typed loosely, once.
	typed := strings.ToUpper(strings.ReplaceAll(recovery[3], "-", " "))
	if _, err := f.m.AnswerMFA(id2, typed, "192.0.2.1"); err != nil {
		t.Fatalf("recovery code: %v", err)
	}
	_, id3 := f.login("alice")
	_, err = f.m.AnswerMFA(id3, recovery[3], "192.0.2.1")
	wantErr(t, err, ErrBadCode)
	ops, _ := f.m.Operators()
	if len(ops) != 1 || !ops[0].MFA || ops[0].RecoveryLeft != recoveryCodes-1 || ops[0].Sessions != 3 {
		t.Fatalf("operators %+v", ops)
	}
	// The partial session's time to answer.
	f.clock.Add(DefaultPartialTime)
	_, err = f.m.Current(id3)
	wantErr(t, err, ErrNoSession)
	// Without the second factor, a password is enough again.
	if err := f.m.DisableMFA("alice"); err != nil {
		t.Fatal(err)
	}
	if s, _ := f.login("alice"); s.State != StateFull {
		t.Fatalf("state %q after the second factor was removed", s.State)
	}
	if _, err := f.m.ConfirmMFA("alice", "123456"); !errors.Is(err, ErrBadRequest) {
		t.Fatalf("confirm with nothing enrolled: %v", err)
	}
}

func TestIdleAndLifetime(t *testing.T) {
	f := newFixture(t)
	f.addOperator("alice")
	_, id := f.login("alice")
	// Activity resets the idle timeout, up to the lifetime.
	for f.clock.Now().Before(time.Date(2026, 12, 7, 20, 30, 0, 0, time.UTC)) {
		f.clock.Add(DefaultIdle - time.Second)
		if _, err := f.m.Authenticate(id); err != nil {
			t.Fatalf("at %v: %v", f.clock.Now(), err)
		}
	}
	f.clock.Add(DefaultIdle - time.Second)
	_, err := f.m.Authenticate(id)
	wantErr(t, err, ErrNoSession) // 12 h after its login
	// Idle, ended by the sweep as well as at its next use.
	s, id := f.login("alice")
	done, release, err := f.m.Stream(id)
	if err != nil {
		t.Fatal(err)
	}
	f.clock.Add(2 * DefaultIdle) // a live stream keeps it
	f.m.expire()
	if _, err := f.m.Authenticate(id); err != nil {
		t.Fatalf("with a live stream: %v", err)
	}
	release()
	release() // once
	f.clock.Add(DefaultIdle)
	f.m.expire()
	select {
	case <-done:
	default:
		t.Fatal("the idle session's stream was not told")
	}
	if len(f.m.Sessions()) != 0 {
		t.Fatalf("session %s still listed", s.Ref)
	}
	_, err = f.m.Authenticate(id)
	wantErr(t, err, ErrNoSession)
}

// Ending a session ends its children and cuts their streams at once.
func TestEndCascades(t *testing.T) {
	f := newFixture(t)
	f.addOperator("alice")
	parent, id := f.login("alice")
	child, cid, err := f.m.Child(id, ScopeRead, "192.0.2.9", "tab")
	if err != nil {
		t.Fatal(err)
	}
	if child.Parent != parent.Ref || child.Scope != ScopeRead || !child.Expires.Equal(parent.Expires) {
		t.Fatalf("child %+v", child)
	}
	if _, _, err := f.m.Child(cid, ScopeAdmin, "", ""); !errors.Is(err, ErrBadRequest) {
		t.Fatalf("a read session made an admin one: %v", err)
	}
	grand, gid, err := f.m.Child(cid, ScopeRead, "", "")
	if err != nil {
		t.Fatal(err)
	}
	done, release, err := f.m.Stream(gid)
	if err != nil {
		t.Fatal(err)
	}
	defer release()
	_, other := f.login("alice")
	if n := len(f.m.Sessions()); n != 4 {
		t.Fatalf("%d sessions", n)
	}
	if err := f.m.End(parent.Ref); err != nil {
		t.Fatal(err)
	}
	select {
	case <-done:
	default:
		t.Fatalf("the stream of %s went on", grand.Ref)
	}
	for _, x := range []string{id, cid, gid} {
		_, err := f.m.Current(x)
		wantErr(t, err, ErrNoSession)
	}
	wantErr(t, f.m.End(parent.Ref), ErrNotFound)
	if _, err := f.m.Authenticate(other); err != nil {
		t.Fatalf("another session ended too: %v", err)
	}
	if err := f.m.Logout(other); err != nil {
		t.Fatal(err)
	}
	wantErr(t, f.m.Logout(other), ErrNoSession)
	f.reopen()
	if n := len(f.m.Sessions()); n != 0 {
		t.Fatalf("%d sessions back after a restart", n)
	}
	// A password change or the operator's removal ends its sessions.
	_, id = f.login("alice")
	if err := f.m.SetPassword(context.Background(), "alice", "a new long password"); err != nil {
		t.Fatal(err)
	}
	_, err = f.m.Authenticate(id)
	wantErr(t, err, ErrNoSession)
	if _, _, err := f.m.Login(context.Background(), "alice", "a new long password", "192.0.2.1", ""); err != nil {
		t.Fatal(err)
	}
	wantErr(t, f.m.RemoveOperator("alice"), nil)
	if n := len(f.m.Sessions()); n != 0 {
		t.Fatalf("%d sessions of a removed operator", n)
	}
	wantErr(t, f.m.RemoveOperator("alice"), ErrNoOperator)
}

func TestSessionsSurviveRestart(t *testing.T) {
	f := newFixture(t)
	f.addOperator("alice")
	s, id := f.login("alice")
	_, cid, _ := f.m.Child(id, ScopeRead, "", "")
	_, old := f.login("alice")
	f.clock.Add(DefaultIdle / 2)
	f.m.Authenticate(id)
	f.m.Authenticate(cid)
	f.reopen()
	got, err := f.m.Authenticate(id)
	if err != nil || got.Ref != s.Ref || got.CSRF != s.CSRF {
		t.Fatalf("after a restart: %+v %v", got, err)
	}
	// The one not used since goes at its idle time, the others later.
	f.clock.Add(DefaultIdle/2 + time.Second)
	f.reopen()
	_, err = f.m.Current(old)
	wantErr(t, err, ErrNoSession)
	if _, err := f.m.Current(cid); err != nil {
		t.Fatal(err)
	}
}

func TestBackoff(t *testing.T) {
	f := newFixture(t)
	f.addOperator("alice")
	ctx := context.Background()
	var be *BackoffError
	for i := range backoffFree {
		if _, _, err := f.m.Login(ctx, "alice", "wrong password!", "192.0.2.1", ""); !errors.Is(err, ErrBadLogin) {
			t.Fatalf("failure %d: %v", i+1, err)
		}
	}
	if _, _, err := f.m.Login(ctx, "alice", "wrong password!", "192.0.2.1", ""); !errors.Is(err, ErrBadLogin) {
		t.Fatal(err)
	}
	// The account waits, from any address; and the address, for any account.
	_, _, err := f.m.Login(ctx, "alice", "correct horse battery", "198.51.100.7", "")
	if !errors.As(err, &be) || be.RetryAfter != time.Second {
		t.Fatalf("after %d failures: %v", backoffFree+1, err)
	}
	_, _, err = f.m.Login(ctx, "carol", "whatever it is", "192.0.2.1", "")
	if !errors.As(err, &be) {
		t.Fatalf("the address: %v", err)
	}
	f.clock.Add(time.Second)
	f.m.Login(ctx, "alice", "wrong password!", "203.0.113.5", "")
	_, _, err = f.m.Login(ctx, "alice", "correct horse battery", "203.0.113.5", "")
	if !errors.As(err, &be) || be.RetryAfter != 2*time.Second {
		t.Fatalf("doubling: %v", err)
	}
	f.clock.Add(2 * time.Second)
	if _, _, err := f.m.Login(ctx, "alice", "correct horse battery", "203.0.113.5", ""); err != nil {
		t.Fatal(err)
	}
	// Success cleared the account: one more failure is free again.
	if _, _, err := f.m.Login(ctx, "alice", "wrong password!", "203.0.113.5", ""); !errors.Is(err, ErrBadLogin) {
		t.Fatal(err)
	}
	// IPv6 addresses of one /64 are one source.
	if AddrKey("2001:db8::1") != AddrKey("2001:db8::ffff:1") || AddrKey("2001:db8::1") == AddrKey("2001:db8:0:1::1") {
		t.Fatal("IPv6 /64 keys")
	}
	// MFA answers count too.
	f.addOperator("dave")
	f.enroll("dave")
	_, id, err := f.m.Login(ctx, "dave", "correct horse battery", "198.51.100.9", "")
	if err != nil {
		t.Fatal(err)
	}
	for range backoffFree + 1 {
		f.m.AnswerMFA(id, "000000", "198.51.100.9")
	}
	if _, err := f.m.AnswerMFA(id, "000000", "198.51.100.9"); !errors.As(err, &be) {
		t.Fatalf("MFA answers: %v", err)
	}
}

// A flood of new keys cannot push out one that is waiting.
func TestBackoffTable(t *testing.T) {
	var b backoff
	now := time.Unix(1000, 0)
	for range backoffFree + 1 {
		b.fail("op:alice", now)
	}
	for i := range backoffTracked + 10 {
		b.fail(AddrKey("10.0."+strconv.Itoa(i/256)+"."+strconv.Itoa(i%256)), now.Add(time.Millisecond))
	}
	if len(b.m) > backoffTracked {
		t.Fatalf("%d keys held", len(b.m))
	}
	if b.wait("op:alice", now) == 0 {
		t.Fatal("the waiting key was pushed out")
	}
}

func TestTokens(t *testing.T) {
	f := newFixture(t)
	tok, secret, err := f.m.CreateToken("ci", ScopeRead, 90*24*time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(secret, TokenPrefix) || tok.Scope != ScopeRead {
		t.Fatalf("token %+v %q", tok, secret)
	}
	if _, _, err := f.m.CreateToken("ci", ScopeAdmin, time.Hour); !errors.Is(err, ErrBadRequest) {
		t.Fatalf("a second token of one name: %v", err)
	}
	for _, ttl := range []time.Duration{0, -time.Hour, MaxTokenTTL + time.Hour} {
		if _, _, err := f.m.CreateToken("x", ScopeRead, ttl); !errors.Is(err, ErrBadRequest) {
			t.Fatalf("lifetime %v: %v", ttl, err)
		}
	}
	if _, _, err := f.m.CreateToken("x", "root", time.Hour); !errors.Is(err, ErrBadRequest) {
		t.Fatalf("scope root: %v", err)
	}
	f.clock.Add(time.Hour)
	got, err := f.m.VerifyToken(secret, "192.0.2.4")
	if err != nil || got.Name != "ci" {
		t.Fatalf("verify: %+v %v", got, err)
	}
	for _, bad := range []string{"", secret + "x", strings.TrimPrefix(secret, TokenPrefix)} {
		if _, err := f.m.VerifyToken(bad, ""); !errors.Is(err, ErrNoToken) {
			t.Fatalf("token %q: %v", bad, err)
		}
	}
	f.reopen()
	list := f.m.Tokens()
	if len(list) != 1 || !list[0].LastUsed.Equal(f.clock.Now()) || list[0].LastIP != "192.0.2.4" {
		t.Fatalf("tokens after a restart %+v", list)
	}
	f.clock.Add(90 * 24 * time.Hour)
	if _, err := f.m.VerifyToken(secret, ""); !errors.Is(err, ErrNoToken) {
		t.Fatalf("expired token: %v", err)
	}
	if _, err := f.m.RevokeToken("ci"); err != nil {
		t.Fatal(err)
	}
	if _, err := f.m.RevokeToken("ci"); !errors.Is(err, ErrNotFound) {
		t.Fatal(err)
	}
}

func TestLoginLink(t *testing.T) {
	f := newFixture(t)
	f.addOperator("alice")
	f.enroll("alice")
	secret, exp, err := f.m.LoginLink("alice", DefaultLinkTTL)
	if err != nil || !exp.Equal(f.clock.Now().Add(DefaultLinkTTL)) {
		t.Fatal(exp, err)
	}
	s, id, err := f.m.RedeemLink(secret, "192.0.2.1", "tab")
	if err != nil || s.State != StateFull || s.Operator != "alice" {
		t.Fatalf("redeem: %+v %v", s, err)
	}
	if _, err := f.m.Authenticate(id); err != nil {
		t.Fatal(err)
	}
	_, _, err = f.m.RedeemLink(secret, "192.0.2.1", "tab")
	wantErr(t, err, ErrBadLogin) // once
	secret, _, _ = f.m.LoginLink("alice", time.Minute)
	f.clock.Add(time.Minute)
	_, _, err = f.m.RedeemLink(secret, "192.0.2.1", "tab")
	wantErr(t, err, ErrBadLogin) // expired
	_, _, err = f.m.LoginLink("bob", time.Minute)
	wantErr(t, err, ErrNoOperator)
	_, _, err = f.m.LoginLink("alice", 2*MaxLinkTTL)
	wantErr(t, err, ErrBadRequest)

	// A link outlives neither a password change nor its operator.
	secret, _, _ = f.m.LoginLink("alice", time.Minute)
	if err := f.m.SetPassword(context.Background(), "alice", "another long passphrase"); err != nil {
		t.Fatal(err)
	}
	_, _, err = f.m.RedeemLink(secret, "192.0.2.1", "tab")
	wantErr(t, err, ErrBadLogin)
	secret, _, _ = f.m.LoginLink("alice", time.Minute)
	if err := f.m.RemoveOperator("alice"); err != nil {
		t.Fatal(err)
	}
	_, _, err = f.m.RedeemLink(secret, "192.0.2.1", "tab")
	wantErr(t, err, ErrBadLogin)
}

// TestSessionMemory reports the heap a live web session costs the hub
// (the record, its maps' entries, its done channel), for the closing
// figures; it asserts only a generous bound.
func TestSessionMemory(t *testing.T) {
	f := newFixture(t)
	f.addOperator("alice")
	const n = 1000
	var before, after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	ids := make([]string, 0, n)
	for range n {
		_, id := f.login("alice")
		ids = append(ids, id)
	}
	runtime.GC()
	runtime.ReadMemStats(&after)
	per := (int64(after.HeapAlloc) - int64(before.HeapAlloc)) / n
	t.Logf("heap per web session: %d bytes (%d sessions)", per, len(ids))
	if per > 64<<10 {
		t.Fatalf("a web session costs %d bytes of heap", per)
	}
}
