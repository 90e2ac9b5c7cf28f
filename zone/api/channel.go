package api

import (
	"bufio"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"sync"
	"time"

	"github.com/pzone/pzone/transport"
	"github.com/pzone/pzone/zone/wire"
)

// An app's channel (docs/PROTOCOL.md, "App channels"): one connection to
// the daemon, upgraded from HTTP (ChannelProtocol), that carries many
// calls, messages, a service's events and its replies at once, each a
// frame tagged with an ID the app picks. It spares a call the HTTP
// request, the JSON around its body and, on the serving side, the event
// line and the reply's request: the Go client uses it for Call, Send and
// Serve. Other languages may use it or plain HTTP; both are the same API.

// ChannelProtocol is the Upgrade token of an app's channel on the local
// API (GET /v1/channel).
const ChannelProtocol = "pzone-channel"

// ChannelOp is what a frame on a channel does.
type ChannelOp uint8

const (
	// From the app.
	OpCall    ChannelOp = 1 // make call ID: To, Method, Body, TimeoutMs, Token, TTLMs
	OpSend    ChannelOp = 2 // send message ID, as OpCall
	OpCancel  ChannelOp = 3 // give up call or message ID
	OpServe   ChannelOp = 4 // serve Service as ID (calls and messages)
	OpUnserve ChannelOp = 5 // stop serving ID
	OpReply   ChannelOp = 6 // answer event CallID: Body (the result) or Error
	// From the daemon.
	OpResult ChannelOp = 7 // how ID went: Status (as HTTP's), Body or Error, Queued and ExpiresMs for a message
	OpEvent  ChannelOp = 8 // an event of the service served as ID
)

// ChannelFrame is one frame on a channel. Which fields count depends on
// Op; Body is JSON throughout (an argument, a result, an event's body).
type ChannelFrame struct {
	Op ChannelOp `cbor:"1,keyasint"`
	// ID is the app's: of a call, message or service registration; a
	// result or event carries the one it answers or belongs to.
	ID        uint64 `cbor:"2,keyasint,omitempty"`
	To        string `cbor:"3,keyasint,omitempty"`
	Method    string `cbor:"4,keyasint,omitempty"`
	Body      []byte `cbor:"5,keyasint,omitempty"`
	TimeoutMs int64  `cbor:"6,keyasint,omitempty"`
	// Token: a service token (a call), or the ID of the one a call came
	// with (an event).
	Token string `cbor:"7,keyasint,omitempty"`
	TTLMs int64  `cbor:"8,keyasint,omitempty"`
	// Status is a result's, as the HTTP API would answer (200: done).
	Status    int    `cbor:"9,keyasint,omitempty"`
	Error     string `cbor:"10,keyasint,omitempty"`
	Queued    bool   `cbor:"11,keyasint,omitempty"`
	ExpiresMs int64  `cbor:"12,keyasint,omitempty"`
	// Service is what OpServe registers.
	Service *ServiceInfo `cbor:"13,keyasint,omitempty"`
	// An event: its type ("call", "message", "cancel"), the call's ID to
	// reply to, who sent it, to which service, its deadline and, for a
	// message that waited at the hub, since when (Unix milliseconds).
	Type       string `cbor:"14,keyasint,omitempty"`
	CallID     string `cbor:"15,keyasint,omitempty"`
	From       string `cbor:"16,keyasint,omitempty"`
	ToService  string `cbor:"17,keyasint,omitempty"`
	DeadlineMs int64  `cbor:"18,keyasint,omitempty"`
	QueuedMs   int64  `cbor:"19,keyasint,omitempty"`
}

// MaxChannelFrame bounds a frame's CBOR: a call's largest body and room
// for the rest.
const MaxChannelFrame = wire.MaxCallBody + 64<<10

// ErrChannelFrame: a frame on a channel is too large or not a frame.
var ErrChannelFrame = errors.New("bad channel frame")

// AppendChannelFrame appends f, framed (a 4-byte big-endian length, then
// its CBOR), to b.
func AppendChannelFrame(b []byte, f *ChannelFrame) ([]byte, error) {
	body, err := transport.Marshal(f)
	if err != nil {
		return b, err
	}
	if len(body) > MaxChannelFrame {
		return b, fmt.Errorf("%w: %d bytes, over the %d-byte limit", ErrChannelFrame, len(body), MaxChannelFrame)
	}
	b = binary.BigEndian.AppendUint32(b, uint32(len(body)))
	return append(b, body...), nil
}

// ReadChannelFrame reads one frame. A length over MaxChannelFrame is
// refused before anything is allocated for it.
func ReadChannelFrame(br *bufio.Reader) (*ChannelFrame, error) {
	var hdr [4]byte
	if _, err := io.ReadFull(br, hdr[:]); err != nil {
		return nil, err
	}
	n := binary.BigEndian.Uint32(hdr[:])
	if n == 0 || n > MaxChannelFrame {
		return nil, fmt.Errorf("%w: length %d (1 to %d)", ErrChannelFrame, n, MaxChannelFrame)
	}
	var body []byte
	if n <= 64<<10 {
		body = make([]byte, n)
		if _, err := io.ReadFull(br, body); err != nil {
			return nil, noEOF(err)
		}
	} else {
		// A large one is read as it comes, so a length that is never
		// followed by its bytes pins no more than arrived.
		var err error
		if body, err = io.ReadAll(io.LimitReader(br, int64(n))); err != nil {
			return nil, err
		}
		if len(body) < int(n) {
			return nil, io.ErrUnexpectedEOF
		}
	}
	f := new(ChannelFrame)
	if err := transport.Unmarshal(body, f); err != nil {
		return nil, fmt.Errorf("%w: %v", ErrChannelFrame, err)
	}
	return f, nil
}

// noEOF: a frame cut short is not the channel's clean end.
func noEOF(err error) error {
	if errors.Is(err, io.EOF) {
		return io.ErrUnexpectedEOF
	}
	return err
}

// ChannelWriteTimeout bounds one frame's write on a channel: a side that
// takes nothing for this long is stuck, and the channel is given up.
const ChannelWriteTimeout = 30 * time.Second

// ChannelWriter writes a channel's frames from any goroutine, one Write
// each.
type ChannelWriter struct {
	Conn net.Conn
	mu   sync.Mutex
	buf  []byte
}

// Write sends f. An error means the channel is broken.
func (w *ChannelWriter) Write(f *ChannelFrame) error {
	w.mu.Lock()
	defer w.mu.Unlock()
	b, err := AppendChannelFrame(w.buf[:0], f)
	if err != nil {
		return err
	}
	if cap(b) <= 64<<10 {
		w.buf = b // kept for the next frame; a large one is not
	}
	w.Conn.SetWriteDeadline(time.Now().Add(ChannelWriteTimeout))
	_, err = w.Conn.Write(b)
	return err
}
