package peer

import (
	"crypto/tls"
	"encoding/json"
	"errors"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/pzone/pzone/zone/hub"
	"github.com/pzone/pzone/zone/session"

	"github.com/pzone/pzone/certs"
	zsync "github.com/pzone/pzone/sync"
	"github.com/pzone/pzone/transport"
	"github.com/pzone/pzone/zone/api"
	"github.com/pzone/pzone/zone/policy"
	"github.com/pzone/pzone/zone/wire"
)

// befriend makes the zones of a (inviting) and b friends, b calling a
// petname, and waits until both hubs are linked.
func befriend(t *testing.T, a, b *testHub, petname string) {
	t.Helper()
	ctx := testCtx(t)
	var inv api.FriendInviteView
	if err := a.client().Do(ctx, http.MethodPost, "/v1/friends/invites", api.FriendInviteRequest{}, &inv); err != nil {
		t.Fatal(err)
	}
	var fv api.FriendView
	if err := b.client().Do(ctx, http.MethodPost, "/v1/friends", api.FriendAcceptRequest{Token: inv.Token, As: petname}, &fv); err != nil {
		t.Fatal(err)
	}
	waitLinked(t, a, 1)
	waitLinked(t, b, 1)
}

// pollHub long-polls path on hub h (an endpoint answering a view with a
// version) until cond holds, and returns that view.
func pollHub[V any](t *testing.T, h *testHub, path string, version func(*V) uint64, cond func(*V) bool) *V {
	t.Helper()
	ctx := testCtx(t)
	query := path
	for {
		v := new(V)
		if err := h.client().Do(ctx, http.MethodGet, query, nil, v); err != nil {
			t.Fatal(err)
		}
		if cond(v) {
			return v
		}
		if ctx.Err() != nil {
			t.Fatalf("%s never matched: %+v", path, v)
		}
		query = path + "?wait=" + itoa(version(v)) + "&timeout=5s"
	}
}

// waitFriends long-polls hub h's friends until cond holds.
func waitFriends(t *testing.T, h *testHub, cond func(api.FriendsView) bool) api.FriendsView {
	t.Helper()
	return *pollHub(t, h, "/v1/friends", func(v *api.FriendsView) uint64 { return v.Version }, func(v *api.FriendsView) bool { return cond(*v) })
}

// waitLinked waits until hub h has n live links.
func waitLinked(t *testing.T, h *testHub, n int) api.FriendsView {
	t.Helper()
	return waitFriends(t, h, func(v api.FriendsView) bool {
		up := 0
		for _, f := range v.Friends {
			if f.State == "online" {
				up++
			}
		}
		return up == n
	})
}

// waitDevices long-polls hub h's devices until cond holds.
func waitDevices(t *testing.T, h *testHub, cond func(map[string]api.DeviceView) bool) {
	t.Helper()
	pollHub(t, h, "/v1/devices", func(v *api.DevicesView) uint64 { return v.Version }, func(v *api.DevicesView) bool {
		m := map[string]api.DeviceView{}
		for _, d := range v.Devices {
			m[d.Name] = d
		}
		return cond(m)
	})
}

// putRule writes a policy rule on hub h.
func putRule(t *testing.T, h *testHub, id, effect, from, to string) {
	t.Helper()
	r, err := policy.ParseRule(from, to, "", effect)
	if err != nil {
		t.Fatal(err)
	}
	r.ID = id
	v, _ := json.Marshal(r)
	if _, err := h.client().DataPut(testCtx(t), zsync.BucketPolicy, id, v); err != nil {
		t.Fatal(err)
	}
}

func TestFederatedCall(t *testing.T) {
	clock := &testClock{}
	alice := startHubNamed(t, clock, "alice", nil)
	bob := startHubNamed(t, clock, "bob", nil)
	phone := alice.pair(t, clock, "phone", 0)
	laptop := bob.pair(t, clock, "laptop", 0)
	startPeer(t, phone, clock)
	startPeer(t, laptop, clock)
	serveEcho(t, laptop)
	befriend(t, bob, alice, "bob")
	waitRecord(t, phone, zsync.BucketFriends, bobZone(t, bob))
	ctx := testCtx(t)
	c, other := appClient(phone, "notes"), appClient(phone, "other")

	_, err := c.Call(ctx, "bob/laptop/echo", "echo", "hi")
	wantStatus(t, err, http.StatusForbidden, `denied by zone "bob"'s policy: default: other zones may use nothing`)

	putRule(t, bob, "alice-echo", policy.EffectAllow, "alice/phone/notes", "laptop/echo")
	waitRecord(t, laptop, zsync.BucketPolicy, "alice-echo")
	res, err := c.Call(ctx, "bob/laptop/echo", "echo", map[string]int{"n": 1})
	if err != nil || string(res) != `{"n":1}` {
		t.Fatalf("cross-zone call: %s, %v", res, err)
	}
	// The rule names the app: another app of the phone is refused.
	_, err = other.Call(ctx, "bob/laptop/echo", "echo", "hi")
	wantStatus(t, err, http.StatusForbidden, "denied")
	if st := waitPeer(t, laptop, func(st *api.PeerStatus) bool { return st.Envelopes.Accepted >= 1 }); st.Envelopes.Forged != 0 {
		t.Fatalf("laptop envelopes %+v", st.Envelopes)
	}
	// The serving app sees the caller by the name its zone gives it.
	views, err := c.ServicesIn(ctx, "bob", "")
	if err != nil || len(views) != 1 || views[0].Addr != "bob/laptop/echo" || views[0].Zone != "bob" {
		t.Fatalf("discovery: %+v, %v", views, err)
	}
	if views, err := other.ServicesIn(ctx, "bob", ""); err != nil || len(views) != 0 {
		t.Fatalf("discovery for an app bob grants nothing: %+v, %v", views, err)
	}
}

// bobZone is the compact zone ID of hub h.
func bobZone(t *testing.T, h *testHub) string {
	t.Helper()
	var st api.HubStatus
	if err := h.client().Do(testCtx(t), http.MethodGet, "/v1/status", nil, &st); err != nil {
		t.Fatal(err)
	}
	return st.ZoneID.Compact()
}

// hubChain reads the hub certificate chain of a zone directory whose hub
// is not running.
func hubChain(t *testing.T, dir string) tls.Certificate {
	t.Helper()
	chain, err := hub.ReadCredentials(dir)
	if err != nil {
		t.Fatal(err)
	}
	return chain
}

// TestLinkRefusesWhatItMustNot speaks pz-link/1 to a hub as its friend's
// hub would, and sends what a misbehaving friend might: calls claiming
// another zone, unsigned calls, calls for a third zone.
func TestLinkRefusesWhatItMustNot(t *testing.T) {
	clock := &testClock{}
	alice := startHubNamed(t, clock, "alice", nil)
	bob := startHubNamed(t, clock, "bob", nil)
	laptop := bob.pair(t, clock, "laptop", 0)
	startPeer(t, laptop, clock)
	serveEcho(t, laptop)
	befriend(t, bob, alice, "bob")
	putRule(t, bob, "all", policy.EffectAllow, "*", "*")
	waitRecord(t, laptop, zsync.BucketPolicy, "all")
	// Take alice's hub down and speak for it.
	if err := alice.stop(); err != nil {
		t.Fatal(err)
	}
	chain := hubChain(t, alice.dir)
	aliceID, err := certs.IdentityFromCert(chain.Leaf)
	if err != nil {
		t.Fatal(err)
	}
	aliceZone := aliceID.Zone.Compact()
	ctx := testCtx(t)
	conf := &tls.Config{MinVersion: tls.VersionTLS13, NextProtos: []string{transport.ALPNLink}, InsecureSkipVerify: true,
		GetClientCertificate: func(*tls.CertificateRequestInfo) (*tls.Certificate, error) { return &chain, nil }}
	conn, err := transport.Dial(ctx, bob.addr.String(), transport.ModeQUIC, transport.Config{TLS: conf})
	if err != nil {
		t.Fatal(err)
	}
	defer conn.CloseWithError(0, "")
	ctrl, err := conn.OpenStream(ctx)
	if err != nil {
		t.Fatal(err)
	}
	transport.WriteFrame(ctrl, &wire.StreamHeader{Kind: wire.StreamControl})
	transport.WriteFrame(ctrl, &wire.Control{Type: wire.MsgHello, Version: hub.LinkVersion})
	var welcome wire.Control
	if err := transport.NewFrameReader(ctrl, wire.MaxControlFrame).ReadFrame(&welcome); err != nil || welcome.Type != wire.MsgWelcome {
		t.Fatalf("no welcome: %+v %v", welcome, err)
	}
	call := func(hdr wire.CallHeader) wire.CallReply {
		t.Helper()
		st, err := conn.OpenStream(ctx)
		if err != nil {
			t.Fatal(err)
		}
		defer st.Reset()
		st.SetDeadline(time.Now().Add(10 * time.Second))
		transport.WriteFrame(st, &wire.StreamHeader{Kind: wire.StreamCall})
		transport.WriteFrame(st, &hdr)
		session.WriteBody(st, []byte(`"x"`), false)
		var rep wire.CallReply
		if err := transport.NewFrameReader(st, wire.MaxCallHeader).ReadFrame(&rep); err != nil {
			t.Fatalf("%+v: no answer: %v", hdr, err)
		}
		return rep
	}
	base := wire.CallHeader{ID: "c1", Kind: wire.CallRequest, FromZoneID: aliceZone, FromDevice: "phone", ToDevice: "laptop", ToService: "echo", Method: "echo", TimeoutMs: 5000,
		Envelope: &wire.Envelope{Cert: chain.Leaf.Raw, TimeMs: time.Now().UnixMilli(), Sig: make([]byte, 64)}}
	other := base
	other.FromZoneID = bobZone(t, bob) // any zone but the link's
	unsigned := base
	unsigned.Envelope = nil
	third := base
	third.ToZone = aliceZone
	for name, tc := range map[string]struct {
		hdr    wire.CallHeader
		status wire.CallStatus
		text   string
	}{
		"claims another zone": {other, wire.CallBadRequest, "must come from the linked zone"},
		"unsigned":            {unsigned, wire.CallBadRequest, "must be signed"},
		"for a third zone":    {third, wire.CallNotFound, "do not transit"},
		// Signed by a hub, not the phone: the laptop itself refuses it.
		"forged signature": {base, wire.CallDenied, "does not check out"},
	} {
		rep := call(tc.hdr)
		if rep.Status != tc.status || !strings.Contains(rep.Message, tc.text) {
			t.Errorf("%s: %v %q, want %v with %q", name, rep.Status, rep.Message, tc.status, tc.text)
		}
	}
	if st := waitPeer(t, laptop, func(st *api.PeerStatus) bool { return st.Envelopes.Forged >= 1 }); st.Envelopes.Accepted != 0 {
		t.Fatalf("laptop accepted %+v", st.Envelopes)
	}
	// Discovery from a friend lists only what its policy grants: all.
	var resp wire.DiscoverResponse
	if err := session.Exchange(ctx, conn, wire.StreamDiscover, &wire.DiscoverRequest{FromDevice: "phone"}, &resp, wire.MaxDiscoverFrame); err != nil || len(resp.Services) != 1 {
		t.Fatalf("discovery: %+v, %v", resp, err)
	}
}

func TestFriendRemovalEndsBothSides(t *testing.T) {
	clock := &testClock{}
	alice := startHubNamed(t, clock, "alice", nil)
	bob := startHubNamed(t, clock, "bob", nil)
	befriend(t, alice, bob, "alice")
	var res api.RemoveFriendResult
	if err := alice.client().Do(testCtx(t), http.MethodDelete, "/v1/friends/bob", nil, &res); err != nil || !res.Told {
		t.Fatalf("remove: %+v, %v", res, err)
	}
	// bob forgets alice too, and neither dials the other.
	waitFriends(t, bob, func(v api.FriendsView) bool { return len(v.Friends) == 0 })
	ctx := testCtx(t)
	err := alice.client().Do(ctx, http.MethodDelete, "/v1/friends/bob", nil, nil)
	var ae *api.APIError
	if !errors.As(err, &ae) || ae.Status != http.StatusNotFound {
		t.Fatalf("second removal: %v", err)
	}
}

func TestFriendAcceptRefusals(t *testing.T) {
	clock := &testClock{}
	alice := startHubNamed(t, clock, "alice", nil)
	bob := startHubNamed(t, clock, "bob", nil)
	ctx := testCtx(t)
	var inv api.FriendInviteView
	if err := alice.client().Do(ctx, http.MethodPost, "/v1/friends/invites", api.FriendInviteRequest{TTL: "1h"}, &inv); err != nil {
		t.Fatal(err)
	}
	for name, tc := range map[string]struct {
		hb     *testHub
		req    api.FriendAcceptRequest
		status int
		text   string
	}{
		"own token":     {alice, api.FriendAcceptRequest{Token: inv.Token, As: "x"}, http.StatusBadRequest, "this zone's own"},
		"own name":      {bob, api.FriendAcceptRequest{Token: inv.Token, As: "bob"}, http.StatusBadRequest, "this zone's own name"},
		"bad name":      {bob, api.FriendAcceptRequest{Token: inv.Token, As: "Al ice"}, http.StatusBadRequest, "invalid zone name"},
		"not a token":   {bob, api.FriendAcceptRequest{Token: "PZF1AAAA", As: "alice"}, http.StatusBadRequest, "invalid friend token"},
		"device invite": {bob, api.FriendAcceptRequest{Token: "PZI1AAAA", As: "alice"}, http.StatusBadRequest, "token of pzh invite"},
	} {
		err := tc.hb.client().Do(ctx, http.MethodPost, "/v1/friends", tc.req, nil)
		var ae *api.APIError
		if !errors.As(err, &ae) || ae.Status != tc.status || !strings.Contains(ae.Message, tc.text) {
			t.Errorf("%s: %v, want %d with %q", name, err, tc.status, tc.text)
		}
	}
	// A cancelled invite makes no friends.
	var inv2 api.FriendInviteView
	if err := alice.client().Do(ctx, http.MethodPost, "/v1/friends/invites", api.FriendInviteRequest{}, &inv2); err != nil {
		t.Fatal(err)
	}
	if err := alice.client().Do(ctx, http.MethodDelete, "/v1/friends/invites/"+inv2.ID, nil, nil); err != nil {
		t.Fatal(err)
	}
	err := bob.client().Do(ctx, http.MethodPost, "/v1/friends", api.FriendAcceptRequest{Token: inv2.Token, As: "alice"}, nil)
	if ae := (*api.APIError)(nil); !errors.As(err, &ae) || ae.Status != http.StatusBadGateway || !strings.Contains(ae.Message, "cancelled") {
		t.Fatalf("cancelled invite: %v", err)
	}
	// A tampered secret: the inviting hub refuses it, and the invite still works.
	bad := []byte(inv.Token)
	err = bob.client().Do(ctx, http.MethodPost, "/v1/friends", api.FriendAcceptRequest{Token: string(bad[:len(bad)-1]) + flip(bad[len(bad)-1]), As: "alice"}, nil)
	if err == nil {
		t.Fatal("a damaged token was accepted")
	}
	if err := bob.client().Do(ctx, http.MethodPost, "/v1/friends", api.FriendAcceptRequest{Token: inv.Token, As: "alice"}, nil); err != nil {
		t.Fatal(err)
	}
	err = bob.client().Do(ctx, http.MethodPost, "/v1/friends", api.FriendAcceptRequest{Token: inv.Token, As: "alice2"}, nil)
	var ae *api.APIError
	if !errors.As(err, &ae) || ae.Status != http.StatusConflict {
		t.Fatalf("friends twice: %v", err)
	}
	waitLinked(t, alice, 1)
}

func flip(c byte) string {
	if c == 'A' {
		return "B"
	}
	return "A"
}

func TestFriendRemovalDropsQueued(t *testing.T) {
	clock := &testClock{}
	alice := startHubNamed(t, clock, "alice", nil)
	bob := startHubNamed(t, clock, "bob", nil)
	phone := alice.pair(t, clock, "phone", 0)
	bob.pair(t, clock, "laptop", 0) // never runs: messages for it wait
	startPeer(t, phone, clock)
	befriend(t, bob, alice, "bob")
	putRule(t, bob, "inbox", policy.EffectAllow, "alice", "laptop/inbox")
	waitRecord(t, phone, zsync.BucketFriends, bobZone(t, bob))
	ctx := testCtx(t)
	res, err := peerClient(phone).SendWith(ctx, api.CallRequestBody{To: "bob/laptop/inbox", Body: json.RawMessage(`"hi"`), TTLMs: time.Hour.Milliseconds()})
	if err != nil || !res.Queued {
		t.Fatalf("send for later: %+v, %v", res, err)
	}
	if d := deviceRecord(t, bob, "laptop"); d.Queue != 1 {
		t.Fatalf("bob's hub keeps %d messages for the laptop", d.Queue)
	}
	var rm api.RemoveFriendResult
	if err := bob.client().Do(ctx, http.MethodDelete, "/v1/friends/alice", nil, &rm); err != nil {
		t.Fatal(err)
	}
	if rm.Dropped != 1 || len(rm.Rules) != 1 || rm.Rules[0] != "inbox" {
		t.Fatalf("removal: %+v", rm)
	}
	if d := deviceRecord(t, bob, "laptop"); d.Queue != 0 {
		t.Fatalf("bob's hub still keeps %d messages", d.Queue)
	}
}

func TestFederatedMessageForLaterToOnlineDevice(t *testing.T) {
	clock := &testClock{}
	alice := startHubNamed(t, clock, "alice", nil)
	bob := startHubNamed(t, clock, "bob", nil)
	phone := alice.pair(t, clock, "phone", 0)
	laptop := bob.pair(t, clock, "laptop", 0)
	startPeer(t, phone, clock)
	startPeer(t, laptop, clock)
	msgs := serveEcho(t, laptop)
	befriend(t, bob, alice, "bob")
	putRule(t, bob, "echo", policy.EffectAllow, "alice", "laptop/echo")
	waitRecord(t, phone, zsync.BucketFriends, bobZone(t, bob))
	waitRecord(t, laptop, zsync.BucketPolicy, "echo")
	res, err := appClient(phone, "notes").SendWith(testCtx(t), api.CallRequestBody{To: "bob/laptop/echo", Body: json.RawMessage(`"hi"`), TTLMs: time.Hour.Milliseconds()})
	if err != nil || !res.Delivered && !res.Queued {
		t.Fatalf("send for later to an online friend device: %+v, %v", res, err)
	}
	select {
	case ev := <-msgs:
		if string(ev.Body) != `"hi"` || ev.From != "alice/phone/notes" || ev.Queued == nil {
			t.Fatalf("the laptop got %+v", ev)
		}
	case <-testCtx(t).Done():
		t.Fatal("the laptop got nothing")
	}
}

// TestOutboxPerDestination: a message the friend's hub cannot take now
// (the laptop's queue there is full) holds up only later messages for
// the laptop, not the desk's.
func TestOutboxPerDestination(t *testing.T) {
	clock := &testClock{}
	alice := startHubNamed(t, clock, "alice", nil)
	lim := func(c *hub.Config) { c.QueueLimit = 1 }
	bob := startHubNamed(t, clock, "bob", lim)
	phone := alice.pair(t, clock, "phone", 0)
	bob.pair(t, clock, "laptop", 0) // never run: messages for them wait
	bob.pair(t, clock, "desk", 0)
	startPeer(t, phone, clock)
	befriend(t, bob, alice, "bob")
	putRule(t, bob, "all", policy.EffectAllow, "alice", "*")
	waitRecord(t, phone, zsync.BucketFriends, bobZone(t, bob))
	ctx := testCtx(t)
	c := peerClient(phone)
	send := func(to string) {
		t.Helper()
		if res, err := c.SendWith(ctx, api.CallRequestBody{To: to, Body: json.RawMessage(`"m"`), TTLMs: time.Hour.Milliseconds()}); err != nil || !res.Queued {
			t.Fatalf("send to %s: %+v, %v", to, res, err)
		}
	}
	send("bob/laptop/inbox") // fills the laptop's queue at bob's hub
	if err := bob.stop(); err != nil {
		t.Fatal(err)
	}
	waitLinked(t, alice, 0)
	send("bob/laptop/inbox") // both kept at alice's hub
	send("bob/desk/inbox")
	if v := waitLinked(t, alice, 0); v.Friends[0].Queue != 2 {
		t.Fatalf("alice keeps %d", v.Friends[0].Queue)
	}
	bob = restartHub(t, clock, bob.dir, lim)
	waitDevices(t, bob, func(d map[string]api.DeviceView) bool { return d["desk"].Queue == 1 && d["laptop"].Queue == 1 })
	// The desk's is on; the laptop's second still waits at alice's hub.
	waitFriends(t, alice, func(v api.FriendsView) bool { return len(v.Friends) == 1 && v.Friends[0].Queue == 1 })
}
