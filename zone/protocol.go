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
	"errors"
	"os"
	"time"

	"github.com/pzone/pzone/transport"
	"github.com/pzone/pzone/zone/wire"
)

// Session timing, with why.
const (
	// DefaultHeartbeat is how often a peer pings. It trades how fast a
	// silently dead link is noticed (DeadAfter: 4.5 min) against idle
	// traffic: one ping/pong exchange costs ~110 B over QUIC and ~130 B
	// over TCP (measured by make bench), so 90 s keeps an idle session
	// under 100 B/min, and inside the 2 min that RFC 4787 requires NATs
	// to keep a UDP mapping. A hub that restarts or shuts down is noticed
	// at once regardless (Close frame, TCP reset).
	DefaultHeartbeat = 90 * time.Second
	// MinHeartbeat keeps a misconfigured hub from flooding its devices.
	MinHeartbeat = 100 * time.Millisecond
	// MaxHeartbeat keeps DeadAfter below transportIdle, so the session
	// layer, which can say why, always notices a dead link first.
	MaxHeartbeat = 3 * time.Minute
	// transportIdle is the QUIC/TCP idle timeout of sessions on both
	// sides: a backstop above DeadAfter(MaxHeartbeat).
	transportIdle = 10 * time.Minute
	// helloTimeout bounds how long an authenticated connection may sit
	// without saying Hello.
	helloTimeout = 10 * time.Second
	// closeLinger is how long a side that sent Close waits for the other to
	// hang up, so the frame is read before the connection is torn down.
	closeLinger = 500 * time.Millisecond
	// streamTimeout bounds a one-shot exchange (renew, unpair).
	streamTimeout = 15 * time.Second
	// maxControlFrame: control frames are a few dozen bytes.
	maxControlFrame = 4 << 10
	// maxRequestFrame: one CSR or certificate.
	maxRequestFrame = 16 << 10
)

// Reconnect spreading after a hub shutdown, with why.
const (
	// restartRate is the handshake rate a restarting hub plans for: the
	// benchmark measures 1,200–1,900 sessions/s on 2 cores, so 1,000/s
	// leaves headroom on smaller hosts.
	restartRate = 1000
	// minRetryWindow: below this the jitter of the normal backoff suffices.
	minRetryWindow = time.Second
	// maxRetryWindow bounds what a hub may ask devices to wait.
	maxRetryWindow = 5 * time.Minute
)

// retryWindow is the reconnect window a hub with n sessions announces.
func retryWindow(n int) time.Duration {
	w := time.Duration(n) * time.Second / restartRate
	return min(max(w, minRetryWindow), maxRetryWindow)
}

// DeadAfter is how long without a frame from the other side before a
// session is declared dead: three missed heartbeats.
func DeadAfter(heartbeat time.Duration) time.Duration { return 3 * heartbeat }

// readControl reads the next frame of a control stream of conn into c.
// The other side counts as gone once dead passes with nothing at all
// arriving on the connection, not merely no control frame: a session busy
// with calls or sync whose heartbeat runs late (a loaded host, a GC pause)
// is not cut for it. An idle session sends only heartbeats, so for it the
// two are the same.
func readControl(conn transport.Conn, ctrl transport.Stream, fr *transport.FrameReader, dead time.Duration, c *wire.Control) error {
	for {
		seen := conn.Stats().BytesReceived
		ctrl.SetReadDeadline(time.Now().Add(dead))
		err := fr.ReadFrame(c)
		// Only a deadline between frames leaves fr in step to wait again.
		if err == nil || !errors.Is(err, os.ErrDeadlineExceeded) || conn.Stats().BytesReceived == seen {
			return err
		}
	}
}

// SoftwareVersion is sent in Hello and shown by status commands.
const SoftwareVersion = "pzone/0.1"
