package session

import (
	"bytes"
	"io"
	"net"
	"testing"
	"time"

	"github.com/pzone/pzone/zone/wire"
)

// connPair is two ends of a pipe over net.Pipe, the far sides returned.
func connPair(t *testing.T) (a, b *End, farA, farB net.Conn) {
	t.Helper()
	a1, a2 := net.Pipe()
	b1, b2 := net.Pipe()
	t.Cleanup(func() { a1.Close(); a2.Close(); b1.Close(); b2.Close() })
	return ConnEnd("a", a1, a1), ConnEnd("b", b1, b1), a2, b2
}

func frame(typ byte, payload []byte) []byte {
	b := make([]byte, wire.StreamFrameHeader+len(payload))
	wire.PutStreamHeader(b, typ, len(payload))
	copy(b[wire.StreamFrameHeader:], payload)
	return b
}

// TestPipeForwards: data and the end travel each way; a malformed frame
// cuts the stream and the other end reads why.
func TestPipeForwards(t *testing.T) {
	a, b, farA, farB := connPair(t)
	p := &Pipe{A: a, B: b}
	done := make(chan *wire.CallError, 1)
	go func() { done <- p.Run() }()
	go farA.Write(append(frame(wire.StreamData, []byte("hi")), frame(wire.StreamEnd, nil)...))
	got := make([]byte, 10)
	if _, err := io.ReadFull(farB, got); err != nil || !bytes.Equal(got, append(frame(wire.StreamData, []byte("hi")), frame(wire.StreamEnd, nil)...)) {
		t.Fatalf("forwarded %q, %v", got, err)
	}
	go farB.Write(frame(0x7f, nil))
	hdr := make([]byte, wire.StreamFrameHeader)
	if _, err := io.ReadFull(farA, hdr); err != nil {
		t.Fatal(err)
	}
	typ, n, err := wire.ParseStreamHeader(hdr)
	if err != nil || typ != wire.StreamAbort {
		t.Fatalf("got frame %d, %v", typ, err)
	}
	payload := make([]byte, n)
	io.ReadFull(farA, payload)
	if ce := wire.ParseAbort(payload); ce.Status != wire.CallBadRequest {
		t.Fatalf("abort %+v", ce)
	}
	select {
	case cut := <-done:
		if cut == nil {
			t.Fatal("a malformed frame did not cut the stream")
		}
	case <-time.After(20 * time.Second):
		t.Fatal("the pipe did not end")
	}
}

// FuzzPipe feeds anything to one end of a pipe: it ends without a panic,
// and forwards only whole, well-formed frames.
func FuzzPipe(f *testing.F) {
	f.Add(append(frame(wire.StreamData, []byte("x")), frame(wire.StreamEnd, nil)...))
	f.Add(frame(wire.StreamAbort, []byte{3, 'n', 'o'}))
	f.Add([]byte{0, 0, 0, 0})
	f.Add([]byte{0, 0xff, 0xff, 0xff})
	f.Add([]byte{2, 0, 0, 0})
	f.Fuzz(func(t *testing.T, in []byte) {
		a1, a2 := net.Pipe()
		b1, b2 := net.Pipe()
		defer a2.Close()
		p := &Pipe{A: ConnEnd("a", a1, a1), B: ConnEnd("b", b1, b1)}
		done := make(chan struct{})
		go func() { p.Run(); close(done) }()
		go func() { a2.Write(in); a2.Close() }()
		go b2.Write(frame(wire.StreamEnd, nil)) // b ends its direction
		go io.Copy(io.Discard, a2)
		var out bytes.Buffer
		io.Copy(&out, b2)
		<-done
		// What reached b is a run of whole frames.
		rest := out.Bytes()
		for len(rest) > 0 {
			if len(rest) < wire.StreamFrameHeader {
				t.Fatalf("a partial frame header reached the other end: %x", rest)
			}
			_, n, err := wire.ParseStreamHeader(rest)
			if err != nil || len(rest) < wire.StreamFrameHeader+n {
				t.Fatalf("a bad frame reached the other end: %x (%v)", rest, err)
			}
			rest = rest[wire.StreamFrameHeader+n:]
		}
	})
}

// TestPipeCutBeforeRun: a cut that comes before Run (a binding that ended
// while its stream opened) still ends it, and both ends read why.
func TestPipeCutBeforeRun(t *testing.T) {
	a, b, farA, farB := connPair(t)
	p := &Pipe{A: a, B: b}
	p.Abort(wire.CallDenied, "the binding ended: duration")
	done := make(chan *wire.CallError, 1)
	go func() { done <- p.Run() }()
	for _, far := range []net.Conn{farA, farB} {
		hdr := make([]byte, wire.StreamFrameHeader)
		if _, err := io.ReadFull(far, hdr); err != nil {
			t.Fatal(err)
		}
		typ, n, err := wire.ParseStreamHeader(hdr)
		payload := make([]byte, n)
		io.ReadFull(far, payload)
		if err != nil || typ != wire.StreamAbort || wire.ParseAbort(payload).Message != "the binding ended: duration" {
			t.Fatalf("frame %d %q, %v", typ, payload, err)
		}
	}
	select {
	case cut := <-done:
		if cut == nil || cut.Status != wire.CallDenied {
			t.Fatalf("Run returned %v", cut)
		}
	case <-time.After(20 * time.Second):
		t.Fatal("a pipe cut before it ran did not end")
	}
}
