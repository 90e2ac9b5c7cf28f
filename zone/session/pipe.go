package session

import (
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"sync"
	"time"

	"github.com/pzone/pzone/transport"
	"github.com/pzone/pzone/zone/wire"
)

// A stream's data phase, at every hop (docs/PROTOCOL.md, "Streams"): a
// Pipe forwards stream frames between two Ends, each direction on its
// own, a frame at a time, so that a slow reader at one end slows the
// writer at the other (each hop holds at most one frame per direction),
// a half-close travels as StreamEnd, and a cut reaches both ends with its
// reason as StreamAbort, whichever hop made it.

// End is one side of a Pipe: a transport stream to another node, or an
// application's connection to its device.
type End struct {
	// Name says who is at this end, for the reason a stream broke off:
	// "the hub", `device "laptop"`, "the application".
	Name string

	r            io.Reader
	w            io.Writer
	closeWrite   func() error
	kill         func()
	finish       func() // after both directions ended cleanly
	setRD, setWD func(time.Time) error
	// drain: after StreamEnd, the other side closes its direction; read
	// on to its end, as a transport stream needs to be done with.
	drain bool

	onDone []func()

	wmu    sync.Mutex
	broken bool // a write failed: what is on the wire is out of step
}

// StreamEnd is an End on a transport stream.
func StreamEnd(name string, st transport.Stream) *End {
	return &End{Name: name, r: st, w: st, closeWrite: st.Close, kill: st.Reset, finish: func() {},
		setRD: st.SetReadDeadline, setWD: st.SetWriteDeadline, drain: true}
}

// Abort drops an end that never joined a Pipe.
func (e *End) Abort() {
	e.kill()
	e.done()
}

// OnDone runs f once the end is done with (after its Pipe, or Abort).
func (e *End) OnDone(f func()) { e.onDone = append(e.onDone, f) }

func (e *End) done() {
	for _, f := range e.onDone {
		f()
	}
	e.onDone = nil
}

// halfCloser is a connection that can end its write direction alone.
type halfCloser interface {
	net.Conn
	CloseWrite() error
}

// ConnEnd is an End on an application's connection c (a Unix or TCP
// socket), read through r (which may hold bytes read from c already).
func ConnEnd(name string, c net.Conn, r io.Reader) *End {
	e := &End{Name: name, r: r, w: c, kill: func() { c.Close() }, finish: func() { c.Close() },
		setRD: c.SetReadDeadline, setWD: c.SetWriteDeadline}
	e.closeWrite = func() error { return nil }
	if hc, ok := c.(halfCloser); ok {
		e.closeWrite = hc.CloseWrite
	}
	return e
}

// write writes one whole frame.
func (e *End) write(b []byte) error {
	e.wmu.Lock()
	defer e.wmu.Unlock()
	if e.broken {
		return errors.New("the stream is out of step")
	}
	if _, err := e.w.Write(b); err != nil {
		e.broken = true
		return err
	}
	return nil
}

// Pipe forwards a stream's frames between A and B until both directions
// end or the stream is cut.
type Pipe struct {
	A, B *End
	// Count, if set, is told of each data frame (AtoB: from A to B) before
	// it is forwarded; an error cuts the stream with it as the reason.
	Count func(aToB bool, n int) *wire.CallError

	mu   sync.Mutex
	cut  *wire.CallError
	from *End // the end whose abort or failure cut the stream, if one did
	// A write to an end that failed waits to be the reason (pending,
	// pendFrom) until that end's own frames are read: an application that
	// aborted and closed at once has its abort there, which says why
	// better than the broken pipe.
	pending  *wire.CallError
	pendFrom *End
}

// abortGrace bounds how long the frames still to be read from an end
// that could not be written to are waited for (they are normally in its
// socket's buffer already, with the end of its direction behind them).
const abortGrace = time.Second

var pipeBufs = sync.Pool{New: func() any { b := make([]byte, wire.StreamFrameHeader+wire.MaxStreamData); return &b }}

// Abort cuts the stream with status and reason, from outside (its binding
// ended, the hub is stopping): both ends get StreamAbort.
func (p *Pipe) Abort(status wire.CallStatus, reason string) {
	p.Cut(&wire.CallError{Status: status, Message: reason})
}

// Cut is Abort with the reason as a CallError.
func (p *Pipe) Cut(why *wire.CallError) { p.stop(why, nil) }

// stop records the first cut and stops both directions at once.
func (p *Pipe) stop(e *wire.CallError, from *End) {
	p.mu.Lock()
	if p.cut != nil {
		p.mu.Unlock()
		return
	}
	defer p.mu.Unlock()
	p.cut, p.from = e, from
	// Reads stop at once; a frame being written is let finish (within
	// wire.StreamTimeout), so that the abort can follow it in step. Under
	// p.mu, so that Run, which clears the deadlines the opening left, does
	// not clear these.
	now := time.Now()
	for _, end := range []*End{p.A, p.B} {
		end.setRD(now)
		end.setWD(now.Add(wire.StreamTimeout))
	}
}

func (p *Pipe) stopped() *wire.CallError {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.cut
}

// Run forwards until the stream is over, and returns nil when both
// directions ended cleanly, or why it was cut. Both ends are done with
// when it returns.
func (p *Pipe) Run() *wire.CallError {
	p.mu.Lock()
	if p.cut == nil { // cut before it ran: the pumps stop at once
		for _, end := range []*End{p.A, p.B} {
			end.setRD(time.Time{})
			end.setWD(time.Time{})
		}
	}
	p.mu.Unlock()
	done := make(chan struct{}, 2)
	go func() { p.pump(p.A, p.B, true); done <- struct{}{} }()
	go func() { p.pump(p.B, p.A, false); done <- struct{}{} }()
	<-done
	<-done
	p.mu.Lock()
	pending, from := p.pending, p.pendFrom
	p.mu.Unlock()
	if pending != nil {
		p.stop(pending, from) // unless a cut came first
	}
	defer p.A.done()
	defer p.B.done()
	cut := p.stopped()
	if cut == nil {
		p.A.finish()
		p.B.finish()
		return nil
	}
	frame := wire.AbortFrame(cut.Status, cut.Message)
	for _, end := range []*End{p.A, p.B} {
		if end != p.from {
			end.setWD(time.Now().Add(wire.StreamTimeout))
			end.write(frame)
		}
		end.closeWrite()
		linger(end)
	}
	return cut
}

// linger gives an end whose stream was cut time to read the abort before
// it is dropped: what it still sends is read and dropped meanwhile, so a
// sender that blocked on a full window can go on to read the abort behind
// the data it was sending. An end that does not close its side within
// wire.StreamTimeout is reset.
func linger(e *End) {
	if !e.drain {
		e.kill()
		return
	}
	go func() {
		e.setRD(time.Now().Add(wire.StreamTimeout))
		if _, err := io.Copy(io.Discard, e.r); err != nil {
			e.kill()
		}
	}()
}

// pump forwards src's frames to dst until src's direction ends (StreamEnd)
// or the stream is cut; a failure cuts it.
func (p *Pipe) pump(src, dst *End, aToB bool) {
	fail := p.stop // the first cut wins
	brokeOff := func(end *End, err error) *wire.CallError {
		msg := fmt.Sprintf("%s broke off the stream", end.Name)
		if err != nil && !errors.Is(err, io.EOF) && !errors.Is(err, io.ErrUnexpectedEOF) {
			msg += ": " + err.Error()
		}
		return &wire.CallError{Status: wire.CallUnavailable, Message: msg}
	}
	broke := func(end *End, err error) {
		if p.stopped() != nil {
			return // our own deadline, set by the cut
		}
		p.mu.Lock()
		pending := p.pending
		if p.pendFrom != end {
			pending = nil
		}
		p.mu.Unlock()
		if pending != nil {
			fail(pending, end) // the write that failed first says it
			return
		}
		fail(brokeOff(end, err), end)
	}
	// brokeWriting: writing to end failed. Its frames are read first,
	// within abortGrace, for an abort that says why.
	brokeWriting := func(end *End, err error) {
		if p.stopped() != nil {
			return
		}
		p.mu.Lock()
		if p.pending == nil {
			p.pending, p.pendFrom = brokeOff(end, err), end
		}
		p.mu.Unlock()
		end.setRD(time.Now().Add(abortGrace))
	}
	var h [wire.StreamFrameHeader]byte
	for {
		if _, err := io.ReadFull(src.r, h[:]); err != nil {
			broke(src, err)
			return
		}
		typ, n, err := wire.ParseStreamHeader(h[:])
		if err != nil {
			fail(&wire.CallError{Status: wire.CallBadRequest, Message: fmt.Sprintf("%s sent a malformed frame: %v", src.Name, err)}, src)
			return
		}
		switch typ {
		case wire.StreamData:
			if p.Count != nil {
				if e := p.Count(aToB, n); e != nil {
					fail(e, nil)
					return
				}
			}
			bp := pipeBufs.Get().(*[]byte)
			buf := (*bp)[:wire.StreamFrameHeader+n]
			copy(buf, h[:])
			_, err := io.ReadFull(src.r, buf[wire.StreamFrameHeader:])
			if err == nil {
				if err = dst.write(buf); err != nil {
					pipeBufs.Put(bp)
					brokeWriting(dst, err)
					return
				}
			}
			pipeBufs.Put(bp)
			if err != nil {
				broke(src, err)
				return
			}
		case wire.StreamEnd:
			if err := dst.write(h[:]); err != nil {
				brokeWriting(dst, err)
				return
			}
			dst.closeWrite()
			if src.drain {
				var one [1]byte
				src.setRD(time.Now().Add(wire.StreamTimeout))
				if k, err := io.ReadFull(src.r, one[:]); k > 0 {
					fail(&wire.CallError{Status: wire.CallBadRequest, Message: src.Name + " sent data after ending its direction"}, src)
					return
				} else if !errors.Is(err, io.EOF) && !errors.Is(err, os.ErrDeadlineExceeded) && p.stopped() == nil {
					broke(src, err)
					return
				}
			}
			return
		case wire.StreamAbort:
			payload := make([]byte, n)
			if _, err := io.ReadFull(src.r, payload); err != nil {
				broke(src, err)
				return
			}
			fail(wire.ParseAbort(payload), src)
			return
		}
	}
}
