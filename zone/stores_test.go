package zone

import (
	"bytes"
	"errors"
	"io"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/pzone/pzone/certs"
	"github.com/pzone/pzone/transport"
	"github.com/pzone/pzone/zone/api"
	"github.com/pzone/pzone/zone/localapi"
	"github.com/pzone/pzone/zone/wire"
)

// A device accepts a new zone-state epoch only with the zone CA's
// signature over exactly that epoch of exactly this zone.
func TestEpochProof(t *testing.T) {
	now := time.Now()
	ca, err := certs.NewCA("alice", now)
	if err != nil {
		t.Fatal(err)
	}
	other, err := certs.NewCA("alice", now) // same name, another key
	if err != nil {
		t.Fatal(err)
	}
	proof, err := signEpoch(ca, "e1", now)
	if err != nil {
		t.Fatal(err)
	}
	if err := verifyEpochProof(ca.Cert, ca.ZoneID, "e1", proof); err != nil {
		t.Fatalf("a good proof refused: %v", err)
	}
	forged, _ := signEpoch(other, "e1", now)
	flipped := append([]byte(nil), proof...)
	flipped[len(flipped)-1] ^= 1
	for _, tc := range []struct {
		name, epoch, want string
		proof             []byte
		zone              certs.ZoneID
	}{
		{"none", "e1", "sent no reset", nil, ca.ZoneID},
		{"other epoch", "e2", "for another zone state", proof, ca.ZoneID},
		{"other zone's CA", "e1", "not signed by the zone CA", forged, ca.ZoneID},
		{"claims another zone", "e1", "for another zone state", proof, other.ZoneID},
		{"altered", "e1", "", flipped, ca.ZoneID},
		{"garbage", "e1", "unreadable", []byte{0xff, 0x00, 0x13}, ca.ZoneID},
		{"too large", "e1", "too large", make([]byte, maxEpochProof+1), ca.ZoneID},
	} {
		err := verifyEpochProof(ca.Cert, tc.zone, tc.epoch, tc.proof)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: got %v, want an error with %q", tc.name, err, tc.want)
		}
	}
}

// The local API socket is never connectable by others, not even for a
// moment, whatever the umask: a watcher looking at its path while it is
// bound again and again never sees it with more than owner rights.
func TestSocketPrivateUnderUmask000(t *testing.T) {
	old := syscall.Umask(0)
	defer syscall.Umask(old)
	dir := filepath.Join(t.TempDir(), "d")
	if err := localapi.CheckDataDir(dir, api.HubSocketName); err != nil {
		t.Fatal(err)
	}
	path := api.SocketPath(dir, api.HubSocketName)
	var stop atomic.Bool
	var seen atomic.Uint32
	done := make(chan struct{})
	go func() {
		defer close(done)
		for !stop.Load() {
			if fi, err := os.Lstat(path); err == nil && fi.Mode().Perm()&0o077 != 0 {
				seen.Store(uint32(fi.Mode().Perm()))
			}
		}
	}()
	for range 200 {
		ln, err := localapi.Listen(path)
		if err != nil {
			t.Fatal(err)
		}
		fi, err := os.Lstat(path)
		if err != nil {
			t.Fatal(err)
		}
		if fi.Mode()&os.ModeSocket == 0 || fi.Mode().Perm() != 0o600 {
			t.Fatalf("socket %v", fi.Mode())
		}
		ln.Close()
		os.Remove(path)
	}
	stop.Store(true)
	<-done
	if m := seen.Load(); m != 0 {
		t.Fatalf("the socket was seen with mode %04o", m)
	}
	if ents, _ := os.ReadDir(dir); len(ents) != 0 {
		t.Errorf("left behind: %v", ents)
	}
	if fi, _ := os.Stat(dir); fi.Mode().Perm() != 0o700 {
		t.Errorf("data directory made with mode %04o under umask 000", fi.Mode().Perm())
	}
}

// A data directory others may write is refused before anything is put in
// it.
func TestDataDirNotPrivate(t *testing.T) {
	dir := t.TempDir()
	os.Chmod(dir, 0o777)
	err := localapi.CheckDataDir(dir, api.HubSocketName)
	if err == nil || !strings.Contains(err.Error(), "lets others write it") {
		t.Fatalf("got %v", err)
	}
	if _, err := localapi.Listen(api.SocketPath(dir, api.HubSocketName)); err == nil {
		t.Fatal("listened in a directory others may write")
	}
}

// fakeTraffic is a connection whose received byte count rises by one each
// time it is read while flowing is set; the rest of transport.Conn is not
// used by readControl.
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
// anything else arrives on the connection; on a silent connection the
// first deadline is the end.
func TestReadControlWaitsWhileTrafficFlows(t *testing.T) {
	var frame bytes.Buffer
	if err := transport.WriteFrame(&frame, &wire.Control{Type: wire.MsgPing, Seq: 7}); err != nil {
		t.Fatal(err)
	}
	var c wire.Control
	busy := &fakeTraffic{flowing: true}
	src := &deadlines{n: 5, frame: frame.Bytes()}
	if err := readControl(busy, deadlineOnly{}, transport.NewFrameReader(src, 0), time.Second, &c); err != nil || c.Seq != 7 {
		t.Fatalf("busy connection: %+v, %v", c, err)
	}
	idle := &fakeTraffic{}
	src = &deadlines{n: 1, frame: frame.Bytes()}
	if err := readControl(idle, deadlineOnly{}, transport.NewFrameReader(src, 0), time.Second, &c); !errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("silent connection: %v, want the deadline", err)
	}
}
