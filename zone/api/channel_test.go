package api

import (
	"bufio"
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"reflect"
	"strings"
	"sync/atomic"
	"testing"
	"time"
)

// FuzzChannelFrame feeds anything to a channel's frame reader: a frame,
// io.EOF at a clean end, or an error, never a panic; a frame read is
// written back the same.
func FuzzChannelFrame(f *testing.F) {
	for _, fr := range []*ChannelFrame{
		{Op: OpCall, ID: 1, To: "laptop/echo", Method: "echo", Body: []byte(`"hi"`), TimeoutMs: 5000},
		{Op: OpResult, ID: 1, Status: 200, Body: []byte(`"hi"`)},
		{Op: OpServe, ID: 2, Service: &ServiceInfo{Name: "echo", Methods: []string{"a"}}},
		{Op: OpEvent, ID: 2, Type: "call", CallID: "x", From: "alice/phone/notes", DeadlineMs: 1},
	} {
		b, err := AppendChannelFrame(nil, fr)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b)
	}
	f.Add([]byte{0, 0, 0, 0})
	f.Add([]byte{0xff, 0xff, 0xff, 0xff})
	f.Add([]byte{0, 0, 0, 9, 0xa1})
	f.Fuzz(func(t *testing.T, in []byte) {
		fr, err := ReadChannelFrame(bufio.NewReader(bytes.NewReader(in)))
		if err != nil {
			if fr != nil {
				t.Fatal("a frame and an error")
			}
			return
		}
		b, err := AppendChannelFrame(nil, fr)
		if err != nil {
			t.Fatalf("a frame read cannot be written: %v", err)
		}
		again, err := ReadChannelFrame(bufio.NewReader(bytes.NewReader(b)))
		if err != nil || !reflect.DeepEqual(fr, again) {
			t.Fatalf("%+v written and read again: %+v, %v", fr, again, err)
		}
	})
}

func TestChannelFrameLimits(t *testing.T) {
	var hdr [4]byte
	binary.BigEndian.PutUint32(hdr[:], MaxChannelFrame+1)
	if _, err := ReadChannelFrame(bufio.NewReader(bytes.NewReader(hdr[:]))); !errors.Is(err, ErrChannelFrame) {
		t.Fatalf("an oversized length: %v", err)
	}
	binary.BigEndian.PutUint32(hdr[:], 100)
	if _, err := ReadChannelFrame(bufio.NewReader(bytes.NewReader(append(hdr[:], 1, 2)))); !errors.Is(err, io.ErrUnexpectedEOF) {
		t.Fatalf("a frame cut short: %v", err)
	}
	if _, err := ReadChannelFrame(bufio.NewReader(bytes.NewReader(nil))); err != io.EOF {
		t.Fatalf("a clean end: %v", err)
	}
	if _, err := AppendChannelFrame(nil, &ChannelFrame{Op: OpCall, Body: make([]byte, MaxChannelFrame)}); !errors.Is(err, ErrChannelFrame) {
		t.Fatalf("an oversized frame written: %v", err)
	}
}

// A daemon without app channels (older) is called over HTTP instead.
func TestClientWithoutChannel(t *testing.T) {
	mux := http.NewServeMux()
	mux.HandleFunc("POST /v1/call", func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		if !strings.Contains(string(b), `"body":"hi"`) {
			w.WriteHeader(http.StatusBadRequest)
			return
		}
		w.Header().Set("Content-Type", "application/json")
		w.Write([]byte(`{"result": "hi" }`))
	})
	c := serve(t, mux)
	for range 2 {
		res, err := c.Call(testCtx(t), "laptop/echo", "echo", "hi")
		if err != nil || string(res) != `"hi"` {
			t.Fatalf("call: %s, %v", res, err)
		}
	}
	if !c.noChannel {
		t.Fatal("the client did not note that the daemon has no channels")
	}
}

// channelDaemon answers on /v1/channel as a daemon does, enough for the
// client: each call's result is its body, once release (if set) lets it.
// It counts the channels opened.
func channelDaemon(t *testing.T, opened *atomic.Int32, release func(method string)) http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /v1/channel", func(w http.ResponseWriter, r *http.Request) {
		conn, brw, err := http.NewResponseController(w).Hijack()
		if err != nil {
			t.Error(err)
			return
		}
		defer conn.Close()
		opened.Add(1)
		fmt.Fprintf(conn, "HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: %s\r\n\r\n", ChannelProtocol)
		cw := &ChannelWriter{Conn: conn}
		for {
			f, err := ReadChannelFrame(brw.Reader)
			if err != nil {
				return
			}
			if f.Op != OpCall {
				continue
			}
			go func() {
				if release != nil {
					release(f.Method)
				}
				cw.Write(&ChannelFrame{Op: OpResult, ID: f.ID, Status: http.StatusOK, Body: f.Body})
			}()
		}
	})
	return mux
}

// The client's connection for calls closes once idle, never under a
// call in flight, and the next call opens another.
func TestClientChannelIdle(t *testing.T) {
	var opened atomic.Int32
	var c *Client
	var held atomic.Pointer[appChannel] // the channel the slow call was answered on
	h := channelDaemon(t, &opened, func(method string) {
		if method != "slow" {
			return
		}
		// Answer only once idle checks found the channel in use.
		inUse := func() bool {
			c.chmu.Lock()
			defer c.chmu.Unlock()
			if c.ch != nil && c.ch.checks.Load() >= 3 {
				held.Store(c.ch)
				return true
			}
			return false
		}
		for !inUse() {
			select {
			case <-testCtx(t).Done():
				return
			case <-time.After(time.Millisecond):
			}
		}
	})
	sock := SocketPath(t.TempDir(), PeerSocketName)
	ln, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: h}
	go srv.Serve(ln)
	t.Cleanup(func() { srv.Close() })
	c = NewClient(sock, WithChannelIdle(time.Millisecond))
	ctx := testCtx(t)

	if res, err := c.Call(ctx, "laptop/echo", "slow", "held"); err != nil || string(res) != `"held"` {
		t.Fatalf("a call longer than the idle time: %s, %v", res, err)
	}
	// Three idle checks passed while the call was in flight, and the
	// channel stayed (it may close as soon as the call is done: 1 ms).
	ch := held.Load()
	if ch == nil {
		t.Fatal("the channel closed under a call")
	}
	select {
	case <-ch.done:
	case <-ctx.Done():
		t.Fatal("the idle channel stayed open")
	}
	if res, err := c.Call(ctx, "laptop/echo", "echo", "again"); err != nil || string(res) != `"again"` {
		t.Fatalf("a call after the idle close: %s, %v", res, err)
	}
	if n := opened.Load(); n != 2 {
		t.Fatalf("%d channels opened, want 2", n)
	}
}
