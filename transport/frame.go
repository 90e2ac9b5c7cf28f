package transport

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"reflect"

	"github.com/fxamacker/cbor/v2"
)

// Framing: every message on a stream is one frame,
//
//	frame = uvarint(len(body)) body
//	body  = one CBOR data item, Core Deterministic encoding
//
// The length is an unsigned LEB128 varint (encoding/binary's Uvarint) of at
// most maxVarintLen bytes, and a reader refuses lengths above its limit
// before reading or allocating anything for the body.

// MaxFrameSize is the largest frame body any stream accepts. Control
// messages are tiny and bulk data moves in many frames, so 1 MiB is far
// above any single message while bounding what one frame can make the
// reader hold.
const MaxFrameSize = 1 << 20

// ErrFrameTooLarge: a frame's declared length exceeds the reader's limit.
var ErrFrameTooLarge = errors.New("frame too large")

// ErrMalformed: a frame arrived whole but is not one valid CBOR item (or
// is empty). Unlike a read error, it says the other side is broken.
var ErrMalformed = errors.New("malformed frame")

const (
	// maxVarintLen is the longest uvarint: ten 7-bit groups hold 64 bits.
	maxVarintLen = 10

	// frameChunk is how much of a body FrameReader allocates before the
	// bytes have arrived. Larger bodies grow as data comes in, so a peer
	// that declares a large frame and then stalls pins only what it sent.
	frameChunk = 64 << 10

	// cborMaxNestedLevels: protocol messages nest a few levels (message,
	// list, record, field); 16 leaves room to grow and stops recursion
	// bombs long before the stack matters.
	cborMaxNestedLevels = 16
	// cborMaxArrayElements and cborMaxMapPairs bound the work and memory a
	// single array or map can demand. Lists larger than this are paged by
	// the protocol anyway.
	cborMaxArrayElements = 4096
	cborMaxMapPairs      = 4096
)

// encMode and decMode are immutable once built, so sharing them is safe.
var (
	encMode = mustEncMode()
	decMode = mustDecMode()
)

func mustEncMode() cbor.UserBufferEncMode {
	opts := cbor.CoreDetEncOptions()
	// The decoder forbids tags; refuse to produce what it would reject.
	opts.TagsMd = cbor.TagsForbidden
	em, err := opts.UserBufferEncMode()
	if err != nil {
		panic(fmt.Sprintf("transport: cbor encoding options: %v", err))
	}
	return em
}

func mustDecMode() cbor.DecMode {
	dm, err := cbor.DecOptions{
		DupMapKey:        cbor.DupMapKeyEnforcedAPF,
		IndefLength:      cbor.IndefLengthForbidden,
		TagsMd:           cbor.TagsForbidden,
		MaxNestedLevels:  cborMaxNestedLevels,
		MaxArrayElements: cborMaxArrayElements,
		MaxMapPairs:      cborMaxMapPairs,
		// Decoding a map into an interface yields map[string]any, as
		// encoding/json does; maps keyed otherwise need a typed target.
		DefaultMapType: reflect.TypeOf(map[string]any(nil)),
		UTF8:           cbor.UTF8RejectInvalid,
	}.DecMode()
	if err != nil {
		panic(fmt.Sprintf("transport: cbor decoding options: %v", err))
	}
	return dm
}

// Marshal encodes v as canonical CBOR.
func Marshal(v any) ([]byte, error) {
	return encMode.Marshal(v)
}

// Unmarshal decodes CBOR strictly: duplicate map keys, indefinite lengths,
// tags, nesting deeper than 16, more than 4096 elements, and bytes after
// the single data item are errors.
func Unmarshal(data []byte, v any) error {
	err := decMode.Unmarshal(data, v)
	if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) {
		// Not the stream's end: keep callers' EOF checks meaningful.
		return fmt.Errorf("cbor: truncated data item (%v)", err)
	}
	return err
}

// WriteFrame writes v as one frame: uvarint length, then CBOR body. The
// frame goes out in a single Write, so writers sharing a stream need only
// serialise their calls.
func WriteFrame(w io.Writer, v any) error {
	// Encode after room for the longest length prefix, then put the
	// prefix right before the body: one buffer, one Write.
	var buf bytes.Buffer
	var room [maxVarintLen]byte
	buf.Write(room[:])
	if err := encMode.MarshalToBuffer(v, &buf); err != nil {
		return err
	}
	b := buf.Bytes()
	n := len(b) - maxVarintLen
	if n > MaxFrameSize {
		return fmt.Errorf("%w: %d bytes (limit %d)", ErrFrameTooLarge, n, MaxFrameSize)
	}
	var prefix [maxVarintLen]byte
	pl := putUvarint(prefix[:], uint64(n))
	start := maxVarintLen - pl
	copy(b[start:], prefix[:pl])
	_, err := w.Write(b[start:])
	return err
}

func putUvarint(b []byte, x uint64) int {
	i := 0
	for x >= 0x80 {
		b[i] = byte(x) | 0x80
		x >>= 7
		i++
	}
	b[i] = byte(x)
	return i + 1
}

// FrameReader reads frames from a stream. It never reads past the end of
// the frame it returns, so a stream may carry other bytes after its frames.
// After a framing error (too large, truncated, bad length) the stream is
// out of step and every later call returns the same error; a body that is
// not acceptable CBOR is reported but leaves the reader in step. A read
// deadline that passes before the first byte of a frame leaves it in step
// too (the error is os.ErrDeadlineExceeded, and the next call may wait
// again); one that passes inside a frame puts it out of step for good
// (the error then is a timeout, but not os.ErrDeadlineExceeded).
type FrameReader struct {
	r   io.Reader
	br  io.ByteReader // r, when it reads single bytes cheaply
	max int
	err error // sticky framing error
	one [1]byte
	// onStart, if set, is called once a frame's first byte has been
	// read (SetOnFrameStart).
	onStart func()
}

// SetOnFrameStart sets f to be called once each frame's first byte has
// been read, before the rest: a reader that waits with short deadlines between
// frames can give the rest of a frame that has begun a longer one there.
// (A deadline checked between two reads of one frame would otherwise put
// the reader out of step, even with the rest of the frame already here.)
func (fr *FrameReader) SetOnFrameStart(f func()) { fr.onStart = f }

// NewFrameReader reads frames of at most max bytes (0: MaxFrameSize).
func NewFrameReader(r io.Reader, max int) *FrameReader {
	if max <= 0 {
		max = MaxFrameSize
	}
	fr := &FrameReader{r: r, max: max}
	fr.br, _ = r.(io.ByteReader)
	return fr
}

// ReadFrame reads the next frame into v. io.EOF only at a frame boundary;
// a frame cut short is io.ErrUnexpectedEOF.
func (fr *FrameReader) ReadFrame(v any) error {
	if fr.err != nil {
		return fr.err
	}
	body, started, err := fr.next()
	if err != nil {
		if !started && errors.Is(err, os.ErrDeadlineExceeded) {
			return err // nothing of a frame was read: still in step
		}
		if errors.Is(err, os.ErrDeadlineExceeded) {
			err = errFrameInterrupted
		}
		fr.err = err
		return err
	}
	if err := Unmarshal(body, v); err != nil {
		return fmt.Errorf("%w: %w", ErrMalformed, err)
	}
	return nil
}

// next reads one frame body. A length above the limit is refused before
// anything is allocated for it. Up to frameChunk is allocated at once; a
// larger body grows by doubling as its bytes arrive, so no buffer exceeds
// the declared length and all of them together stay under twice it.
// started reports whether any byte of the frame was read.
func (fr *FrameReader) next() (body []byte, started bool, err error) {
	n, started, err := fr.readLength()
	if err != nil {
		return nil, started, err
	}
	if n > uint64(fr.max) {
		return nil, true, ErrFrameTooLarge
	}
	if n == 0 {
		return nil, true, fmt.Errorf("%w: empty; a body is one CBOR data item", ErrMalformed)
	}
	size := int(n)
	buf := make([]byte, min(size, frameChunk))
	got := 0
	for {
		m, err := io.ReadFull(fr.r, buf[got:])
		got += m
		if err != nil {
			if err == io.EOF {
				err = io.ErrUnexpectedEOF
			}
			return nil, true, err
		}
		if got == size {
			return buf, true, nil
		}
		grown := make([]byte, min(2*len(buf), size))
		copy(grown, buf)
		buf = grown
	}
}

// readLength reads the uvarint length prefix: io.EOF if the stream ends
// before it, io.ErrUnexpectedEOF if it ends inside it. started reports
// whether any byte of it was read.
func (fr *FrameReader) readLength() (n uint64, started bool, err error) {
	var x uint64
	var s uint
	for i := range maxVarintLen {
		b, err := fr.readByte()
		if err != nil {
			if i > 0 && err == io.EOF {
				err = io.ErrUnexpectedEOF
			}
			return 0, i > 0, err
		}
		if i == 0 && fr.onStart != nil {
			fr.onStart()
		}
		if b < 0x80 {
			if i == maxVarintLen-1 && b > 1 {
				return 0, true, errors.New("frame length overflows 64 bits")
			}
			return x | uint64(b)<<s, true, nil
		}
		x |= uint64(b&0x7f) << s
		s += 7
	}
	return 0, true, errors.New("frame length longer than 10 bytes")
}

// errFrameInterrupted is the lasting error of a FrameReader whose read
// deadline passed inside a frame: a timeout, as it was, but the stream is
// out of step, so it is not os.ErrDeadlineExceeded (callers that wait
// again on that error would wait forever).
var errFrameInterrupted error = interruptedError{}

type interruptedError struct{}

func (interruptedError) Error() string   { return "transport: read deadline passed inside a frame" }
func (interruptedError) Timeout() bool   { return true }
func (interruptedError) Temporary() bool { return false }

func (fr *FrameReader) readByte() (byte, error) {
	if fr.br != nil {
		return fr.br.ReadByte()
	}
	for {
		n, err := fr.r.Read(fr.one[:])
		if n == 1 {
			return fr.one[0], nil
		}
		if err != nil {
			return 0, err
		}
	}
}
