package provider

import (
	"crypto/tls"
	"slices"
	"sync"
	"time"

	"github.com/pzone/pzone/certs"
	"github.com/pzone/pzone/transport"
)

// codeBook is the provider's hub.CodeBook: which zone holds each short
// code's invite number, so that a device or hub that has only a code
// (and sends its number as the server name) reaches the zone that made
// it. Numbers are kept apart across zones, per exchange: device pairing
// and friends each have 1 to pairing.MaxCodeNumber.
type codeBook struct {
	now  func() time.Time
	mu   sync.Mutex
	held map[codeKey]codeHold
}

type codeKey struct {
	alpn string
	n    uint32
}

type codeHold struct {
	zone  certs.ZoneID
	until time.Time
}

func newCodeBook() *codeBook { return &codeBook{now: time.Now, held: map[codeKey]codeHold{}} }

// Hold implements hub.CodeBook.
func (b *codeBook) Hold(alpn string, n uint32, zone certs.ZoneID, until time.Time) bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	k := codeKey{alpn, n}
	if h, ok := b.held[k]; ok && h.zone != zone && b.now().Before(h.until) {
		return false
	}
	if h, ok := b.held[k]; ok && h.zone == zone && h.until.After(until) {
		until = h.until
	}
	b.held[k] = codeHold{zone, until}
	return true
}

// zoneOf is the zone holding number n of exchange alpn.
func (b *codeBook) zoneOf(alpn string, n uint32) (certs.ZoneID, bool) {
	b.mu.Lock()
	defer b.mu.Unlock()
	h, ok := b.held[codeKey{alpn, n}]
	if !ok || !b.now().Before(h.until) {
		return "", false
	}
	return h.zone, true
}

// drop forgets a removed zone's numbers.
func (b *codeBook) drop(zone certs.ZoneID) {
	b.mu.Lock()
	defer b.mu.Unlock()
	for k, h := range b.held {
		if h.zone == zone {
			delete(b.held, k)
		}
	}
}

// resolve is the router's lookup of a code's server name: the name of
// the zone that holds the number, for the exchange the client offers.
func (b *codeBook) resolve(hello *tls.ClientHelloInfo) string {
	_, n, code, ok := certs.ParseServerName(hello.ServerName)
	if !ok || !code {
		return ""
	}
	for _, alpn := range []string{transport.ALPNPairCode, transport.ALPNFriendCode} {
		if slices.Contains(hello.SupportedProtos, alpn) {
			if z, ok := b.zoneOf(alpn, n); ok {
				return certs.ServerName(z)
			}
		}
	}
	return ""
}
