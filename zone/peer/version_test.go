package peer

import (
	"crypto/tls"
	"net/http"
	"strings"
	"testing"

	"github.com/pzone/pzone/pairing"
	"github.com/pzone/pzone/transport"
	"github.com/pzone/pzone/zone/api"
	"github.com/pzone/pzone/zone/wire"
)

// TestOlderDeviceIsNamed: a device whose Hello says an older session
// protocol and another pzp is still welcomed (adjacent versions work
// together), and the hub names it: pzh devices marks it, pzh status lists
// it to upgrade.
func TestOlderDeviceIsNamed(t *testing.T) {
	clock := &testClock{}
	h := startHub(t, clock, nil)
	ctx := testCtx(t)
	var inv api.InviteView
	if err := h.client().Do(ctx, http.MethodPost, "/v1/invites", api.InviteRequest{Device: "old"}, &inv); err != nil {
		t.Fatal(err)
	}
	tok, err := pairing.ParseToken(inv.Token)
	if err != nil {
		t.Fatal(err)
	}
	res, err := pairing.Pair(ctx, tok, transport.ModeQUIC)
	if err != nil {
		t.Fatal(err)
	}
	cert := tls.Certificate{Certificate: [][]byte{res.Cert.Raw}, PrivateKey: res.Key}
	conf := &tls.Config{MinVersion: tls.VersionTLS13, NextProtos: []string{transport.ALPNSession}, InsecureSkipVerify: true,
		GetClientCertificate: func(*tls.CertificateRequestInfo) (*tls.Certificate, error) { return &cert, nil }}
	conn, err := transport.Dial(ctx, h.addr.String(), transport.ModeQUIC, transport.Config{TLS: conf})
	if err != nil {
		t.Fatal(err)
	}
	defer conn.CloseWithError(0, "")
	ctrl, err := conn.OpenStream(ctx)
	if err != nil {
		t.Fatal(err)
	}
	transport.WriteFrame(ctrl, &wire.StreamHeader{Kind: wire.StreamControl})
	transport.WriteFrame(ctrl, &wire.Control{Type: wire.MsgHello, Version: wire.SessionVersion - 1, Software: "pzone/0.0\x1b[31m"})
	var welcome wire.Control
	if err := transport.NewFrameReader(ctrl, wire.MaxControlFrame).ReadFrame(&welcome); err != nil || welcome.Type != wire.MsgWelcome {
		t.Fatalf("a device one session version back is not welcomed: %+v %v", welcome, err)
	}

	var devs api.DevicesView
	if err := h.client().Do(ctx, http.MethodGet, "/v1/devices", nil, &devs); err != nil {
		t.Fatal(err)
	}
	var row *api.DeviceView
	for i := range devs.Devices {
		if devs.Devices[i].Name == "old" {
			row = &devs.Devices[i]
		}
	}
	if row == nil || row.State != "online" || !row.OtherVersion || row.Software != "pzone/0.0[31m" || row.Protocol != wire.SessionVersion-1 {
		t.Fatalf("devices: %+v", row)
	}
	var st api.HubStatus
	if err := h.client().Do(ctx, http.MethodGet, "/v1/status", nil, &st); err != nil {
		t.Fatal(err)
	}
	if len(st.OtherSoftware) != 1 || !strings.HasPrefix(st.OtherSoftware[0], "old (pzone/0.0") {
		t.Fatalf("status other_software: %q", st.OtherSoftware)
	}
}
