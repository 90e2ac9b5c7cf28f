package wire

import (
	"time"
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
	// MaxHeartbeat keeps DeadAfter below TransportIdle, so the session
	// layer, which can say why, always notices a dead link first.
	MaxHeartbeat = 3 * time.Minute
	// TransportIdle is the QUIC/TCP idle timeout of sessions on both
	// sides: a backstop above DeadAfter(MaxHeartbeat).
	TransportIdle = 10 * time.Minute
	// HelloTimeout bounds how long an authenticated connection may sit
	// without saying Hello.
	HelloTimeout = 10 * time.Second
	// CloseLinger is how long a side that sent Close waits for the other to
	// hang up, so the frame is read before the connection is torn down.
	CloseLinger = 500 * time.Millisecond
	// StreamTimeout bounds a one-shot exchange (renew, unpair).
	StreamTimeout = 15 * time.Second
	// MaxControlFrame: control frames are a few dozen bytes.
	MaxControlFrame = 4 << 10
	// MaxRequestFrame: one CSR or certificate.
	MaxRequestFrame = 16 << 10
)

const (
	// MaxRetryWindow bounds what a hub may ask devices to wait.
	MaxRetryWindow = 5 * time.Minute
)

// DeadAfter is how long without a frame from the other side before a
// session is declared dead: three missed heartbeats.
func DeadAfter(heartbeat time.Duration) time.Duration { return 3 * heartbeat }

// SoftwareVersion is sent in Hello and shown by status commands.
const SoftwareVersion = "pzone/0.1"
