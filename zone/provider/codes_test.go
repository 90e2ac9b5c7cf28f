package provider

import (
	"crypto/tls"
	"testing"
	"time"

	"github.com/pzone/pzone/certs"
	"github.com/pzone/pzone/transport"
)

func TestCodeBook(t *testing.T) {
	now := time.Unix(1000, 0)
	b := newCodeBook()
	b.now = func() time.Time { return now }
	a, c := certs.ZoneID("A"), certs.ZoneID("C")
	if !b.Hold(transport.ALPNPairCode, 1, a, now.Add(time.Hour)) {
		t.Fatal("a free number was refused")
	}
	if b.Hold(transport.ALPNPairCode, 1, c, now.Add(time.Hour)) {
		t.Fatal("another zone's number was given out")
	}
	if !b.Hold(transport.ALPNFriendCode, 1, c, now.Add(time.Hour)) {
		t.Fatal("friend codes have numbers of their own")
	}
	if !b.Hold(transport.ALPNPairCode, 1, a, now.Add(time.Minute)) {
		t.Fatal("a zone's own number was refused to it")
	}
	hello := &tls.ClientHelloInfo{ServerName: certs.CodeServerName(1), SupportedProtos: []string{transport.ALPNPairCode}}
	if z, ok := b.zoneOf(transport.ALPNPairCode, 1); !ok || z != a {
		t.Fatalf("number 1 is held by %q", z)
	}
	if b.resolve(hello) != certs.ServerName(a) {
		t.Fatal("a code's name does not resolve to its zone")
	}
	if b.resolve(&tls.ClientHelloInfo{ServerName: certs.CodeServerName(2), SupportedProtos: []string{transport.ALPNPairCode}}) != "" {
		t.Fatal("a number nobody holds resolved")
	}
	// Held until the later of the two times; after that, free.
	now = now.Add(2 * time.Hour)
	if _, ok := b.zoneOf(transport.ALPNPairCode, 1); ok {
		t.Fatal("an expired hold still routes")
	}
	if !b.Hold(transport.ALPNPairCode, 1, c, now.Add(time.Hour)) {
		t.Fatal("an expired number was not given out again")
	}
	b.drop(c)
	if _, ok := b.zoneOf(transport.ALPNFriendCode, 1); ok {
		t.Fatal("a removed zone's number still routes")
	}
}
