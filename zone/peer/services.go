package peer

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"sync"
	"time"

	"github.com/pzone/pzone/zone/services"
	"github.com/pzone/pzone/zone/session"

	"github.com/pzone/pzone/certs"
	"github.com/pzone/pzone/transport"
	"github.com/pzone/pzone/zone/api"
	"github.com/pzone/pzone/zone/appid"
	"github.com/pzone/pzone/zone/envelope"
	"github.com/pzone/pzone/zone/localapi"
	"github.com/pzone/pzone/zone/policy"
	"github.com/pzone/pzone/zone/wire"
)

// router carries the device's calls: from the hub (or a direct path) to
// the apps' services here, checked against policy, tokens and envelopes;
// and from apps here out through the hub, to a device of this zone or of a
// friend's. It also answers the local API's service routes.
type router struct {
	p         *Peer
	delivered recentIDs         // queued messages delivered lately
	envelopes *envelope.Checker // signatures of calls from friend zones
}

// Services on a device: applications register them through the local API
// and receive calls and messages as a stream of events; the peer routes
// calls from its applications to services on this device or, through the
// hub, on other devices of the zone. See docs/PROTOCOL.md, "Local API:
// applications and services".

// ---- the peer: incoming calls from the hub ----

// acceptCalls takes the streams the hub opens on a session: calls for
// this device's services. Like the hub's acceptStreams, it serves the
// stream it took and leaves the next to another goroutine.
func (rt *router) acceptCalls(ctx context.Context, conn transport.Conn) {
	st, err := conn.AcceptStream(ctx)
	if err != nil {
		return
	}
	session.Go(func() { rt.acceptCalls(ctx, conn) })
	rt.serveIncoming(st)
}

func (rt *router) serveIncoming(st transport.Stream) {
	rt.p.inflight.Add(1)
	rt.p.touch()
	defer func() { rt.p.touch(); rt.p.inflight.Add(-1) }()
	hdr, ok := rt.readIncomingCall(st)
	if !ok {
		return
	}
	id := rt.p.id.Load()
	if hdr.Kind != wire.CallMessage {
		hdr.QueuedMs = 0 // only messages are kept for later
	}
	var opts services.ServeOpts
	if hdr.FromZoneID != "" && hdr.FromZoneID != id.ZoneID.Compact() {
		// From a friend zone: named as this zone names it, never as the
		// header does, and signed by the calling device.
		f := rt.p.calls.Get(rt.p.state, rt.p.log).Friends.ByID[hdr.FromZoneID]
		if f == nil {
			rt.envelopes.Count(envelope.Unknown)
			session.RefuseCall(st, wire.CallDenied, fmt.Sprintf("zone %s is not a friend of zone %q", hdr.FromZoneID, id.Zone))
			return
		}
		hdr.FromZone = f.Petname
		opts = services.EnvelopeOpts(rt.envelopes, hdr, f, certs.Identity{Zone: id.ZoneID, Device: id.Device}, envelope.Signer{Key: id.Key, Cert: id.Cert}, rt.p.cfg.Now, rt.p.log)
	}
	if cerr := rt.authorize(hdr, fmt.Sprintf("device %q's", hdr.ToDevice)); cerr != nil {
		session.RefuseCall(st, cerr.Status, cerr.Message)
		return
	}
	qid := hdr.FromZoneID + "/" + hdr.FromDevice + "/" + hdr.ID // the sender picks the ID
	if hdr.QueuedMs != 0 && rt.delivered.seen(qid) {
		// A queued message delivered before, whose confirmation the hub
		// lost: confirm it again, do not deliver it twice.
		if transport.WriteFrame(st, &wire.CallReply{}) != nil || session.WriteBody(st, nil, true) != nil {
			st.Reset()
		}
		return
	}
	if hdr.QueuedMs != 0 {
		// Remembered as soon as the application has it, so a confirmation
		// lost on the way back does not make it arrive twice.
		opts.OnDelivered = func() { rt.delivered.add(qid) }
	}
	if hdr.Kind == wire.CallStream {
		services.ServeStream(st, rt.p.services, hdr, time.Now().Add(wire.CallTimeout(hdr)), opts, "the hub")
		return
	}
	services.ServeCall(st, rt.p.services, hdr, time.Now().Add(wire.CallTimeout(hdr)), opts)
}

// readIncomingCall reads the headers of a call stream opened to this
// device (by its hub, or directly by another device) and checks them; on
// failure it answers or resets the stream and reports false.
func (rt *router) readIncomingCall(st transport.Stream) (*wire.CallHeader, bool) {
	st.SetDeadline(time.Now().Add(wire.StreamTimeout))
	fr := transport.NewFrameReader(st, wire.MaxCallHeader)
	var sh wire.StreamHeader
	var hdr wire.CallHeader
	if fr.ReadFrame(&sh) != nil || sh.Kind != wire.StreamCall || fr.ReadFrame(&hdr) != nil {
		st.Reset()
		return nil, false
	}
	if err := wire.CheckCallHeader(&hdr); err != nil || hdr.ToDevice != rt.p.id.Load().Device {
		session.RefuseCall(st, wire.CallBadRequest, "malformed call")
		return nil, false
	}
	return &hdr, true
}

// recentIDs remembers the last few IDs of queued messages delivered, to
// drop a repeat.
type recentIDs struct {
	mu   sync.Mutex
	set  map[string]bool
	ring []string
	next int
}

// recentQueued is how many delivered queued-message IDs a device
// remembers: far more than the hub has in flight to it at once.
const recentQueued = 1024

func (r *recentIDs) seen(id string) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.set[id]
}

func (r *recentIDs) add(id string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.set == nil {
		r.set, r.ring = map[string]bool{}, make([]string, recentQueued)
	}
	if r.set[id] {
		return
	}
	if old := r.ring[r.next]; old != "" {
		delete(r.set, old)
	}
	r.ring[r.next] = id
	r.next = (r.next + 1) % recentQueued
	r.set[id] = true
}

// ---- the peer: outgoing calls ----

var (
	errNoSession = &wire.CallError{Status: wire.CallOffline, Message: "this device is not connected to its hub"}
)

// callOpts are an exchange's options.
type callOpts struct {
	method, token string
	ttl           time.Duration // delivery later (see CallHeader.TTLMs)
}

// newHeader builds and checks the header of an exchange from app on this
// device to addr, with this end's policy applied; friend is the service's
// zone when it is a friend's, deadline when the exchange (or a stream's
// opening) must be done.
func (rt *router) newHeader(ctx context.Context, app string, addr wire.Addr, kind wire.CallKind, o callOpts) (*wire.CallHeader, *wire.Friend, time.Time, error) {
	id := rt.p.id.Load()
	var friend *wire.Friend // the service's zone, when it is a friend's
	if addr.Zone != "" && addr.Zone != id.Zone && certs.FirstZoneID(addr.Zone) != id.ZoneID.Compact() {
		if friend = rt.p.calls.Get(rt.p.state, rt.p.log).Friends.Resolve(addr.Zone); friend == nil {
			return nil, nil, time.Time{}, &wire.CallError{Status: wire.CallNotFound, Message: fmt.Sprintf("zone %q is neither this device's zone (%q) nor a friend of it (pzh friends on the hub lists them)", addr.Zone, id.Zone)}
		}
	}
	if o.ttl < 0 || o.ttl > wire.MaxTTL {
		return nil, nil, time.Time{}, &wire.CallError{Status: wire.CallBadRequest, Message: fmt.Sprintf("time to live %v: use up to %v", o.ttl, wire.MaxTTL)}
	}
	timeout := wire.DefaultCallTimeout
	if d, ok := ctx.Deadline(); ok {
		timeout = min(time.Until(d), wire.MaxCallTimeout)
	}
	if timeout <= 0 {
		return nil, nil, time.Time{}, &wire.CallError{Status: wire.CallDeadline, Message: "the deadline has passed"}
	}
	hdr := &wire.CallHeader{ID: wire.NewCallID(), Kind: kind, FromZone: id.Zone, FromDevice: id.Device, FromApp: app,
		ToDevice: addr.Device, ToService: addr.Service, Method: o.method, TimeoutMs: ceilMs(timeout), Token: o.token,
		TTLMs: uint64(o.ttl / time.Millisecond), FromZoneID: id.ZoneID.Compact()}
	if friend != nil {
		hdr.ToZone = friend.ID.Compact()
	}
	if err := wire.CheckCallHeader(hdr); err != nil {
		return nil, nil, time.Time{}, &wire.CallError{Status: wire.CallBadRequest, Message: err.Error()}
	}
	// The requester's end of policy; the hoster's device checks again
	// (the same device, for a call that stays here).
	if cerr := rt.authorize(hdr, "the caller's"); cerr != nil {
		return nil, nil, time.Time{}, cerr
	}
	return hdr, friend, time.Now().Add(timeout), nil
}

// call runs one exchange from app on this device to addr, and returns the
// result of a call (nil for a message) and, for a message kept at the
// hub for later, the hub's answer saying so.
func (rt *router) call(ctx context.Context, app string, addr wire.Addr, kind wire.CallKind, o callOpts, body []byte) ([]byte, *wire.CallReply, error) {
	rt.p.inflight.Add(1)
	rt.p.touch()
	defer func() { rt.p.touch(); rt.p.inflight.Add(-1) }()
	hdr, friend, deadline, err := rt.newHeader(ctx, app, addr, kind, o)
	if err != nil {
		return nil, nil, err
	}
	ctx, cancel := context.WithDeadline(ctx, deadline)
	defer cancel()
	id := rt.p.id.Load()
	token := o.token
	if friend != nil {
		// The hubs relay; only this signature says who asks what.
		env, err := envelope.Signer{Key: id.Key, Cert: id.Cert}.SignCall(services.EnvCall(hdr), friend.ID.Compact(), rt.p.cfg.Now(), body)
		if err != nil {
			return nil, nil, &wire.CallError{Status: wire.CallBadRequest, Message: "sign the call: " + err.Error()}
		}
		hdr.Envelope = env
	} else if addr.Device == id.Device && token == "" && !rt.tokenRequired(addr.Device, addr.Service) {
		// Same device: straight to the application, no network. (With a
		// token the call goes through the hub, which accounts for it.)
		res, cerr := rt.p.services.Deliver(ctx, hdr, body)
		if cerr != nil {
			return nil, nil, cerr
		}
		return res, nil, nil
	}
	if friend != nil {
		// Calls to friend zones always go through the hubs.
	} else if res, rep, err := rt.p.callDirect(ctx, hdr, body, deadline); err != errViaHub {
		return res, rep, err // went straight to the device (direct.go)
	}
	conn, err := rt.hubConn(ctx, deadline)
	if err != nil {
		return nil, nil, err
	}
	if friend != nil {
		if cerr := rt.hubFederates(); cerr != nil {
			return nil, nil, cerr
		}
	}
	st, err := conn.OpenStream(ctx)
	if err != nil {
		return nil, nil, &wire.CallError{Status: wire.CallOffline, Message: "open a stream to the hub: " + err.Error()}
	}
	stop := context.AfterFunc(ctx, st.Reset)
	defer stop()
	st.SetDeadline(deadline)
	if session.OpenCall(st, hdr, body) != nil {
		st.Reset()
		return nil, nil, callErr(ctx, deadline, errors.New("the hub went away"))
	}
	fr := transport.NewFrameReader(st, wire.CallChunk+16)
	var rep wire.CallReply
	if err := fr.ReadFrame(&rep); err != nil {
		st.Reset()
		return nil, nil, callErr(ctx, deadline, err)
	}
	if rep.Status != wire.CallOK {
		st.Reset()
		return nil, nil, &wire.CallError{Status: rep.Status, Message: rep.Message}
	}
	res, err := session.ReadBody(fr, wire.MaxCallBody)
	if err != nil {
		st.Reset()
		return nil, nil, callErr(ctx, deadline, err)
	}
	st.Close() // done: the service's device stops waiting for a cancellation
	if friend != nil && kind == wire.CallMessage && o.ttl > 0 {
		// A message for later is answered by the friend's hub, which
		// kept it or handed it on: its word, with nothing taken from it.
		return nil, &rep, nil
	}
	if friend != nil {
		// Any other answer must be the serving device's, signed.
		from := certs.Identity{Zone: friend.ID, Device: addr.Device}
		v, err := rt.envelopes.CheckReply(rep.Envelope, friend.CA, hdr.ID, from, certs.Identity{Zone: id.ZoneID, Device: id.Device}, res, rt.p.cfg.Now())
		rt.envelopes.Count(v)
		if err != nil {
			rt.p.log.Warn("answer refused", "from", addr.String(), "id", hdr.ID, "verdict", v, "err", err)
			return nil, nil, &wire.CallError{Status: wire.CallFailed, Message: fmt.Sprintf("the answer from %s does not check out: %v", addr, err)}
		}
	}
	return res, &rep, nil
}

// ceilMs is d in whole milliseconds, rounded up: the hops after the
// caller start their deadlines later and must not end them sooner, or a
// service's device gives up a moment before the caller and the caller
// reports a broken call instead of its deadline.
func ceilMs(d time.Duration) uint64 { return uint64((d + time.Millisecond - 1) / time.Millisecond) }

// callErr explains a call stream that failed. Every hop works to the same
// deadline, measured from when it heard of the call, so each later hop's
// is no earlier: a failure once the caller's deadline has passed is the
// deadline, whichever hop noticed first.
func callErr(ctx context.Context, deadline time.Time, err error) error {
	if !time.Now().Before(deadline) {
		return &wire.CallError{Status: wire.CallDeadline, Message: "no answer before the deadline"}
	}
	if ctx.Err() != nil {
		return &wire.CallError{Status: wire.CallUnavailable, Message: "the call was cancelled"}
	}
	return &wire.CallError{Status: wire.CallUnavailable, Message: "the call broke off: " + err.Error()}
}

// ---- the peer: local API for applications ----

// callHTTPStatus maps a call's outcome to the local API's status.
func callHTTPStatus(s wire.CallStatus) int {
	switch s {
	case wire.CallNotFound:
		return http.StatusNotFound
	case wire.CallOffline, wire.CallUnavailable:
		return http.StatusServiceUnavailable
	case wire.CallDenied:
		return http.StatusForbidden
	case wire.CallDeadline:
		return http.StatusGatewayTimeout
	case wire.CallFailed:
		return http.StatusBadGateway
	case wire.CallBadRequest:
		return http.StatusBadRequest
	case wire.CallQueueFull:
		return http.StatusInsufficientStorage
	}
	return http.StatusInternalServerError
}

// exchange makes a call or sends a message for app, as POST /v1/call and
// /v1/send and apps' channels ask: the result of a call, or what became of
// a message; a refusal as the HTTP status saying why, and the error.
func (rt *router) exchange(ctx context.Context, app string, kind wire.CallKind, req api.CallRequestBody) ([]byte, *api.SendResult, int, error) {
	addr, err := wire.ParseAddr(req.To)
	if err != nil {
		return nil, nil, http.StatusBadRequest, err
	}
	body := []byte(req.Body)
	if len(body) == 0 {
		body = []byte("null")
	}
	if len(body) > wire.MaxCallBody {
		return nil, nil, http.StatusBadRequest, fmt.Errorf("the body is %d bytes, over the %d-byte limit", len(body), wire.MaxCallBody)
	}
	if !json.Valid(body) {
		return nil, nil, http.StatusBadRequest, errors.New("the body is not JSON")
	}
	if req.TTLMs < 0 {
		return nil, nil, http.StatusBadRequest, errors.New("ttl_ms is negative")
	}
	ttl := time.Duration(req.TTLMs) * time.Millisecond
	// timeout_ms covers the whole exchange; without it, a call for later
	// may also wait its time to live for the device.
	timeout := time.Duration(req.TimeoutMs) * time.Millisecond
	if timeout <= 0 {
		timeout = wire.DefaultCallTimeout
		if kind == wire.CallRequest {
			timeout += ttl
		}
	}
	ctx, cancel := context.WithTimeout(ctx, min(timeout, wire.MaxCallTimeout))
	defer cancel()
	res, rep, err := rt.call(ctx, app, addr, kind, callOpts{method: req.Method, token: req.Token, ttl: ttl}, body)
	var ce *wire.CallError
	switch {
	case errors.As(err, &ce):
		return nil, nil, callHTTPStatus(ce.Status), fmt.Errorf("%s: %s", addr, ce.Message)
	case err != nil:
		return nil, nil, http.StatusInternalServerError, err
	case kind == wire.CallMessage:
		out := &api.SendResult{Delivered: true}
		if rep != nil && rep.Queued {
			exp := time.UnixMilli(rep.ExpiresMs).UTC()
			out = &api.SendResult{Queued: true, Expires: &exp}
		}
		return nil, out, http.StatusOK, nil
	case !json.Valid(res):
		return nil, nil, http.StatusBadGateway, fmt.Errorf("%s: the answer is not JSON", addr)
	}
	return res, nil, http.StatusOK, nil
}

func (rt *router) routes(mux *http.ServeMux) {
	exchange := func(kind wire.CallKind) http.HandlerFunc {
		return func(w http.ResponseWriter, r *http.Request) {
			var req api.CallRequestBody
			if err := localapi.ReadJSON(r, &req); err != nil {
				localapi.WriteErr(w, http.StatusBadRequest, err)
				return
			}
			if err := claimedApp(r, req.App); err != nil {
				localapi.WriteErr(w, http.StatusForbidden, err)
				return
			}
			res, sent, status, err := rt.exchange(r.Context(), appid.From(r.Context()), kind, req)
			switch {
			case err != nil:
				localapi.WriteErr(w, status, err)
			case kind == wire.CallMessage:
				localapi.WriteJSON(w, http.StatusOK, sent)
			default:
				// The result as it came, checked JSON: not decoded and
				// encoded again.
				w.Header().Set("Content-Type", "application/json")
				w.WriteHeader(http.StatusOK)
				w.Write([]byte(`{"result":`))
				w.Write(res)
				w.Write([]byte("}\n"))
			}
		}
	}
	mux.HandleFunc("POST /v1/call", exchange(wire.CallRequest))
	mux.HandleFunc("POST /v1/send", exchange(wire.CallMessage))
	mux.HandleFunc("GET /v1/streams/dial", rt.serveDial)
	services.HostRoutes(mux, rt.p.services, appOf, func(app string, info api.ServiceInfo) error {
		return services.Publish(rt.p.state, rt.p.id.Load().Device, app, info)
	}, rt.exchange, rt.p.log)
	mux.HandleFunc("GET /v1/services", func(w http.ResponseWriter, r *http.Request) {
		// What the asking app may call; the device's CLI may ask for any
		// app (pzp services --app A).
		app, zone := appid.From(r.Context()), r.URL.Query().Get("zone")
		if as := r.URL.Query().Get("app"); as != "" && as != app {
			if app != appid.CLI {
				localapi.WriteErr(w, http.StatusForbidden, fmt.Errorf("app %q may list only what it may call itself, not app %q's", app, as))
				return
			}
			if err := wire.ValidateServiceName(as); err != nil {
				localapi.WriteErr(w, http.StatusBadRequest, fmt.Errorf("app: %w", err))
				return
			}
			app = as
		}
		id := rt.p.id.Load()
		var views []api.ServiceView
		var friend *wire.Friend
		if zone != "" && zone != id.Zone && certs.FirstZoneID(zone) != id.ZoneID.Compact() {
			var cerr *wire.CallError
			if views, friend, cerr = rt.discover(r.Context(), zone, app); cerr != nil {
				localapi.WriteErr(w, callHTTPStatus(cerr.Status), errors.New(cerr.Message))
				return
			}
		} else {
			views = rt.serviceViews()
		}
		// Only what the asking application may call, by this device's
		// policy.
		shown := []api.ServiceView{}
		for _, v := range views {
			hdr := &wire.CallHeader{FromZone: id.Zone, FromDevice: id.Device, FromApp: app, ToDevice: v.Device, ToService: v.Service}
			if friend != nil {
				hdr.ToZone = friend.ID.Compact()
			}
			if rt.authorize(hdr, "") == nil {
				shown = append(shown, v)
			}
		}
		localapi.WriteJSON(w, http.StatusOK, map[string][]api.ServiceView{"services": shown})
	})
}

// appOf is the app a service registration is made as: the requester's
// own identity; an older client's ?app= may only repeat it.
func appOf(r *http.Request) (string, error) {
	if err := claimedApp(r, r.URL.Query().Get("app")); err != nil {
		return "", err
	}
	return appid.From(r.Context()), nil
}

// hubFederates says why not if this device's hub is too old to take calls
// to friend zones (an older hub would read one as a call to a device of
// its own zone that happens to have the same name).
func (rt *router) hubFederates() *wire.CallError {
	if v := rt.p.hubVersion.Load(); v < wire.FederationVersion {
		return &wire.CallError{Status: wire.CallUnavailable, Message: fmt.Sprintf("this device's hub speaks session version %d and cannot reach friend zones (that needs %d): update pzh", v, wire.FederationVersion)}
	}
	return nil
}

// discover asks this device's hub for the services of friend zone name
// that its policy lets this device (app) call.
func (rt *router) discover(ctx context.Context, name, app string) ([]api.ServiceView, *wire.Friend, *wire.CallError) {
	f := rt.p.calls.Get(rt.p.state, rt.p.log).Friends.Resolve(name)
	if f == nil {
		return nil, nil, &wire.CallError{Status: wire.CallNotFound, Message: fmt.Sprintf("zone %q is neither this device's zone (%q) nor a friend of it (pzh friends on the hub lists them)", name, rt.p.id.Load().Zone)}
	}
	rt.p.inflight.Add(1)
	rt.p.touch()
	defer func() { rt.p.touch(); rt.p.inflight.Add(-1) }()
	ctx, cancel := context.WithTimeout(ctx, wire.StreamTimeout)
	defer cancel()
	var conn transport.Conn
	if cp := rt.p.conn.Load(); cp != nil && !rt.p.sleep.away() {
		conn = *cp
	} else if conn = rt.p.sleep.awaitSession(ctx); conn == nil {
		return nil, nil, errNoSession
	}
	if cerr := rt.hubFederates(); cerr != nil {
		return nil, nil, cerr
	}
	var resp wire.DiscoverResponse
	if err := session.Exchange(ctx, conn, wire.StreamDiscover, &wire.DiscoverRequest{Zone: f.ID.Compact(), FromApp: app}, &resp, wire.MaxDiscoverFrame); err != nil {
		return nil, nil, &wire.CallError{Status: wire.CallUnavailable, Message: "ask the hub: " + err.Error()}
	}
	if resp.Status != wire.CallOK {
		return nil, nil, &wire.CallError{Status: resp.Status, Message: resp.Message}
	}
	var out []api.ServiceView
	for _, s := range resp.Services {
		if certs.ValidateName("device", s.Device) != nil || wire.ValidateServiceName(s.Service) != nil {
			continue
		}
		out = append(out, api.ServiceView{Addr: f.Petname + "/" + s.Device + "/" + s.Service, Zone: f.Petname, Device: s.Device, App: s.App, Service: s.Service,
			Description: s.Description, Methods: s.Methods, TokenRequired: s.TokenRequired})
	}
	return out, f, nil
}

// serviceViews lists the services published in the zone state, with
// whether this device's own run.
func (rt *router) serviceViews() []api.ServiceView {
	self := rt.p.id.Load().Device
	views := services.ListServices(rt.p.state)
	for i := range views {
		if views[i].Device == self {
			running := rt.p.services.Running(views[i].Service)
			views[i].Running = &running
		}
	}
	return views
}

// ---- policy at both ends ----

// authorize applies this device's policy to a call; side says which end
// it is for the message ("the caller's" or "this device's"). A call from
// a friend zone names it by FromZoneID (FromZone already set to this
// zone's petname for it); a call out names the friend in ToZone.
func (rt *router) authorize(hdr *wire.CallHeader, side string) *wire.CallError {
	id := rt.p.id.Load()
	view := rt.p.calls.Get(rt.p.state, rt.p.log)
	req := policy.Request{FromZone: id.Zone, FromZoneID: string(id.ZoneID), FromDevice: hdr.FromDevice, FromApp: hdr.FromApp,
		ToDevice: hdr.ToDevice, ToService: hdr.ToService, Method: hdr.Method, SameZone: true}
	if hdr.FromZoneID != "" && hdr.FromZoneID != id.ZoneID.Compact() {
		f := view.Friends.ByID[hdr.FromZoneID]
		if f == nil {
			return &wire.CallError{Status: wire.CallDenied, Message: fmt.Sprintf("denied by %s policy: zone %s is not a friend", side, hdr.FromZoneID)}
		}
		req.FromZone, req.FromZoneID, req.SameZone = f.Petname, hdr.FromZoneID, false
	}
	if hdr.ToZone != "" {
		f := view.Friends.Resolve(hdr.ToZone)
		if f == nil {
			return &wire.CallError{Status: wire.CallNotFound, Message: fmt.Sprintf("zone %q is not a friend of this zone", hdr.ToZone)}
		}
		req.ToZone, req.ToZoneID = f.Petname, string(f.ID)
	}
	if d := policy.Decide(view.Rules, req); !d.Allow {
		return &wire.CallError{Status: wire.CallDenied, Message: fmt.Sprintf("denied by %s policy: %s", side, d.Reason)}
	}
	return nil
}

// tokenRequired reports whether device published service as requiring a
// token, in the zone state this device holds.
func (rt *router) tokenRequired(device, service string) bool {
	return rt.p.calls.Get(rt.p.state, rt.p.log).TokenRequired[device+"/"+service]
}
