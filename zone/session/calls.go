package session

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"time"

	"github.com/pzone/pzone/transport"
	"github.com/pzone/pzone/zone/wire"
)

// WriteBody writes data as data frames. A reply then ends the sending
// direction; a request ends with an empty data frame instead and keeps its
// direction open until the reply is read, so that the caller can still
// cancel (reset) it and the service's device notices.
func WriteBody(st transport.Stream, data []byte, reply bool) error {
	for len(data) > 0 {
		n := min(len(data), wire.CallChunk)
		if err := transport.WriteFrame(st, data[:n]); err != nil {
			return err
		}
		data = data[n:]
	}
	if reply {
		return st.Close()
	}
	return transport.WriteFrame(st, []byte{})
}

// ReadBody reads data frames until an empty one or the end of the other
// side's direction, at most limit bytes.
func ReadBody(fr *transport.FrameReader, limit int) ([]byte, error) {
	return readBodyPaced(fr, limit, nil)
}

// readBodyPaced is ReadBody calling pace, if set, before each frame with
// the bytes read so far (to move a read deadline, or to stop with its
// error).
func readBodyPaced(fr *transport.FrameReader, limit int, pace func(got int) error) ([]byte, error) {
	var out []byte
	for {
		if pace != nil {
			if err := pace(len(out)); err != nil {
				return nil, err
			}
		}
		var chunk []byte
		err := fr.ReadFrame(&chunk)
		if errors.Is(err, io.EOF) || err == nil && len(chunk) == 0 {
			return out, nil
		}
		if err != nil {
			return nil, err
		}
		if len(out)+len(chunk) > limit {
			return nil, fmt.Errorf("body over the %d-byte limit", limit)
		}
		out = append(out, chunk...)
	}
}

// bodyDeadline is when a request body whose header came at start must
// have arrived in full, got bytes of it so far: wait, plus time at
// wire.CallBodyRate for what came, and never after the call's own deadline.
func bodyDeadline(start time.Time, wait time.Duration, got int, call time.Time) time.Time {
	d := start.Add(wait + time.Duration(got)*time.Second/wire.CallBodyRate)
	if call.Before(d) {
		return call
	}
	return d
}

// ReadRequest reads the request body of a call stream, the header just
// read, paced by bodyDeadline.
// hold, if set, is told the bytes read so far before each frame and may
// stop the read with an error.
func ReadRequest(st transport.Stream, fr *transport.FrameReader, wait time.Duration, call time.Time, hold func(got int) error) ([]byte, error) {
	start := time.Now()
	body, err := readBodyPaced(fr, wire.MaxCallBody, func(got int) error {
		if hold != nil {
			if err := hold(got); err != nil {
				return err
			}
		}
		st.SetReadDeadline(bodyDeadline(start, wait, got, call))
		return nil
	})
	st.SetReadDeadline(call)
	return body, err
}

// RefuseCall answers a call stream with a failure and ends it.
func RefuseCall(st transport.Stream, status wire.CallStatus, msg string) {
	st.SetWriteDeadline(time.Now().Add(wire.StreamTimeout))
	if transport.WriteFrame(st, &wire.CallReply{Status: status, Message: msg}) != nil {
		st.Reset()
		return
	}
	st.Close()
	// Whatever the caller still sends is not wanted. A reset right away
	// could discard the reply in flight; once the caller has ended its
	// side, or after a grace period, the stream is done.
	go func() {
		st.SetReadDeadline(time.Now().Add(wire.CloseLinger))
		if _, err := io.Copy(io.Discard, st); err != nil {
			st.Reset()
		}
	}()
}

// Exchange is exchange with a larger answer allowed.
func Exchange(ctx context.Context, conn transport.Conn, kind wire.StreamKind, req, resp any, limit int) error {
	ctx, cancel := context.WithTimeout(ctx, wire.StreamTimeout)
	defer cancel()
	st, err := conn.OpenStream(ctx)
	if err != nil {
		return err
	}
	defer st.Reset()
	st.SetDeadline(time.Now().Add(wire.StreamTimeout))
	if err := transport.WriteFrame(st, &wire.StreamHeader{Kind: kind}); err != nil {
		return err
	}
	if err := transport.WriteFrame(st, req); err != nil {
		return err
	}
	st.Close()
	return transport.NewFrameReader(st, limit).ReadFrame(resp)
}

// OpenCall writes the opening of an exchange on st in one Write: the
// StreamHeader, hdr and, unless body is nil (a stream's opening, or a
// body that follows by other means), the request body and its end. One
// write is one packet where the three would often be three.
func OpenCall(st transport.Stream, hdr *wire.CallHeader, body []byte) error {
	var framed []byte
	if body != nil {
		var err error
		if framed, err = FrameBody(body); err != nil {
			return err
		}
	}
	return OpenCallFramed(st, hdr, framed)
}

// OpenCallFramed is OpenCall with the body already in its frames, as a
// hop that read them passes them on.
func OpenCallFramed(st transport.Stream, hdr *wire.CallHeader, framed []byte) error {
	var buf bytes.Buffer
	if err := transport.WriteFrame(&buf, &wire.StreamHeader{Kind: wire.StreamCall}); err != nil {
		return err
	}
	if err := transport.WriteFrame(&buf, hdr); err != nil {
		return err
	}
	buf.Write(framed)
	_, err := st.Write(buf.Bytes())
	return err
}

// FrameBody is a request body as its data frames and their end.
func FrameBody(body []byte) ([]byte, error) {
	var buf bytes.Buffer
	for data := body; len(data) > 0; {
		n := min(len(data), wire.CallChunk)
		if err := transport.WriteFrame(&buf, data[:n]); err != nil {
			return nil, err
		}
		data = data[n:]
	}
	if err := transport.WriteFrame(&buf, []byte{}); err != nil {
		return nil, err
	}
	return buf.Bytes(), nil
}

// WriteReply answers an exchange on st in one Write, the reply and the
// result's data frames, then ends the direction.
func WriteReply(st transport.Stream, rep *wire.CallReply, result []byte) error {
	var buf bytes.Buffer
	if err := transport.WriteFrame(&buf, rep); err != nil {
		return err
	}
	for data := result; len(data) > 0; {
		n := min(len(data), wire.CallChunk)
		if err := transport.WriteFrame(&buf, data[:n]); err != nil {
			return err
		}
		data = data[n:]
	}
	if _, err := st.Write(buf.Bytes()); err != nil {
		return err
	}
	return st.Close()
}
