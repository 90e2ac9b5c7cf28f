package peer

import (
	"context"
	"errors"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/pzone/pzone/zone/stores"

	zsync "github.com/pzone/pzone/sync"
	"github.com/pzone/pzone/transport"
	"github.com/pzone/pzone/zone/api"
	"github.com/pzone/pzone/zone/appid"
	"github.com/pzone/pzone/zone/wire"
)

// peerClient is a client of the pzp in dir as its CLI is (app pzp), once
// the daemon has written the CLI's credential; before, as app anonymous.
func peerClient(dir string) *api.Client {
	return api.NewClient(api.SocketPath(dir, api.PeerSocketName), api.WithCredentialFile(appid.CLIPath(dir)))
}

var (
	appCredsMu sync.Mutex
	appCreds   = map[string]string{} // DIR/APP: credential
)

// appClient is a client of the pzp in dir as app, registered there (as
// pzp app add does) on first use.
func appClient(dir, app string) *api.Client {
	appCredsMu.Lock()
	defer appCredsMu.Unlock()
	cred, ok := appCreds[dir+"/"+app]
	if !ok {
		var err error
		if cred, err = appid.Open(dir).Add(app, time.Now()); err != nil {
			panic(err)
		}
		appCreds[dir+"/"+app] = cred
	}
	return api.NewClient(api.SocketPath(dir, api.PeerSocketName), api.WithCredential(cred))
}

func waitSyncedPeer(t *testing.T, dir string) {
	t.Helper()
	waitPeer(t, dir, func(s *api.PeerStatus) bool {
		return s.State == "online" && s.Sync != nil && s.Sync.Synced()
	})
}

// TestSyncOverSessions runs the zone state over real sessions: an edit on
// one device reaches another through the hub, a revocation reaches every
// device's certificates bucket, and a device refuses to write hub-only
// buckets before anything is sent.
func TestSyncOverSessions(t *testing.T) {
	clock := &testClock{}
	hb := startHub(t, clock, nil)
	if _, err := hb.client().DataPut(testCtx(t), zsync.BucketPolicy, "default", []byte("allow zone")); err != nil {
		t.Fatal(err)
	}
	phone, laptop := hb.pair(t, clock, "phone", 0), hb.pair(t, clock, "laptop", 0)
	laptopSerial := stores.SerialHex(peerCert(t, laptop).Cert)
	startPeer(t, phone, clock)
	startPeer(t, laptop, clock)
	waitSyncedPeer(t, phone)
	waitSyncedPeer(t, laptop)

	ctx, cancel := context.WithCancel(testCtx(t))
	defer cancel()
	seen := make(chan api.RecordView, 16)
	watchDone := make(chan error, 1)
	go func() {
		watchDone <- peerClient(laptop).DataWatch(ctx, zsync.BucketAppData, "notes/", false, func(v api.RecordView) error {
			seen <- v
			return nil
		})
	}()
	if _, err := peerClient(phone).DataPut(ctx, zsync.BucketAppData, "notes/a", []byte("hello")); err != nil {
		t.Fatal(err)
	}
	select {
	case v := <-seen:
		if v.Key != "notes/a" || v.Text == nil || *v.Text != "hello" || v.Version.Node != "phone" {
			t.Fatalf("laptop saw %+v", v)
		}
	case err := <-watchDone:
		t.Fatalf("watch ended: %v", err)
	case <-ctx.Done():
		t.Fatal("the phone's edit never reached the laptop")
	}
	cancel()
	<-watchDone

	// The hub's record arrived with the pairing; a device may not write it.
	if v, err := peerClient(phone).DataGet(testCtx(t), zsync.BucketPolicy, "default"); err != nil || *v.Text != "allow zone" {
		t.Fatalf("policy on the phone: %+v %v", v, err)
	}
	_, err := peerClient(phone).DataPut(testCtx(t), zsync.BucketPolicy, "default", []byte("mine"))
	var apiErr *api.APIError
	if !errors.As(err, &apiErr) || apiErr.Status != 403 || !strings.Contains(err.Error(), "hub only") {
		t.Fatalf("device write to policy: %v", err)
	}

	// Revoking the laptop tells the phone, which can then refuse its
	// certificate on a direct link.
	serial := laptopSerial
	var rev api.DeviceView
	if err := hb.client().Do(testCtx(t), "POST", "/v1/devices/laptop/revoke", nil, &rev); err != nil {
		t.Fatal(err)
	}
	wctx, wcancel := context.WithTimeout(testCtx(t), 20*time.Second)
	defer wcancel()
	errFound := errors.New("found")
	err = peerClient(phone).DataWatch(wctx, zsync.BucketCerts, wire.CertKeyRevokedPrefix+serial, false, func(v api.RecordView) error {
		if !v.Deleted {
			return errFound
		}
		return nil
	})
	if !errors.Is(err, errFound) {
		t.Fatalf("the phone never heard of the revocation: %v", err)
	}
	if _, err := peerClient(phone).DataGet(testCtx(t), zsync.BucketCerts, wire.CertKeyDevice+"laptop"); err == nil {
		t.Error("the revoked laptop's certificate is still published")
	}
}

// rawSync is a sync stream spoken by hand over a session of its own, as
// a modified device would.
type rawSync struct {
	sess *Session
	st   transport.Stream
	fr   *transport.FrameReader
}

// openRawSync opens a session for the device paired in dir and a sync
// stream on it, says Hello and returns the hub's Start.
func openRawSync(t *testing.T, dir string) (*rawSync, zsync.Msg) {
	t.Helper()
	sess, err := DialSession(testCtx(t), peerCert(t, dir), transport.ModeAuto)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { sess.Close() })
	st, err := sess.Conn().OpenStream(testCtx(t))
	if err != nil {
		t.Fatal(err)
	}
	r := &rawSync{sess: sess, st: st, fr: transport.NewFrameReader(st, 1<<20)}
	r.send(t, &wire.StreamHeader{Kind: wire.StreamSync})
	r.send(t, &zsync.Msg{Type: zsync.MsgHello, Version: zsync.ProtocolVersion})
	var start zsync.Msg
	if err := r.fr.ReadFrame(&start); err != nil || start.Type != zsync.MsgStart {
		t.Fatalf("start: %+v %v", start, err)
	}
	return r, start
}

func (r *rawSync) send(t *testing.T, v any) {
	t.Helper()
	if err := transport.WriteFrame(r.st, v); err != nil {
		t.Fatal(err)
	}
}

// wantProtocolClose waits for the hub to close the session as a protocol
// error.
func (r *rawSync) wantProtocolClose(t *testing.T) {
	t.Helper()
	select {
	case <-r.sess.Conn().Done():
	case <-time.After(20 * time.Second):
		t.Fatal("the hub kept a session that broke the sync protocol")
	}
	var rc *transport.RemoteCloseError
	if !errors.As(r.sess.Conn().Err(), &rc) || wire.CloseReason(rc.Code) != wire.ReasonProtocol {
		t.Fatalf("session ended with %v, want a protocol error", r.sess.Conn().Err())
	}
}

// TestHubRefusesForgedSync speaks the sync protocol by hand over a real
// session, as a modified device would: the hub itself refuses edits of
// hub-only buckets and of other devices' records, and closes the session
// of a device that breaks the protocol.
func TestHubRefusesForgedSync(t *testing.T) {
	clock := &testClock{}
	hb := startHub(t, clock, nil)
	raw, start := openRawSync(t, hb.pair(t, clock, "phone", 0))
	if !start.Reset {
		t.Fatalf("a new device's start without reset: %+v", start)
	}
	now := uint64(clock.Now().UnixMilli())
	var recs []zsync.Record
	for _, b := range zsync.Buckets() {
		if zsync.HubOnly(b) {
			recs = append(recs, zsync.Record{Bucket: b, Key: "k", Value: []byte("forged"), Version: zsync.Version{Wall: now, Node: "phone"}})
		}
	}
	recs = append(recs,
		zsync.Record{Bucket: zsync.BucketDevices, Key: "laptop", Value: []byte("x"), Version: zsync.Version{Wall: now, Node: "phone"}},
		zsync.Record{Bucket: zsync.BucketAppData, Key: "app/k", Value: []byte("x"), Version: zsync.Version{Wall: now, Node: "hub"}},
		zsync.Record{Bucket: zsync.BucketAppData, Key: "app/ok", Value: []byte("fine"), Version: zsync.Version{Wall: now, Node: "phone"}},
	)
	raw.send(t, &zsync.Msg{Type: zsync.MsgPush, ID: 1, Records: recs})
	var res zsync.Msg
	for res.Type != zsync.MsgPushResult {
		if err := raw.fr.ReadFrame(&res); err != nil {
			t.Fatal(err)
		}
	}
	if len(res.Results) != len(recs) {
		t.Fatalf("%d results for %d records", len(res.Results), len(recs))
	}
	for i, r := range res.Results[:len(recs)-1] {
		if r.Status != zsync.PushRefused || r.Reason == "" {
			t.Errorf("%s/%s from the phone: %+v", recs[i].Bucket, recs[i].Key, r)
		}
	}
	if r := res.Results[len(recs)-1]; r.Status != zsync.PushAccepted {
		t.Errorf("a permitted edit: %+v", r)
	}
	for _, b := range zsync.Buckets() {
		if _, err := hb.client().DataGet(testCtx(t), b, "k"); err == nil {
			t.Errorf("forged record in %s was stored", b)
		}
	}

	// Garbage on the sync stream ends the session as a protocol error.
	raw.send(t, &zsync.Msg{Type: zsync.MsgStart})
	raw.wantProtocolClose(t)
}
