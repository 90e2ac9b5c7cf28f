package bench

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"path/filepath"
	"strconv"
	"sync"
	"time"

	"github.com/pzone/pzone/transport"
	"github.com/pzone/pzone/wakeup"
	"github.com/pzone/pzone/zone/api"
	"github.com/pzone/pzone/zone/hub"
	"github.com/pzone/pzone/zone/peer"
)

// The wakeup rows: sleeping devices (docs/PROTOCOL.md, "Wakeup and
// delivery later"). The hub runs in this process, not as pzh serve,
// because the rows time its pings: its UDP waker is replaced by a timed
// one. The devices run in this process too (peer.Run, as pzp run would run
// them): one sender, whose application sends messages with a time to
// live, and sleepers, which sleep when idle and whose applications take
// the messages once a ping has woken them.

const (
	// wakeService is what the sleepers' applications serve: it takes
	// messages.
	wakeService = "inbox"
	// wakeSleepAfter is the sleepers' idle time before sleep: short, so
	// that a device is soon asleep again, and well above
	// peer.MinSleepAfter, so that a delivery completes before it.
	wakeSleepAfter = 50 * time.Millisecond
	// wakeRate is the hub's cap on pings per device per minute: far above
	// what the rows send, so that it never holds a ping back.
	wakeRate = 1000
	// wakeDevices sleep and take turns, so that the next one is usually
	// asleep already when its message is sent, rather than each message
	// waiting wakeSleepAfter for one device to doze off.
	wakeDevices = 4
	// wakeTTL is the messages' time to live: far longer than any wake-up.
	wakeTTL = time.Minute
	// wakeWait bounds waiting for one device to fall asleep or one
	// message to arrive: a failure bound, generous, so that a slow
	// machine reports a slow figure rather than fails.
	wakeWait = 30 * time.Second
	// rawDatagramWait bounds the raw baseline's wait for its datagram,
	// which over loopback arrives in microseconds.
	rawDatagramWait = 5 * time.Second
	// ipv4UDPHeaders and ipv6UDPHeaders are what a datagram costs on the
	// wire on top of its payload: the IP header and the 8-byte UDP one.
	ipv4UDPHeaders, ipv6UDPHeaders = 20 + 8, 40 + 8
	// targetPingSize is "a few dozen bytes".
	targetPingSize = 64
	// targetWakeRatio bounds wake to delivery against its raw floor, a
	// datagram and one round trip on a fresh connection. On that
	// connection pzone adds the hello and welcome, the wake registration,
	// the sync resume, and the hub's courier opening a stream and waiting
	// for the device's acknowledgement, with the device handing the
	// message to its application over its local API: a few more round
	// trips and some JSON, about twice the floor over loopback here. 4×
	// leaves room for a shared machine's noise, and still flags a path
	// that gains another handshake or waits on a timer.
	targetWakeRatio = 4.0
)

// wakeBench is the zone of the wakeup rows.
type wakeBench struct {
	cfg      *Config
	dir      string
	hub      *syncHub // runs in this process
	stopHub  func()
	waker    *timedWaker
	sender   *syncDevice
	sleepers []*syncDevice
}

func newWakeBench(ctx context.Context, cfg *Config) (_ *wakeBench, err error) {
	w := &wakeBench{cfg: cfg, dir: filepath.Join(cfg.Work, "wakeup")}
	if w.waker, err = newTimedWaker(); err != nil {
		return nil, err
	}
	defer func() {
		if err != nil {
			w.close()
		}
	}()
	if w.hub, err = newZone(cfg, filepath.Join(w.dir, "hub"), 0); err != nil {
		return nil, err
	}
	if w.stopHub, err = runHub(ctx, hub.Config{DataDir: w.hub.dir, Listen: w.hub.addr, WakeRate: wakeRate,
		Wakers: []wakeup.Waker{w.waker}}); err != nil {
		return nil, err
	}
	senders, err := w.hub.pairDevices(ctx, "sender", filepath.Join(w.dir, "sender"), 1)
	if err != nil {
		return nil, err
	}
	w.sender = senders[0]
	// No more sleepers than messages: each sleeps once at least.
	n := min(wakeDevices, cfg.WakeSamples+wakeWarmup(cfg))
	if w.sleepers, err = w.hub.pairDevices(ctx, "sleeper", filepath.Join(w.dir, "sleepers"), n); err != nil {
		return nil, err
	}
	return w, nil
}

func wakeWarmup(cfg *Config) int { return max(cfg.WakeSamples/10, 2) }

func (w *wakeBench) close() {
	if w.stopHub != nil {
		w.stopHub()
	}
	w.waker.conn.Close()
}

// timedWaker is the hub's UDP waker, timed: it notes when the hub handed
// it each ping, and the ping's size, then sends it. It sends from a
// socket of its own, not from the hub's QUIC listener socket as the
// built-in waker does (package zone keeps that socket to itself); over
// loopback a device takes a ping from either alike.
type timedWaker struct {
	udp  wakeup.UDPWaker
	conn *net.UDPConn
	mu   sync.Mutex
	sent []sentPing
}

type sentPing struct {
	endpoint string
	at       time.Time
	size     int
}

func newTimedWaker() (*timedWaker, error) {
	conn, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		return nil, fmt.Errorf("wake socket: %w", err)
	}
	return &timedWaker{udp: wakeup.UDPWaker{Conn: conn}, conn: conn}, nil
}

// Method replaces the built-in UDP waker.
func (t *timedWaker) Method() string { return wakeup.MethodUDP }

// Wake notes the ping, then sends it.
func (t *timedWaker) Wake(ctx context.Context, endpoint string, ping []byte) error {
	at := time.Now()
	t.mu.Lock()
	t.sent = append(t.sent, sentPing{endpoint: endpoint, at: at, size: len(ping)})
	t.mu.Unlock()
	return t.udp.Wake(ctx, endpoint, ping)
}

// count is how many pings were sent so far.
func (t *timedWaker) count() int {
	t.mu.Lock()
	defer t.mu.Unlock()
	return len(t.sent)
}

// since lists the pings sent after the first n.
func (t *timedWaker) since(n int) []sentPing {
	t.mu.Lock()
	defer t.mu.Unlock()
	return append([]sentPing(nil), t.sent[n:]...)
}

// pinged is when the first ping to endpoint at or after from was sent; ok
// is false if none was.
func (t *timedWaker) pinged(endpoint string, from time.Time) (first time.Time, ok bool) {
	t.mu.Lock()
	defer t.mu.Unlock()
	for _, p := range t.sent {
		if p.endpoint == endpoint && !p.at.Before(from) {
			return p.at, true
		}
	}
	return time.Time{}, false
}

// arrival is a message an application took, and when.
type arrival struct {
	body string
	at   time.Time
}

// asleep waits until d is asleep, registered for wakeup, and the hub
// knows it is; it returns d's status.
func (w *wakeBench) asleep(ctx context.Context, d *syncDevice) (*api.PeerStatus, error) {
	ctx, cancel := context.WithTimeout(ctx, wakeWait)
	defer cancel()
	st, err := waitPeer(ctx, d, func(st *api.PeerStatus) bool {
		return st.State == "asleep" && st.Wake != nil && st.Wake.Endpoint != "" && st.Wake.Asleep != nil
	})
	if err != nil {
		if st != nil && ctx.Err() != nil {
			return nil, fmt.Errorf("device %s not asleep after %v: %s, last error %q", d.name, wakeWait, st.State, st.LastError)
		}
		return nil, err
	}
	var ver uint64
	for {
		var v api.DevicesView
		if err := w.hub.client.Do(ctx, http.MethodGet, fmt.Sprintf("/v1/devices?wait=%d&timeout=5s", ver), nil, &v); err != nil {
			return nil, fmt.Errorf("device %s asleep, but the hub: %w", d.name, err)
		}
		for _, dv := range v.Devices {
			if dv.Name == d.name && dv.State == "asleep" {
				return st, nil
			}
		}
		ver = v.Version
	}
}

// rows: the wake ping's size; how long a message sent with a time to live
// to a sleeping device takes from the hub's ping until the device's
// application has it, p50 and p99, against one datagram, a fresh raw
// handshake and one raw echo round trip, measured alternating; and what
// the sleeping devices sent meanwhile.
func (w *wakeBench) rows(ctx context.Context, kind transport.Kind) ([]Row, error) {
	n, warm := w.cfg.WakeSamples, wakeWarmup(w.cfg)
	senders, err := runDevices(ctx, kind, []*syncDevice{w.sender})
	if err != nil {
		return nil, err
	}
	defer senders.stop()
	sleepers := startPeers(ctx, peer.Config{Mode: transport.Mode(kind), SleepAfter: wakeSleepAfter, WakeListen: "127.0.0.1:0"}, w.sleepers)
	defer sleepers.stop()
	for _, d := range w.sleepers {
		if _, err := w.asleep(ctx, d); err != nil {
			return nil, err
		}
	}
	arrivals := make(chan arrival, len(w.sleepers))
	take := func(ctx context.Context, ev api.Event) (any, error) {
		if ev.Type == "message" {
			a := arrival{body: string(ev.Body), at: time.Now()}
			select {
			case arrivals <- a:
			case <-ctx.Done():
			}
		}
		return nil, nil
	}
	apps, err := serveApps(ctx, w.sleepers, api.ServiceInfo{Name: wakeService, Description: "takes messages"}, take)
	if err != nil {
		return nil, err
	}
	defer apps.stop()
	raw, err := newRawWake(kind, w.dir)
	if err != nil {
		return nil, fmt.Errorf("raw baseline: %w", err)
	}
	defer raw.close()

	pings0 := w.waker.count()
	// first is each sleeper's wake status before its first message: the
	// asleep rows count from there.
	first := map[string]*api.PeerWakeStatus{}
	var asleepFor time.Duration
	lat, raws := make([]float64, 0, n), make([]float64, 0, n)
	for i := range warm + n {
		d := w.sleepers[i%len(w.sleepers)]
		st, err := w.asleep(ctx, d)
		if err != nil {
			return nil, err
		}
		if first[d.name] == nil {
			first[d.name] = st.Wake
		}
		r, err := raw.once(ctx)
		if err != nil {
			return nil, fmt.Errorf("raw baseline: %w", err)
		}
		body := strconv.Itoa(i)
		sent := time.Now()
		res, err := w.sender.client.SendWith(ctx, api.CallRequestBody{To: d.name + "/" + wakeService,
			Body: []byte(body), TTLMs: wakeTTL.Milliseconds()})
		if err != nil {
			return nil, fmt.Errorf("send to %s: %w", d.name, err)
		}
		if !res.Queued {
			return nil, fmt.Errorf("send to %s, asleep: delivered at once, not queued", d.name)
		}
		got, err := awaitArrival(ctx, arrivals, body)
		if err != nil {
			return nil, fmt.Errorf("message to %s: %w", d.name, err)
		}
		ep := st.Wake.Endpoint
		pinged, ok := w.waker.pinged(ep, sent)
		if !ok {
			return nil, fmt.Errorf("message to %s arrived, but no ping to %s was sent", d.name, ep)
		}
		asleepFor += pinged.Sub(*st.Wake.Asleep)
		if i >= warm {
			lat, raws = append(lat, ms(got.Sub(pinged))), append(raws, ms(r))
		}
	}
	// What the sleepers sent while asleep, in the sleeps the messages
	// ended: each one's count is updated as it wakes, before delivery.
	var bytesAsleep, pingWakes, localWakes uint64
	for _, d := range w.sleepers {
		f := first[d.name]
		if f == nil {
			continue
		}
		st, err := peerStatus(ctx, d)
		if err != nil {
			return nil, err
		}
		if st.Wake == nil {
			return nil, fmt.Errorf("device %s reports no wake status", d.name)
		}
		bytesAsleep += st.Wake.BytesAsleep - f.BytesAsleep
		pingWakes += st.Wake.PingWakes - f.PingWakes
		localWakes += st.Wake.LocalWakes - f.LocalWakes
	}
	pings := w.waker.since(pings0)
	minSize, maxSize := wakeup.PingSize, 0
	for _, p := range pings {
		minSize, maxSize = min(minSize, p.size), max(maxSize, p.size)
	}
	if maxSize == 0 {
		return nil, errors.New("no ping was sent")
	}
	p50, p99 := percentile(lat, .5), percentile(lat, .99)
	r50, r99 := percentile(raws, .5), percentile(raws, .99)
	perMin := 0.0
	if asleepFor > 0 {
		perMin = float64(bytesAsleep) / asleepFor.Minutes()
	}
	w.cfg.logf("wakeup %s: wake to delivery p50 %.3f ms, p99 %.3f ms; raw p50 %.3f ms, p99 %.3f ms; %d pings for %d messages, pings %d-%d B; %d ping wakes, %d local; %d B sent in %.1f s asleep",
		kind, p50, p99, r50, r99, len(pings), warm+n, minSize, maxSize, pingWakes, localWakes, bytesAsleep, asleepFor.Seconds())
	sizeNote := fmt.Sprintf("the sealed ping as the hub hands it to its waker; %d B on the wire over IPv4, %d B over IPv6; %d pings",
		maxSize+ipv4UDPHeaders, maxSize+ipv6UDPHeaders, len(pings))
	if minSize != maxSize {
		sizeNote += fmt.Sprintf(", from %d B", minSize)
	}
	note := fmt.Sprintf("ping → reconnect (%s handshake, hello, sync resume) → the queued message delivered to the app: from the hub handing the ping to its waker "+
		"until the sleeping device's app has the message; %d messages one at a time, sent with a time to live from an app on another device to %d devices taking turns (asleep after %v idle); "+
		"%d pings for %d messages; pings sent from a loopback socket of the benchmark's, not the hub's listener socket; "+
		"raw, alternating: one %d-byte UDP datagram to a listening socket + a fresh mutual-TLS %s handshake + one %d-byte echo round trip on a new stream",
		kind, n, len(w.sleepers), wakeSleepAfter, len(pings), warm+n, wakeup.PingSize, kind, echoSize)
	asleepNote := fmt.Sprintf("bytes the wake socket sent while asleep, over %d sleeps (%.1f s asleep in all): no connection, nothing sent; awake-but-idle traffic is the idle keepalive row", pingWakes+localWakes, asleepFor.Seconds())
	if localWakes > 0 {
		asleepNote += fmt.Sprintf("; %d sleeps ended without a ping, their time not counted", localWakes)
	}
	return []Row{
		{Name: "wake ping size", Transport: string(kind), Value: float64(maxSize), Unit: "B",
			Target: fmt.Sprintf("a few dozen bytes (≤ %d B)", targetPingSize), Met: maxSize <= targetPingSize, Runs: len(pings), Note: sizeNote},
		{Name: "wake to delivery p50", Transport: string(kind), Value: p50, Unit: "ms", Baseline: r50, Ratio: ratio(p50, r50),
			Target: fmt.Sprintf("≤ %.0f×", targetWakeRatio), Met: ratio(p50, r50) <= targetWakeRatio, Runs: n, Note: note},
		{Name: "wake to delivery p99", Transport: string(kind), Value: p99, Unit: "ms", Baseline: r99, Ratio: ratio(p99, r99),
			Target: fmt.Sprintf("≤ %.0f×", targetWakeRatio), Met: ratio(p99, r99) <= targetWakeRatio, Runs: n, Note: note},
		{Name: "idle traffic asleep", Transport: string(kind), Value: perMin, Unit: "B/min", Target: "0 B/min", Met: bytesAsleep == 0,
			Runs: int(pingWakes + localWakes), Note: asleepNote},
	}, nil
}

// awaitArrival waits for the message body among arrivals; others (a
// queued message can, rarely, arrive twice) are skipped.
func awaitArrival(ctx context.Context, arrivals <-chan arrival, body string) (time.Time, error) {
	t := time.NewTimer(wakeWait)
	defer t.Stop()
	for {
		select {
		case a := <-arrivals:
			if a.body == body {
				return a.at, nil
			}
		case <-t.C:
			return time.Time{}, fmt.Errorf("not delivered within %v", wakeWait)
		case <-ctx.Done():
			return time.Time{}, ctx.Err()
		}
	}
}

// rawWake is the floor of waking a device and handing it a message: one
// datagram of a ping's size from one loopback socket to another, then a
// fresh mutual-TLS handshake with an in-process raw server and one
// echoSize-byte round trip on a new stream.
type rawWake struct {
	srv       *rawServer
	addr      string
	kind      transport.Kind
	ccfg      transport.Config
	from, to  *net.UDPConn
	ping, buf []byte
}

func newRawWake(kind transport.Kind, dir string) (_ *rawWake, err error) {
	r := &rawWake{kind: kind, ping: make([]byte, wakeup.PingSize), buf: make([]byte, 2*wakeup.PingSize)}
	defer func() {
		if err != nil {
			r.close()
		}
	}()
	loopback := &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)}
	if r.from, err = net.ListenUDP("udp", loopback); err != nil {
		return nil, err
	}
	if r.to, err = net.ListenUDP("udp", loopback); err != nil {
		return nil, err
	}
	r.srv, r.addr, r.ccfg, err = startRawLocal(kind, rawStreams(dir))
	return r, err
}

// once times one datagram, one handshake and one round trip.
func (r *rawWake) once(ctx context.Context) (time.Duration, error) {
	start := time.Now()
	if _, err := r.from.WriteTo(r.ping, r.to.LocalAddr()); err != nil {
		return 0, err
	}
	r.to.SetReadDeadline(time.Now().Add(rawDatagramWait))
	if _, _, err := r.to.ReadFrom(r.buf); err != nil {
		return 0, fmt.Errorf("datagram: %w", err)
	}
	e, err := dialRawEcho(ctx, r.addr, r.kind, r.ccfg)
	if err != nil {
		return 0, err
	}
	defer e.close()
	if err := e.round(); err != nil {
		return 0, err
	}
	return time.Since(start), nil
}

func (r *rawWake) close() {
	for _, c := range []*net.UDPConn{r.from, r.to} {
		if c != nil {
			c.Close()
		}
	}
	if r.srv != nil {
		r.srv.close()
	}
}
