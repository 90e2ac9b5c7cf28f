// Package cpace implements the CPace balanced password-authenticated key
// exchange (PAKE) as specified in the IRTF CFRG Internet-Draft
// draft-irtf-cfrg-cpace-21 ("CPace, a balanced composable PAKE",
// 23 April 2026), cipher suite CPACE-RISTR255-SHA512: the group environment
// G_Ristretto255 (RFC 9496 ristretto255, DSI "CPaceRistretto255") with the
// hash function SHA-512.
//
// Only the initiator-responder setting of the draft is offered: party A (the
// initiator) always speaks first, and the transcript is
// transcript_ir(Ya, ADa, Yb, ADb) = lv_cat(Ya, ADa) || lv_cat(Yb, ADb).
//
// The flow is:
//
//	A: ini, ya, err := cpace.Start(prs, ci, sid, ada)       // send ya, ada to B
//	B: yb, isk, err := cpace.Respond(prs, ci, sid, adb, ya, ada) // send yb, adb to A
//	A: isk, err := ini.Finish(yb, adb)
//
// Both sides obtain the same 64-byte intermediate session key (ISK) if and
// only if they used the same PRS, CI and sid and saw the same Ya, ADa, Yb and
// ADb. A mismatch is not reported as an error: the keys simply differ, so
// callers need an explicit key confirmation step (for example a MAC over the
// transcript keyed with a key derived from ISK) before trusting the peer.
// As the draft recommends, ISK should be run through a KDF (such as HKDF)
// before use.
//
// This package does not frame messages: the caller transports the 32-byte
// public shares and the associated data (ADa, ADb) itself. The associated data
// is sent in clear and is authenticated by the ISK; CI is never sent. sid
// should be a public value unique to the session, if one is available.
//
// A received share that is not a canonical 32-byte ristretto255 encoding, or
// that leads to the identity element as the shared point K, makes the
// protocol abort with ErrInvalidElement or ErrIdentityElement; bad network
// input never causes a panic. The secret point K is never exposed.
package cpace

import (
	"crypto/rand"
	"crypto/sha512"
	"errors"
	"sync"

	"github.com/gtank/ristretto255"
)

const (
	// ElementSize is the size in bytes of a public share (Ya or Yb): the
	// canonical encoding of a ristretto255 element.
	ElementSize = 32
	// ISKSize is the size in bytes of the intermediate session key (the
	// SHA-512 output).
	ISKSize = sha512.Size

	// dsi is G_Ristretto255.DSI.
	dsi = "CPaceRistretto255"
	// hashBlockSize is H.s_in_bytes for SHA-512.
	hashBlockSize = sha512.BlockSize
)

var (
	// ErrInvalidElement is returned when the peer's public share is not a
	// valid canonical 32-byte ristretto255 encoding.
	ErrInvalidElement = errors.New("cpace: peer share is not a valid ristretto255 encoding")
	// ErrIdentityElement is returned when the peer's public share gives the
	// identity element as the shared point K (the draft's abort on K = G.I).
	ErrIdentityElement = errors.New("cpace: peer share yields the identity element")
	// ErrEmptyPRS is returned when the password-related string is empty.
	ErrEmptyPRS = errors.New("cpace: empty password-related string")
	// ErrFinished is returned when Finish is called on an Initiator that was
	// already used.
	ErrFinished = errors.New("cpace: initiator already finished")
)

// Initiator holds the state of party A between Start and Finish. It is used
// once: after the first call to Finish (successful or not) the secret scalar
// is erased and further calls return ErrFinished. It is safe to call Finish
// from several goroutines; only one of them proceeds.
type Initiator struct {
	mu  sync.Mutex
	y   *ristretto255.Scalar // secret scalar ya; nil once used
	sid []byte
	ya  []byte // own public share Ya
	ad  []byte // own associated data ADa
}

// Start begins a CPace run as the initiator (party A). prs is the
// password-related string (must not be empty), ci the channel identifier,
// sid the session identifier and ad the associated data ADa; ci, sid and ad
// may be empty. It returns the state to pass the responder's reply to, and
// the public share Ya to send to the responder together with ad. A fresh
// secret scalar is drawn from crypto/rand.
func Start(prs, ci, sid, ad []byte) (*Initiator, []byte, error) {
	if len(prs) == 0 {
		return nil, nil, ErrEmptyPRS
	}
	y, err := sampleScalar()
	if err != nil {
		return nil, nil, err
	}
	ini, ya := start(prs, ci, sid, ad, y)
	return ini, ya, nil
}

// start is Start with the secret scalar given; it takes ownership of y.
func start(prs, ci, sid, ad []byte, y *ristretto255.Scalar) (*Initiator, []byte) {
	g := calculateGenerator(prs, ci, sid)
	ya := scalarMult(y, g)
	ini := &Initiator{
		y:   y,
		sid: clone(sid),
		ya:  clone(ya),
		ad:  clone(ad),
	}
	return ini, ya
}

// Finish completes the run with the responder's public share yb and its
// associated data adb, and returns the 64-byte ISK. It returns
// ErrInvalidElement or ErrIdentityElement if yb must be refused, in which case
// the run is aborted. Finish can be called only once.
func (a *Initiator) Finish(yb, adb []byte) ([]byte, error) {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.y == nil {
		return nil, ErrFinished
	}
	y := a.y
	a.y = nil
	defer y.Zero()

	k, err := scalarMultVfy(y, yb)
	if err != nil {
		return nil, err
	}
	defer clear(k)
	return computeISK(a.sid, k, transcriptIR(a.ya, a.ad, yb, adb)), nil
}

// Respond runs CPace as the responder (party B). prs, ci and sid must be the
// values the initiator used; ad is the responder's associated data ADb, and
// ya and ada are the initiator's public share Ya and associated data ADa as
// received. It returns the public share Yb to send back together with ad,
// and the 64-byte ISK. It returns ErrInvalidElement or ErrIdentityElement if
// ya must be refused; nothing is to be sent back then.
func Respond(prs, ci, sid, ad []byte, ya, ada []byte) (yb, isk []byte, err error) {
	if len(prs) == 0 {
		return nil, nil, ErrEmptyPRS
	}
	y, err := sampleScalar()
	if err != nil {
		return nil, nil, err
	}
	defer y.Zero()
	return respond(prs, ci, sid, ad, ya, ada, y)
}

// respond is Respond with the secret scalar given.
func respond(prs, ci, sid, ad, ya, ada []byte, y *ristretto255.Scalar) (yb, isk []byte, err error) {
	// Refuse a bad Ya before doing anything else. K = yb*Ya does not depend
	// on the generator, so computing it first gives the same result as the
	// order in the draft.
	k, err := scalarMultVfy(y, ya)
	if err != nil {
		return nil, nil, err
	}
	defer clear(k)
	g := calculateGenerator(prs, ci, sid)
	yb = scalarMult(y, g)
	isk = computeISK(sid, k, transcriptIR(ya, ada, yb, ad))
	return yb, isk, nil
}

// sampleScalar implements G.sample_scalar() as recommended by the draft for
// group abstractions: 32 random bytes with the bits above group_size_bits
// (252) cleared, read as a little-endian integer. Such a value is below the
// group order, so it is always a canonical scalar. The (negligibly likely)
// value zero is drawn again.
func sampleScalar() (*ristretto255.Scalar, error) {
	var b [32]byte
	defer clear(b[:])
	s := ristretto255.NewScalar()
	zero := ristretto255.NewScalar()
	for {
		if _, err := rand.Read(b[:]); err != nil {
			return nil, errors.New("cpace: reading randomness failed")
		}
		b[31] &= 0x0f // keep bits 0..251
		if err := s.Decode(b[:]); err != nil {
			// Cannot happen: b < 2^252 < group order.
			return nil, errors.New("cpace: internal error sampling scalar")
		}
		if s.Equal(zero) == 0 {
			return s, nil
		}
	}
}

// calculateGenerator implements G_Ristretto255.calculate_generator(H, PRS,
// CI, sid): the element derivation (ristretto255 one-way map, RFC 9496
// from-uniform-bytes) of SHA-512(generator_string(DSI, PRS, CI, sid, 128)).
func calculateGenerator(prs, ci, sid []byte) *ristretto255.Element {
	gs := generatorString([]byte(dsi), prs, ci, sid, hashBlockSize)
	h := sha512.Sum512(gs) // 2 * field_size_bytes = 64 bytes
	clear(gs)
	g := ristretto255.NewElement().FromUniformBytes(h[:])
	clear(h[:])
	return g
}

// scalarMult implements G.scalar_mult(y, _g): the encoding of y*_g.
func scalarMult(y *ristretto255.Scalar, g *ristretto255.Element) []byte {
	return ristretto255.NewElement().ScalarMult(y, g).Encode(make([]byte, 0, ElementSize))
}

// identityEncoding is G.I, the encoding of the identity element.
var identityEncoding = make([]byte, ElementSize)

// scalarMultVfy implements G.scalar_mult_vfy(y, X): it decodes X and
// returns the encoding of y*decode(X). Where the draft returns G.I (X does
// not decode, or the result is the identity), it returns G.I together with
// ErrInvalidElement or ErrIdentityElement; the caller must then abort.
func scalarMultVfy(y *ristretto255.Scalar, x []byte) ([]byte, error) {
	p := ristretto255.NewElement()
	if err := p.Decode(x); err != nil {
		return clone(identityEncoding), ErrInvalidElement
	}
	k := ristretto255.NewElement().ScalarMult(y, p)
	if k.Equal(ristretto255.NewElement()) == 1 {
		return clone(identityEncoding), ErrIdentityElement
	}
	return k.Encode(make([]byte, 0, ElementSize)), nil
}

// computeISK returns H.hash(lv_cat(G.DSI || "_ISK", sid, K) || transcript).
func computeISK(sid, k, transcript []byte) []byte {
	prefix := lvCat([]byte(dsi+"_ISK"), sid, k)
	h := sha512.New()
	h.Write(prefix)
	h.Write(transcript)
	clear(prefix)
	return h.Sum(make([]byte, 0, ISKSize))
}

// transcriptIR implements transcript_ir(Ya, ADa, Yb, ADb) =
// lv_cat(Ya, ADa) || lv_cat(Yb, ADb).
func transcriptIR(ya, ada, yb, adb []byte) []byte {
	return lvCat(ya, ada, yb, adb)
}

// generatorString implements generator_string(DSI, PRS, CI, sid,
// s_in_bytes) = lv_cat(DSI, PRS, zero_bytes(len_zpad), CI, sid) with
// len_zpad = max(0, s_in_bytes - 1 - len(prepend_len(PRS)) -
// len(prepend_len(DSI))), so that DSI, PRS and the padding fill the first
// hash block.
func generatorString(dsi, prs, ci, sid []byte, sInBytes int) []byte {
	zpad := sInBytes - 1 - prependedLen(prs) - prependedLen(dsi)
	if zpad < 0 {
		zpad = 0
	}
	return lvCat(dsi, prs, make([]byte, zpad), ci, sid)
}

// lvCat implements lv_cat(a0, a1, ...) = prepend_len(a0) || prepend_len(a1)
// || ...
func lvCat(args ...[]byte) []byte {
	n := 0
	for _, a := range args {
		n += prependedLen(a)
	}
	out := make([]byte, 0, n)
	for _, a := range args {
		out = appendPrependLen(out, a)
	}
	return out
}

// appendPrependLen appends prepend_len(data), the LEB128 encoding of
// len(data) followed by data, to dst.
func appendPrependLen(dst, data []byte) []byte {
	n := uint64(len(data))
	for n >= 0x80 {
		dst = append(dst, byte(n)|0x80)
		n >>= 7
	}
	dst = append(dst, byte(n))
	return append(dst, data...)
}

// prependedLen returns len(prepend_len(data)).
func prependedLen(data []byte) int {
	n := 1
	for l := uint64(len(data)); l >= 0x80; l >>= 7 {
		n++
	}
	return n + len(data)
}

func clone(b []byte) []byte {
	return append([]byte(nil), b...)
}
