// Package session holds what runs on a session at either end, hub or
// device: reading control frames with the dead-peer rule, the reconnect
// backoff, when to renew a certificate, the sync stream wrapper, and calls
// on streams (body framing and pacing, refusals, request/answer
// exchanges). It keeps no daemon state and starts no goroutines; the
// runtimes (package zone) own the sessions themselves.
package session

import (
	"crypto/x509"
	"errors"
	"math/rand/v2"
	"os"
	"time"

	"github.com/pzone/pzone/certs"
	"github.com/pzone/pzone/transport"
	"github.com/pzone/pzone/zone/wire"
)

// ReadControl reads the next frame of a control stream of conn into c.
// The other side counts as gone once dead passes with nothing at all
// arriving on the connection, not merely no control frame: a session busy
// with calls or sync whose heartbeat runs late (a loaded host, a GC pause)
// is not cut for it. An idle session sends only heartbeats, so for it the
// two are the same. It looks at the connection every dead/3, so the end
// is seen at most dead/3 after dead has passed since the last byte (a
// single deadline of dead restarted whenever bytes had come would take up
// to twice dead: the acknowledgement of the last Pong arrives after it).
func ReadControl(conn transport.Conn, ctrl transport.Stream, fr *transport.FrameReader, dead time.Duration, c *wire.Control) error {
	step := max(dead/3, time.Millisecond)
	seen, last := conn.Stats().BytesReceived, time.Now()
	// A frame that has begun gets the whole of dead for the rest: the
	// short deadline between frames must not cut it in two.
	fr.SetOnFrameStart(func() { ctrl.SetReadDeadline(time.Now().Add(dead)) })
	defer fr.SetOnFrameStart(nil)
	for {
		ctrl.SetReadDeadline(time.Now().Add(step))
		err := fr.ReadFrame(c)
		// Only a deadline between frames leaves fr in step to wait again.
		if err == nil || !errors.Is(err, os.ErrDeadlineExceeded) {
			return err
		}
		if n := conn.Stats().BytesReceived; n != seen {
			seen, last = n, time.Now()
		}
		if time.Since(last) >= dead {
			return err
		}
	}
}

const (
	// HandshakeTimeout bounds a session dial. A QUIC dial to a hub
	// that is down gets no answer at all (ICMP errors do not reach
	// unconnected UDP sockets) and runs to this limit, so shorter would
	// help a device that dialled into a restart's gap. It stays at the
	// transport default: with 4 s, 10,000 devices reconnecting to an
	// overloaded hub gave up on handshakes that were merely slow and
	// retried, doubling the storm (measured by make bench).
	HandshakeTimeout = transport.DefaultHandshakeTimeout
)

// RenewAt is 2/3 through a certificate's lifetime, counted from when it
// was issued: certs.Sign backdates NotBefore by certs.ClockSkew, and
// counting from there would put the renewal point of a short-lived
// certificate in the past.
func RenewAt(c *x509.Certificate) time.Time {
	issued := c.NotBefore
	if c.NotAfter.Sub(issued) > certs.ClockSkew {
		issued = issued.Add(certs.ClockSkew)
	}
	return issued.Add(c.NotAfter.Sub(issued) * 2 / 3)
}

// Backoff is capped exponential backoff with equal jitter: each wait is
// between half and all of the current step, so devices that lost the hub
// at the same moment spread out.
type Backoff struct {
	Min, Max, Cur time.Duration
}

func (b *Backoff) Next() time.Duration {
	if b.Cur == 0 {
		b.Cur = b.Min
	} else if b.Cur *= 2; b.Cur > b.Max {
		b.Cur = b.Max
	}
	half := b.Cur / 2
	return half + rand.N(half+1)
}

func (b *Backoff) Reset() { b.Cur = 0 }

// SyncStream adapts a session stream to package sync, which needs Close
// to end both directions.
type SyncStream struct{ transport.Stream }

func (s SyncStream) Close() error { s.Stream.Reset(); return nil }
