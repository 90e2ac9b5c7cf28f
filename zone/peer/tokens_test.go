package peer

import (
	"context"
	"encoding/json"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/pzone/pzone/zone/api"
	"github.com/pzone/pzone/zone/token"
)

func tokenTestZone(t *testing.T) (*testHub, string, string) {
	t.Helper()
	clock := &testClock{}
	hb := startHub(t, clock, nil)
	phone, laptop := hb.pair(t, clock, "phone", 0), hb.pair(t, clock, "laptop", 0)
	startPeer(t, phone, clock)
	startPeer(t, laptop, clock)
	waitPeer(t, laptop, func(*api.PeerStatus) bool { return true })
	serveApp(t, appClient(laptop, "paid"), api.ServiceInfo{Name: "echo", TokenRequired: true}, func(ctx context.Context, ev api.Event) (any, error) {
		if ev.Method == "hang" {
			<-ctx.Done()
			return nil, ctx.Err()
		}
		return ev.Body, nil
	})
	waitSyncedPeer(t, laptop)
	waitSyncedPeer(t, phone)
	return hb, phone, laptop
}

func issue(t *testing.T, hb *testHub, tpl api.TokenTemplateRequest, n int, lot string) []api.IssuedToken {
	t.Helper()
	ctx := testCtx(t)
	if err := hb.client().Do(ctx, http.MethodPost, "/v1/tokens/templates", tpl, nil); err != nil {
		t.Fatal(err)
	}
	var res struct{ Tokens []api.IssuedToken }
	if err := hb.client().Do(ctx, http.MethodPost, "/v1/tokens", api.IssueRequest{Template: tpl.Name, Count: n, Lot: lot}, &res); err != nil {
		t.Fatal(err)
	}
	if len(res.Tokens) != n {
		t.Fatalf("issued %d", len(res.Tokens))
	}
	return res.Tokens
}

// TestTokenQuotas: a service that requires a token refuses calls without
// one; a binding made with one is cut when it passes its byte quota or its
// duration, with the reason recorded, and the token's usage carries over
// to its next binding.
func TestTokenQuotas(t *testing.T) {
	hb, phone, _ := tokenTestZone(t)
	ctx := testCtx(t)
	call := func(app, token, method string, arg any) error {
		body, _ := json.Marshal(arg)
		_, err := appClient(phone, app).CallWith(ctx, api.CallRequestBody{To: "laptop/echo", Method: method, Body: body, Token: token})
		return err
	}
	wantStatus(t, call("a", "", "echo", 1), http.StatusForbidden, "requires a token")
	wantStatus(t, call("a", "abcdefgh.0123456789abcdefghijklmnopqrstuv", "echo", 1), http.StatusForbidden, "unknown token")

	bytesTok := issue(t, hb, api.TokenTemplateRequest{Name: "small", Limits: token.Limits{MaxBytesTotal: 2000}}, 1, "")[0]
	if err := call("a", bytesTok.Token, "echo", "hello"); err != nil {
		t.Fatal(err)
	}
	err := call("a", bytesTok.Token, "echo", strings.Repeat("x", 3000))
	wantStatus(t, err, http.StatusServiceUnavailable, "broke off")
	all := waitBindings(t, hb, true, func(bs []api.BindingView) bool { return len(bs) == 1 && bs[0].Ended != nil })
	if all[0].Reason != "quota: 2000 bytes in all" || all[0].Token != bytesTok.ID {
		t.Fatalf("binding %+v", all[0])
	}
	wantStatus(t, call("a", bytesTok.Token, "echo", 1), http.StatusForbidden, "has used its 2000 bytes in all")

	durTok := issue(t, hb, api.TokenTemplateRequest{Name: "brief", Limits: token.Limits{MaxBinding: token.Duration(300 * time.Millisecond), SingleUse: true}}, 1, "")[0]
	err = call("b", durTok.Token, "hang", nil)
	wantStatus(t, err, http.StatusServiceUnavailable, "broke off")
	all = waitBindings(t, hb, true, func(bs []api.BindingView) bool { return len(bs) == 2 && bs[1].Ended != nil })
	if all[1].Reason != "duration" {
		t.Fatalf("binding %+v", all[1])
	}
	wantStatus(t, call("b", durTok.Token, "echo", 1), http.StatusForbidden, "single use")

	// A lot, revoked at once; revoking ends the bindings in use.
	lot := issue(t, hb, api.TokenTemplateRequest{Name: "open"}, 3, "party")
	if err := call("c", lot[0].Token, "echo", 1); err != nil {
		t.Fatal(err)
	}
	var rev map[string]int
	if err := hb.client().Do(ctx, http.MethodPost, "/v1/tokens/revoke", map[string]string{"lot": "party"}, &rev); err != nil || rev["revoked"] != 3 {
		t.Fatalf("revoke lot: %v %v", rev, err)
	}
	all = waitBindings(t, hb, true, func(bs []api.BindingView) bool { return len(bs) == 3 && bs[2].Ended != nil })
	if all[2].Reason != "token revoked" {
		t.Fatalf("binding %+v", all[2])
	}
	wantStatus(t, call("c", lot[1].Token, "echo", 1), http.StatusForbidden, "was revoked")

	var list struct{ Tokens []api.TokenView }
	if err := hb.client().Do(ctx, http.MethodGet, "/v1/tokens", nil, &list); err != nil {
		t.Fatal(err)
	}
	states := map[string]string{}
	for _, v := range list.Tokens {
		states[v.ID] = v.State
	}
	if states[bytesTok.ID] != "used" || states[durTok.ID] != "used" || states[lot[0].ID] != "revoked" || len(list.Tokens) != 5 {
		t.Fatalf("tokens %+v", list.Tokens)
	}
	for _, v := range list.Tokens {
		if v.ID == bytesTok.ID && (v.Usage.Bindings != 1 || v.Usage.BytesIn+v.Usage.BytesOut < 2000) {
			t.Fatalf("usage %+v", v.Usage)
		}
	}
}
