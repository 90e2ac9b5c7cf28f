// Package zone runs a personal zone: the hub runtime (pzh serve) that
// accepts device sessions, redeems invites, renews and revokes
// certificates, and answers its admin socket; and the peer runtime (pzp run)
// that keeps one session with its hub. The vocabulary they speak is
// package zone/wire (and docs/PROTOCOL.md); the pure logic they share is
// zone/policy, zone/envelope and zone/token.
//
// It is not for transport mechanics (package transport) or PKI primitives
// (package certs).
package zone

import (
	"time"

	"github.com/pzone/pzone/zone/wire"
)

// Reconnect spreading after a hub shutdown, with why.
const (
	// restartRate is the handshake rate a restarting hub plans for: the
	// benchmark measures 1,200–1,900 sessions/s on 2 cores, so 1,000/s
	// leaves headroom on smaller hosts.
	restartRate = 1000
	// minRetryWindow: below this the jitter of the normal backoff suffices.
	minRetryWindow = time.Second
)

// retryWindow is the reconnect window a hub with n sessions announces.
func retryWindow(n int) time.Duration {
	w := time.Duration(n) * time.Second / restartRate
	return min(max(w, minRetryWindow), wire.MaxRetryWindow)
}
