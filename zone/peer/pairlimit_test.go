package peer

import (
	"errors"
	"net/http"
	"testing"

	"github.com/pzone/pzone/pairing"
	"github.com/pzone/pzone/transport"
	"github.com/pzone/pzone/zone/api"
)

// The pairing rate limit slows down guessing without locking out the
// honest: with the source's bucket drained by wrong tokens (another user
// behind the same NAT, or an attacker), a wrong token is told to wait,
// but the valid token from the same address still pairs at once.
func TestPairingLimitLetsValidProofThrough(t *testing.T) {
	clock := &testClock{}
	hb := startHub(t, clock, nil)
	ctx := testCtx(t)
	newToken := func(device string) *pairing.Token {
		var inv api.InviteView
		if err := hb.client().Do(ctx, http.MethodPost, "/v1/invites", api.InviteRequest{Device: device}, &inv); err != nil {
			t.Fatal(err)
		}
		tok, err := pairing.ParseToken(inv.Token)
		if err != nil {
			t.Fatal(err)
		}
		return tok
	}
	good, other := newToken("phone"), newToken("tablet")
	wrong := func(tok *pairing.Token) *pairing.Token {
		w := *tok
		w.Secret = append([]byte(nil), tok.Secret...)
		w.Secret[0] ^= 0xff
		return &w
	}
	code := func(err error) string {
		var pe *pairing.Error
		if errors.As(err, &pe) {
			return pe.Code
		}
		return "no answer: " + err.Error()
	}
	for i := range pairing.DefaultLimitBurst {
		_, err := pairing.Pair(ctx, wrong(other), transport.ModeAuto)
		if c := code(err); c != pairing.CodeInvalid {
			t.Fatalf("wrong token %d: %v, want %s", i+1, err, pairing.CodeInvalid)
		}
	}
	_, err := pairing.Pair(ctx, wrong(other), transport.ModeAuto)
	if c := code(err); c != pairing.CodeRateLimited {
		t.Fatalf("wrong token over the limit: %v, want %s", err, pairing.CodeRateLimited)
	}
	t.Log(err)
	// Over the limit for the address, and for the invite the wrong
	// proofs named: each valid token still goes through.
	for _, tok := range []*pairing.Token{good, other} {
		res, err := pairing.Pair(ctx, tok, transport.ModeAuto)
		if err != nil {
			t.Fatalf("valid token refused while the address is limited: %v", err)
		}
		t.Logf("paired %s while limited", res.Device)
	}
	// The limit still holds for what does not check out.
	if _, err := pairing.Pair(ctx, wrong(newToken("laptop")), transport.ModeAuto); code(err) != pairing.CodeRateLimited {
		t.Fatalf("wrong token after the valid ones: %v", err)
	}
}
