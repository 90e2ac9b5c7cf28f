package wire

import (
	"encoding/binary"
	"fmt"
	"unicode/utf8"
)

// Byte streams between applications (docs/PROTOCOL.md, "Streams"). A
// stream opens like a call, as a StreamCall stream whose CallHeader has
// Kind CallStream and no body; the hops check it as they check a call
// (policy, tokens, a friend zone's envelope) and the serving device
// answers with a CallReply. After a CallReply with CallOK both directions
// carry stream frames, end to end and unchanged: from app to its device
// (over the local socket), to the hub, to the other device, to the other
// app. Each direction ends with StreamEnd (a half-close: the other
// direction goes on) or the whole stream with StreamAbort, which says why;
// a direction that ends without either broke off.

// CallStream opens a byte stream (see above).
const CallStream CallKind = 3

// Stream frame types.
const (
	StreamData  byte = 0 // Length bytes of the stream's data
	StreamEnd   byte = 1 // this direction is done; Length is 0
	StreamAbort byte = 2 // the stream is cut: a CallStatus byte, then the reason (UTF-8)
)

// Stream frame limits.
const (
	// StreamFrameHeader is the size of a frame's header: its type, then
	// its length, 3 bytes big-endian.
	StreamFrameHeader = 4
	// MaxStreamData is the largest data frame: what a hop holds in memory
	// per direction while it forwards one.
	MaxStreamData = 64 << 10
	// MaxAbortReason bounds an abort frame's reason.
	MaxAbortReason = 1024
)

// PutStreamHeader writes a frame header of type typ for n bytes into b.
func PutStreamHeader(b []byte, typ byte, n int) {
	b[0] = typ
	b[1], b[2], b[3] = byte(n>>16), byte(n>>8), byte(n)
}

// ParseStreamHeader reads a frame header and checks it against the limits.
func ParseStreamHeader(b []byte) (typ byte, n int, err error) {
	typ, n = b[0], int(b[1])<<16|int(binary.BigEndian.Uint16(b[2:4]))
	switch {
	case typ == StreamData && n > MaxStreamData:
		return 0, 0, fmt.Errorf("stream data frame of %d bytes, over the %d-byte limit", n, MaxStreamData)
	case typ == StreamData && n == 0:
		return 0, 0, fmt.Errorf("empty stream data frame")
	case typ == StreamEnd && n != 0:
		return 0, 0, fmt.Errorf("stream end frame with %d bytes", n)
	case typ == StreamAbort && (n < 1 || n > 1+MaxAbortReason):
		return 0, 0, fmt.Errorf("stream abort frame of %d bytes", n)
	case typ > StreamAbort:
		return 0, 0, fmt.Errorf("unknown stream frame type %d", typ)
	}
	return typ, n, nil
}

// AbortFrame is the whole frame that cuts a stream with status and reason
// (cut to MaxAbortReason bytes on a rune boundary).
func AbortFrame(status CallStatus, reason string) []byte {
	if len(reason) > MaxAbortReason {
		reason = reason[:MaxAbortReason]
		for !utf8.ValidString(reason) {
			reason = reason[:len(reason)-1]
		}
	}
	b := make([]byte, StreamFrameHeader+1+len(reason))
	PutStreamHeader(b, StreamAbort, 1+len(reason))
	b[StreamFrameHeader] = byte(status)
	copy(b[StreamFrameHeader+1:], reason)
	return b
}

// ParseAbort reads an abort frame's payload.
func ParseAbort(p []byte) *CallError {
	msg := string(p[1:])
	if !utf8.ValidString(msg) {
		msg = fmt.Sprintf("%q", msg)
	}
	return &CallError{Status: CallStatus(p[0]), Message: msg}
}
