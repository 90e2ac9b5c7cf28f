// Package envelope signs and checks what crosses from one zone to another.
//
// Every call or message that crosses from one zone to
// another carries the originating device's signature over what it asks
// (who, to whom, which method, when, a hash of the body), and the answer
// carries the serving device's signature over the result. The receiving
// device checks the signature against the sender zone's CA (from its
// synced friends bucket), the freshness of the stamp and that it has not
// seen the envelope before, so the hubs in between relay but can neither
// forge nor replay. See docs/PROTOCOL.md, "Signed envelopes".
//
// It is pure logic: the checker keeps its replay memory in memory, and
// what must survive a restart behind a small Store.
package envelope

import (
	"crypto/ed25519"
	"crypto/sha256"
	"crypto/x509"
	"encoding/binary"
	"fmt"
	"strconv"
	"sync"
	"time"

	"github.com/pzone/pzone/certs"
	"github.com/pzone/pzone/transport"
	"github.com/pzone/pzone/zone/wire"
)

// Call is what a call envelope covers, with the envelope itself: the
// fields of a call header that the calling device vouches for.
type Call struct {
	ID         string
	Kind       uint8 // 1 a call, 2 a one-way message
	FromZoneID string
	FromDevice string
	FromApp    string
	ToDevice   string
	ToService  string
	Method     string
	TTLMs      uint64
	Envelope   *wire.Envelope
}

// Domain strings: one signature can never pass for another kind.
const (
	envelopeCallDomain  = "pzone call envelope v1"
	envelopeReplyDomain = "pzone reply envelope v1"
)

// Envelope limits, with why.
const (
	// Window is how far an envelope's stamp may be from the
	// receiver's clock: the devices of two people share no clock, and
	// NTP keeps most within a second; five minutes forgives a badly set
	// one while bounding what the replay cache must remember.
	Window = 5 * time.Minute
	// maxEnvelopeCert: an Ed25519 node certificate is about 400 bytes.
	maxEnvelopeCert = 4 << 10
	// replayCacheSize bounds the envelopes a node remembers. Past it, the
	// cache forgets everything and refuses anything stamped before then:
	// over 300 cross-zone calls a second for five minutes, more than any
	// personal zone makes.
	replayCacheSize = 100_000
)

// signedCall is what a call envelope signs, in this order.
type signedCall struct {
	_          struct{} `cbor:",toarray"`
	Domain     string
	ID         string
	Kind       uint8
	FromZoneID string
	FromDevice string
	FromApp    string
	ToZoneID   string
	ToDevice   string
	ToService  string
	Method     string
	TTLMs      uint64
	TimeMs     int64
	BodyHash   []byte
}

// signedReply is what an answer's envelope signs.
type signedReply struct {
	_          struct{} `cbor:",toarray"`
	Domain     string
	CallID     string
	FromZoneID string // the answering zone and device
	FromDevice string
	ToZoneID   string // the caller's
	ToDevice   string
	TimeMs     int64
	BodyHash   []byte
}

func bodyHash(body []byte) []byte {
	h := sha256.Sum256(body)
	return h[:]
}

func callContent(hdr *Call, toZoneID string, timeMs int64, body []byte) ([]byte, error) {
	return transport.Marshal(signedCall{Domain: envelopeCallDomain, ID: hdr.ID, Kind: hdr.Kind, FromZoneID: hdr.FromZoneID, FromDevice: hdr.FromDevice,
		FromApp: hdr.FromApp, ToZoneID: toZoneID, ToDevice: hdr.ToDevice, ToService: hdr.ToService, Method: hdr.Method, TTLMs: hdr.TTLMs,
		TimeMs: timeMs, BodyHash: bodyHash(body)})
}

func replyContent(callID string, from, to certs.Identity, timeMs int64, body []byte) ([]byte, error) {
	return transport.Marshal(signedReply{Domain: envelopeReplyDomain, CallID: callID, FromZoneID: from.Zone.Compact(), FromDevice: from.Device,
		ToZoneID: to.Zone.Compact(), ToDevice: to.Device, TimeMs: timeMs, BodyHash: bodyHash(body)})
}

// Signer is a node's key and certificate.
type Signer struct {
	Key  ed25519.PrivateKey
	Cert *x509.Certificate
}

func (s Signer) seal(content []byte, timeMs int64) *wire.Envelope {
	return &wire.Envelope{Cert: s.Cert.Raw, TimeMs: timeMs, Sig: ed25519.Sign(s.Key, content)}
}

// SignCall seals hdr (FromZoneID and FromDevice set) and its body for
// the zone toZoneID.
func (s Signer) SignCall(hdr *Call, toZoneID string, now time.Time, body []byte) (*wire.Envelope, error) {
	ms := now.UnixMilli()
	c, err := callContent(hdr, toZoneID, ms, body)
	if err != nil {
		return nil, err
	}
	return s.seal(c, ms), nil
}

func (s Signer) SignReply(callID string, from, to certs.Identity, now time.Time, body []byte) (*wire.Envelope, error) {
	ms := now.UnixMilli()
	c, err := replyContent(callID, from, to, ms, body)
	if err != nil {
		return nil, err
	}
	return s.seal(c, ms), nil
}

// Counts are a node's verdicts on envelopes from other zones.
type Counts struct {
	Accepted uint64 `json:"accepted"`
	// Forged: the signature, certificate or content did not check out
	// (altered on the way, or not made by the device it names).
	Forged uint64 `json:"forged"`
	// Stale: stamped outside the freshness window.
	Stale uint64 `json:"stale"`
	// Replayed: seen before.
	Replayed uint64 `json:"replayed"`
	// Unknown: from a zone that is not a friend (any more).
	Unknown uint64 `json:"unknown"`
}

// Store is where a checker keeps what must survive a restart.
type Store interface {
	SaveEnvelope(key string, expMs int64) error
	ForgetEnvelope(key string) error
}

// Verdict is why an envelope was refused.
type Verdict int

const (
	OK Verdict = iota
	Forged
	Stale
	Replayed
	Unknown
)

func (v Verdict) String() string {
	switch v {
	case OK:
		return "ok"
	case Forged:
		return "forged"
	case Stale:
		return "stale"
	case Replayed:
		return "replayed"
	case Unknown:
		return "unknown"
	}
	return "verdict " + strconv.Itoa(int(v))
}

// seenEnvelope is what the replay memory keeps of an accepted envelope.
type seenEnvelope struct {
	exp  int64 // unix ms after which it is stale anyway
	long bool  // it has a time to live (and is written down)
}

// Checker checks envelopes and remembers the ones it accepted.
type Checker struct {
	// Notify, if set, is called after a verdict is counted. Set it, and
	// Store, before the checker is used.
	Notify func()
	// Store, if set, keeps the envelopes of messages for later across
	// restarts (their freshness lasts their time to live).
	Store Store
	mu    sync.Mutex
	seen  map[string]seenEnvelope // signer/ID
	// floor: refuse envelopes without a time to live stamped at or
	// before this (the memory of those overflowed).
	floor  int64
	counts Counts
	// certs are the signers' certificates verified so far, by hash of
	// the CA and the certificate.
	certs map[[sha256.Size]byte]verifiedCert
}

func NewChecker() *Checker {
	return &Checker{seen: map[string]seenEnvelope{}, certs: map[[sha256.Size]byte]verifiedCert{}}
}

// Counts says how many envelopes got each verdict.
func (c *Checker) Counts() Counts {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.counts
}

// Count counts a verdict (the caller decides which verdicts count: a
// redelivered message for later is no replay).
func (c *Checker) Count(v Verdict) {
	c.mu.Lock()
	defer func() {
		c.mu.Unlock()
		if c.Notify != nil {
			c.Notify()
		}
	}()
	switch v {
	case OK:
		c.counts.Accepted++
	case Forged:
		c.counts.Forged++
	case Stale:
		c.counts.Stale++
	case Replayed:
		c.counts.Replayed++
	case Unknown:
		c.counts.Unknown++
	}
}

// verifySigner checks an envelope's certificate against the zone CA ca
// and that it names device, and the signature over content. The caller
// checks the stamp's freshness.
func (c *Checker) verifySigner(env *wire.Envelope, ca *x509.Certificate, device string, content []byte) error {
	if env == nil || len(env.Cert) == 0 || len(env.Cert) > maxEnvelopeCert || len(env.Sig) != ed25519.SignatureSize {
		return fmt.Errorf("no well-formed signature")
	}
	// The certificate must have been valid when it signed (a message
	// kept for later may outlive it); freshness bounds that time.
	signer, err := c.signerCert(ca, env.Cert, time.UnixMilli(env.TimeMs))
	if err != nil {
		return fmt.Errorf("signer's certificate: %w", err)
	}
	if signer.device != device {
		return fmt.Errorf("signed by device %q, not %q", signer.device, device)
	}
	if !ed25519.Verify(signer.key, content, env.Sig) {
		return fmt.Errorf("the signature does not match what arrived")
	}
	return nil
}

// verifiedCert is a node certificate a checker verified against a CA.
type verifiedCert struct {
	device    string
	key       ed25519.PublicKey
	notBefore time.Time
	notAfter  time.Time
}

// certCacheSize bounds the certificates a checker remembers having
// verified: a zone's devices' current ones, across a few friends.
const certCacheSize = 1024

// signerCert verifies der against ca as of at. The chain check (the CA's
// signature over the certificate) is remembered, so each call from a
// device does not pay for it again; the times are checked every time.
func (c *Checker) signerCert(ca *x509.Certificate, der []byte, at time.Time) (verifiedCert, error) {
	h := sha256.New()
	var n [8]byte
	binary.BigEndian.PutUint64(n[:], uint64(len(ca.Raw)))
	h.Write(n[:]) // so no two (CA, certificate) pairs hash the same bytes
	h.Write(ca.Raw)
	h.Write(der)
	var key [sha256.Size]byte
	h.Sum(key[:0])
	c.mu.Lock()
	vc, ok := c.certs[key]
	c.mu.Unlock()
	if ok {
		if at.Before(vc.notBefore) || at.After(vc.notAfter) || at.Before(ca.NotBefore) || at.After(ca.NotAfter) {
			ok = false // outside its time: let Verify say why
		} else {
			return vc, nil
		}
	}
	v, err := certs.Verify(ca, [][]byte{der}, at, 0)
	if err != nil {
		return verifiedCert{}, err
	}
	pub, isEd := v.Cert.PublicKey.(ed25519.PublicKey)
	if !isEd {
		return verifiedCert{}, fmt.Errorf("not an Ed25519 certificate")
	}
	vc = verifiedCert{device: v.Identity.Device, key: pub, notBefore: v.Cert.NotBefore, notAfter: v.Cert.NotAfter}
	c.mu.Lock()
	if len(c.certs) >= certCacheSize {
		clear(c.certs)
	}
	c.certs[key] = vc
	c.mu.Unlock()
	return vc, nil
}

// fresh reports whether a stamp is within the window of now, allowing a
// message that may wait its time to live (at the hub) that much longer.
// staleError says which clocks disagree, and by how much, so that the
// person can set the wrong one right.
func staleError(what string, stampMs int64, now time.Time) error {
	at := time.UnixMilli(stampMs).UTC()
	return fmt.Errorf("%s was signed at %s by its sender's clock, and this node's reads %s: more than %v apart, so one of the two clocks is wrong; set it right (keep both on network time)",
		what, at.Format(time.RFC3339), now.UTC().Format(time.RFC3339), Window)
}

func fresh(stampMs int64, ttl time.Duration, now time.Time) bool {
	t := time.UnixMilli(stampMs)
	return !t.After(now.Add(Window)) && !now.After(t.Add(Window+ttl))
}

// CheckCall checks the envelope of a call from the friend zone whose CA
// is ca, for this node self, with its body, and remembers it as seen
// under key. seen reports a repeat of an envelope accepted before (a
// replay, or a queued message redelivered because the hub lost its
// confirmation: the caller tells which).
func (c *Checker) CheckCall(hdr *Call, ca *x509.Certificate, self certs.Identity, body []byte, now time.Time) (key string, seen bool, v Verdict, err error) {
	env := hdr.Envelope
	if env == nil {
		return "", false, Forged, fmt.Errorf("the call from zone %s carries no signature", hdr.FromZoneID)
	}
	content, err := callContent(hdr, self.Zone.Compact(), env.TimeMs, body)
	if err != nil {
		return "", false, Forged, err
	}
	if err := c.verifySigner(env, ca, hdr.FromDevice, content); err != nil {
		return "", false, Forged, err
	}
	ttl := time.Duration(hdr.TTLMs) * time.Millisecond
	if !fresh(env.TimeMs, ttl, now) {
		return "", false, Stale, staleError("the call", env.TimeMs, now)
	}
	key = hdr.FromZoneID + "/" + hdr.FromDevice + "/" + hdr.ID
	c.mu.Lock()
	defer c.mu.Unlock()
	if _, dup := c.seen[key]; dup {
		return key, true, Replayed, fmt.Errorf("envelope %s was delivered before", hdr.ID)
	}
	if ttl == 0 && env.TimeMs <= c.floor {
		return "", false, Replayed, fmt.Errorf("envelope %s is older than this node's replay memory", hdr.ID)
	}
	if len(c.seen) >= replayCacheSize {
		nowMs := now.UnixMilli()
		for k, e := range c.seen {
			if e.exp < nowMs {
				delete(c.seen, k)
			}
		}
		if len(c.seen) >= replayCacheSize {
			// Forget the short-lived ones, all stamped at most a window
			// ahead, and refuse any such stamped before then. Messages
			// for later are kept: they may still be waiting at a hub.
			for k, e := range c.seen {
				if !e.long {
					delete(c.seen, k)
				}
			}
			c.floor = now.Add(Window).UnixMilli()
		}
		if len(c.seen) >= replayCacheSize {
			return "", false, OK, fmt.Errorf("this node's replay memory holds %d messages for later; try again later", len(c.seen))
		}
	}
	exp := time.UnixMilli(env.TimeMs).Add(Window + ttl).UnixMilli()
	c.seen[key] = seenEnvelope{exp: exp, long: ttl > 0}
	if ttl > 0 && c.Store != nil {
		// Written before the message is delivered, so a restart in
		// between errs towards a lost repeat, not a second delivery.
		if err := c.Store.SaveEnvelope(key, exp); err != nil {
			delete(c.seen, key)
			return "", false, OK, fmt.Errorf("remember envelope %s: %w", hdr.ID, err)
		}
	}
	return key, false, OK, nil
}

// Forget drops key, so that a queued message whose delivery failed can
// be delivered when the hub tries again.
func (c *Checker) Forget(key string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	delete(c.seen, key)
	if c.Store != nil {
		c.Store.ForgetEnvelope(key) // at worst, a later attempt is taken for a repeat
	}
}

// Remember loads envelopes accepted before a restart.
func (c *Checker) Remember(seen map[string]int64) {
	c.mu.Lock()
	defer c.mu.Unlock()
	for k, exp := range seen {
		c.seen[k] = seenEnvelope{exp: exp, long: true}
	}
}

// CheckReply checks the envelope of an answer from device of the friend
// zone whose CA is ca to call callID of self. Answers are read once, by
// the caller that is waiting for them: a replayed one names a call no
// longer waiting, so freshness suffices.
func (c *Checker) CheckReply(env *wire.Envelope, ca *x509.Certificate, callID string, from, self certs.Identity, body []byte, now time.Time) (Verdict, error) {
	if env == nil {
		return Forged, fmt.Errorf("the answer carries no signature")
	}
	content, err := replyContent(callID, from, self, env.TimeMs, body)
	if err != nil {
		return Forged, err
	}
	if err := c.verifySigner(env, ca, from.Device, content); err != nil {
		return Forged, err
	}
	if !fresh(env.TimeMs, 0, now) {
		return Stale, staleError("the answer", env.TimeMs, now)
	}
	return OK, nil
}
