// Package hub is the hub runtime (pzh serve): it accepts device sessions,
// redeems invites, renews and revokes certificates, routes calls and
// messages between devices and to friends' zones, queues for sleeping
// devices and wakes them, and answers its admin socket. Run starts it on a
// zone directory that InitZone made.
//
// The vocabulary it speaks is package zone/wire (and docs/PROTOCOL.md);
// the pure logic it shares with devices is zone/policy, zone/envelope and
// zone/token. It never imports the device runtime (zone/peer).
package hub

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
