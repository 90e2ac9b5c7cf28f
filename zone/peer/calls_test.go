package peer

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/pzone/pzone/zone/session"

	zsync "github.com/pzone/pzone/sync"
	"github.com/pzone/pzone/transport"
	"github.com/pzone/pzone/zone/api"
	"github.com/pzone/pzone/zone/policy"
	"github.com/pzone/pzone/zone/wire"
)

// serveApp serves info as c's app until the test ends, and returns once
// the daemon has registered it.
func serveApp(t *testing.T, c *api.Client, info api.ServiceInfo, handle api.Handler) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	ready, done := make(chan struct{}), make(chan error, 1)
	go func() { done <- c.Serve(ctx, info, handle, func() { close(ready) }) }()
	t.Cleanup(func() {
		cancel()
		select {
		case <-done:
		case <-time.After(20 * time.Second):
			t.Errorf("service %s did not stop", info.Name)
		}
	})
	select {
	case <-ready:
	case err := <-done:
		done <- err // for the cleanup
		t.Fatalf("serve %s: %v", info.Name, err)
	case <-time.After(20 * time.Second):
		t.Fatalf("service %s never started", info.Name)
	}
}

// serveEcho serves service "echo" as app on the peer in dir until the test
// ends: method echo returns its argument, method hang never answers,
// method fail fails.
func serveEcho(t *testing.T, dir string) (messages <-chan api.Event) {
	t.Helper()
	waitPeer(t, dir, func(*api.PeerStatus) bool { return true }) // the daemon answers
	msgs := make(chan api.Event, 16)
	serveApp(t, appClient(dir, "demo"), api.ServiceInfo{Name: "echo", Methods: []string{"echo", "hang", "fail"}}, func(ctx context.Context, ev api.Event) (any, error) {
		if ev.Type == "message" {
			msgs <- ev
			return nil, nil
		}
		switch ev.Method {
		case "hang":
			<-ctx.Done()
			return nil, ctx.Err()
		case "fail":
			return nil, errors.New("it failed on purpose")
		}
		return ev.Body, nil
	})
	return msgs
}

// waitRecord waits until the peer in dir holds bucket/key.
func waitRecord(t *testing.T, dir, bucket, key string) {
	t.Helper()
	waitPeer(t, dir, func(*api.PeerStatus) bool { return true }) // the daemon answers
	ctx, cancel := context.WithTimeout(testCtx(t), 20*time.Second)
	defer cancel()
	found := errors.New("found")
	err := peerClient(dir).DataWatch(ctx, bucket, key, false, func(v api.RecordView) error {
		if v.Key == key && !v.Deleted {
			return found
		}
		return nil
	})
	if !errors.Is(err, found) {
		t.Fatalf("%s never held %s/%s: %v", dir, bucket, key, err)
	}
}

func wantStatus(t *testing.T, err error, status int, text string) {
	t.Helper()
	var ae *api.APIError
	if !errors.As(err, &ae) || ae.Status != status || !strings.Contains(ae.Message, text) {
		t.Fatalf("got %v, want status %d with %q", err, status, text)
	}
}

// TestCallsThroughTheHub: an application on one device calls a service on
// another through the hub, and on its own device without it.
func TestCallsThroughTheHub(t *testing.T) {
	clock := &testClock{}
	hb := startHub(t, clock, nil)
	phone, laptop := hb.pair(t, clock, "phone", 0), hb.pair(t, clock, "laptop", 0)
	startPeer(t, phone, clock)
	startPeer(t, laptop, clock)
	waitSyncedPeer(t, phone)
	waitSyncedPeer(t, laptop)
	msgs := serveEcho(t, laptop)
	ctx := testCtx(t)
	c := peerClient(phone)

	res, err := c.Call(ctx, "laptop/echo", "echo", map[string]string{"hello": "world"})
	if err != nil || string(res) != `{"hello":"world"}` {
		t.Fatalf("call through the hub: %s, %v", res, err)
	}
	res, err = peerClient(laptop).Call(ctx, "alice/laptop/echo", "echo", 42)
	if err != nil || string(res) != "42" {
		t.Fatalf("same-device call: %s, %v", res, err)
	}
	if err := c.Send(ctx, "laptop/echo", "a message"); err != nil {
		t.Fatal(err)
	}
	select {
	case ev := <-msgs:
		if ev.From != "alice/phone/pzp" || string(ev.Body) != `"a message"` {
			t.Fatalf("message %+v", ev)
		}
	case <-ctx.Done():
		t.Fatal("no message")
	}

	_, err = c.Call(ctx, "laptop/echo", "fail", nil)
	wantStatus(t, err, http.StatusBadGateway, "it failed on purpose")
	_, err = c.Call(ctx, "laptop/nothing", "x", nil)
	wantStatus(t, err, http.StatusServiceUnavailable, `service "nothing" is not running`)
	_, err = c.Call(ctx, "tablet/echo", "x", nil)
	wantStatus(t, err, http.StatusNotFound, `no device "tablet"`)
	short, cancel := context.WithTimeout(ctx, 300*time.Millisecond)
	defer cancel()
	_, err = c.Call(short, "laptop/echo", "hang", nil)
	wantStatus(t, err, http.StatusGatewayTimeout, "")

	// The service is published in the zone state.
	views, err := c.Services(ctx)
	if err != nil || len(views) != 1 || views[0].Addr != "laptop/echo" || views[0].App != "demo" {
		t.Fatalf("services: %+v, %v", views, err)
	}

	// A device that is offline fails fast.
	var inv api.InviteView
	if err := hb.client().Do(ctx, http.MethodPost, "/v1/invites", api.InviteRequest{Device: "tablet"}, &inv); err != nil {
		t.Fatal(err)
	}
	_, err = c.Call(ctx, "laptop/echo", "echo", json.RawMessage(`"still here"`))
	if err != nil {
		t.Fatal(err)
	}
}

// TestPolicyAtBothEnds: the caller's device refuses a call its policy
// denies before sending anything, and the hoster's device refuses it
// again whatever the caller did (here a modified device that skips its
// own check).
func TestPolicyAtBothEnds(t *testing.T) {
	clock := &testClock{}
	hb := startHub(t, clock, nil)
	phone, laptop, tablet := hb.pair(t, clock, "phone", 0), hb.pair(t, clock, "laptop", 0), hb.pair(t, clock, "tablet", 0)
	tabletID := peerCert(t, tablet)
	startPeer(t, phone, clock)
	startPeer(t, laptop, clock)
	serveEcho(t, laptop)
	ctx := testCtx(t)
	for _, r := range []policy.Rule{
		{ID: "nophone", From: "alice/phone", To: "laptop/echo", Method: "*", Effect: policy.EffectDeny},
		{ID: "notablet", From: "alice/tablet", To: "laptop/*", Method: "*", Effect: policy.EffectDeny},
	} {
		v, _ := json.Marshal(r)
		if _, err := hb.client().DataPut(ctx, "policy", r.ID, v); err != nil {
			t.Fatal(err)
		}
	}
	// "Synced" is as of what the hub last said: wait for the rules
	// themselves.
	waitRecord(t, phone, "policy", "notablet")
	waitRecord(t, laptop, "policy", "notablet")

	_, err := peerClient(phone).Call(ctx, "laptop/echo", "echo", 1)
	wantStatus(t, err, http.StatusForbidden, "denied by the caller's policy: rule nophone")
	if views, err := peerClient(phone).Services(ctx); err != nil || len(views) != 0 {
		t.Fatalf("the phone lists services it may not call: %+v %v", views, err)
	}
	if views, err := peerClient(laptop).Services(ctx); err != nil || len(views) != 1 {
		t.Fatalf("the laptop's services: %+v %v", views, err)
	}
	_, err = peerClient(laptop).Call(ctx, "laptop/echo", "echo", 1)
	if err != nil {
		t.Fatalf("the laptop's own call: %v", err)
	}

	sess, err := DialSession(ctx, tabletID, transport.ModeAuto)
	if err != nil {
		t.Fatal(err)
	}
	defer sess.Close()
	st, err := sess.Conn().OpenStream(ctx)
	if err != nil {
		t.Fatal(err)
	}
	hdr := &wire.CallHeader{ID: "forged", Kind: wire.CallRequest, FromDevice: "phone", ToDevice: "laptop", ToService: "echo", Method: "echo", TimeoutMs: 10000}
	if transport.WriteFrame(st, &wire.StreamHeader{Kind: wire.StreamCall}) != nil || transport.WriteFrame(st, hdr) != nil || session.WriteBody(st, []byte("1"), false) != nil {
		t.Fatal("write the call")
	}
	var rep wire.CallReply
	if err := transport.NewFrameReader(st, 1<<16).ReadFrame(&rep); err != nil {
		t.Fatal(err)
	}
	if rep.Status != wire.CallDenied || !strings.Contains(rep.Message, `denied by device "laptop"'s policy: rule notablet`) {
		t.Fatalf("a call from a device that skipped its own check: %+v", rep)
	}
}

// waitBindings long-polls the hub's bindings until cond holds.
func waitBindings(t *testing.T, hb *testHub, all bool, cond func([]api.BindingView) bool) []api.BindingView {
	t.Helper()
	ctx := testCtx(t)
	path := "/v1/bindings?"
	if all {
		path += "all=1&"
	}
	var v api.BindingsView
	for first := true; ; first = false {
		p := path
		if !first {
			p += fmt.Sprintf("wait=%d&timeout=10s", v.Version)
		}
		if err := hb.client().Do(ctx, http.MethodGet, p, nil, &v); err != nil {
			t.Fatalf("bindings never matched: %v; last: %+v", err, v.Bindings)
		}
		if cond(v.Bindings) {
			return v.Bindings
		}
	}
}

// TestBindings: calls from one app to one service share a binding, which
// counts them; ending it (by the operator, or by revoking a device) cuts
// the exchanges in flight and records why.
func TestBindings(t *testing.T) {
	clock := &testClock{}
	hb := startHub(t, clock, nil)
	phone, laptop := hb.pair(t, clock, "phone", 0), hb.pair(t, clock, "laptop", 0)
	startPeer(t, phone, clock)
	startPeer(t, laptop, clock)
	serveEcho(t, laptop)
	waitSyncedPeer(t, phone)
	waitSyncedPeer(t, laptop)
	ctx := testCtx(t)
	c := appClient(phone, "notes")
	for range 2 {
		if _, err := c.Call(ctx, "laptop/echo", "echo", "0123456789"); err != nil {
			t.Fatal(err)
		}
	}
	bs := waitBindings(t, hb, false, func([]api.BindingView) bool { return true })
	if len(bs) != 1 || bs[0].From != "phone/notes" || bs[0].To != "laptop/echo" || bs[0].Calls != 2 || bs[0].BytesIn == 0 || bs[0].BytesOut == 0 {
		t.Fatalf("bindings %+v", bs)
	}

	// The operator ends it while a call hangs on it: the call is cut.
	hung := make(chan error, 1)
	go func() {
		_, err := c.Call(ctx, "laptop/echo", "hang", nil)
		hung <- err
	}()
	bs = waitBindings(t, hb, false, func(bs []api.BindingView) bool { return len(bs) == 1 && bs[0].Calls == 3 })
	var ended api.BindingView
	if err := hb.client().Do(ctx, http.MethodPost, "/v1/bindings/"+bs[0].ID+"/end", nil, &ended); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-hung:
		wantStatus(t, err, http.StatusServiceUnavailable, "broke off")
	case <-ctx.Done():
		t.Fatal("ending the binding did not cut its call")
	}
	if ended.Reason != "ended by the hub operator" || ended.Ended == nil {
		t.Fatalf("ended binding %+v", ended)
	}
	err := hb.client().Do(ctx, http.MethodPost, "/v1/bindings/"+bs[0].ID+"/end", nil, nil)
	wantStatus(t, err, http.StatusNotFound, "no such binding")

	// A new call makes a new binding; revoking the laptop ends it.
	if _, err := c.Call(ctx, "laptop/echo", "echo", 1); err != nil {
		t.Fatal(err)
	}
	if err := hb.client().Do(ctx, http.MethodPost, "/v1/devices/laptop/revoke", nil, nil); err != nil {
		t.Fatal(err)
	}
	all := waitBindings(t, hb, true, func(bs []api.BindingView) bool { return len(bs) == 2 && bs[1].Ended != nil })
	if !strings.Contains(all[1].Reason, `device "laptop" went offline (revoked)`) {
		t.Fatalf("ended bindings %+v", all)
	}
}

// TestAppAPIBadRequests: malformed requests to the applications' API get
// a 4xx with a message, never a crash.
func TestAppAPIBadRequests(t *testing.T) {
	clock := &testClock{}
	hb := startHub(t, clock, nil)
	phone := hb.pair(t, clock, "phone", 0)
	startPeer(t, phone, clock)
	serveEcho(t, phone)
	ctx := testCtx(t)
	c := peerClient(phone)
	for _, tc := range []struct {
		method, path string
		body         any
		status       int
		text         string
	}{
		{"POST", "/v1/call", "not an object", 400, "bad request body"},
		{"POST", "/v1/call", map[string]any{"to": "nodevice"}, 400, "want DEVICE/SERVICE"},
		{"POST", "/v1/call", map[string]any{"to": "Phone/echo"}, 400, "invalid device name"},
		{"POST", "/v1/call", map[string]any{"to": "phone/echo", "app": "Bad App"}, 403, `this request is app "pzp" and cannot act as "Bad App"`},
		{"POST", "/v1/call", map[string]any{"to": "phone/nothing", "app": "pzp"}, 503, `service "nothing" is not running`},
		{"POST", "/v1/call", map[string]any{"to": "phone/echo", "method": "a b"}, 400, "method: invalid name"},
		{"POST", "/v1/send", map[string]any{"to": "a/b/c/d"}, 400, "want DEVICE/SERVICE"},
		{"POST", "/v1/calls/nosuch/reply", map[string]any{"result": 1}, 404, `no call "nosuch" waits`},
		{"POST", "/v1/calls/x/reply", "[", 400, "bad request body"},
		{"GET", "/v1/services/Bad!/events", nil, 400, "invalid name"},
		{"GET", "/v1/services/echo/events?app=other", nil, 403, `cannot act as "other": an app's name comes from its credential`},
		{"GET", "/v1/services/echo/events", nil, 409, `app "demo" serves "echo" on this device already`},
		{"GET", "/v1/services/x/events?methods=a,,b", nil, 400, "invalid name"},
	} {
		var err error
		if s, ok := tc.body.(string); ok { // not JSON at all
			err = c.DoRaw(ctx, tc.method, tc.path, "application/json", strings.NewReader(s), nil)
		} else {
			err = c.Do(ctx, tc.method, tc.path, tc.body, nil)
		}
		var ae *api.APIError
		if !errors.As(err, &ae) || ae.Status != tc.status || !strings.Contains(ae.Message, tc.text) {
			t.Errorf("%s %s %v: %v, want %d with %q", tc.method, tc.path, tc.body, err, tc.status, tc.text)
		}
	}
	// The daemon still works.
	if res, err := c.Call(ctx, "phone/echo", "echo", "ok"); err != nil || string(res) != `"ok"` {
		t.Fatalf("after the bad requests: %s, %v", res, err)
	}
}

// TestCancellationReachesTheService: a caller that gives up cancels the
// call at the service's application too, long before its deadline.
func TestCancellationReachesTheService(t *testing.T) {
	clock := &testClock{}
	hb := startHub(t, clock, nil)
	phone, laptop := hb.pair(t, clock, "phone", 0), hb.pair(t, clock, "laptop", 0)
	startPeer(t, phone, clock)
	startPeer(t, laptop, clock)
	waitPeer(t, laptop, func(*api.PeerStatus) bool { return true })
	started, stopped := make(chan struct{}, 1), make(chan error, 1)
	serveApp(t, appClient(laptop, "slow"), api.ServiceInfo{Name: "slow"}, func(ctx context.Context, ev api.Event) (any, error) {
		started <- struct{}{}
		<-ctx.Done()
		stopped <- ctx.Err()
		return nil, ctx.Err()
	})
	waitSyncedPeer(t, phone)
	// The service's record must have reached the phone, or the call is
	// refused at once (before the service is known there).
	waitRecord(t, phone, zsync.BucketApps, "laptop/slow")

	ctx, cancel := context.WithTimeout(testCtx(t), time.Minute)
	callDone := make(chan error, 1)
	go func() {
		_, err := peerClient(phone).Call(ctx, "laptop/slow", "work", nil)
		callDone <- err
	}()
	select {
	case <-started:
	case err := <-callDone:
		t.Fatalf("the call ended before it reached the service: %v", err)
	case <-time.After(20 * time.Second):
		t.Fatal("the call never reached the service")
	}
	cancel()
	select {
	case err := <-stopped:
		if !errors.Is(err, context.Canceled) {
			t.Fatalf("the service's call ended with %v, want cancelled", err)
		}
	case <-time.After(20 * time.Second):
		t.Fatal("the service never heard that the caller gave up")
	}
	if err := <-callDone; !errors.Is(err, context.Canceled) {
		t.Fatalf("the caller's call: %v", err)
	}
}

// TestHubHostedService: an application on the hub's host serves a service
// through the hub's socket, and devices call it as hub/SERVICE.
func TestHubHostedService(t *testing.T) {
	clock := &testClock{}
	hb := startHub(t, clock, nil)
	phone := hb.pair(t, clock, "phone", 0)
	startPeer(t, phone, clock)
	serveApp(t, hb.client(), api.ServiceInfo{Name: "time", Methods: []string{"now"}}, func(ctx context.Context, ev api.Event) (any, error) {
		return map[string]string{"from": ev.From, "method": ev.Method}, nil
	})
	waitRecord(t, phone, "apps", "hub/time")
	ctx := testCtx(t)
	res, err := peerClient(phone).Call(ctx, "hub/time", "now", nil)
	if err != nil || string(res) != `{"from":"alice/phone/pzp","method":"now"}` {
		t.Fatalf("call to the hub: %s, %v", res, err)
	}
	views, err := peerClient(phone).Services(ctx)
	if err != nil || len(views) != 1 || views[0].Addr != "hub/time" {
		t.Fatalf("services: %+v %v", views, err)
	}
	_, err = peerClient(phone).Call(ctx, "hub/nothing", "x", nil)
	wantStatus(t, err, http.StatusServiceUnavailable, `service "nothing" is not running on device "hub"`)
}
