package peer

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"time"

	"github.com/pzone/pzone/certs"
	"github.com/pzone/pzone/transport"
	"github.com/pzone/pzone/zone/api"
	"github.com/pzone/pzone/zone/appid"
	"github.com/pzone/pzone/zone/envelope"
	"github.com/pzone/pzone/zone/localapi"
	"github.com/pzone/pzone/zone/services"
	"github.com/pzone/pzone/zone/session"
	"github.com/pzone/pzone/zone/wire"
)

// Byte streams from the applications on this device: GET
// /v1/streams/dial upgrades the application's connection to a stream to
// a service on this device, another of the zone (directly when it can,
// or through the hub), or a friend zone's (through both hubs, signed like
// a call). Streams to this device's services arrive with the calls
// (serveIncoming) and go to services.ServeStream.

// serveDial serves GET /v1/streams/dial?to=ADDR[&token=T][&ttl_ms=N][&timeout_ms=N].
func (rt *router) serveDial(w http.ResponseWriter, r *http.Request) {
	if !services.IsStreamUpgrade(r) {
		localapi.WriteErr(w, http.StatusBadRequest, fmt.Errorf("open a stream with an HTTP upgrade: Connection: Upgrade, Upgrade: %s", api.StreamProtocol))
		return
	}
	q := r.URL.Query()
	addr, err := wire.ParseAddr(q.Get("to"))
	if err != nil {
		localapi.WriteErr(w, http.StatusBadRequest, err)
		return
	}
	var ttl, timeout time.Duration
	for name, d := range map[string]*time.Duration{"ttl_ms": &ttl, "timeout_ms": &timeout} {
		if v := q.Get(name); v != "" {
			ms, err := strconv.ParseInt(v, 10, 64)
			if err != nil || ms < 0 {
				localapi.WriteErr(w, http.StatusBadRequest, fmt.Errorf("%s %q: want a number of milliseconds", name, v))
				return
			}
			*d = time.Duration(ms) * time.Millisecond
		}
	}
	if timeout <= 0 {
		timeout = wire.DefaultCallTimeout + ttl
	}
	hj, ok := w.(http.Hijacker)
	if !ok {
		localapi.WriteErr(w, http.StatusInternalServerError, errors.New("this connection cannot be upgraded"))
		return
	}
	rt.p.inflight.Add(1)
	rt.p.touch()
	defer func() { rt.p.touch(); rt.p.inflight.Add(-1) }()
	ctx, cancel := context.WithTimeout(r.Context(), min(timeout, wire.MaxCallTimeout))
	far, err := rt.dialStream(ctx, appid.From(r.Context()), addr, callOpts{token: q.Get("token"), ttl: ttl})
	cancel()
	if err != nil {
		var ce *wire.CallError
		if errors.As(err, &ce) {
			localapi.WriteErr(w, callHTTPStatus(ce.Status), fmt.Errorf("%s: %s", addr, ce.Message))
		} else {
			localapi.WriteErr(w, http.StatusInternalServerError, err)
		}
		return
	}
	c, brw, err := hj.Hijack()
	if err != nil {
		far.Abort()
		return
	}
	if err := services.WriteUpgrade(c, addr.String()); err != nil {
		c.Close()
		far.Abort()
		return
	}
	p := &session.Pipe{A: session.ConnEnd("the application", c, brw.Reader), B: far}
	stop := context.AfterFunc(r.Context(), func() { p.Abort(wire.CallUnavailable, "the device's pzp is stopping") })
	defer stop()
	p.Run()
}

// dialStream opens a stream from app to addr and returns its far end once
// the serving application accepted it.
func (rt *router) dialStream(ctx context.Context, app string, addr wire.Addr, o callOpts) (*session.End, error) {
	hdr, friend, deadline, err := rt.newHeader(ctx, app, addr, wire.CallStream, o)
	if err != nil {
		return nil, err
	}
	ctx, cancel := context.WithDeadline(ctx, deadline)
	defer cancel()
	id := rt.p.id.Load()
	if friend != nil {
		// The hubs relay; only this signature says who opens it.
		env, err := envelope.Signer{Key: id.Key, Cert: id.Cert}.SignCall(services.EnvCall(hdr), friend.ID.Compact(), rt.p.cfg.Now(), []byte{})
		if err != nil {
			return nil, &wire.CallError{Status: wire.CallBadRequest, Message: "sign the stream: " + err.Error()}
		}
		hdr.Envelope = env
	} else if addr.Device == id.Device && o.token == "" && !rt.tokenRequired(addr.Device, addr.Service) {
		// To this device: the two applications' connections, joined here.
		c, br, cerr := rt.p.services.OfferStream(ctx, hdr, deadline)
		if cerr != nil {
			return nil, cerr
		}
		return session.ConnEnd("the application", c, br), nil
	} else if c, ok := rt.p.directFor(ctx, hdr); ok {
		st, _, _, err := rt.p.openDirect(ctx, c, hdr, nil, deadline)
		if err != errViaHub {
			if err != nil {
				c.release()
				return nil, err
			}
			end := session.StreamEnd(fmt.Sprintf("device %q", addr.Device), st)
			end.OnDone(c.release) // the connection is in use while the stream lasts
			return end, nil
		}
		c.release()
	}
	conn, err := rt.hubConn(ctx, deadline)
	if err != nil {
		return nil, err
	}
	if friend != nil {
		if cerr := rt.hubFederates(); cerr != nil {
			return nil, cerr
		}
	}
	if rt.p.hubStreams.Add(1) > wire.StreamsPerSession {
		rt.p.hubStreams.Add(-1)
		return nil, &wire.CallError{Status: wire.CallUnavailable, Message: fmt.Sprintf("this device has %d byte streams open through the hub, the most its session carries: dial again once one of them ends", wire.StreamsPerSession)}
	}
	held := true
	defer func() {
		if held {
			rt.p.hubStreams.Add(-1)
		}
	}()
	st, err := conn.OpenStream(ctx)
	if err != nil {
		return nil, &wire.CallError{Status: wire.CallOffline, Message: "open a stream to the hub: " + err.Error()}
	}
	stop := context.AfterFunc(ctx, st.Reset)
	defer stop()
	st.SetDeadline(deadline)
	if session.OpenCall(st, hdr, nil) != nil {
		st.Reset()
		return nil, callErr(ctx, deadline, errors.New("the hub went away"))
	}
	var rep wire.CallReply
	if err := transport.NewFrameReader(st, wire.MaxCallHeader).ReadFrame(&rep); err != nil {
		st.Reset()
		return nil, callErr(ctx, deadline, err)
	}
	if rep.Status != wire.CallOK {
		st.Reset()
		return nil, &wire.CallError{Status: rep.Status, Message: rep.Message}
	}
	if friend != nil {
		// Accepted by the serving device itself, signed.
		from := certs.Identity{Zone: friend.ID, Device: addr.Device}
		v, err := rt.envelopes.CheckReply(rep.Envelope, friend.CA, hdr.ID, from, certs.Identity{Zone: id.ZoneID, Device: id.Device}, []byte{}, rt.p.cfg.Now())
		rt.envelopes.Count(v)
		if err != nil {
			st.Reset()
			rt.p.log.Warn("stream answer refused", "from", addr.String(), "id", hdr.ID, "verdict", v, "err", err)
			return nil, &wire.CallError{Status: wire.CallFailed, Message: fmt.Sprintf("the answer from %s does not check out: %v", addr, err)}
		}
	}
	end := session.StreamEnd("the hub", st)
	held = false
	end.OnDone(func() { rt.p.hubStreams.Add(-1) })
	return end, nil
}

// hubConn is the session's connection to the hub, once there is one: a
// sleeping device is woken and waits for it until deadline.
func (rt *router) hubConn(ctx context.Context, deadline time.Time) (transport.Conn, error) {
	if cp := rt.p.conn.Load(); cp != nil && !rt.p.sleep.away() {
		return *cp, nil
	}
	if conn := rt.p.sleep.awaitSession(ctx); conn != nil {
		return conn, nil
	}
	if ctx.Err() != nil {
		return nil, callErr(ctx, deadline, errors.New("no session"))
	}
	return nil, errNoSession
}
