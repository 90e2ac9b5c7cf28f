package bench

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/pzone/pzone/pairing"
	"github.com/pzone/pzone/transport"
	"github.com/pzone/pzone/zone/api"
	"github.com/pzone/pzone/zone/peer"
	"github.com/pzone/pzone/zone/wire"
)

// The call rows: calls between applications on two devices through the
// hub (docs/PROTOCOL.md §6.11, §7.5). The hub runs as its own process
// (pzh serve), as for the sync rows. Devices A and B run in this process
// (peer.Run, as pzp run would run them), and so do their applications: on
// each an application serves echo through the Go client (Serve), and the
// callers call through A's local API (Client.Call). The relay row has two
// more devices, with bare sessions (DialSession) at both ends of one call
// stream, to measure what the hub's call relay itself moves, without
// applications or JSON at the ends (the stream rows, streams.go, measure
// apps' byte streams).

const (
	// callApp is the application that calls and serves.
	callApp = "bench"
	// callService, on A and B, has one method, which returns its argument.
	callService, callMethod = "echo", "echo"
	// callArgSize is the argument of the round-trip and rate rows: a JSON
	// string of 62 characters, as large as the raw echo.
	callArgSize = echoSize
	// callers call at once in the calls-per-second row, and as many raw
	// echo streams make its baseline.
	callers = 32
	// payloadCallers call with Config.CallPayload-byte arguments at once:
	// enough that the path is busy while one call's JSON is parsed, few
	// enough that megabyte bodies do not pile up in memory.
	payloadCallers = 4
	// relayChunk is the data frame the relay row and its baseline write:
	// the largest a call's sender writes.
	relayChunk = 64 << 10
	// relayService is what the relay row's calls name; the bare session
	// at the other end takes whatever arrives.
	relayService = "relay"
	// relayTimeout is the relay row's call deadline: far more than a
	// transfer takes, well under the 10-minute limit on calls.
	relayTimeout = 5 * time.Minute
)

// callBench is the zone of the call rows.
type callBench struct {
	cfg  *Config
	dir  string
	hub  *syncHub
	a, b *syncDevice
	// relay are the sender and the receiver of the relay row; they only
	// ever have bare sessions.
	relay []*peer.Identity
	run   *callRun // A and B running, serving echo
	// idle are the devices of the idle stream row, paired when it runs.
	idle []*syncDevice
}

func newCallBench(ctx context.Context, cfg *Config) (_ *callBench, err error) {
	c := &callBench{cfg: cfg, dir: filepath.Join(cfg.Work, "calls")}
	if c.hub, err = startZoneHub(ctx, cfg, filepath.Join(c.dir, "hub"), 0); err != nil {
		return nil, err
	}
	defer func() {
		if err != nil {
			c.close()
		}
	}()
	devs, err := c.hub.pairDevices(ctx, "call", filepath.Join(c.dir, "devices"), 2)
	if err != nil {
		return nil, err
	}
	c.a, c.b = devs[0], devs[1]
	token, err := c.hub.invite(ctx, "relay", 2)
	if err != nil {
		return nil, err
	}
	tok, err := pairing.ParseToken(token)
	if err != nil {
		return nil, err
	}
	for i := range 2 {
		res, err := pairing.Pair(ctx, tok, transport.ModeTCP)
		if err != nil {
			return nil, fmt.Errorf("pair relay device %d: %w", i, err)
		}
		id, err := peer.NewIdentity(res)
		if err != nil {
			return nil, err
		}
		c.relay = append(c.relay, id)
	}
	return c, nil
}

func (c *callBench) close() {
	c.stopDevices()
	stopChild(c.hub.proc)
}

// callRun is A and B running over one transport, each with an
// application serving echo.
type callRun struct {
	kind    transport.Kind
	devices *running
	apps    *apps
}

// echo is the applications' handler: the argument back.
func echo(_ context.Context, ev api.Event) (any, error) { return ev.Body, nil }

// startDevices runs A and B over kind, echo served on both, unless they
// run so already (the call rows share them).
func (c *callBench) startDevices(ctx context.Context, kind transport.Kind) error {
	if c.run != nil && c.run.kind == kind {
		return nil
	}
	c.stopDevices()
	devs, err := runDevices(ctx, kind, []*syncDevice{c.a, c.b})
	if err != nil {
		return err
	}
	info := api.ServiceInfo{Name: callService, Description: "returns its argument", Methods: []string{callMethod}}
	a, err := serveApps(ctx, []*syncDevice{c.a, c.b}, info, echo)
	if err != nil {
		devs.stop()
		return err
	}
	c.run = &callRun{kind: kind, devices: devs, apps: a}
	return nil
}

func (c *callBench) stopDevices() {
	if c.run == nil {
		return
	}
	c.run.apps.stop()
	c.run.devices.stop()
	c.run = nil
}

// apps are applications, one on each of some devices, serving a service
// as callApp.
type apps struct {
	cancel context.CancelFunc
	wg     sync.WaitGroup
}

// serveApps serves info with handle as callApp on each of devs, and
// returns once every device's daemon has registered it.
func serveApps(ctx context.Context, devs []*syncDevice, info api.ServiceInfo, handle api.Handler) (*apps, error) {
	actx, cancel := context.WithCancel(ctx)
	a := &apps{cancel: cancel}
	ready := make(chan struct{}, len(devs))
	ended := make(chan error, len(devs))
	for _, d := range devs {
		a.wg.Add(1)
		go func() {
			defer a.wg.Done()
			err := d.client.Serve(actx, info, handle, func() { ready <- struct{}{} })
			if actx.Err() == nil {
				ended <- fmt.Errorf("%s on %s ended: %w", info.Name, d.name, err)
			}
		}()
	}
	for range devs {
		select {
		case <-ready:
		case err := <-ended:
			a.stop()
			return nil, err
		case <-time.After(syncWait):
			a.stop()
			return nil, fmt.Errorf("%s not served after %v", info.Name, syncWait)
		}
	}
	return a, nil
}

// stop ends the applications and waits for them.
func (a *apps) stop() {
	a.cancel()
	a.wg.Wait()
}

// jsonString is a JSON string n bytes long, quotes included.
func jsonString(n int) json.RawMessage {
	return json.RawMessage(`"` + strings.Repeat("x", max(n-2, 0)) + `"`)
}

// call calls echo at to (DEVICE/SERVICE) from A's application with arg,
// and checks that arg came back. No deadline is given: the daemon's
// default (30 s) bounds each call.
func (c *callBench) call(ctx context.Context, to string, arg json.RawMessage) error {
	res, err := c.a.client.Call(ctx, to, callMethod, arg)
	if err != nil {
		return fmt.Errorf("call %s from %s: %w", to, c.a.name, err)
	}
	if !bytes.Equal(res, arg) {
		return fmt.Errorf("call %s: echo answered %d bytes, not the %d sent", to, len(res), len(arg))
	}
	return nil
}

// startWithRaw starts the devices for kind and opens the raw echo
// stream of the same transport that the row measures against.
func (c *callBench) startWithRaw(ctx context.Context, kind transport.Kind) (*rawEchoStream, error) {
	if err := c.startDevices(ctx, kind); err != nil {
		return nil, err
	}
	raw, err := newRawEchoStream(ctx, kind, c.dir)
	if err != nil {
		return nil, fmt.Errorf("raw baseline: %w", err)
	}
	return raw, nil
}

func (c *callBench) remote() string { return c.b.name + "/" + callService }
func (c *callBench) local() string  { return c.a.name + "/" + callService }

// roundTrip: how long one 64-byte call takes from A's application to B's
// echo and back (A's local API, A, the hub, B, B's application, and back),
// p50 and p99, against two raw 64-byte echo round trips on one raw stream
// (a call crosses two hops), measured alternating; the same call to echo
// on A itself, which never leaves A, in the note.
func (c *callBench) roundTrip(ctx context.Context, kind transport.Kind) ([]Row, error) {
	raw, err := c.startWithRaw(ctx, kind)
	if err != nil {
		return nil, err
	}
	defer raw.close()
	arg := jsonString(callArgSize)
	timed := func(to string) (float64, error) {
		start := time.Now()
		err := c.call(ctx, to, arg)
		return ms(time.Since(start)), err
	}
	httpCall := httpJSONCaller(c.a, c.remote(), arg)
	n, warm := c.cfg.CallSamples, max(c.cfg.CallSamples/10, 5)
	remote, local, raws, plain := make([]float64, 0, n), make([]float64, 0, n), make([]float64, 0, n), make([]float64, 0, n)
	for i := range warm + n {
		start := time.Now()
		for range 2 {
			if err := raw.round(); err != nil {
				return nil, fmt.Errorf("raw baseline: %w", err)
			}
		}
		r := ms(time.Since(start))
		z, err := timed(c.remote())
		if err != nil {
			return nil, err
		}
		l, err := timed(c.local())
		if err != nil {
			return nil, err
		}
		start = time.Now()
		if err := httpCall(ctx); err != nil {
			return nil, err
		}
		h := ms(time.Since(start))
		if i >= warm {
			remote, local, raws, plain = append(remote, z), append(local, l), append(raws, r), append(plain, h)
		}
	}
	h50 := percentile(plain, .5)
	p50, p99 := percentile(remote, .5), percentile(remote, .99)
	r50, r99 := percentile(raws, .5), percentile(raws, .99)
	l50, l99 := percentile(local, .5), percentile(local, .99)
	c.cfg.logf("call round trip %s: p50 %.3f ms, p99 %.3f ms; on A itself p50 %.3f ms, p99 %.3f ms; raw 2 echoes p50 %.3f ms, p99 %.3f ms",
		kind, p50, p99, l50, l99, r50, r99)
	note := fmt.Sprintf("A's app calls B/echo through A's local API (Client.Call), B's app answers (Client.Serve), %d-byte JSON argument, %d calls one at a time; "+
		"the same call to echo on A itself (local API only): p50 %.3f ms, p99 %.3f ms; raw, alternating: two %d-byte echo round trips on one raw %s stream (a call crosses two hops)",
		callArgSize, n, l50, l99, echoSize, kind)
	return []Row{
		{Name: "call round trip p50", Transport: string(kind), Value: p50, Unit: "ms", Baseline: r50, Ratio: ratio(p50, r50),
			Target: fmt.Sprintf("≤ %.1f×", targetCallP50), Met: ratio(p50, r50) <= targetCallP50, Runs: n, Note: note},
		{Name: "call round trip p99", Transport: string(kind), Value: p99, Unit: "ms", Baseline: r99, Ratio: ratio(p99, r99),
			Target: fmt.Sprintf("≤ %.1f×", targetCallP99), Met: ratio(p99, r99) <= targetCallP99, Runs: n, Note: note},
		{Name: "HTTP+JSON call round trip p50", Transport: string(kind), Value: h50, Unit: "ms", Baseline: r50, Ratio: ratio(h50, r50),
			Target: fmt.Sprintf("≤ %.1f×", targetHTTPCallP50), Met: ratio(h50, r50) <= targetHTTPCallP50, Runs: n,
			Note: "the same call as another language makes it: net/http, not the Go client, POST /v1/call on A's socket with its JSON body and Authorization, the answer decoded; B's app as above; raw as above, alternating"},
	}, nil
}

// httpJSONCaller calls echo at to from d's app as a non-Go application
// would: a plain HTTP client on the socket, a JSON body, the JSON answer
// decoded and checked.
func httpJSONCaller(d *syncDevice, to string, arg json.RawMessage) func(context.Context) error {
	sock := api.SocketPath(d.dir, api.PeerSocketName)
	hc := &http.Client{Transport: &http.Transport{DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
		var dl net.Dialer
		return dl.DialContext(ctx, "unix", sock)
	}}}
	body, _ := json.Marshal(map[string]any{"to": to, "method": callMethod, "body": arg})
	return func(ctx context.Context) error {
		req, err := http.NewRequestWithContext(ctx, http.MethodPost, "http://local/v1/call", bytes.NewReader(body))
		if err != nil {
			return err
		}
		req.Header.Set("Content-Type", "application/json")
		req.Header.Set("Authorization", "Bearer "+d.cred)
		resp, err := hc.Do(req)
		if err != nil {
			return fmt.Errorf("HTTP call %s: %w", to, err)
		}
		defer resp.Body.Close()
		var out struct {
			Result json.RawMessage `json:"result"`
			Error  string          `json:"error"`
		}
		if err := json.NewDecoder(resp.Body).Decode(&out); err != nil || resp.StatusCode != http.StatusOK {
			return fmt.Errorf("HTTP call %s: %s %s %v", to, resp.Status, out.Error, err)
		}
		if !bytes.Equal(out.Result, arg) {
			return fmt.Errorf("HTTP call %s: echo answered %d bytes, not the %d sent", to, len(out.Result), len(arg))
		}
		return nil
	}
}

// callLoad is callers on A calling one service as fast as they can.
type callLoad struct {
	ctx    context.Context
	cancel context.CancelFunc
	wg     sync.WaitGroup
	done   atomic.Int64 // calls completed
	err    atomic.Pointer[error]
}

func (c *callBench) startLoad(ctx context.Context, callers int, to string, arg json.RawMessage) *callLoad {
	l := &callLoad{}
	l.ctx, l.cancel = context.WithCancel(ctx)
	for range callers {
		l.wg.Add(1)
		go func() {
			defer l.wg.Done()
			for l.ctx.Err() == nil {
				if err := c.call(l.ctx, to, arg); err != nil {
					if l.ctx.Err() == nil {
						l.err.CompareAndSwap(nil, &err)
						l.cancel()
					}
					return
				}
				l.done.Add(1)
			}
		}()
	}
	return l
}

// stop ends the calls (those in flight are cancelled) and reports the
// first failure.
func (l *callLoad) stop() error {
	l.cancel()
	l.wg.Wait()
	if p := l.err.Load(); p != nil {
		return *p
	}
	return nil
}

// callWindow is what a window of calls counted.
type callWindow struct {
	calls   int64
	seconds float64
	// hubCPU and selfCPU are the CPU time per call of the hub process
	// and of this one (A, B and their applications); 0 if unknown.
	hubCPU, selfCPU time.Duration
}

// window counts l's calls for Config.CallWindow, after a fifth of it to
// ramp up (and on until one call has completed, on a machine too slow for
// the window), with the CPU time the processes used meanwhile; it saves
// CPU profiles (Config.ProfileDir) named after what.
func (c *callBench) window(kind transport.Kind, what string, l *callLoad) (callWindow, error) {
	w := c.cfg.CallWindow
	if err := sleep(l.ctx, w/5); err != nil {
		return callWindow{}, err
	}
	hub, self := c.hub.proc.Process.Pid, os.Getpid()
	n0, t0 := l.done.Load(), time.Now()
	hub0, herr := procCPU(hub)
	self0, serr := procCPU(self)
	stopProfiles := profileWindow(l.ctx, c.cfg, c.hub.client, what, kind, w)
	err := sleep(l.ctx, w)
	for err == nil && l.done.Load() == n0 {
		err = sleep(l.ctx, w/10)
	}
	n1, t1 := l.done.Load(), time.Now()
	stopProfiles()
	if err != nil {
		return callWindow{}, err
	}
	cw := callWindow{calls: n1 - n0, seconds: t1.Sub(t0).Seconds()}
	if hub1, err := procCPU(hub); err == nil && herr == nil {
		cw.hubCPU = (hub1 - hub0) / time.Duration(cw.calls)
	}
	if self1, err := procCPU(self); err == nil && serr == nil {
		cw.selfCPU = (self1 - self0) / time.Duration(cw.calls)
	}
	return cw, nil
}

// run runs a load of callers calling to with arg over one window.
func (c *callBench) runLoad(ctx context.Context, kind transport.Kind, what string, callers int, to string, arg json.RawMessage) (callWindow, error) {
	l := c.startLoad(ctx, callers, to, arg)
	cw, werr := c.window(kind, what, l)
	if err := l.stop(); err != nil {
		return callWindow{}, err
	}
	return cw, werr
}

func (cw callWindow) cpuNote() string {
	if cw.hubCPU == 0 && cw.selfCPU == 0 {
		return ""
	}
	us := func(d time.Duration) float64 { return float64(d) / float64(time.Microsecond) }
	return fmt.Sprintf("; CPU per call: hub %.0f µs, A, B and the apps (one process) %.0f µs", us(cw.hubCPU), us(cw.selfCPU))
}

// callRate: calls per second completed by callers on A calling B's echo
// with 64-byte arguments, against raw 64-byte echo round trips per second
// on as many streams of one raw connection, halved: each call is two such
// round trips (A to the hub, the hub to B), and the raw figure spends the
// CPU of both ends of its one hop. The raw rate is taken before and after,
// and averaged.
func (c *callBench) callRate(ctx context.Context, kind transport.Kind) ([]Row, error) {
	raw, err := c.startWithRaw(ctx, kind)
	if err != nil {
		return nil, err
	}
	defer raw.close()
	rawWindow := max(c.cfg.CallWindow/5, 100*time.Millisecond)
	before, err := rawEchoRate(ctx, raw.conn, callers, rawWindow)
	if err != nil {
		return nil, fmt.Errorf("raw baseline: %w", err)
	}
	cw, err := c.runLoad(ctx, kind, "calls", callers, c.remote(), jsonString(callArgSize))
	if err != nil {
		return nil, err
	}
	after, err := rawEchoRate(ctx, raw.conn, callers, rawWindow)
	if err != nil {
		return nil, fmt.Errorf("raw baseline: %w", err)
	}
	rate, base := float64(cw.calls)/cw.seconds, (before+after)/4
	c.cfg.logf("calls per second %s: %.0f/s%s; raw echoes %.0f/s before, %.0f/s after", kind, rate, cw.cpuNote(), before, after)
	return []Row{{Name: "calls per second", Transport: string(kind), Value: rate, Unit: "calls/s", Baseline: base, Ratio: ratio(rate, base),
		Target: fmt.Sprintf("≥ %.1f×", targetCallRate), Met: ratio(rate, base) >= targetCallRate, Runs: 1,
		Note: fmt.Sprintf("%d callers on A calling B/echo (%d-byte JSON) for %v%s; raw: %d-byte echo round trips on %d streams of one raw %s connection, %.0f/s before and %.0f/s after, halved (a call is two hops)",
			callers, callArgSize, c.cfg.CallWindow, cw.cpuNote(), echoSize, callers, kind, before, after)}}, nil
}

// rawEchoRate is how many echoSize-byte round trips per second streams
// echo streams on conn complete together over window.
func rawEchoRate(ctx context.Context, conn transport.Conn, streams int, window time.Duration) (float64, error) {
	sts := make([]transport.Stream, 0, streams)
	defer func() {
		for _, st := range sts {
			st.Reset()
		}
	}()
	for range streams {
		st, err := conn.OpenStream(ctx)
		if err != nil {
			return 0, err
		}
		sts = append(sts, st)
		if _, err := st.Write([]byte{rawEcho}); err != nil {
			return 0, err
		}
	}
	var n atomic.Int64
	errs := make(chan error, streams)
	start := time.Now()
	end := start.Add(window)
	for _, st := range sts {
		go func() {
			msg, buf := bytes.Repeat([]byte{'e'}, echoSize), make([]byte, echoSize)
			for time.Now().Before(end) {
				if _, err := st.Write(msg); err != nil {
					errs <- err
					return
				}
				if _, err := io.ReadFull(st, buf); err != nil {
					errs <- err
					return
				}
				n.Add(1)
			}
			errs <- nil
		}()
	}
	var err error
	for range streams {
		err = errors.Join(err, <-errs)
	}
	return float64(n.Load()) / time.Since(start).Seconds(), err
}

// payloadRate: JSON bytes per second, argument and result, of calls from
// A to B's echo with Config.CallPayload-byte arguments (near the 1 MiB
// limit on a call's body), payloadCallers at once: the most an
// application can move with calls. Against one raw stream's throughput
// in one direction, before and after, averaged.
func (c *callBench) payloadRate(ctx context.Context, kind transport.Kind) ([]Row, error) {
	raw, err := c.startWithRaw(ctx, kind)
	if err != nil {
		return nil, err
	}
	defer raw.close()
	frame, err := dataFrame()
	if err != nil {
		return nil, err
	}
	rawFrames := int(max(c.cfg.RelayBytes/relayChunk, 1))
	rawRate := func() (float64, error) {
		d, err := rawBulkOnce(ctx, raw.conn, frame, rawFrames)
		return mbPerSecond(int64(rawFrames)*relayChunk, d), err
	}
	before, err := rawRate()
	if err != nil {
		return nil, fmt.Errorf("raw baseline: %w", err)
	}
	arg := jsonString(c.cfg.CallPayload)
	cw, err := c.runLoad(ctx, kind, "payload", payloadCallers, c.remote(), arg)
	if err != nil {
		return nil, err
	}
	after, err := rawRate()
	if err != nil {
		return nil, fmt.Errorf("raw baseline: %w", err)
	}
	v := float64(2*int64(len(arg))*cw.calls) / cw.seconds / 1e6
	base := (before + after) / 2
	c.cfg.logf("call payload throughput %s: %.1f MB/s, %.1f calls/s%s; raw %.0f MB/s before, %.0f MB/s after", kind, v, float64(cw.calls)/cw.seconds, cw.cpuNote(), before, after)
	return []Row{{Name: "call payload throughput", Transport: string(kind), Value: v, Unit: "MB/s", Baseline: base, Ratio: ratio(v, base),
		Target: "report", Met: true, Runs: 1,
		Note: fmt.Sprintf("JSON bodies, request + reply: %d callers on A calling B/echo with a %d KiB JSON string for %v, %.1f calls/s%s; raw: one %s stream of %d KiB frames, one way, %.0f MB/s before and %.0f after",
			payloadCallers, len(arg)>>10, c.cfg.CallWindow, float64(cw.calls)/cw.seconds, cw.cpuNote(), kind, relayChunk>>10, before, after)}}, nil
}

// relayThroughput: bytes per second one call stream carries from one
// device through the hub to another, the hub splicing the two streams
// (the ends are bare sessions: no application, no JSON), against one raw
// stream of the same transport; Runs runs alternating, medians.
func (c *callBench) relayThroughput(ctx context.Context, kind transport.Kind) ([]Row, error) {
	c.stopDevices() // only the relay's sessions run now
	frame, err := dataFrame()
	if err != nil {
		return nil, err
	}
	frames := int(max(c.cfg.RelayBytes/relayChunk, 1))
	size := int64(frames) * relayChunk
	mode := transport.Mode(kind)
	from, err := peer.DialSession(ctx, c.relay[0], mode)
	if err != nil {
		return nil, fmt.Errorf("session of %s: %w", c.relay[0].Device, err)
	}
	defer from.Close()
	to, err := peer.DialSession(ctx, c.relay[1], mode)
	if err != nil {
		return nil, fmt.Errorf("session of %s: %w", c.relay[1].Device, err)
	}
	defer to.Close()
	raw, err := newRawEchoStream(ctx, kind, c.dir)
	if err != nil {
		return nil, fmt.Errorf("raw baseline: %w", err)
	}
	defer raw.close()
	runs := max(c.cfg.Runs, 1)
	var zs, raws []float64
	for i := range runs {
		r, err := rawBulkOnce(ctx, raw.conn, frame, frames)
		if err != nil {
			return nil, fmt.Errorf("raw baseline: %w", err)
		}
		z, err := relayOnce(ctx, from, to, c.relay[1].Device, fmt.Sprintf("relay-%s-%d", kind, i), frame, frames)
		if err != nil {
			return nil, err
		}
		zs, raws = append(zs, mbPerSecond(size, z)), append(raws, mbPerSecond(size, r))
	}
	v, b := median(zs), median(raws)
	c.cfg.logf("relay throughput %s: %.0f MB/s (runs %.0f); raw %.0f MB/s (runs %.0f)", kind, v, zs, b, raws)
	return []Row{{Name: "relay throughput", Transport: string(kind), Value: v, Unit: "MB/s", Baseline: b, Ratio: ratio(v, b),
		Target: "report", Met: true, Runs: runs,
		Note: fmt.Sprintf("A→hub→B, %d MiB in calls of %d KiB (the most a call carries; the hub reads each body whole before passing it on), %d in flight, in %d KiB data frames, bare sessions at both ends (the hub's call relay alone); raw, alternating: the same frames over one raw %s stream",
			size>>20, wire.MaxCallBody>>10, relayCallsInFlight, relayChunk>>10, kind)}}, nil
}

func mbPerSecond(bytes int64, d time.Duration) float64 { return float64(bytes) / d.Seconds() / 1e6 }

// dataFrame is one relayChunk-byte data frame (a CBOR byte string),
// encoded once and written many times, so the sender spends next to
// nothing on making the bytes.
func dataFrame() ([]byte, error) {
	var b bytes.Buffer
	err := transport.WriteFrame(&b, make([]byte, relayChunk))
	return b.Bytes(), err
}

func writeFrames(st transport.Stream, frame []byte, n int) error {
	for range n {
		if _, err := st.Write(frame); err != nil {
			return err
		}
	}
	return st.Close()
}

// rawBulkOnce sends n copies of frame on a new stream of conn to a raw
// receiver that drops them, and returns the time from opening the stream
// until the receiver's answer.
func rawBulkOnce(ctx context.Context, conn transport.Conn, frame []byte, n int) (time.Duration, error) {
	start := time.Now()
	st, err := conn.OpenStream(ctx)
	if err != nil {
		return 0, err
	}
	defer st.Reset()
	st.SetDeadline(time.Now().Add(relayTimeout))
	if _, err := st.Write([]byte{rawDrop}); err != nil {
		return 0, err
	}
	if err := writeFrames(st, frame, n); err != nil {
		return 0, err
	}
	if _, err := io.ReadFull(st, make([]byte, 1)); err != nil {
		return 0, fmt.Errorf("no answer from the raw receiver: %w", err)
	}
	return time.Since(start), nil
}

// relayCallsInFlight is how many relay calls the relay row keeps open at
// once: a call's body is at most wire.MaxCallBody and the hub reads it
// whole before it passes it on, so an application moving bulk data by
// calls keeps a few in flight to keep both hops busy.
const relayCallsInFlight = 4

// relayOnce sends n copies of frame from one bare session through the hub
// to another, in calls of at most wire.MaxCallBody bytes each, at most
// relayCallsInFlight at once; the other end reads each call's body and
// answers CallOK. It returns the time from opening the first stream until
// the last answer.
func relayOnce(ctx context.Context, from, to *peer.Session, toDevice, id string, frame []byte, n int) (time.Duration, error) {
	ctx, cancel := context.WithTimeout(ctx, relayTimeout)
	defer cancel()
	perCall := max(wire.MaxCallBody/relayChunk, 1)
	calls := (n + perCall - 1) / perCall
	received := make(chan error, 1)
	go func() { received <- receiveRelay(ctx, to.Conn(), calls, int64(len(frame))) }()
	start := time.Now()
	sem := make(chan struct{}, relayCallsInFlight)
	errs := make(chan error, calls)
	for i := range calls {
		sem <- struct{}{}
		frames := min(perCall, n-i*perCall)
		go func() {
			defer func() { <-sem }()
			errs <- relayCall(ctx, from, toDevice, fmt.Sprintf("%s-%d", id, i), frame, frames)
		}()
	}
	var first error
	for range calls {
		if err := <-errs; err != nil && first == nil {
			first = err
			cancel()
		}
	}
	d := time.Since(start)
	if err := <-received; first == nil {
		first = err
	}
	return d, first
}

// relayCall makes one relay call carrying n copies of frame.
func relayCall(ctx context.Context, from *peer.Session, toDevice, id string, frame []byte, n int) error {
	st, err := from.Conn().OpenStream(ctx)
	if err != nil {
		return err
	}
	defer st.Reset()
	st.SetDeadline(time.Now().Add(relayTimeout))
	hdr := wire.CallHeader{ID: id, Kind: wire.CallRequest, ToDevice: toDevice, ToService: relayService, TimeoutMs: uint64(relayTimeout / time.Millisecond)}
	if err := transport.WriteFrame(st, &wire.StreamHeader{Kind: wire.StreamCall}); err != nil {
		return err
	}
	if err := transport.WriteFrame(st, &hdr); err != nil {
		return err
	}
	if err := writeFrames(st, frame, n); err != nil {
		return fmt.Errorf("send through the hub: %w", err)
	}
	var rep wire.CallReply
	if err := transport.NewFrameReader(st, maxReplyFrame).ReadFrame(&rep); err != nil {
		return fmt.Errorf("no answer through the hub: %w", err)
	}
	if rep.Status != wire.CallOK {
		return fmt.Errorf("relay to %s: %w", toDevice, &wire.CallError{Status: rep.Status, Message: rep.Message})
	}
	return nil
}

// maxReplyFrame bounds the call frames the relay row reads: a header or a
// reply, names and a message.
const maxReplyFrame = 4 << 10

// receiveRelay takes the next calls call streams the hub opens on conn,
// reads each body to the end, checks the bytes came in whole frames of
// frameLen, answers CallOK, and returns the first failure.
func receiveRelay(ctx context.Context, conn transport.Conn, calls int, frameLen int64) error {
	errs := make(chan error, calls)
	for range calls {
		st, err := conn.AcceptStream(ctx)
		if err != nil {
			return fmt.Errorf("no call stream from the hub: %w", err)
		}
		go func() { errs <- receiveRelayCall(st, frameLen) }()
	}
	var first error
	for range calls {
		if err := <-errs; err != nil && first == nil {
			first = err
		}
	}
	return first
}

func receiveRelayCall(st transport.Stream, frameLen int64) error {
	st.SetDeadline(time.Now().Add(relayTimeout))
	fr := transport.NewFrameReader(st, maxReplyFrame)
	var sh wire.StreamHeader
	var hdr wire.CallHeader
	if err := fr.ReadFrame(&sh); err != nil || sh.Kind != wire.StreamCall {
		st.Reset()
		return fmt.Errorf("the hub opened a stream of kind %d (%v), not a call", sh.Kind, err)
	}
	if err := fr.ReadFrame(&hdr); err != nil {
		st.Reset()
		return fmt.Errorf("call header from the hub: %w", err)
	}
	got, err := io.Copy(io.Discard, st)
	if err == nil && (got == 0 || got%frameLen != 0) {
		err = fmt.Errorf("%d bytes arrived, not whole frames of %d", got, frameLen)
	}
	if err != nil {
		st.Reset()
		return fmt.Errorf("relayed call %s: %w", hdr.ID, err)
	}
	if err := transport.WriteFrame(st, &wire.CallReply{}); err != nil {
		st.Reset()
		return err
	}
	return st.Close()
}
