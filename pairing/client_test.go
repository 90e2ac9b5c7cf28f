package pairing

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"crypto/x509"
	"errors"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/pzone/pzone/certs"
	"github.com/pzone/pzone/transport"
)

func pairCtx(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), testTimeout)
	t.Cleanup(cancel)
	return ctx
}

// checkResult checks what Pair returned against the zone that issued it.
func checkResult(t *testing.T, res *Result, z *testZone, wantVia transport.Kind, wantAddrs []string) {
	t.Helper()
	if res.Device != "phone" || res.Zone != testZoneName || res.ZoneID != z.ca.ZoneID || res.Via != wantVia {
		t.Errorf("Result: device %q, zone %q (%s), via %s; want phone, %s (%s), via %s",
			res.Device, res.Zone, res.ZoneID, res.Via, testZoneName, z.ca.ZoneID, wantVia)
	}
	if !slices.Equal(res.HubAddrs, wantAddrs) {
		t.Errorf("HubAddrs = %q, want %q", res.HubAddrs, wantAddrs)
	}
	if res.CA == nil || !bytes.Equal(res.CA.Raw, z.ca.Cert.Raw) {
		t.Fatalf("Result.CA is not the zone CA")
	}
	v, err := certs.Verify(res.CA, [][]byte{res.Cert.Raw}, time.Now(), 0)
	if err != nil {
		t.Fatalf("issued certificate does not verify: %v", err)
	}
	if want := (certs.Identity{Zone: z.ca.ZoneID, Device: "phone"}); v.Identity != want {
		t.Errorf("issued certificate names %s, want %s", v.Identity, want)
	}
	pub, ok := res.Cert.PublicKey.(ed25519.PublicKey)
	if !ok || !pub.Equal(res.Key.Public()) {
		t.Errorf("issued certificate is not for Result.Key")
	}
}

func TestPair(t *testing.T) {
	tests := []struct {
		name     string
		mode     transport.Mode
		hubAddrs []string // in the hub's answer
		via      transport.Kind
	}{
		{"quic", transport.ModeQUIC, nil, transport.KindQUIC},
		{"tcp", transport.ModeTCP, nil, transport.KindTCP},
		{"hub names its addresses", transport.ModeTCP, []string{"192.0.2.1:4433", "[2001:db8::1]:4433"}, transport.KindTCP},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			z := newTestZone(t)
			h := startHub(t, z, func(h *testHub, pub ed25519.PublicKey, device string) *Response {
				resp := h.issue(pub, device)
				resp.HubAddrs = tt.hubAddrs
				return resp
			})
			tok := h.token()
			res, err := Pair(pairCtx(t), tok, tt.mode)
			if err != nil {
				t.Fatalf("Pair: %v", err)
			}
			wantAddrs := tt.hubAddrs
			if wantAddrs == nil {
				wantAddrs = tok.Addrs
			}
			checkResult(t, res, z, tt.via, wantAddrs)
			if n := h.answered.Load(); n != 1 {
				t.Errorf("hub answered %d requests, want 1", n)
			}
		})
	}
}

// TestPairSkipsUnreachableAddress runs over TCP only: a closed TCP port
// refuses at once, while QUIC hears nothing back from a closed UDP port
// and gives up only at quic-go's handshake idle timeout (5 s), which would
// test nothing more at the cost of most of this package's run time.
func TestPairSkipsUnreachableAddress(t *testing.T) {
	z := newTestZone(t)
	h := startHub(t, z, honest)
	tok := h.token()
	tok.Addrs = []string{closedAddr(t), h.addr}
	res, err := Pair(pairCtx(t), tok, transport.ModeTCP)
	if err != nil {
		t.Fatalf("Pair: %v", err)
	}
	checkResult(t, res, z, transport.KindTCP, tok.Addrs)
	if n := h.answered.Load(); n != 1 {
		t.Errorf("hub answered %d requests, want 1", n)
	}
}

func TestPairNoAddressAnswers(t *testing.T) {
	z := newTestZone(t)
	a, b := closedAddr(t), closedAddr(t)
	tok := &Token{Addrs: []string{a, b}, Zone: z.ca.ZoneID, InviteID: testInviteID, Secret: testSecret(1)}
	_, err := Pair(pairCtx(t), tok, transport.ModeTCP)
	if err == nil {
		t.Fatal("Pair succeeded with no hub listening")
	}
	for _, want := range []string{"no hub address answered", a, b} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q does not mention %q", err, want)
		}
	}
}

// TestPairZoneMismatch: a hub of another zone is refused at the handshake,
// and Pair goes no further: the next address could be the same impostor.
func TestPairZoneMismatch(t *testing.T) {
	for _, mode := range testModes {
		t.Run(string(mode), func(t *testing.T) {
			z := newTestZone(t)
			good := startHub(t, z, honest)
			impostor := startHub(t, newTestZone(t), honest)
			tok := good.token()
			tok.Addrs = []string{impostor.addr, good.addr}
			res, err := Pair(pairCtx(t), tok, mode)
			if !errors.Is(err, ErrZoneMismatch) {
				t.Fatalf("Pair = %+v, %v; want ErrZoneMismatch", res, err)
			}
			if n := good.answered.Load() + impostor.answered.Load(); n != 0 {
				t.Errorf("hubs answered %d requests after the zone mismatch, want 0", n)
			}
		})
	}
}

// TestPairRefused: a hub's refusal reaches the caller as *Error, and Pair
// does not ask the next address, which is the same hub.
func TestPairRefused(t *testing.T) {
	tests := []Error{
		{Code: CodeExpired, Message: "this invite has expired"},
		{Code: CodeRateLimited, Message: "too many attempts", RetryAfter: 12},
		{Code: CodeInvalid, Message: "invite not recognised"},
	}
	for _, want := range tests {
		t.Run(want.Code, func(t *testing.T) {
			z := newTestZone(t)
			refusing := startHub(t, z, refuse(want))
			next := startHub(t, z, honest)
			tok := refusing.token()
			tok.Addrs = append(tok.Addrs, next.addr)
			res, err := Pair(pairCtx(t), tok, transport.ModeTCP)
			var perr *Error
			if !errors.As(err, &perr) {
				t.Fatalf("Pair = %+v, %v; want *Error", res, err)
			}
			if *perr != want {
				t.Errorf("Pair error = %+v, want %+v", *perr, want)
			}
			if n := next.answered.Load(); n != 0 {
				t.Errorf("the next address answered %d requests after a refusal, want 0", n)
			}
		})
	}
}

// TestPairWrongSecret: a token with the right invite id but another
// secret is refused by the hub's proof check.
func TestPairWrongSecret(t *testing.T) {
	h := startHub(t, newTestZone(t), honest)
	tok := h.token()
	tok.Secret = testSecret(9)
	_, err := Pair(pairCtx(t), tok, transport.ModeQUIC)
	var perr *Error
	if !errors.As(err, &perr) || perr.Code != CodeInvalid {
		t.Fatalf("Pair with a wrong secret: %v; want *Error %s", err, CodeInvalid)
	}
}

// TestPairRejectsBadAnswer: the device checks what the hub issues before
// accepting it.
func TestPairRejectsBadAnswer(t *testing.T) {
	other := newTestZone(t)
	tests := []struct {
		name    string
		answer  answerFunc
		wantErr string
	}{
		{"certificate for another key", func(h *testHub, _ ed25519.PublicKey, device string) *Response {
			key, err := certs.NewKey()
			if err != nil {
				h.fail(err)
			}
			return h.issue(key.Public().(ed25519.PublicKey), device)
		}, "not for this device's key"},
		{"certificate for another device", func(h *testHub, pub ed25519.PublicKey, device string) *Response {
			resp := h.issue(pub, "laptop")
			resp.Device = device
			return resp
		}, `names laptop@`},
		{"certificate for the hub", func(h *testHub, pub ed25519.PublicKey, device string) *Response {
			resp := h.issue(pub, certs.HubDevice)
			resp.Device = device
			return resp
		}, `names hub@`},
		{"CA other than the handshake's", func(h *testHub, pub ed25519.PublicKey, device string) *Response {
			resp := h.issue(pub, device)
			resp.CA = other.ca.Cert.Raw
			return resp
		}, "CA certificate other than"},
		{"certificate and CA of another zone", func(h *testHub, pub ed25519.PublicKey, device string) *Response {
			cert, err := other.ca.Sign(pub, device, time.Now(), time.Hour)
			if err != nil {
				h.fail(err)
			}
			return &Response{Device: device, Zone: testZoneName, Cert: cert.Raw, CA: other.ca.Cert.Raw}
		}, "CA certificate other than"},
		{"certificate of another zone", func(h *testHub, pub ed25519.PublicKey, device string) *Response {
			cert, err := other.ca.Sign(pub, device, time.Now(), time.Hour)
			if err != nil {
				h.fail(err)
			}
			resp := h.issue(pub, device)
			resp.Cert = cert.Raw
			return resp
		}, "issued certificate"},
		{"certificate not DER", func(h *testHub, pub ed25519.PublicKey, device string) *Response {
			resp := h.issue(pub, device)
			resp.Cert = resp.Cert[:len(resp.Cert)-1]
			return resp
		}, "issued certificate"},
		{"bad zone name", func(h *testHub, pub ed25519.PublicKey, device string) *Response {
			resp := h.issue(pub, device)
			resp.Zone = "Home Zone"
			return resp
		}, "bad zone name"},
		{"nothing", func(*testHub, ed25519.PublicKey, string) *Response { return &Response{} }, "CA certificate other than"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			z := newTestZone(t)
			h := startHub(t, z, tt.answer)
			res, err := Pair(pairCtx(t), h.token(), transport.ModeTCP)
			if err == nil {
				t.Fatalf("Pair accepted the answer: %+v", res)
			}
			var perr *Error
			if errors.As(err, &perr) || errors.Is(err, ErrZoneMismatch) {
				t.Errorf("Pair error %v is a refusal or zone mismatch; want a rejected answer", err)
			}
			if !strings.Contains(err.Error(), tt.wantErr) {
				t.Errorf("Pair error %q does not say %q", err, tt.wantErr)
			}
			if n := h.answered.Load(); n != 1 {
				t.Errorf("hub answered %d requests, want 1", n)
			}
		})
	}
}

func TestPairCancelled(t *testing.T) {
	h := startHub(t, newTestZone(t), honest)
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	tok := h.token()
	tok.Addrs = append(tok.Addrs, h.addr)
	if res, err := Pair(ctx, tok, transport.ModeTCP); err == nil {
		t.Fatalf("Pair with a cancelled context = %+v", res)
	}
	if n := h.answered.Load(); n != 0 {
		t.Errorf("hub answered %d requests, want 0", n)
	}
}

// TestPinnedHubTLS checks the pinning on its own, with chains as a hub
// would send them.
func TestPinnedHubTLS(t *testing.T) {
	z, other := newTestZone(t), newTestZone(t)
	// notSelfSigned carries the zone CA's key, so it has the right zone
	// ID, but another CA signed it.
	der, err := x509.CreateCertificate(rand.Reader, z.ca.Cert, other.ca.Cert, z.ca.Key.Public(), other.ca.Key)
	if err != nil {
		t.Fatal(err)
	}
	notSelfSigned, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name    string
		chain   [][]byte
		wantErr string // "" for accepted
		is      error
	}{
		{"hub chain", z.hub.Certificate, "", nil},
		{"hub chain and more", append(slices.Clip(z.hub.Certificate), other.ca.Cert.Raw), "", nil},
		{"empty", nil, "no zone CA", nil},
		{"leaf alone", z.hub.Certificate[:1], "no zone CA", nil},
		{"other zone", other.hub.Certificate, "", ErrZoneMismatch},
		{"our CA, other zone's leaf", [][]byte{other.hub.Certificate[0], z.ca.Cert.Raw}, "hub certificate", nil},
		{"not the hub's certificate", tlsCert(t, z.ca, "phone", z.ca.Cert).Certificate, "not the hub's", nil},
		{"CA not DER", [][]byte{z.hub.Certificate[0], []byte("not a certificate")}, "hub's CA certificate", nil},
		{"CA not self-signed", [][]byte{z.hub.Certificate[0], notSelfSigned.Raw}, "not self-signed", nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var got x509.Certificate
			conf := PinnedHubTLS(z.ca.ZoneID, transport.ALPNPairing, &got)
			if !slices.Equal(conf.NextProtos, []string{transport.ALPNPairing}) {
				t.Fatalf("NextProtos = %q", conf.NextProtos)
			}
			err := conf.VerifyPeerCertificate(tt.chain, nil)
			switch {
			case tt.wantErr == "" && tt.is == nil:
				if err != nil {
					t.Fatalf("refused: %v", err)
				}
				if !bytes.Equal(got.Raw, z.ca.Cert.Raw) {
					t.Fatal("accepted, but did not report the zone CA")
				}
				return
			case err == nil:
				t.Fatal("accepted")
			case tt.is != nil && !errors.Is(err, tt.is):
				t.Fatalf("error %v, want %v", err, tt.is)
			case !strings.Contains(err.Error(), tt.wantErr):
				t.Fatalf("error %q does not say %q", err, tt.wantErr)
			}
			if tt.is == nil && errors.Is(err, ErrZoneMismatch) {
				t.Errorf("error %v is ErrZoneMismatch, but the zone is right", err)
			}
			if got.Raw != nil {
				t.Error("refused, but reported a CA")
			}
		})
	}
}
