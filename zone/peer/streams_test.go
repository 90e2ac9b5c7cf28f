package peer

import (
	"bytes"
	"context"
	"crypto/rand"
	"errors"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"

	zsync "github.com/pzone/pzone/sync"
	"github.com/pzone/pzone/transport"
	"github.com/pzone/pzone/zone/api"
)

// listenEcho serves a stream service on the device in dir as app until
// the test ends: each stream is echoed back, and ended once the other
// end ends its direction.
func listenEcho(t *testing.T, dir, app, service string) {
	t.Helper()
	l, err := appClient(dir, app).Listen(context.Background(), service)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })
	go func() {
		for {
			c, err := l.AcceptStream()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				if _, err := io.Copy(c, c); err == nil {
					c.CloseWrite()
				}
			}()
		}
	}()
}

// roundTrip writes data to a stream, ends its direction, and reads
// everything back.
func roundTrip(t *testing.T, s *api.Stream, data []byte) []byte {
	t.Helper()
	errc := make(chan error, 1)
	go func() {
		_, err := s.Write(data)
		if err == nil {
			err = s.CloseWrite()
		}
		errc <- err
	}()
	got, err := io.ReadAll(s)
	if err != nil {
		t.Fatalf("read the echo: %v", err)
	}
	if err := <-errc; err != nil {
		t.Fatalf("write: %v", err)
	}
	return got
}

// TestStreamsThroughTheHub: an app dials another device's service and
// gets a net.Conn; what it writes comes back in order, half-close
// travels, a larger transfer keeps its bytes, and failures say why.
func TestStreamsThroughTheHub(t *testing.T) {
	for _, mode := range []transport.Mode{transport.ModeQUIC, transport.ModeTCP} {
		t.Run(string(mode), func(t *testing.T) {
			clock := &testClock{}
			hb := startHub(t, clock, nil)
			phone, laptop := hb.pair(t, clock, "phone", 0), hb.pair(t, clock, "laptop", 0)
			startPeerWith(t, phone, clock, func(c *Config) { c.Mode = mode })
			startPeerWith(t, laptop, clock, func(c *Config) { c.Mode = mode })
			waitSyncedPeer(t, phone)
			waitSyncedPeer(t, laptop)
			listenEcho(t, laptop, "shell", "ssh")
			waitRecord(t, phone, zsync.BucketApps, "laptop/shell")
			ctx := testCtx(t)
			c := appClient(phone, "term")

			s, err := c.Dial(ctx, "laptop/ssh")
			if err != nil {
				t.Fatal(err)
			}
			var _ net.Conn = s
			if got := roundTrip(t, s, []byte("hello")); string(got) != "hello" {
				t.Fatalf("echo %q", got)
			}
			s.Close()

			big := make([]byte, 3<<20+17)
			rand.Read(big)
			s, err = c.Dial(ctx, "laptop/ssh")
			if err != nil {
				t.Fatal(err)
			}
			if got := roundTrip(t, s, big); !bytes.Equal(got, big) {
				t.Fatalf("echo of %d bytes: got %d, not the same", len(big), len(got))
			}
			s.Close()

			// The same device, without the network.
			listenEcho(t, phone, "local", "loop")
			s, err = c.Dial(ctx, "phone/loop")
			if err != nil {
				t.Fatal(err)
			}
			if got := roundTrip(t, s, []byte("here")); string(got) != "here" {
				t.Fatalf("local echo %q", got)
			}
			s.Close()

			_, err = c.Dial(ctx, "laptop/nothing")
			wantStatus(t, err, http.StatusServiceUnavailable, `service "nothing" is not running on device "laptop"`)
			_, err = c.Dial(ctx, "desk/ssh")
			wantStatus(t, err, http.StatusNotFound, `no device "desk"`)
			serveEcho(t, laptop)
			_, err = c.Dial(ctx, "laptop/echo")
			wantStatus(t, err, http.StatusBadRequest, "takes calls and messages, not streams")
			_, err = c.Call(ctx, "laptop/ssh", "x", nil)
			wantStatus(t, err, http.StatusBadRequest, "takes streams")

			// The serving app closes without reading: the dialler's read
			// fails, saying so.
			l, err := appClient(laptop, "rude").Listen(ctx, "rude")
			if err != nil {
				t.Fatal(err)
			}
			defer l.Close()
			waitRecord(t, phone, zsync.BucketApps, "laptop/rude")
			go func() {
				if c, err := l.Accept(); err == nil {
					c.Close()
				}
			}()
			s, err = c.Dial(ctx, "laptop/rude")
			if err != nil {
				t.Fatal(err)
			}
			_, err = io.ReadAll(s)
			var se *api.StreamError
			if !errors.As(err, &se) || !strings.Contains(se.Message, "closed the stream") {
				t.Fatalf("read of a stream the other end closed: %v", err)
			}
			s.Close()
		})
	}
}
