package bench

import (
	"context"
	"errors"
	"fmt"
	"io"
	"path/filepath"
	"sync"
	"time"

	"github.com/pzone/pzone/transport"
	"github.com/pzone/pzone/zone/api"
	"github.com/pzone/pzone/zone/peer"
)

// The stream rows: byte streams between applications (docs/PROTOCOL.md
// §6.16) through the Go client at both ends, A's app dialling a service
// B's app serves with Listen: throughput through the hub and over a
// direct path against one raw hop, the time to open one against a call,
// and the hub's heap per idle open stream.

const (
	// sinkService reads a stream to its end, then answers one byte.
	sinkService = "sink"
	// streamEchoService echoes a stream.
	streamEchoService = "stream-echo"
	// idleStreamPairs pairs of devices hold the memory row's streams
	// (Config.IdleStreams): a session takes at most
	// transport.DefaultMaxIncomingStreams streams at once.
	idleStreamPairs = 4
)

// listenStreams serves name on d's application with handle, one goroutine
// a stream, until the returned stop.
func listenStreams(ctx context.Context, d *syncDevice, name string, handle func(*api.Stream)) (stop func(), err error) {
	l, err := d.client.Listen(ctx, name)
	if err != nil {
		return nil, fmt.Errorf("listen on %s/%s: %w", d.name, name, err)
	}
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			s, err := l.AcceptStream()
			if err != nil {
				return
			}
			wg.Add(1)
			go func() { defer wg.Done(); handle(s) }()
		}
	}()
	return func() { l.Close(); wg.Wait() }, nil
}

// sink reads a stream to its end and answers one byte.
func sink(s *api.Stream) {
	defer s.Close()
	if _, err := io.Copy(io.Discard, s); err == nil {
		s.Write([]byte{1})
		s.CloseWrite()
	}
}

// streamEcho echoes a stream until its end.
func streamEcho(s *api.Stream) {
	defer s.Close()
	if _, err := io.Copy(s, s); err == nil {
		s.CloseWrite()
	}
}

// streamOnce dials to from c, writes frames chunks of relayChunk bytes,
// ends its direction and waits for the sink's byte: the time from Dial.
func streamOnce(ctx context.Context, c *api.Client, to string, frames int) (time.Duration, error) {
	buf := make([]byte, relayChunk)
	start := time.Now()
	s, err := c.Dial(ctx, to)
	if err != nil {
		return 0, fmt.Errorf("dial %s: %w", to, err)
	}
	defer s.Close()
	s.SetDeadline(time.Now().Add(relayTimeout))
	for range frames {
		if _, err := s.Write(buf); err != nil {
			return 0, fmt.Errorf("stream to %s: %w", to, err)
		}
	}
	if err := s.CloseWrite(); err != nil {
		return 0, err
	}
	if _, err := io.ReadFull(s, buf[:1]); err != nil {
		return 0, fmt.Errorf("no answer from %s: %w", to, err)
	}
	return time.Since(start), nil
}

// streamThroughputRows measures streams from a to to against raw single
// hops on raw, Runs runs alternating, medians; cpu, if set, reads the
// hub's CPU time, reported per MB.
func streamThroughputRows(ctx context.Context, cfg *Config, name string, kind transport.Kind, a *syncDevice, to string, raw *rawEchoStream, cpu func() (time.Duration, error), target float64, note string) ([]Row, error) {
	frame, err := dataFrame()
	if err != nil {
		return nil, err
	}
	frames := int(max(cfg.RelayBytes/relayChunk, 1))
	size := int64(frames) * relayChunk
	runs := max(cfg.Runs, 1)
	var zs, raws []float64
	var hubCPU time.Duration
	for range runs {
		r, err := rawBulkOnce(ctx, raw.conn, frame, frames)
		if err != nil {
			return nil, fmt.Errorf("raw baseline: %w", err)
		}
		var c0, c1 time.Duration
		if cpu != nil {
			c0, _ = cpu()
		}
		z, err := streamOnce(ctx, a.client, to, frames)
		if err != nil {
			return nil, err
		}
		if cpu != nil {
			c1, _ = cpu()
			hubCPU += c1 - c0
		}
		zs, raws = append(zs, mbPerSecond(size, z)), append(raws, mbPerSecond(size, r))
	}
	v, b := median(zs), median(raws)
	if cpu != nil {
		note += fmt.Sprintf("; hub CPU %.2f ms per MB relayed", float64(hubCPU)/float64(time.Millisecond)/(float64(size*int64(runs))/1e6))
	}
	cfg.logf("%s %s: %.0f MB/s (runs %.0f); raw %.0f MB/s (runs %.0f)", name, kind, v, zs, b, raws)
	return []Row{{Name: name, Transport: string(kind), Value: v, Unit: "MB/s", Baseline: b, Ratio: ratio(v, b),
		Target: fmt.Sprintf("≥ %.1f×", target), Met: ratio(v, b) >= target, Runs: runs,
		Note: fmt.Sprintf("%d MiB from A's app to B's (Dial, Listen), %s; raw, alternating: the same bytes in %d KiB frames over one raw %s stream, one hop", size>>20, note, relayChunk>>10, kind)}}, nil
}

// streamThroughput: A's app to B's through the hub.
func (c *callBench) streamThroughput(ctx context.Context, kind transport.Kind) ([]Row, error) {
	raw, err := c.startWithRaw(ctx, kind)
	if err != nil {
		return nil, err
	}
	defer raw.close()
	stop, err := listenStreams(ctx, c.b, sinkService, sink)
	if err != nil {
		return nil, err
	}
	defer stop()
	hub := c.hub.proc.Process.Pid
	return streamThroughputRows(ctx, c.cfg, "stream throughput via the hub", kind, c.a, c.b.name+"/"+sinkService, raw,
		func() (time.Duration, error) { return procCPU(hub) }, targetStreamHub, "A → hub → B")
}

// streamSetup: from Dial until the first byte comes back echoed, against
// a call's round trip to B's echo, alternating; p50s.
func (c *callBench) streamSetup(ctx context.Context, kind transport.Kind) ([]Row, error) {
	if err := c.startDevices(ctx, kind); err != nil {
		return nil, err
	}
	stop, err := listenStreams(ctx, c.b, streamEchoService, streamEcho)
	if err != nil {
		return nil, err
	}
	defer stop()
	to := c.b.name + "/" + streamEchoService
	arg := jsonString(callArgSize)
	one := make([]byte, 1)
	n, warm := c.cfg.CallSamples, max(c.cfg.CallSamples/10, 5)
	setups, calls := make([]float64, 0, n), make([]float64, 0, n)
	for i := range warm + n {
		start := time.Now()
		s, err := c.a.client.Dial(ctx, to)
		if err != nil {
			return nil, err
		}
		if _, err := s.Write(one); err != nil {
			s.Close()
			return nil, err
		}
		if _, err := io.ReadFull(s, one); err != nil {
			s.Close()
			return nil, err
		}
		d := ms(time.Since(start))
		s.CloseWrite()
		io.Copy(io.Discard, s)
		s.Close()
		start = time.Now()
		if err := c.call(ctx, c.remote(), arg); err != nil {
			return nil, err
		}
		if i >= warm {
			setups, calls = append(setups, d), append(calls, ms(time.Since(start)))
		}
	}
	p50, c50 := percentile(setups, .5), percentile(calls, .5)
	c.cfg.logf("stream setup %s: p50 %.3f ms; call p50 %.3f ms", kind, p50, c50)
	return []Row{{Name: "stream setup p50", Transport: string(kind), Value: p50, Unit: "ms", Baseline: c50, Ratio: ratio(p50, c50),
		Target: fmt.Sprintf("≤ %.1f×", targetStreamSetup), Met: ratio(p50, c50) <= targetStreamSetup, Runs: n,
		Note: fmt.Sprintf("A's app: Dial B/%s, write a byte, read it back echoed by B's app; baseline, alternating: a %d-byte call A → hub → B/echo and back", streamEchoService, callArgSize)}}, nil
}

// idleStreamMemory: the hub's heap per open, idle stream: idleStreams
// streams held between idleStreamPairs pairs of devices, the hub's heap
// (after a GC) before and after they open.
func (c *callBench) idleStreamMemory(ctx context.Context, kind transport.Kind) (_ []Row, err error) {
	c.stopDevices()
	if c.idle == nil {
		if c.idle, err = c.hub.pairDevices(ctx, "idle", filepath.Join(c.dir, "idle"), 2*idleStreamPairs); err != nil {
			return nil, err
		}
	}
	devs, err := runDevices(ctx, kind, c.idle)
	if err != nil {
		return nil, err
	}
	defer func() { err = errors.Join(err, devs.stop()) }()
	idleStreams := c.cfg.IdleStreams
	held := make(chan *api.Stream, idleStreams)
	var stops []func()
	defer func() {
		for _, s := range stops {
			s()
		}
	}()
	for _, d := range c.idle[idleStreamPairs:] {
		stop, err := listenStreams(ctx, d, sinkService, func(s *api.Stream) { held <- s })
		if err != nil {
			return nil, err
		}
		stops = append(stops, stop)
	}
	m0, err := settledMemstats(ctx, c.hub.client)
	if err != nil {
		return nil, err
	}
	var opened []*api.Stream
	defer func() {
		for _, s := range opened {
			s.Close()
		}
		for range len(opened) {
			(<-held).Close()
		}
	}()
	for i := range idleStreams {
		from, to := c.idle[i%idleStreamPairs], c.idle[idleStreamPairs+i%idleStreamPairs]
		s, err := from.client.Dial(ctx, to.name+"/"+sinkService)
		if err != nil {
			return nil, fmt.Errorf("stream %d of %d: %w", i+1, idleStreams, err)
		}
		opened = append(opened, s)
	}
	m1, err := memstats(ctx, c.hub.client)
	if err != nil {
		return nil, err
	}
	per := (float64(m1.HeapAlloc) - float64(m0.HeapAlloc)) / float64(idleStreams) / 1024
	c.cfg.logf("idle streams %s: %.2f KiB of hub heap each (%d goroutines with them, %d before)", kind, per, m1.Goroutines, m0.Goroutines)
	return []Row{{Name: "idle stream hub heap", Transport: string(kind), Value: per, Unit: "KiB", Target: fmt.Sprintf("≤ %.0f KiB", targetIdleStream),
		Met: per <= targetIdleStream, Runs: 1,
		Note: fmt.Sprintf("%d streams open and idle through the hub between %d pairs of devices; the hub's heap after a GC, before and after; %d goroutines before, %d after (their stacks are not heap)",
			idleStreams, idleStreamPairs, m0.Goroutines, m1.Goroutines)}}, nil
}

// streamThroughput: A's app to B's over their direct connection.
func (d *directBench) streamThroughput(ctx context.Context, kind transport.Kind) (_ []Row, err error) {
	direct := startPeers(ctx, peer.Config{Mode: transport.Mode(kind), DirectListen: "127.0.0.1:0"}, []*syncDevice{d.a, d.b})
	defer func() { err = errors.Join(err, direct.stop()) }()
	if err := waitSynced(ctx, []*syncDevice{d.a, d.b}); err != nil {
		return nil, err
	}
	stop, err := listenStreams(ctx, d.b, sinkService, sink)
	if err != nil {
		return nil, err
	}
	defer stop()
	if err := d.waitDirect(ctx, d.b.name+"/"+sinkService, func(to string) error { _, err := streamOnce(ctx, d.a.client, to, 1); return err }); err != nil {
		return nil, err
	}
	before, err := waitPeer(ctx, d.a, func(*api.PeerStatus) bool { return true })
	if err != nil {
		return nil, err
	}
	raw, err := newRawEchoStream(ctx, kind, d.dir)
	if err != nil {
		return nil, fmt.Errorf("raw baseline: %w", err)
	}
	defer raw.close()
	rows, err := streamThroughputRows(ctx, d.cfg, "stream throughput direct", kind, d.a, d.b.name+"/"+sinkService, raw, nil, targetStreamDirect, "over A and B's direct connection")
	if err != nil {
		return nil, err
	}
	after, err := waitPeer(ctx, d.a, func(*api.PeerStatus) bool { return true })
	if err != nil {
		return nil, err
	}
	if n := after.Direct.CallsHub - before.Direct.CallsHub; n != 0 {
		return nil, fmt.Errorf("%d of the direct stream row's streams went through the hub", n)
	}
	return rows, nil
}
