package localapi

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"

	"github.com/pzone/pzone/zone/api"
)

func TestNotifierWakesWaiters(t *testing.T) {
	var n Notifier
	v0 := n.Wait(context.Background(), ^uint64(0))
	got := make(chan uint64)
	go func() { got <- n.Wait(context.Background(), v0) }()
	n.Bump()
	if v := <-got; v == v0 {
		t.Fatalf("waiter woke with the old version %d", v)
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if v := n.Wait(ctx, n.Wait(context.Background(), ^uint64(0))); v != v0+1 {
		t.Fatalf("cancelled wait returned %d", v)
	}
}

// The local API socket is never connectable by others, not even for a
// moment, whatever the umask: a watcher looking at its path while it is
// bound again and again never sees it with more than owner rights.
func TestSocketPrivateUnderUmask000(t *testing.T) {
	old := syscall.Umask(0)
	defer syscall.Umask(old)
	dir := filepath.Join(t.TempDir(), "d")
	if err := CheckDataDir(dir, api.HubSocketName); err != nil {
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
		ln, err := Listen(path)
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
	err := CheckDataDir(dir, api.HubSocketName)
	if err == nil || !strings.Contains(err.Error(), "lets others write it") {
		t.Fatalf("got %v", err)
	}
	if _, err := Listen(api.SocketPath(dir, api.HubSocketName)); err == nil {
		t.Fatal("listened in a directory others may write")
	}
}
