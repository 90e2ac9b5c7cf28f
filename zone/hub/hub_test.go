package hub

import (
	"errors"
	"os"
	"testing"
	"time"

	"github.com/pzone/pzone/certs"
	"github.com/pzone/pzone/zone/api"
	"github.com/pzone/pzone/zone/wire"
)

func TestInitZoneRefusesExisting(t *testing.T) {
	dir := t.TempDir()
	if _, err := InitZone(dir, "alice", []string{"127.0.0.1:7443"}, time.Now()); err != nil {
		t.Fatal(err)
	}
	if _, err := InitZone(dir, "bob", []string{"127.0.0.1:7443"}, time.Now()); !errors.Is(err, ErrZoneExists) {
		t.Fatalf("second init: %v", err)
	}
	fi, err := os.Stat(api.SocketPath(dir, HubDBName))
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode().Perm() != 0o600 {
		t.Errorf("store mode %v, want 0600 (it holds the CA key)", fi.Mode().Perm())
	}
	if _, err := certs.ParseZoneID(""); err == nil {
		t.Error("empty zone id parsed")
	}
}

func TestRetryWindowAfterShutdown(t *testing.T) {
	for _, tc := range []struct {
		sessions int
		want     time.Duration
	}{
		{0, minRetryWindow}, {1, minRetryWindow}, {2000, 2 * time.Second}, {10000, 10 * time.Second}, {1 << 30, wire.MaxRetryWindow},
	} {
		if got := retryWindow(tc.sessions); got != tc.want {
			t.Errorf("retryWindow(%d) = %v, want %v", tc.sessions, got, tc.want)
		}
	}
}
