package session

import (
	"bytes"
	"errors"
	"io"
	"os"
	"testing"
	"time"

	"github.com/pzone/pzone/transport"
	"github.com/pzone/pzone/zone/wire"
)

// fakeTraffic is a connection whose received byte count rises by one each
// time it is read while flowing is set; the rest of transport.Conn is not
// used by ReadControl.
type fakeTraffic struct {
	transport.Conn
	flowing bool
	n       uint64
}

func (f *fakeTraffic) Stats() transport.Stats {
	if f.flowing {
		f.n++
	}
	return transport.Stats{BytesReceived: f.n}
}

type deadlineOnly struct{ transport.Stream }

func (deadlineOnly) SetReadDeadline(time.Time) error { return nil }

// deadlines reads as a control stream whose deadline passes n times
// before a frame arrives.
type deadlines struct {
	n     int
	frame []byte
}

func (d *deadlines) Read(p []byte) (int, error) {
	if d.n > 0 {
		d.n--
		return 0, os.ErrDeadlineExceeded
	}
	if len(d.frame) == 0 {
		return 0, io.EOF
	}
	n := copy(p, d.frame)
	d.frame = d.frame[n:]
	return n, nil
}

// A control stream whose heartbeat is late is not taken for dead while
// anything else arrives on the connection; on a silent connection the end
// comes once dead has passed, after looks every dead/3.
func TestReadControlWaitsWhileTrafficFlows(t *testing.T) {
	var frame bytes.Buffer
	if err := transport.WriteFrame(&frame, &wire.Control{Type: wire.MsgPing, Seq: 7}); err != nil {
		t.Fatal(err)
	}
	var c wire.Control
	busy := &fakeTraffic{flowing: true}
	src := &deadlines{n: 5, frame: frame.Bytes()}
	if err := ReadControl(busy, deadlineOnly{}, transport.NewFrameReader(src, 0), time.Second, &c); err != nil || c.Seq != 7 {
		t.Fatalf("busy connection: %+v, %v", c, err)
	}
	idle := &fakeTraffic{}
	const many = 1 << 40
	src = &deadlines{n: many, frame: frame.Bytes()}
	start := time.Now()
	const dead = 3 * time.Millisecond
	if err := ReadControl(idle, deadlineOnly{}, transport.NewFrameReader(src, 0), dead, &c); !errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("silent connection: %v, want the deadline", err)
	}
	if time.Since(start) < dead || many-src.n < 3 {
		t.Fatalf("silent connection ended after %v and %d looks", time.Since(start), many-src.n)
	}
}

func TestBackoff(t *testing.T) {
	b := Backoff{Min: 100 * time.Millisecond, Max: time.Second}
	steps := []time.Duration{100, 200, 400, 800, 1000, 1000}
	for i, s := range steps {
		s *= time.Millisecond
		got := b.Next()
		if got < s/2 || got > s {
			t.Errorf("attempt %d: wait %v outside [%v, %v]", i, got, s/2, s)
		}
	}
	b.Reset()
	if got := b.Next(); got > 100*time.Millisecond {
		t.Errorf("after reset: %v", got)
	}
}
