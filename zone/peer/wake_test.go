package peer

import (
	"context"
	"net/http"
	"testing"
	"time"

	"github.com/pzone/pzone/transport"
	"github.com/pzone/pzone/zone/api"
	"github.com/pzone/pzone/zone/hub"
	"github.com/pzone/pzone/zone/wire"
)

func sleepy(after time.Duration, mode transport.Mode) func(*Config) {
	return func(c *Config) {
		c.SleepAfter, c.WakeListen, c.Mode = after, "127.0.0.1:0", mode
	}
}

func waitAsleep(t *testing.T, dir string) *api.PeerStatus {
	t.Helper()
	return waitPeer(t, dir, func(s *api.PeerStatus) bool { return s.State == "asleep" })
}

// waitHubDevice long-polls the hub's devices until cond holds for device.
func waitHubDevice(t *testing.T, h *testHub, device string, cond func(api.DeviceView) bool) api.DeviceView {
	t.Helper()
	ctx := testCtx(t)
	var ver uint64
	for {
		var v api.DevicesView
		if err := h.client().Do(ctx, http.MethodGet, "/v1/devices?wait="+itoa(ver)+"&timeout=10s", nil, &v); err != nil {
			t.Fatal(err)
		}
		for _, d := range v.Devices {
			if d.Name == device && cond(d) {
				return d
			}
		}
		if ctx.Err() != nil {
			t.Fatalf("device %s never matched: %+v", device, v.Devices)
		}
		ver = v.Version
	}
}

// TestSleepWakeDeliver: a device sleeps when idle; a message for later is
// queued at the hub, the hub's ping wakes the device, the message is
// delivered and the device sleeps again; a call for later waits for it.
func TestSleepWakeDeliver(t *testing.T) {
	for _, mode := range []transport.Mode{transport.ModeQUIC, transport.ModeTCP} {
		t.Run(string(mode), func(t *testing.T) {
			clock := &testClock{}
			hb := startHub(t, clock, nil)
			phone, laptop := hb.pair(t, clock, "phone", 0), hb.pair(t, clock, "laptop", 0)
			startPeer(t, phone, clock)
			startPeerWith(t, laptop, clock, sleepy(300*time.Millisecond, mode))
			waitSyncedPeer(t, phone)
			msgs := serveEcho(t, laptop)
			st := waitAsleep(t, laptop)
			if st.Wake == nil || st.Wake.Endpoint == "" || st.Wake.Sleeps != 1 {
				t.Fatalf("asleep without a registration: %+v", st.Wake)
			}
			waitHubDevice(t, hb, "laptop", func(d api.DeviceView) bool { return d.State == "asleep" })

			ctx := testCtx(t)
			c := peerClient(phone)
			// Without a time to live, a sleeping device is away.
			_, err := c.SendWith(ctx, api.CallRequestBody{To: "laptop/echo", Body: []byte(`1`)})
			wantStatus(t, err, http.StatusServiceUnavailable, `device "laptop" is asleep`)
			res, err := c.SendWith(ctx, api.CallRequestBody{To: "laptop/echo", Body: []byte(`"later"`), TTLMs: time.Minute.Milliseconds()})
			if err != nil || !res.Queued || res.Expires == nil {
				t.Fatalf("send for later: %+v, %v", res, err)
			}
			select {
			case ev := <-msgs:
				if string(ev.Body) != `"later"` || ev.Queued == nil {
					t.Fatalf("delivered %+v", ev)
				}
			case <-ctx.Done():
				t.Fatal("the queued message never arrived")
			}
			waitHubDevice(t, hb, "laptop", func(d api.DeviceView) bool { return d.Queue == 0 })
			st = waitAsleep(t, laptop)
			if st.Wake.PingWakes != 1 || st.Wake.Pings.Accepted != 1 || st.Wake.BytesAsleep != 0 {
				t.Fatalf("wake counters: %+v", st.Wake)
			}

			// A call for later wakes the device and gets its answer.
			out, err := c.CallWith(ctx, api.CallRequestBody{To: "laptop/echo", Method: "echo", Body: []byte(`"hi"`), TTLMs: 20000})
			if err != nil || string(out) != `"hi"` {
				t.Fatalf("call for later: %s, %v", out, err)
			}
			waitAsleep(t, laptop)
			// An application on the sleeping device wakes it to call.
			_, err = peerClient(laptop).Call(ctx, "phone/none", "x", nil)
			wantStatus(t, err, http.StatusServiceUnavailable, "not running")
		})
	}
}

// TestQueueSurvivesRestartAndFills: queued messages are kept across a hub
// restart and delivered in order; a full queue is an error to the sender.
func TestQueueSurvivesRestartAndFills(t *testing.T) {
	clock := &testClock{}
	var hubDir string
	hb := startHub(t, clock, func(c *hub.Config) { c.QueueLimit = 3 })
	hubDir = hb.dir
	phone, laptop := hb.pair(t, clock, "phone", 0), hb.pair(t, clock, "laptop", 0)
	startPeer(t, phone, clock)
	waitSyncedPeer(t, phone)
	ctx := testCtx(t)
	c := peerClient(phone)
	for i, m := range []string{`1`, `2`, `3`} {
		res, err := c.SendWith(ctx, api.CallRequestBody{To: "laptop/echo", Body: []byte(m), TTLMs: time.Hour.Milliseconds()})
		if err != nil || !res.Queued {
			t.Fatalf("message %d: %+v, %v", i, res, err)
		}
	}
	_, err := c.SendWith(ctx, api.CallRequestBody{To: "laptop/echo", Body: []byte(`4`), TTLMs: time.Hour.Milliseconds()})
	wantStatus(t, err, http.StatusInsufficientStorage, "queue full")
	if d := waitHubDevice(t, hb, "laptop", func(api.DeviceView) bool { return true }); d.Queue != 3 || d.State != "offline" {
		t.Fatalf("laptop at the hub: %+v", d)
	}
	if err := hb.stop(); err != nil {
		t.Fatal(err)
	}
	hub2 := restartHub(t, clock, hubDir, nil)
	if d := waitHubDevice(t, hub2, "laptop", func(api.DeviceView) bool { return true }); d.Queue != 3 {
		t.Fatalf("after restart: %+v", d)
	}
	startPeer(t, laptop, clock)
	msgs := serveEcho(t, laptop)
	for _, want := range []string{`1`, `2`, `3`} {
		select {
		case ev := <-msgs:
			if string(ev.Body) != want {
				t.Fatalf("got %s, want %s", ev.Body, want)
			}
		case <-ctx.Done():
			t.Fatal("queued messages not delivered")
		}
	}
	waitHubDevice(t, hub2, "laptop", func(d api.DeviceView) bool { return d.Queue == 0 })
}

// TestQueueOrderPerService: a message whose service is not running yet
// stays, and so do later ones for that service; messages for other
// services go ahead; once the service runs, its messages arrive in order.
func TestQueueOrderPerService(t *testing.T) {
	clock := &testClock{}
	hb := startHub(t, clock, nil)
	phone, laptop := hb.pair(t, clock, "phone", 0), hb.pair(t, clock, "laptop", 0)
	startPeer(t, phone, clock)
	waitSyncedPeer(t, phone)
	ctx := testCtx(t)
	c := peerClient(phone)
	send := func(to, body string) {
		t.Helper()
		res, err := c.SendWith(ctx, api.CallRequestBody{To: to, Body: []byte(body), TTLMs: time.Hour.Milliseconds()})
		if err != nil || !res.Queued {
			t.Fatalf("send %s %s: %+v, %v", to, body, res, err)
		}
	}
	send("laptop/later", `1`)
	send("laptop/echo", `"a"`)
	send("laptop/later", `2`)
	startPeer(t, laptop, clock)
	msgs := serveEcho(t, laptop)
	select {
	case ev := <-msgs:
		if string(ev.Body) != `"a"` {
			t.Fatalf("first delivered: %s", ev.Body)
		}
	case <-ctx.Done():
		t.Fatal("echo's message never arrived")
	}
	if d := waitHubDevice(t, hb, "laptop", func(d api.DeviceView) bool { return d.Queue == 2 }); d.State != "online" {
		t.Fatalf("laptop: %+v", d)
	}
	later := make(chan api.Event, 4)
	serveApp(t, appClient(laptop, "late"), api.ServiceInfo{Name: "later"}, func(_ context.Context, ev api.Event) (any, error) {
		later <- ev
		return nil, nil
	})
	for _, want := range []string{`1`, `2`} {
		select {
		case ev := <-later:
			if string(ev.Body) != want || ev.Queued == nil || ev.From != "alice/phone/pzp" {
				t.Fatalf("got %+v, want %s", ev, want)
			}
		case <-ctx.Done():
			t.Fatal("later's messages never arrived")
		}
	}
	waitHubDevice(t, hb, "laptop", func(d api.DeviceView) bool { return d.Queue == 0 })
}

// TestQueueRefusalsAndRevocation: messages for later are refused for an
// unknown device and for services that take a token; a revoked device's
// queue is dropped; a time to live past the maximum is refused.
func TestQueueRefusalsAndRevocation(t *testing.T) {
	clock := &testClock{}
	hb := startHub(t, clock, nil)
	phone := hb.pair(t, clock, "phone", 0)
	hb.pair(t, clock, "laptop", 0)
	startPeer(t, phone, clock)
	waitSyncedPeer(t, phone)
	ctx := testCtx(t)
	c := peerClient(phone)
	_, err := c.SendWith(ctx, api.CallRequestBody{To: "desk/echo", Body: []byte(`1`), TTLMs: 1000})
	wantStatus(t, err, http.StatusNotFound, `no device "desk"`)
	_, err = c.SendWith(ctx, api.CallRequestBody{To: "laptop/echo", Body: []byte(`1`), TTLMs: (wire.MaxTTL + time.Hour).Milliseconds()})
	wantStatus(t, err, http.StatusBadRequest, "time to live")
	res, err := c.SendWith(ctx, api.CallRequestBody{To: "laptop/echo", Body: []byte(`1`), TTLMs: 60000})
	if err != nil || !res.Queued {
		t.Fatalf("queue: %+v, %v", res, err)
	}
	waitHubDevice(t, hb, "laptop", func(d api.DeviceView) bool { return d.Queue == 1 })
	if err := hb.client().Do(ctx, http.MethodPost, "/v1/devices/laptop/revoke", nil, nil); err != nil {
		t.Fatal(err)
	}
	var v api.DevicesView
	if err := hb.client().Do(ctx, http.MethodGet, "/v1/devices", nil, &v); err != nil {
		t.Fatal(err)
	}
	for _, d := range v.Devices {
		if d.Name == "laptop" && (d.Queue != 0 || d.State != "revoked") {
			t.Fatalf("revoked laptop still has a queue: %+v", d)
		}
	}
	// pzh wake of a device that never registered says so.
	err = hb.client().Do(ctx, http.MethodPost, "/v1/devices/phone/wake", nil, nil)
	wantStatus(t, err, http.StatusConflict, "has not registered for wakeup")
}

// TestCallsAroundSleep: an application on a device that keeps dozing off
// between its calls never sees a call fail: a call that starts while the
// session closes for sleep waits for the next session.
func TestCallsAroundSleep(t *testing.T) {
	clock := &testClock{}
	hb := startHub(t, clock, nil)
	phone, laptop := hb.pair(t, clock, "phone", 0), hb.pair(t, clock, "laptop", 0)
	startPeer(t, phone, clock)
	startPeerWith(t, laptop, clock, sleepy(20*time.Millisecond, transport.ModeQUIC))
	waitSyncedPeer(t, phone)
	serveEcho(t, phone)
	waitAsleep(t, laptop)
	ctx := testCtx(t)
	c := peerClient(laptop)
	for i := range 40 {
		// Pace the calls around the idle limit so that some start just
		// as the session closes (measurement pacing, not a wait for an event).
		select {
		case <-time.After(time.Duration(10+i%4*5) * time.Millisecond):
		case <-ctx.Done():
			t.Fatal(ctx.Err())
		}
		if _, err := c.Call(ctx, "phone/echo", "echo", i); err != nil {
			t.Fatalf("call %d: %v", i, err)
		}
	}
	if st := waitAsleep(t, laptop); st.Wake.Sleeps < 2 || st.Wake.LocalWakes < 1 {
		t.Fatalf("the laptop did not doze between calls: %+v", st.Wake)
	}
}

// TestHeldCallEndsAtShutdown: a call waiting at the hub for a device that
// never comes back does not hold up the hub's shutdown.
func TestHeldCallEndsAtShutdown(t *testing.T) {
	clock := &testClock{}
	hb := startHub(t, clock, nil)
	phone, laptop := hb.pair(t, clock, "phone", 0), hb.pair(t, clock, "laptop", 0)
	startPeer(t, phone, clock)
	lp := startPeerWith(t, laptop, clock, sleepy(100*time.Millisecond, transport.ModeQUIC))
	waitSyncedPeer(t, phone)
	waitAsleep(t, laptop)
	waitHubDevice(t, hb, "laptop", func(d api.DeviceView) bool { return d.State == "asleep" })
	lp.stop() // asleep for good: pings reach nobody
	ctx := testCtx(t)
	done := make(chan error, 1)
	go func() {
		_, err := peerClient(phone).CallWith(ctx, api.CallRequestBody{To: "laptop/echo", Method: "echo", TTLMs: 50000})
		done <- err
	}()
	waitHubDevice(t, hb, "laptop", func(d api.DeviceView) bool { return d.Wake != nil && d.Wake.Pings >= 1 })
	stopped := make(chan error, 1)
	go func() { stopped <- hb.stop() }()
	select {
	case err := <-stopped:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(15 * time.Second):
		t.Fatal("the hub did not stop while a call waited for a sleeping device")
	}
	if err := <-done; err == nil {
		t.Fatal("the held call succeeded without its device")
	}
}
