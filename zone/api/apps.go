package api

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"strings"
	"time"

	"github.com/pzone/pzone/zone/wire"
)

// Event is one line of a service's event stream (GET
// /v1/services/{name}/events): a call to answer, or a message.
type Event struct {
	// Type is "call", "message", or "cancel": the caller gave up on call
	// ID, whose reply is no longer wanted.
	Type string `json:"type"`
	ID   string `json:"id"`
	// From is who sent it: zone/device/app (app left out when none).
	From     string          `json:"from"`
	Service  string          `json:"service"`
	Method   string          `json:"method,omitempty"`
	Body     json.RawMessage `json:"body"`
	Deadline time.Time       `json:"deadline"`
	// Token is the ID of the service token the call was made with, if any.
	Token string `json:"token,omitempty"`
	// Queued: the message waited at the hub since then (the device was
	// away). Such a message can, rarely, arrive twice: its ID is the same.
	Queued *time.Time `json:"queued,omitempty"`
}

// Reply is an application's answer to a call event (POST
// /v1/calls/{id}/reply): a result or an error.
type Reply struct {
	Result json.RawMessage `json:"result,omitempty"`
	Error  string          `json:"error,omitempty"`
}

// ServiceInfo describes a registered service (wire.ServiceInfo: devices
// publish theirs in the zone state).
type ServiceInfo = wire.ServiceInfo

// ServiceView is one row of GET /v1/services and pzp services.
type ServiceView struct {
	Addr string `json:"addr"` // DEVICE/SERVICE, or ZONE/DEVICE/SERVICE in a friend zone
	// Zone is the friend zone's petname; empty for this zone.
	Zone        string   `json:"zone,omitempty"`
	Device      string   `json:"device"`
	App         string   `json:"app"`
	Service     string   `json:"service"`
	Description string   `json:"description,omitempty"`
	Methods     []string `json:"methods,omitempty"`
	// TokenRequired: calls must present a service token.
	TokenRequired bool `json:"token_required,omitempty"`
	// Streams: it takes byte streams (Dial), not calls.
	Streams bool `json:"streams,omitempty"`
	// Running: an application serves it now (known for this device only).
	Running *bool `json:"running,omitempty"`
}

// EventBuffer bounds the events waiting for a slow application: past it,
// callers are told the service is busy rather than queueing without end.
const EventBuffer = 256

// CallRequest is the body of POST /v1/call and POST /v1/send.
type CallRequestBody struct {
	// App, if given, must be the caller's own name: who calls comes from
	// the app's credential (WithCredential), never from this field.
	App       string          `json:"app,omitempty"`
	To        string          `json:"to"`
	Method    string          `json:"method,omitempty"`
	Body      json.RawMessage `json:"body,omitempty"`
	TimeoutMs int64           `json:"timeout_ms,omitempty"`
	// Token is a service token (ID.SECRET from pzh tokens issue).
	Token string `json:"token,omitempty"`
	// TTLMs asks for delivery later when the device is away: a message
	// is kept at the hub this long (and the device woken); a call waits
	// this long for the device, on top of its timeout.
	TTLMs int64 `json:"ttl_ms,omitempty"`
}

// CallResult is the answer of POST /v1/call.
type CallResult struct {
	Result json.RawMessage `json:"result"`
}

// SendResult is the answer of POST /v1/send: delivered to the serving
// application, or (with a time to live) queued at the hub until Expires.
type SendResult struct {
	Delivered bool       `json:"delivered"`
	Queued    bool       `json:"queued,omitempty"`
	Expires   *time.Time `json:"expires,omitempty"`
}

// The Go side of the local API for applications: call services, send
// messages, list services, and serve a service. Any language can do the
// same over the socket with HTTP and JSON (docs/PROTOCOL.md).

// Call calls method of the service at to (DEVICE/SERVICE or
// ZONE/DEVICE/SERVICE), as the client's app (WithCredential), with arg (any JSON value, or nil) and
// returns the result. A failed call is an *APIError whose Status says why
// (404 no such device or service, 503 offline or not running, 403 denied,
// 504 deadline, 502 the service's own error).
func (c *Client) Call(ctx context.Context, to, method string, arg any) (json.RawMessage, error) {
	body, err := marshalArg(arg)
	if err != nil {
		return nil, err
	}
	return c.CallWith(ctx, CallRequestBody{To: to, Method: method, Body: body})
}

// CallWith is Call with every field of the request, a token included;
// the deadline comes from ctx.
func (c *Client) CallWith(ctx context.Context, req CallRequestBody) (json.RawMessage, error) {
	if req.Body == nil {
		req.Body = json.RawMessage("null")
	}
	if f, err := c.exchange(ctx, OpCall, req); !errors.Is(err, errNoChannel) {
		if err != nil {
			return nil, err
		}
		return compact(f.Body)
	}
	var res CallResult
	hctx, cancel := answerCtx(ctx)
	defer cancel()
	req.TimeoutMs = timeoutMs(ctx)
	if err := c.Do(hctx, http.MethodPost, "/v1/call", req, &res); err != nil {
		return nil, err
	}
	return compact(res.Result)
}

// compact hands a result back compact (a service in another language may
// answer with spaces; an older daemon indents).
func compact(res json.RawMessage) (json.RawMessage, error) {
	if bytes.IndexAny(res, " \t\r\n") < 0 {
		return res, nil
	}
	var buf bytes.Buffer
	if err := json.Compact(&buf, res); err != nil {
		return nil, err
	}
	return buf.Bytes(), nil
}

// Send sends a one-way message to the service at to, and returns once it
// was delivered to the application serving it.
func (c *Client) Send(ctx context.Context, to string, msg any) error {
	body, err := marshalArg(msg)
	if err != nil {
		return err
	}
	_, err = c.SendWith(ctx, CallRequestBody{To: to, Body: body})
	return err
}

// SendWith is Send with every field of the request: with TTLMs, a message
// for a device that is away is kept at the hub (Queued) and the device
// woken. The deadline comes from ctx.
func (c *Client) SendWith(ctx context.Context, req CallRequestBody) (*SendResult, error) {
	if req.Body == nil {
		req.Body = json.RawMessage("null")
	}
	if f, err := c.exchange(ctx, OpSend, req); !errors.Is(err, errNoChannel) {
		if err != nil {
			return nil, err
		}
		res := &SendResult{Delivered: !f.Queued, Queued: f.Queued}
		if f.Queued {
			exp := time.UnixMilli(f.ExpiresMs).UTC()
			res.Expires = &exp
		}
		return res, nil
	}
	hctx, cancel := answerCtx(ctx)
	defer cancel()
	req.TimeoutMs = timeoutMs(ctx)
	var res SendResult
	if err := c.Do(hctx, http.MethodPost, "/v1/send", req, &res); err != nil {
		return nil, err
	}
	return &res, nil
}

// Services lists the services published in the zone that the client's
// app may call.
func (c *Client) Services(ctx context.Context) ([]ServiceView, error) {
	return c.ServicesIn(ctx, "", "")
}

// ServicesIn lists the services of zone (a friend's petname or zone ID;
// "" for this device's own) that the client's app may call: in a friend
// zone, those both zones' policies allow. as, if not "", asks for another
// app's view instead, which only the device's CLI may.
func (c *Client) ServicesIn(ctx context.Context, zone, as string) ([]ServiceView, error) {
	var out struct {
		Services []ServiceView `json:"services"`
	}
	q := url.Values{}
	if as != "" {
		q.Set("app", as)
	}
	if zone != "" {
		q.Set("zone", zone)
	}
	err := c.Do(ctx, http.MethodGet, "/v1/services?"+q.Encode(), nil, &out)
	return out.Services, err
}

// Handler answers one event of a served service: for a call, its result
// (any JSON value) or an error, which the caller receives as the
// service's error; for a message, the return values are ignored.
type Handler func(ctx context.Context, ev Event) (any, error)

// Serve serves info.Name, as the client's app, until ctx ends: each call is handled in
// its own goroutine, so a slow call does not hold up the others; messages
// are handled one at a time, in the order they arrived. ready,
// if not nil, is called once the daemon has registered the service.
func (c *Client) Serve(ctx context.Context, info ServiceInfo, handle Handler, ready func()) error {
	if err := c.serveChannel(ctx, info, handle, ready); !errors.Is(err, errNoChannel) {
		return err
	}
	q := url.Values{}
	if info.Description != "" {
		q.Set("description", info.Description)
	}
	if len(info.Methods) > 0 {
		q.Set("methods", strings.Join(info.Methods, ","))
	}
	if info.TokenRequired {
		q.Set("token", "required")
	}
	resp, err := c.stream(ctx, "/v1/services/"+url.PathEscape(info.Name)+"/events?"+q.Encode())
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if ready != nil {
		ready()
	}
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 64<<10), 4*wire.MaxCallBody)
	d := newDispatcher(ctx, handle, func(ctx context.Context, ev Event, rep Reply) {
		// The caller may have given up already (404): nothing to do then.
		c.Do(ctx, http.MethodPost, "/v1/calls/"+url.PathEscape(ev.ID)+"/reply", rep, nil)
	})
	defer d.close()
	for sc.Scan() {
		var ev Event
		if err := json.Unmarshal(sc.Bytes(), &ev); err != nil {
			return fmt.Errorf("bad event from the daemon: %w", err)
		}
		d.event(ev)
	}
	if ctx.Err() != nil {
		return ctx.Err()
	}
	if err := sc.Err(); err != nil {
		return err
	}
	return errors.New("the daemon ended the service's event stream")
}

func marshalArg(v any) (json.RawMessage, error) {
	switch v := v.(type) {
	case nil:
		return json.RawMessage("null"), nil
	case json.RawMessage:
		if !json.Valid(v) {
			return nil, errors.New("not JSON")
		}
		return v, nil
	}
	return json.Marshal(v)
}

// answerGrace is how long past a call's deadline the client waits for the
// daemon, which enforces the deadline itself, to say so.
const answerGrace = 2 * time.Second

// answerCtx is ctx for the HTTP exchange of a call: the daemon gets the
// deadline as timeout_ms and answers 504 when it passes, so the request
// itself lives a little longer; cancelling ctx still cancels it.
func answerCtx(ctx context.Context) (context.Context, context.CancelFunc) {
	d, ok := ctx.Deadline()
	if !ok {
		return context.WithCancel(ctx)
	}
	hctx, cancel := context.WithDeadline(context.WithoutCancel(ctx), d.Add(answerGrace))
	stop := context.AfterFunc(ctx, func() {
		if errors.Is(ctx.Err(), context.Canceled) {
			cancel()
		}
	})
	return hctx, func() { stop(); cancel() }
}

// timeoutMs passes ctx's deadline on to the daemon.
func timeoutMs(ctx context.Context) int64 {
	if d, ok := ctx.Deadline(); ok {
		return max(time.Until(d).Milliseconds(), 1)
	}
	return 0
}
