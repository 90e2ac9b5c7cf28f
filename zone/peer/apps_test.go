package peer

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"

	"github.com/pzone/pzone/zone/api"
	"github.com/pzone/pzone/zone/appid"
	"github.com/pzone/pzone/zone/policy"
)

// TestAppIdentity: an app is who its credential says, never who it claims
// to be; a rule naming an app holds against a process that only claims
// the name; no credential is app anonymous, which rules can name too; a
// removed credential stops working at once; the CLI is app pzp.
func TestAppIdentity(t *testing.T) {
	clock := &testClock{}
	hb := startHub(t, clock, nil)
	phone, laptop := hb.pair(t, clock, "phone", 0), hb.pair(t, clock, "laptop", 0)
	startPeer(t, phone, clock)
	startPeer(t, laptop, clock)
	serveEcho(t, laptop)
	putRule(t, hb, "no-games", policy.EffectDeny, "alice/phone/games", "laptop/echo")
	putRule(t, hb, "no-anon", policy.EffectDeny, "alice/phone/anonymous", "laptop/*")
	waitRecord(t, phone, "policy", "no-anon")
	waitRecord(t, phone, "apps", "laptop/demo")
	ctx := testCtx(t)
	sock := api.SocketPath(phone, api.PeerSocketName)

	// A registered app calls as itself; the service sees its name.
	notes := appClient(phone, "notes")
	if _, err := notes.Call(ctx, "laptop/echo", "echo", 1); err != nil {
		t.Fatal(err)
	}
	// The app the rule names is refused, whatever another app claims.
	_, err := appClient(phone, "games").Call(ctx, "laptop/echo", "echo", 1)
	wantStatus(t, err, http.StatusForbidden, "rule no-games")
	err = notes.Do(ctx, http.MethodPost, "/v1/call", map[string]any{"to": "laptop/echo", "method": "echo", "app": "games"}, nil)
	wantStatus(t, err, http.StatusForbidden, `this request is app "notes" and cannot act as "games"`)

	// No credential: app anonymous, which the rule names.
	anon := api.NewClient(sock)
	_, err = anon.Call(ctx, "laptop/echo", "echo", 1)
	wantStatus(t, err, http.StatusForbidden, "rule no-anon")
	err = anon.Do(ctx, http.MethodPost, "/v1/call", map[string]any{"to": "laptop/echo", "method": "echo", "app": "notes"}, nil)
	wantStatus(t, err, http.StatusForbidden, `this request is app "anonymous" and cannot act as "notes"`)
	// ...and it may not unpair the device, nor list as another app.
	err = anon.Do(ctx, http.MethodPost, "/v1/unpair", nil, nil)
	wantStatus(t, err, http.StatusForbidden, "only the device's own CLI")
	_, err = notes.ServicesIn(ctx, "", "games")
	wantStatus(t, err, http.StatusForbidden, `may list only what it may call itself`)
	if views, err := peerClient(phone).ServicesIn(ctx, "", "games"); err != nil || len(views) != 0 {
		t.Fatalf("the CLI's view for games: %+v, %v", views, err)
	}

	// A wrong credential, a forged one, a malformed header: 401, said why.
	_, err = api.NewClient(sock, api.WithCredential("pzapp.notes.AAAA")).Call(ctx, "laptop/echo", "echo", 1)
	wantStatus(t, err, http.StatusUnauthorized, `app "notes" is not registered with this credential`)
	_, err = api.NewClient(sock, api.WithCredential("hunter2")).Call(ctx, "laptop/echo", "echo", 1)
	wantStatus(t, err, http.StatusUnauthorized, "not a pzone app credential")
	_, err = api.NewClient(sock, api.WithCredential("pzapp.pzp.AAAA")).Call(ctx, "laptop/echo", "echo", 1)
	wantStatus(t, err, http.StatusUnauthorized, "CLI credential is from an earlier run")

	// The CLI is app pzp.
	served := make(chan string, 4)
	serveApp(t, appClient(laptop, "probe"), api.ServiceInfo{Name: "whoami"}, func(_ context.Context, ev api.Event) (any, error) {
		served <- ev.From
		return nil, nil
	})
	waitRecord(t, phone, "apps", "laptop/probe")
	for c, want := range map[*api.Client]string{peerClient(phone): "alice/phone/pzp", notes: "alice/phone/notes"} {
		if _, err := c.Call(ctx, "laptop/whoami", "x", nil); err != nil {
			t.Fatal(err)
		}
		if got := <-served; got != want {
			t.Fatalf("caller seen as %q, want %q", got, want)
		}
	}

	// Removed: its credential stops working at the next request.
	if err := appid.Open(phone).Remove("notes"); err != nil {
		t.Fatal(err)
	}
	_, err = notes.Call(ctx, "laptop/echo", "echo", 1)
	wantStatus(t, err, http.StatusUnauthorized, `app "notes" is not registered`)

	// Only hashes are kept; the CLI's credential is private to the user.
	data, err := os.ReadFile(filepath.Join(phone, appid.RegistryFile))
	if err != nil {
		t.Fatal(err)
	}
	if strings.Contains(string(data), strings.Split(appCreds[phone+"/games"], ".")[2]) {
		t.Fatal("apps.json holds a credential's secret")
	}
	for _, f := range []string{appid.RegistryFile, appid.CLIFile} {
		if fi, err := os.Stat(filepath.Join(phone, f)); err != nil || fi.Mode().Perm() != 0o600 {
			t.Fatalf("%s: %v, %v", f, fi.Mode(), err)
		}
	}
}

// TestRequireAppAuth: pzp run --require-app-auth refuses an app without a
// credential, saying what to do, and still serves registered apps and
// the CLI.
func TestRequireAppAuth(t *testing.T) {
	clock := &testClock{}
	hb := startHub(t, clock, nil)
	phone := hb.pair(t, clock, "phone", 0)
	startPeerWith(t, phone, clock, func(c *Config) { c.RequireAppAuth = true })
	waitPeer(t, phone, func(*api.PeerStatus) bool { return true })
	ctx := testCtx(t)
	_, err := api.NewClient(api.SocketPath(phone, api.PeerSocketName)).Services(ctx)
	wantStatus(t, err, http.StatusUnauthorized, "pzp app add NAME")
	if _, err := appClient(phone, "notes").Services(ctx); err != nil {
		t.Fatal(err)
	}
	if _, err := peerClient(phone).Services(ctx); err != nil {
		t.Fatal(err)
	}
}

// TestOnlyTheServingAppAnswers: a call is answered only by the app that
// serves it; another app of the device that learns the call's ID cannot
// answer in its place.
func TestOnlyTheServingAppAnswers(t *testing.T) {
	clock := &testClock{}
	hb := startHub(t, clock, nil)
	phone, laptop := hb.pair(t, clock, "phone", 0), hb.pair(t, clock, "laptop", 0)
	startPeer(t, phone, clock)
	startPeer(t, laptop, clock)
	waitSyncedPeer(t, phone)
	waitSyncedPeer(t, laptop)
	rogue := appClient(laptop, "rogue")
	serveApp(t, appClient(laptop, "real"), api.ServiceInfo{Name: "bank"}, func(ctx context.Context, ev api.Event) (any, error) {
		err := rogue.Do(ctx, http.MethodPost, "/v1/calls/"+ev.ID+"/reply", api.Reply{Result: []byte(`"forged"`)}, nil)
		var ae *api.APIError
		if !errors.As(err, &ae) || ae.Status != http.StatusNotFound {
			return nil, fmt.Errorf("the rogue's reply: %v", err)
		}
		return "genuine", nil
	})
	waitRecord(t, phone, "apps", "laptop/real")
	res, err := peerClient(phone).Call(testCtx(t), "laptop/bank", "x", nil)
	if err != nil || string(res) != `"genuine"` {
		t.Fatalf("call: %s, %v", res, err)
	}
}

// TestAppChannel: the Go client's channel carries calls, messages, a
// service's events and its replies as the HTTP API does, many at once;
// an app whose credential is removed loses its channel: the service it
// served stops, a caller hears so at once instead of waiting out its
// deadline, and the app's own calls are refused.
func TestAppChannel(t *testing.T) {
	clock := &testClock{}
	hb := startHub(t, clock, nil)
	phone, laptop := hb.pair(t, clock, "phone", 0), hb.pair(t, clock, "laptop", 0)
	startPeer(t, phone, clock)
	startPeer(t, laptop, clock)
	waitPeer(t, laptop, func(*api.PeerStatus) bool { return true })
	ctx := testCtx(t)
	sctx, stop := context.WithCancel(ctx)
	defer stop()
	served, ready, msgs := make(chan error, 1), make(chan struct{}), make(chan api.Event, 4)
	go func() {
		served <- appClient(laptop, "svc").Serve(sctx, api.ServiceInfo{Name: "chan"}, func(_ context.Context, ev api.Event) (any, error) {
			if ev.Type == "message" {
				msgs <- ev
				return nil, nil
			}
			return ev.Body, nil
		}, func() { close(ready) })
	}()
	select {
	case <-ready:
	case err := <-served:
		t.Fatalf("serve: %v", err)
	}
	waitRecord(t, phone, "apps", "laptop/svc")
	waitSyncedPeer(t, phone)

	caller := appClient(phone, "caller")
	var wg sync.WaitGroup
	errs := make(chan error, 64)
	for i := range 64 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			res, err := caller.Call(ctx, "laptop/chan", "m", i)
			if err == nil && string(res) != strconv.Itoa(i) {
				err = fmt.Errorf("call %d answered %s", i, res)
			}
			if err != nil {
				errs <- err
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	// The same over plain HTTP, as other languages call.
	var out api.CallResult
	if err := caller.Do(ctx, http.MethodPost, "/v1/call", map[string]any{"to": "laptop/chan", "body": 7}, &out); err != nil || string(out.Result) != "7" {
		t.Fatalf("HTTP call: %s, %v", out.Result, err)
	}
	if err := caller.Send(ctx, "laptop/chan", "hi"); err != nil {
		t.Fatal(err)
	}
	if ev := <-msgs; ev.From != "alice/phone/caller" || string(ev.Body) != `"hi"` {
		t.Fatalf("message %+v", ev)
	}
	_, err := caller.Call(ctx, "nosuch/chan", "m", nil)
	wantStatus(t, err, http.StatusNotFound, "nosuch")

	// The serving app's credential removed: at its next event.
	if err := appid.Open(laptop).Remove("svc"); err != nil {
		t.Fatal(err)
	}
	_, err = caller.Call(ctx, "laptop/chan", "m", 1)
	wantStatus(t, err, http.StatusServiceUnavailable, `service "chan" stopped before it answered`)
	if err := <-served; err == nil || !strings.Contains(err.Error(), "daemon ended the service's channel") {
		t.Fatalf("Serve ended with %v", err)
	}
	// The calling app's: at its next call.
	if err := appid.Open(phone).Remove("caller"); err != nil {
		t.Fatal(err)
	}
	_, err = caller.Call(ctx, "laptop/chan", "m", 1)
	wantStatus(t, err, http.StatusUnauthorized, `app "caller" is not registered`)
}
