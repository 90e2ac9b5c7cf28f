package pairing

import (
	"context"
	"crypto/tls"
	"errors"
	"io"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/pzone/pzone/certs"
	"github.com/pzone/pzone/pairing/cpace"
	"github.com/pzone/pzone/transport"
)

// codeHub serves the code exchange as the zone hub does
// (zone/hub/hubcode.go) for one code; lying makes it skip the check of
// the device's confirmation, as a hub that does not know the code would
// have to.
type codeHub struct {
	z      *testZone
	code   Code
	lying  bool
	wrong  atomic.Int32
	paired atomic.Int32
}

func listenCode(t *testing.T, cert tls.Certificate, serve func(transport.Conn)) string {
	t.Helper()
	ln, err := transport.ListenBoth("127.0.0.1:0", transport.Config{TLS: &tls.Config{
		MinVersion: tls.VersionTLS13, NextProtos: []string{transport.ALPNPairCode}, Certificates: []tls.Certificate{cert}}})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	wg.Go(func() {
		for {
			conn, err := ln.Accept(ctx)
			if err != nil {
				return
			}
			wg.Go(func() {
				defer conn.CloseWithError(0, "done")
				serve(conn)
				select { // let the last answer reach the device, which hangs up
				case <-conn.Done():
				case <-time.After(testTimeout):
				}
			})
		}
	})
	t.Cleanup(func() {
		cancel()
		ln.Close()
		wg.Wait()
	})
	return ln.Addr().String()
}

func (h *codeHub) serve(conn transport.Conn) {
	ctx, cancel := context.WithTimeout(context.Background(), testTimeout)
	defer cancel()
	st, err := conn.AcceptStream(ctx)
	if err != nil {
		return
	}
	defer st.Close()
	st.SetDeadline(time.Now().Add(testTimeout))
	fr := transport.NewFrameReader(st, 0)
	var start CodeStart
	if fr.ReadFrame(&start) != nil {
		return
	}
	p, err := NewCodeParams(conn.ConnectionState(), start.Number, h.z.hub.Certificate[0])
	if err != nil {
		return
	}
	yb, isk, err := cpace.Respond(h.code.Secret[:], p.CI, p.SID, p.ADb, start.Ya, p.ADa)
	if err != nil {
		transport.WriteFrame(st, &CodeReply{Error: &Error{Code: CodeBadRequest, Message: err.Error()}})
		return
	}
	keys, _ := NewCodeKeys(isk, p)
	transport.WriteFrame(st, &CodeReply{Yb: yb})
	var c CodeConfirm
	if fr.ReadFrame(&c) != nil {
		return
	}
	if !h.lying && !CheckMAC(keys.DeviceMAC(), c.MAC) {
		h.wrong.Add(1)
		transport.WriteFrame(st, &CodeHub{Error: &Error{Code: CodeWrong, Message: "wrong code"}})
		return
	}
	ca := h.z.ca.Cert.Raw
	transport.WriteFrame(st, &CodeHub{CA: ca, Zone: testZoneName, MAC: keys.HubMAC(ca, testZoneName)})
	var req CodeCSR
	if fr.ReadFrame(&req) != nil || !CheckMAC(keys.CSRMAC(req.CSR), req.MAC) {
		return
	}
	pub, err := certs.ParseCSR(req.CSR)
	if err != nil {
		return
	}
	cert, err := h.z.ca.Sign(pub, "phone", time.Now(), time.Hour)
	if err != nil {
		return
	}
	h.paired.Add(1)
	transport.WriteFrame(st, &Response{Device: "phone", Zone: testZoneName, Cert: cert.Raw, CA: ca})
}

// relay is a man in the middle: it terminates TLS with its own hub
// certificate and passes the stream's bytes to the real hub and back.
func relay(t *testing.T, to string) string {
	evil := newTestZone(t)
	return listenCode(t, evil.hub, func(conn transport.Conn) {
		ctx, cancel := context.WithTimeout(context.Background(), testTimeout)
		defer cancel()
		st, err := conn.AcceptStream(ctx)
		if err != nil {
			return
		}
		up, err := transport.Dial(ctx, to, transport.ModeQUIC, transport.Config{TLS: &tls.Config{
			MinVersion: tls.VersionTLS13, NextProtos: []string{transport.ALPNPairCode}, InsecureSkipVerify: true}})
		if err != nil {
			return
		}
		defer up.CloseWithError(0, "relay done")
		ust, err := up.OpenStream(ctx)
		if err != nil {
			return
		}
		go io.Copy(ust, st)
		io.Copy(st, ust)
		st.Close()
	})
}

// TestPairCode: the right code pairs and the device learns the zone; a
// wrong code is refused by the hub (which counts it) and writes nothing;
// a relay in the middle, even one passing every byte, fails the key
// confirmation at the hub; a hub that does not know the code fails it at
// the device, before the device sends its key; the person declining the
// zone stops the pairing.
func TestPairCode(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), testTimeout)
	defer cancel()
	z := newTestZone(t)
	code := Code{Number: 7, Secret: NewCodeSecret()}
	hub := &codeHub{z: z, code: code}
	addr := listenCode(t, z.hub, hub.serve)

	var asked certs.ZoneID
	res, err := PairCode(ctx, code, addr, transport.ModeQUIC, func(zone string, id certs.ZoneID) error {
		asked = id
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if res.ZoneID != z.ca.ZoneID || asked != z.ca.ZoneID || res.Device != "phone" || res.Zone != testZoneName {
		t.Fatalf("paired %+v (asked about %s), want zone %s", res, asked, z.ca.ZoneID)
	}

	wrong := code
	wrong.Secret[0]++
	_, err = PairCode(ctx, wrong, addr, transport.ModeTCP, nil)
	var perr *Error
	if !errors.As(err, &perr) || perr.Code != CodeWrong || hub.wrong.Load() != 1 {
		t.Fatalf("wrong code: %v (hub counted %d)", err, hub.wrong.Load())
	}

	mitm := relay(t, addr)
	_, err = PairCode(ctx, code, mitm, transport.ModeQUIC, func(string, certs.ZoneID) error {
		t.Error("the device was asked to confirm a zone through a relay")
		return nil
	})
	if !errors.As(err, &perr) || perr.Code != CodeWrong || hub.wrong.Load() != 2 {
		t.Fatalf("through a relay: %v (hub counted %d wrong), want the hub to refuse the key confirmation", err, hub.wrong.Load())
	}

	liar := &codeHub{z: newTestZone(t), code: Code{Number: 7, Secret: NewCodeSecret()}, lying: true}
	_, err = PairCode(ctx, code, listenCode(t, liar.z.hub, liar.serve), transport.ModeQUIC, func(string, certs.ZoneID) error {
		t.Error("the device was asked to confirm the zone of a hub that does not know the code")
		return nil
	})
	if !errors.Is(err, ErrCodeMismatch) || liar.paired.Load() != 0 {
		t.Fatalf("a hub without the code: %v, want ErrCodeMismatch before any certificate request", err)
	}

	before := hub.paired.Load()
	_, err = PairCode(ctx, code, addr, transport.ModeQUIC, func(string, certs.ZoneID) error { return ErrDeclined })
	if !errors.Is(err, ErrDeclined) || hub.paired.Load() != before {
		t.Fatalf("declined: %v, paired %d more", err, hub.paired.Load()-before)
	}
}

// TestParseCode: codes as people type them, and the mistakes they make.
func TestParseCode(t *testing.T) {
	c := Code{Number: 42, Secret: [CodeSecretSize]byte{0, 1, 254, 255}}
	s := c.String()
	for _, typed := range []string{s, "  " + s + "\n", "42 acorn amber zephyr zinc", "42-ACORN-Amber-zephyr zinc"} {
		got, err := ParseCode(typed)
		if err != nil || got != c {
			t.Errorf("%q: %v %v, want %v", typed, got, err, c)
		}
	}
	if s != "42-acorn-amber-zephyr-zinc" {
		t.Errorf("String: %q", s)
	}
	for _, bad := range []string{"", "42", "42-acorn-amber-zephyr", "0-acorn-amber-zephyr-zinc", "x-acorn-amber-zephyr-zinc", "42-acorn-amber-zephyr-zink", "42-acorn-amber-zephyr-zinc-zinc"} {
		if _, err := ParseCode(bad); !errors.Is(err, ErrBadCode) {
			t.Errorf("%q: %v, want ErrBadCode", bad, err)
		}
	}
	seen := map[string]bool{}
	for _, w := range codeWords {
		if len(w) < 3 || len(w) > 8 || seen[w[:min(4, len(w))]] {
			t.Errorf("word %q: too short or long, or its first four letters are another word's", w)
		}
		seen[w[:min(4, len(w))]] = true
	}
}
