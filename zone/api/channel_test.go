package api

import (
	"bufio"
	"bytes"
	"encoding/binary"
	"errors"
	"io"
	"net/http"
	"reflect"
	"strings"
	"testing"
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
