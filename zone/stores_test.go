package zone

import (
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/pzone/pzone/certs"
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
	if err := CheckDataDir(dir, HubSocketName); err != nil {
		t.Fatal(err)
	}
	path := SocketPath(dir, HubSocketName)
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
		ln, err := listenUnix(path)
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
	err := CheckDataDir(dir, HubSocketName)
	if err == nil || !strings.Contains(err.Error(), "lets others write it") {
		t.Fatalf("got %v", err)
	}
	if _, err := listenUnix(SocketPath(dir, HubSocketName)); err == nil {
		t.Fatal("listened in a directory others may write")
	}
}
