package transport

import (
	"bytes"
	"encoding/binary"
	"errors"
	"io"
	"net"
	"os"
	"runtime"
	"strings"
	"testing"
	"testing/iotest"

	"github.com/fxamacker/cbor/v2"
)

type testMsg struct {
	Kind  string            `cbor:"k"`
	Seq   uint64            `cbor:"s"`
	Data  []byte            `cbor:"d,omitempty"`
	Attrs map[string]string `cbor:"a,omitempty"`
}

// frame builds a raw frame: uvarint length, then body as is.
func frame(body []byte) []byte {
	return append(binary.AppendUvarint(nil, uint64(len(body))), body...)
}

// writeCounter counts Write calls.
type writeCounter struct {
	bytes.Buffer
	writes int
}

func (w *writeCounter) Write(p []byte) (int, error) {
	w.writes++
	return w.Buffer.Write(p)
}

func TestFrameRoundTrip(t *testing.T) {
	msgs := []testMsg{
		{Kind: "hello", Seq: 1, Attrs: map[string]string{"b": "2", "a": "1"}},
		{Kind: "data", Seq: 2, Data: bytes.Repeat([]byte{0xab}, 200_000)}, // > frameChunk: grows
		{Kind: "bye", Seq: 3},
	}
	var w writeCounter
	for _, m := range msgs {
		if err := WriteFrame(&w, m); err != nil {
			t.Fatal(err)
		}
	}
	if w.writes != len(msgs) {
		t.Errorf("%d Write calls for %d frames, want one each", w.writes, len(msgs))
	}
	// Through a reader without ReadByte, too; neither may read ahead.
	raw := append(w.Bytes(), "trailer"...)
	for name, r := range map[string]io.Reader{
		"bytes.Reader":   bytes.NewReader(raw),
		"one byte reads": iotest.OneByteReader(bytes.NewReader(raw)),
	} {
		t.Run(name, func(t *testing.T) {
			fr := NewFrameReader(r, 0)
			for _, want := range msgs {
				var got testMsg
				if err := fr.ReadFrame(&got); err != nil {
					t.Fatal(err)
				}
				if got.Kind != want.Kind || got.Seq != want.Seq || !bytes.Equal(got.Data, want.Data) || len(got.Attrs) != len(want.Attrs) {
					t.Fatalf("got %+v, want %+v", got.Kind, want.Kind)
				}
			}
			rest, _ := io.ReadAll(r)
			if string(rest) != "trailer" {
				t.Fatalf("bytes after the frames: %q, want %q (reader read ahead)", rest, "trailer")
			}
		})
	}
	fr := NewFrameReader(bytes.NewReader(w.Bytes()), 0)
	for range msgs {
		var m testMsg
		if err := fr.ReadFrame(&m); err != nil {
			t.Fatal(err)
		}
	}
	var m testMsg
	if err := fr.ReadFrame(&m); err != io.EOF {
		t.Fatalf("at the end: %v, want io.EOF", err)
	}
}

func TestMarshalDeterministic(t *testing.T) {
	a := map[string]int{"zeta": 1, "a": 2, "mid": 3}
	b := map[string]int{"mid": 3, "zeta": 1, "a": 2}
	x, err := Marshal(a)
	if err != nil {
		t.Fatal(err)
	}
	for range 20 {
		y, _ := Marshal(b)
		if !bytes.Equal(x, y) {
			t.Fatalf("encodings differ: %x vs %x", x, y)
		}
	}
}

func TestFrameTooLarge(t *testing.T) {
	huge := binary.AppendUvarint(nil, 1<<40)
	var ms0, ms1 runtime.MemStats
	runtime.ReadMemStats(&ms0)
	var v any
	allocs := testing.AllocsPerRun(100, func() {
		fr := NewFrameReader(bytes.NewReader(huge), 0)
		if err := fr.ReadFrame(&v); err != ErrFrameTooLarge {
			t.Fatalf("ReadFrame = %v, want ErrFrameTooLarge", err)
		}
		if err := fr.ReadFrame(&v); err != ErrFrameTooLarge {
			t.Fatalf("after a framing error: %v, want the same error", err)
		}
	})
	runtime.ReadMemStats(&ms1)
	// Only the two reader structs; nothing sized by the declared length.
	if allocs > 2 {
		t.Errorf("%v allocations per rejected frame, want at most 2", allocs)
	}
	if d := ms1.TotalAlloc - ms0.TotalAlloc; d > 1<<20 {
		t.Errorf("rejecting 100 huge frames allocated %d bytes", d)
	}

	// The limit is the reader's: exactly max passes, max+1 does not.
	body, _ := Marshal(strings.Repeat("x", 30))
	max := len(body)
	var s string
	if err := NewFrameReader(bytes.NewReader(frame(body)), max).ReadFrame(&s); err != nil {
		t.Errorf("frame of exactly max bytes: %v", err)
	}
	if err := NewFrameReader(bytes.NewReader(frame(body)), max-1).ReadFrame(&s); !errors.Is(err, ErrFrameTooLarge) {
		t.Errorf("frame of max+1 bytes: %v, want ErrFrameTooLarge", err)
	}
	// The writer refuses what a default reader would.
	if err := WriteFrame(io.Discard, make([]byte, MaxFrameSize)); !errors.Is(err, ErrFrameTooLarge) {
		t.Errorf("WriteFrame of an oversized body: %v, want ErrFrameTooLarge", err)
	}
}

func TestFrameTruncated(t *testing.T) {
	body, _ := Marshal(testMsg{Kind: "k", Seq: 9})
	full := frame(body)
	for _, tc := range []struct {
		name string
		data []byte
		want error
	}{
		{"empty stream", nil, io.EOF},
		{"inside the length", []byte{0x80}, io.ErrUnexpectedEOF},
		{"after the length", full[:1], io.ErrUnexpectedEOF},
		{"inside the body", full[:len(full)-1], io.ErrUnexpectedEOF},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var m testMsg
			if err := NewFrameReader(bytes.NewReader(tc.data), 0).ReadFrame(&m); err != tc.want {
				t.Errorf("ReadFrame = %v, want %v", err, tc.want)
			}
		})
	}
}

func TestFrameBadLength(t *testing.T) {
	for _, tc := range []struct {
		name string
		data []byte
	}{
		{"eleven bytes", append(bytes.Repeat([]byte{0xff}, 10), 0x01)},
		{"overflows 64 bits", append(bytes.Repeat([]byte{0xff}, 9), 0x02)},
		{"zero length", []byte{0x00}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var v any
			err := NewFrameReader(bytes.NewReader(tc.data), 0).ReadFrame(&v)
			if err == nil || errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) {
				t.Errorf("ReadFrame = %v, want a framing error", err)
			}
		})
	}
}

func TestUnmarshalStrict(t *testing.T) {
	nested := func(depth int) []byte {
		b := bytes.Repeat([]byte{0x81}, depth) // array of one element
		return append(b, 0x00)
	}
	bigArray := append([]byte{0x99, 0x10, 0x01}, make([]byte, 4097)...) // 4097 zeros
	for _, tc := range []struct {
		name   string
		data   []byte
		target func() any
	}{
		{"duplicate key into map", []byte{0xa2, 0x61, 'a', 0x01, 0x61, 'a', 0x02}, func() any { return new(map[string]int) }},
		{"duplicate key into any", []byte{0xa2, 0x61, 'a', 0x01, 0x61, 'a', 0x02}, func() any { return new(any) }},
		{"duplicate key into struct", []byte{0xa2, 0x61, 'k', 0x61, 'x', 0x61, 'k', 0x61, 'y'}, func() any { return new(testMsg) }},
		{"trailing bytes", []byte{0x01, 0x00}, func() any { return new(int) }},
		{"nesting 17 deep", nested(17), func() any { return new(any) }},
		{"indefinite length", []byte{0x9f, 0x01, 0xff}, func() any { return new(any) }},
		{"tag", []byte{0xc1, 0x00}, func() any { return new(any) }},
		{"4097 elements", bigArray, func() any { return new([]int) }},
		{"invalid UTF-8", []byte{0x61, 0xff}, func() any { return new(string) }},
		{"empty", nil, func() any { return new(any) }},
		{"truncated item", []byte{0x82, 0x01}, func() any { return new(any) }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := Unmarshal(tc.data, tc.target())
			if err == nil {
				t.Fatal("accepted")
			}
			if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) {
				t.Errorf("error %v reads as the end of a stream", err)
			}
			// In a frame: reported, and the reader stays in step.
			fr := NewFrameReader(bytes.NewReader(append(frame(tc.data), frame([]byte{0x07})...)), 0)
			if err := fr.ReadFrame(tc.target()); err == nil || errors.Is(err, io.EOF) {
				t.Errorf("ReadFrame = %v", err)
			}
			var n int
			if len(tc.data) > 0 {
				if err := fr.ReadFrame(&n); err != nil || n != 7 {
					t.Errorf("next frame after a bad body: %d, %v", n, err)
				}
			}
		})
	}
	var v any
	if err := Unmarshal(nested(16), &v); err != nil {
		t.Errorf("nesting 16 deep: %v", err)
	}
	if err := Unmarshal([]byte{0xa1, 0x61, 'a', 0x01}, &v); err != nil {
		t.Fatal(err)
	}
	if _, ok := v.(map[string]any); !ok {
		t.Errorf("map decoded into any as %T, want map[string]any", v)
	}
}

// FuzzReadFrame feeds arbitrary bytes to a FrameReader: it must never
// panic, and what it allocates must be bounded by its limit and the input,
// never by a declared length.
func FuzzReadFrame(f *testing.F) {
	const limit = 4096
	good, _ := Marshal(testMsg{Kind: "hello", Seq: 1, Attrs: map[string]string{"a": "b"}})
	f.Add(frame(good))
	f.Add(append(frame(good), frame(good)...))
	f.Add(frame(good)[:len(good)-2])
	f.Add(binary.AppendUvarint(nil, 1<<40))
	f.Add(binary.AppendUvarint(nil, limit+1))
	f.Add(append(binary.AppendUvarint(nil, limit), 0x40))
	f.Add(bytes.Repeat([]byte{0x80}, 11))
	f.Add(frame([]byte{0xa2, 0x61, 'a', 0x01, 0x61, 'a', 0x02}))
	f.Add(frame(append(bytes.Repeat([]byte{0x81}, 40), 0)))
	f.Add(frame([]byte{0x9f, 0x9f, 0xff, 0xff}))
	f.Add(frame([]byte{0x9b, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff}))
	f.Add([]byte{})

	f.Fuzz(func(t *testing.T, data []byte) {
		// Every frame takes at least two bytes, so this many calls reach
		// the end (after which errors repeat).
		calls := len(data)/2 + 2

		fr := NewFrameReader(bytes.NewReader(data), limit)
		for range calls {
			var v any
			if err := fr.ReadFrame(&v); err == io.EOF {
				break
			}
		}
		fr = NewFrameReader(iotest.OneByteReader(bytes.NewReader(data)), limit)
		for range calls {
			var m testMsg
			if err := fr.ReadFrame(&m); err == io.EOF {
				break
			}
		}

		// Allocation: reading raw bodies costs at most the body (twice
		// while growing, once more for the copy), whatever the input
		// declares.
		var before, after runtime.MemStats
		runtime.ReadMemStats(&before)
		fr = NewFrameReader(bytes.NewReader(data), limit)
		frames := 0
		for range calls {
			var raw cbor.RawMessage
			err := fr.ReadFrame(&raw)
			if err == io.EOF || errors.Is(err, ErrFrameTooLarge) || errors.Is(err, io.ErrUnexpectedEOF) {
				break
			}
			frames++
		}
		runtime.ReadMemStats(&after)
		if got, bound := after.TotalAlloc-before.TotalAlloc, uint64(64<<10+(frames+1)*4*limit); got > bound {
			t.Fatalf("allocated %d bytes for %d frames from %d input bytes (bound %d)", got, frames, len(data), bound)
		}
	})
}

// scripted is a reader that returns its steps in turn: bytes, or an error.
type scripted struct{ steps []any }

func (s *scripted) Read(p []byte) (int, error) {
	if len(s.steps) == 0 {
		return 0, io.EOF
	}
	switch v := s.steps[0].(type) {
	case error:
		s.steps = s.steps[1:]
		return 0, v
	case []byte:
		n := copy(p, v)
		if n == len(v) {
			s.steps = s.steps[1:]
		} else {
			s.steps[0] = v[n:]
		}
		return n, nil
	}
	panic("bad step")
}

// A read deadline that passes between frames leaves the reader usable; one
// that passes inside a frame breaks it for good, as a timeout that callers
// cannot mistake for a clean one.
func TestFrameReaderDeadlines(t *testing.T) {
	var frame bytes.Buffer
	if err := WriteFrame(&frame, "hello"); err != nil {
		t.Fatal(err)
	}
	f := frame.Bytes()
	r := &scripted{steps: []any{os.ErrDeadlineExceeded, f, os.ErrDeadlineExceeded, f[:2], os.ErrDeadlineExceeded, f[2:]}}
	fr := NewFrameReader(r, 0)
	var s string
	if err := fr.ReadFrame(&s); !errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("idle deadline: %v", err)
	}
	if err := fr.ReadFrame(&s); err != nil || s != "hello" {
		t.Fatalf("after an idle deadline: %q, %v", s, err)
	}
	if err := fr.ReadFrame(&s); !errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("second idle deadline: %v", err)
	}
	err := fr.ReadFrame(&s)
	var ne net.Error
	if err == nil || errors.Is(err, os.ErrDeadlineExceeded) || !errors.As(err, &ne) || !ne.Timeout() {
		t.Fatalf("deadline inside a frame: %v", err)
	}
	if again := fr.ReadFrame(&s); again != err {
		t.Fatalf("the reader went on after losing step: %v", again)
	}
}
