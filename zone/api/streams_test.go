package api

import (
	"bufio"
	"bytes"
	"errors"
	"io"
	"net"
	"testing"
)

// FuzzStreamRead feeds anything to a Stream's reader: reads end with
// io.EOF (a StreamEnd), a *StreamError, or the data, never a panic, and
// never return more data than the frames carried.
func FuzzStreamRead(f *testing.F) {
	f.Add([]byte{0, 0, 0, 2, 'h', 'i', 1, 0, 0, 0})
	f.Add([]byte{2, 0, 0, 3, 3, 'n', 'o'})
	f.Add([]byte{0, 0xff, 0xff, 0xff})
	f.Add([]byte{0, 0, 0, 5, 'a'})
	f.Fuzz(func(t *testing.T, in []byte) {
		c1, c2 := net.Pipe()
		defer c1.Close()
		defer c2.Close()
		s := &Stream{c: c1, br: bufio.NewReader(bytes.NewReader(in))}
		got, err := io.ReadAll(s)
		var se *StreamError
		if err != nil && !errors.As(err, &se) {
			t.Fatalf("read error %T %v", err, err)
		}
		if len(got) > len(in) {
			t.Fatalf("read %d bytes from %d", len(got), len(in))
		}
	})
}
