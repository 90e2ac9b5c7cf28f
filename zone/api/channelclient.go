package api

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"sync"
	"sync/atomic"
	"time"
)

// The Go client's side of app channels (channel.go): calls and messages
// share one channel per Client, opened at the first and again after the
// daemon closed it; each Serve has a channel of its own, so a service slow
// to take its events holds up nothing else.

// errNoChannel: the daemon is older than app channels; the client uses
// the HTTP API instead.
var errNoChannel = errors.New("the daemon has no app channels")

// appChannel is one open channel.
type appChannel struct {
	conn net.Conn
	br   *bufio.Reader

	w ChannelWriter

	mu    sync.Mutex
	next  uint64
	waits map[uint64]chan *ChannelFrame
	// onEvent, on a serving channel, takes its service's events, in the
	// read loop: a call's handler starts without another goroutine's
	// wake-up in between.
	onEvent func(*ChannelFrame)

	done    chan struct{}
	errOnce sync.Once
	err     error

	// A call channel is closed once idle (Client.chIdle): lastUsed is
	// when the client last handed it out, unix ns; idle the timer that
	// checks, set before the client hands it out, used only by
	// Client.closeIdle under Client.chmu.
	lastUsed atomic.Int64
	idle     *time.Timer
	checks   atomic.Int32 // idle checks that found it in use, for tests
}

// openChannel opens a channel; onEvent, if set, takes the events of the
// service it will serve.
func (c *Client) openChannel(ctx context.Context, onEvent func(*ChannelFrame)) (*appChannel, error) {
	conn, br, _, err := c.upgradeConn(ctx, "/v1/channel", ChannelProtocol)
	var ae *APIError
	if errors.As(err, &ae) && (ae.Status == http.StatusNotFound || ae.Status == http.StatusMethodNotAllowed) {
		return nil, errNoChannel
	}
	if err != nil {
		return nil, err
	}
	ch := &appChannel{conn: conn, br: br, w: ChannelWriter{Conn: conn}, waits: map[uint64]chan *ChannelFrame{}, done: make(chan struct{}), onEvent: onEvent}
	go ch.readLoop()
	return ch, nil
}

// callChannel is the client's channel for calls and messages, opened if
// need be; errNoChannel when the daemon has none.
func (c *Client) callChannel(ctx context.Context) (*appChannel, error) {
	c.chmu.Lock()
	defer c.chmu.Unlock()
	if c.noChannel {
		return nil, errNoChannel
	}
	if c.ch != nil {
		select {
		case <-c.ch.done:
		default:
			c.ch.lastUsed.Store(time.Now().UnixNano())
			return c.ch, nil
		}
	}
	ch, err := c.openChannel(ctx, nil)
	if errors.Is(err, errNoChannel) {
		c.noChannel = true
	}
	if err != nil {
		return nil, err
	}
	ch.lastUsed.Store(time.Now().UnixNano())
	ch.idle = time.AfterFunc(c.chIdle, func() { c.closeIdle(ch) })
	c.ch = ch
	return ch, nil
}

// closeIdle closes ch if nothing is in flight on it and the client has
// not handed it out for chIdle; otherwise it looks again later. The
// client hands it out under chmu, and an exchange registers its call a
// moment after, far within chIdle.
func (c *Client) closeIdle(ch *appChannel) {
	c.chmu.Lock()
	defer c.chmu.Unlock()
	if c.ch != ch {
		return // closed, and replaced or dropped
	}
	ch.mu.Lock()
	busy := len(ch.waits) > 0
	ch.mu.Unlock()
	since := time.Since(time.Unix(0, ch.lastUsed.Load()))
	if busy || since < c.chIdle {
		ch.checks.Add(1)
		ch.idle.Reset(max(c.chIdle-since, c.chIdle/4))
		return
	}
	c.ch = nil
	ch.close(errors.New("closed after being idle"))
}

// Close closes the client's channel to the daemon, if open. Calls in
// flight on it fail; the client may still be used, and opens another.
func (c *Client) Close() error {
	c.chmu.Lock()
	ch := c.ch
	c.ch = nil
	c.chmu.Unlock()
	if ch != nil {
		ch.close(errors.New("the client was closed"))
	}
	return nil
}

func (ch *appChannel) readLoop() {
	for {
		f, err := ReadChannelFrame(ch.br)
		if err != nil {
			ch.close(err)
			return
		}
		switch f.Op {
		case OpResult:
			ch.mu.Lock()
			w := ch.waits[f.ID]
			delete(ch.waits, f.ID)
			ch.mu.Unlock()
			if w != nil {
				w <- f
			}
		case OpEvent:
			if ch.onEvent != nil {
				ch.onEvent(f)
			}
		}
	}
}

// close ends the channel for why, once.
func (ch *appChannel) close(why error) {
	ch.errOnce.Do(func() {
		ch.err = why
		close(ch.done)
		ch.conn.Close()
	})
}

// broken is the error of a channel that ended under an exchange.
func (ch *appChannel) broken() error {
	return fmt.Errorf("the connection to the daemon broke off: %w", ch.err)
}

// expect takes a fresh ID and the channel its result will arrive on.
func (ch *appChannel) expect() (uint64, chan *ChannelFrame) {
	w := make(chan *ChannelFrame, 1)
	ch.mu.Lock()
	ch.next++
	id := ch.next
	ch.waits[id] = w
	ch.mu.Unlock()
	return id, w
}

func (ch *appChannel) forget(id uint64) {
	ch.mu.Lock()
	delete(ch.waits, id)
	ch.mu.Unlock()
}

// write sends one frame, in one write; a channel that cannot take it is
// closed.
func (ch *appChannel) write(f *ChannelFrame) error {
	if err := ch.w.Write(f); err != nil {
		if errors.Is(err, ErrChannelFrame) {
			return err
		}
		ch.close(err)
		return ch.broken()
	}
	return nil
}

// exchange makes a call or sends a message on the client's channel and
// returns the daemon's result; errNoChannel when there is none.
func (c *Client) exchange(ctx context.Context, op ChannelOp, req CallRequestBody) (*ChannelFrame, error) {
	ch, err := c.callChannel(ctx)
	if err != nil {
		return nil, err
	}
	id, wait := ch.expect()
	f := &ChannelFrame{Op: op, ID: id, To: req.To, Method: req.Method, Body: req.Body, TimeoutMs: timeoutMs(ctx), Token: req.Token, TTLMs: req.TTLMs}
	if err := ch.write(f); err != nil {
		ch.forget(id)
		return nil, err
	}
	// The daemon enforces the deadline itself, and says so.
	hctx, cancel := answerCtx(ctx)
	defer cancel()
	select {
	case r := <-wait:
		if r.Status != http.StatusOK {
			return nil, &APIError{Status: r.Status, Message: r.Error}
		}
		return r, nil
	case <-ch.done:
		select {
		case r := <-wait: // it came just before the end
			if r.Status != http.StatusOK {
				return nil, &APIError{Status: r.Status, Message: r.Error}
			}
			return r, nil
		default:
		}
		return nil, ch.broken()
	case <-hctx.Done():
		ch.forget(id)
		ch.write(&ChannelFrame{Op: OpCancel, ID: id})
		if ctx.Err() != nil {
			return nil, ctx.Err()
		}
		return nil, fmt.Errorf("the daemon did not answer in time: %w", hctx.Err())
	}
}

// serveChannel serves info on a channel of its own until ctx ends; it
// returns errNoChannel, having done nothing, when the daemon has none.
func (c *Client) serveChannel(ctx context.Context, info ServiceInfo, handle Handler, ready func()) error {
	// Events come only once the service is registered, when the channel
	// is known; its read loop hands them to d itself.
	var open atomic.Pointer[appChannel]
	d := newDispatcher(ctx, handle, func(ctx context.Context, ev Event, rep Reply) {
		if ch := open.Load(); ch != nil {
			ch.write(&ChannelFrame{Op: OpReply, CallID: ev.ID, Body: rep.Result, Error: rep.Error})
		}
	})
	defer d.close()
	ch, err := c.openChannel(ctx, func(f *ChannelFrame) { d.event(eventOf(f)) })
	if err != nil {
		return err
	}
	open.Store(ch)
	defer ch.close(errors.New("the service stopped"))
	stop := context.AfterFunc(ctx, func() { ch.close(ctx.Err()) })
	defer stop()
	id, wait := ch.expect()
	if err := ch.write(&ChannelFrame{Op: OpServe, ID: id, Service: &info}); err != nil {
		return err
	}
	select {
	case r := <-wait:
		if r.Status != http.StatusOK {
			return &APIError{Status: r.Status, Message: r.Error}
		}
	case <-ch.done:
		if ctx.Err() != nil {
			return ctx.Err()
		}
		return ch.broken()
	}
	if ready != nil {
		ready()
	}
	<-ch.done
	if ctx.Err() != nil {
		return ctx.Err()
	}
	return fmt.Errorf("the daemon ended the service's channel: %w", ch.err)
}

// eventOf is the Event an OpEvent frame carries.
func eventOf(f *ChannelFrame) Event {
	ev := Event{Type: f.Type, ID: f.CallID, From: f.From, Service: f.ToService, Method: f.Method, Body: f.Body, Token: f.Token}
	if f.DeadlineMs != 0 {
		ev.Deadline = time.UnixMilli(f.DeadlineMs).UTC()
	}
	if f.QueuedMs != 0 {
		t := time.UnixMilli(f.QueuedMs).UTC()
		ev.Queued = &t
	}
	return ev
}

// dispatcher hands a service's events to its handler: each call in a
// goroutine of its own, so a slow one holds up no other; messages one at
// a time, in the order they came (a queue at the hub delivers them in
// order); a cancel to the call it names.
type dispatcher struct {
	ctx      context.Context
	handle   Handler
	reply    func(context.Context, Event, Reply)
	mu       sync.Mutex
	inFlight map[string]context.CancelFunc
	messages chan Event
	quit     chan struct{} // closed by close: no more events are queued
	stopped  bool          // close was called (under mu)
}

func newDispatcher(ctx context.Context, handle Handler, reply func(context.Context, Event, Reply)) *dispatcher {
	d := &dispatcher{ctx: ctx, handle: handle, reply: reply, inFlight: map[string]context.CancelFunc{},
		messages: make(chan Event, EventBuffer), quit: make(chan struct{})}
	go func() {
		for {
			select {
			case ev := <-d.messages:
				d.run(ctx, ev)
			case <-d.quit:
				// The service stops: what it was handed still reaches its
				// handler, as the daemon counts it delivered.
				for {
					select {
					case ev := <-d.messages:
						d.run(ctx, ev)
					default:
						return
					}
				}
			}
		}
	}()
	return d
}

func (d *dispatcher) event(ev Event) {
	switch ev.Type {
	case "cancel":
		d.mu.Lock()
		if cancel := d.inFlight[ev.ID]; cancel != nil {
			cancel()
		}
		d.mu.Unlock()
	case "message":
		// Under mu, so that close cannot come between the check and the
		// queueing: a message the daemon handed over is always handled.
		d.mu.Lock()
		if d.stopped {
			d.mu.Unlock()
			d.run(d.ctx, ev)
			return
		}
		select {
		case d.messages <- ev:
		case <-d.ctx.Done():
		}
		d.mu.Unlock()
	default:
		hctx, cancel := context.WithCancel(d.ctx)
		d.mu.Lock()
		d.inFlight[ev.ID] = cancel
		d.mu.Unlock()
		go func() {
			d.run(hctx, ev)
			d.mu.Lock()
			delete(d.inFlight, ev.ID)
			d.mu.Unlock()
			cancel()
		}()
	}
}

func (d *dispatcher) close() {
	d.mu.Lock()
	d.stopped = true
	d.mu.Unlock()
	close(d.quit)
}

// run handles one event and, for a call, sends its reply.
func (d *dispatcher) run(ctx context.Context, ev Event) {
	hctx := ctx
	if !ev.Deadline.IsZero() {
		var cancel context.CancelFunc
		hctx, cancel = context.WithDeadline(ctx, ev.Deadline)
		defer cancel()
	}
	res, err := d.handle(hctx, ev)
	if ev.Type != "call" {
		return
	}
	var rep Reply
	if err != nil {
		rep.Error = err.Error()
	} else if rep.Result, err = marshalArg(res); err != nil {
		rep = Reply{Error: "the service's result is not JSON: " + err.Error()}
	}
	d.reply(ctx, ev, rep)
}
