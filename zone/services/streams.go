package services

import (
	"bufio"
	"context"
	"fmt"
	"net"
	"net/http"
	"strings"
	"time"

	"github.com/pzone/pzone/transport"
	"github.com/pzone/pzone/zone/api"
	"github.com/pzone/pzone/zone/localapi"
	"github.com/pzone/pzone/zone/session"
	"github.com/pzone/pzone/zone/wire"
)

// Byte streams to applications on this node: an application that listens
// (api.Client.Listen: an event stream with ?streams=accept) is told of
// each stream opened to its service by a "stream" event, and takes it by
// upgrading GET /v1/streams/{id}/accept to the stream's frames.

// pendingStream is a stream offered to an application, not yet accepted.
type pendingStream struct {
	from     string
	app      string            // the application listening: only it may accept
	accepted chan acceptedConn // one, buffered
}

// acceptedConn is the application's connection to a stream, upgraded.
type acceptedConn struct {
	c  net.Conn
	br *bufio.Reader
}

// OfferStream tells the application listening on hdr's service of a
// stream and waits, until deadline, for it to accept; it returns the
// application's connection, upgraded and ready for the stream's frames.
func (sh *Host) OfferStream(ctx context.Context, hdr *wire.CallHeader, deadline time.Time) (net.Conn, *bufio.Reader, *wire.CallError) {
	sh.mu.Lock()
	l := sh.listeners[hdr.ToService]
	switch {
	case l == nil:
		sh.mu.Unlock()
		return nil, nil, &wire.CallError{Status: wire.CallOffline, Message: fmt.Sprintf("service %q is not running on device %q", hdr.ToService, hdr.ToDevice)}
	case !l.streams:
		sh.mu.Unlock()
		return nil, nil, &wire.CallError{Status: wire.CallBadRequest, Message: fmt.Sprintf("service %q on device %q takes calls and messages, not streams", hdr.ToService, hdr.ToDevice)}
	}
	// Known to the application by an ID of this node's own (the caller
	// picks hdr.ID).
	id := wire.NewCallID()
	ps := &pendingStream{from: callerName(hdr), app: l.app, accepted: make(chan acceptedConn, 1)}
	sh.streams[id] = ps
	sh.mu.Unlock()
	unoffer := func() bool {
		sh.mu.Lock()
		defer sh.mu.Unlock()
		if sh.streams[id] != ps {
			return false // accepted meanwhile: its connection is on its way
		}
		delete(sh.streams, id)
		return true
	}
	ev := hostedEvent{Event: api.Event{Type: "stream", ID: id, From: ps.from, Service: hdr.ToService, Deadline: deadline.UTC(), Token: hdr.TokenID}}
	select {
	case l.events <- ev:
	default:
		unoffer()
		return nil, nil, &wire.CallError{Status: wire.CallUnavailable, Message: fmt.Sprintf("service %q is busy: %d streams wait for it to accept them", hdr.ToService, api.EventBuffer)}
	}
	t := time.NewTimer(time.Until(deadline))
	defer t.Stop()
	var why *wire.CallError
	select {
	case a := <-ps.accepted:
		if a.c == nil {
			return nil, nil, &wire.CallError{Status: wire.CallUnavailable, Message: fmt.Sprintf("service %q could not take the stream", hdr.ToService)}
		}
		return a.c, a.br, nil
	case <-l.done:
		why = &wire.CallError{Status: wire.CallOffline, Message: fmt.Sprintf("service %q stopped before it accepted the stream", hdr.ToService)}
	case <-t.C:
		why = &wire.CallError{Status: wire.CallDeadline, Message: fmt.Sprintf("service %q did not accept the stream in time", hdr.ToService)}
	case <-ctx.Done():
		why = &wire.CallError{Status: wire.CallUnavailable, Message: "the stream was cancelled before it was accepted"}
	}
	if unoffer() {
		return nil, nil, why
	}
	if a := <-ps.accepted; a.c != nil { // claimed just now: it comes at once
		a.c.Close()
	}
	return nil, nil, why
}

// claim takes the offered stream id for app, the application that
// listens for it (app "": the node's operator, on pzh.sock).
func (sh *Host) claim(id, app string) *pendingStream {
	sh.mu.Lock()
	defer sh.mu.Unlock()
	ps := sh.streams[id]
	if ps == nil || app != "" && ps.app != app {
		return nil
	}
	delete(sh.streams, id)
	return ps
}

// serveAccept serves GET /v1/streams/{id}/accept: the application takes
// an offered stream, and its connection becomes the stream.
func serveAccept(w http.ResponseWriter, r *http.Request, sh *Host, appOf func(*http.Request) (string, error)) {
	if !IsStreamUpgrade(r) {
		localapi.WriteErr(w, http.StatusBadRequest, fmt.Errorf("accept a stream with an HTTP upgrade: Connection: Upgrade, Upgrade: %s", api.StreamProtocol))
		return
	}
	hj, ok := w.(http.Hijacker)
	if !ok {
		localapi.WriteErr(w, http.StatusInternalServerError, fmt.Errorf("this connection cannot be upgraded"))
		return
	}
	app, err := appOf(r)
	if err != nil {
		localapi.WriteErr(w, http.StatusForbidden, err)
		return
	}
	ps := sh.claim(r.PathValue("id"), app)
	if ps == nil {
		localapi.WriteErr(w, http.StatusNotFound, fmt.Errorf("no stream %q waits to be accepted (accepted already, or its caller gave up)", r.PathValue("id")))
		return
	}
	c, brw, err := hj.Hijack()
	if err != nil {
		ps.accepted <- acceptedConn{}
		return
	}
	if err := WriteUpgrade(c, ps.from); err != nil {
		c.Close()
		ps.accepted <- acceptedConn{}
		return
	}
	ps.accepted <- acceptedConn{c: c, br: brw.Reader}
}

// headerHas reports whether a comma-separated header lists token.
func headerHas(h http.Header, name, token string) bool {
	for _, v := range h.Values(name) {
		for _, f := range strings.Split(v, ",") {
			if strings.EqualFold(strings.TrimSpace(f), token) {
				return true
			}
		}
	}
	return false
}

// IsStreamUpgrade reports whether r asks to become a stream.
func IsStreamUpgrade(r *http.Request) bool {
	return headerHas(r.Header, "Connection", "upgrade") && headerHas(r.Header, "Upgrade", api.StreamProtocol)
}

// WriteUpgrade answers an upgrade to a stream on c: 101, then the stream's
// frames. peer is the other end (ZONE/DEVICE/APP, or the address dialled).
func WriteUpgrade(c net.Conn, peer string) error {
	c.SetWriteDeadline(time.Now().Add(wire.StreamTimeout))
	_, err := fmt.Fprintf(c, "HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: %s\r\n%s: %s\r\n\r\n", api.StreamProtocol, api.StreamPeerHeader, peer)
	c.SetWriteDeadline(time.Time{})
	return err
}

// ServeStream answers a stream opened to this node (its header read from
// st): the friend zone's envelope checked (o), the application's accept
// awaited until deadline, then the reply and the stream's frames until
// either end is done.
func ServeStream(st transport.Stream, sh *Host, hdr *wire.CallHeader, deadline time.Time, o ServeOpts, from string) {
	st.SetDeadline(deadline)
	if o.check != nil {
		if _, cerr := o.check([]byte{}); cerr != nil {
			session.RefuseCall(st, cerr.Status, cerr.Message)
			return
		}
	}
	ctx, cancel := context.WithDeadline(context.Background(), deadline)
	defer cancel()
	c, br, cerr := sh.OfferStream(ctx, hdr, deadline)
	if cerr != nil {
		session.RefuseCall(st, cerr.Status, cerr.Message)
		return
	}
	rep := &wire.CallReply{}
	if o.seal != nil {
		rep.Envelope = o.seal([]byte{})
	}
	if err := transport.WriteFrame(st, rep); err != nil {
		// The opener went away as the application took it: tell the
		// application, which has its stream already.
		st.Reset()
		c.SetWriteDeadline(time.Now().Add(wire.StreamTimeout))
		c.Write(wire.AbortFrame(wire.CallUnavailable, from+" went away before the stream began"))
		c.Close()
		return
	}
	p := &session.Pipe{A: session.StreamEnd(from, st), B: session.ConnEnd("the application", c, br)}
	p.Run()
}
