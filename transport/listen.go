package transport

import (
	"context"
	"errors"
	"fmt"
	"net"
	"slices"
	"sync"
)

// listenBothAttempts is how many ports ListenBoth tries when asked for any
// free port: the TCP port the kernel picks is taken for UDP only rarely,
// so twenty failures in a row mean something else is wrong.
const listenBothAttempts = 20

// ListenBoth binds TCP and UDP on the same port (for port 0, a port free on
// both, retrying) and accepts from both. kinds limits which are bound
// (none given: both). Addr is the TCP address when TCP is bound.
func ListenBoth(addr string, cfg Config, kinds ...Kind) (Listener, error) {
	cfg, err := cfg.resolve()
	if err != nil {
		return nil, err
	}
	wantTCP := len(kinds) == 0 || slices.Contains(kinds, KindTCP)
	wantQUIC := len(kinds) == 0 || slices.Contains(kinds, KindQUIC)
	for _, k := range kinds {
		if k != KindTCP && k != KindQUIC {
			return nil, fmt.Errorf("listen %s: unknown transport kind %q", addr, k)
		}
	}
	switch {
	case !wantQUIC:
		return ListenTCP(addr, cfg)
	case !wantTCP:
		return ListenQUIC(addr, cfg)
	}

	_, port, err := net.SplitHostPort(addr)
	if err != nil {
		return nil, fmt.Errorf("listen %s: %w", addr, err)
	}
	attempts := 1
	if port == "0" || port == "" {
		attempts = listenBothAttempts
	}
	lc := net.ListenConfig{KeepAlive: disableTCPKeepAlive}
	for range attempts {
		tln, err := lc.Listen(context.Background(), "tcp", addr)
		if err != nil {
			return nil, fmt.Errorf("listen tcp %s: %w", addr, err)
		}
		// The very address TCP got, so that a host name resolving to
		// several addresses cannot put UDP on a different one.
		taddr := tln.Addr().(*net.TCPAddr)
		p := taddr.Port
		uaddr := &net.UDPAddr{IP: taddr.IP, Port: p, Zone: taddr.Zone}
		udp, uerr := net.ListenUDP("udp", uaddr)
		if uerr != nil {
			tln.Close()
			err = fmt.Errorf("listen udp %s: %w", uaddr, uerr)
			if attempts > 1 {
				cfg.debug("transport: udp port taken, trying another", "port", p, "err", uerr)
				continue
			}
			return nil, err
		}
		ql, err := newQUICListener(udp, cfg)
		if err != nil {
			tln.Close()
			udp.Close()
			return nil, fmt.Errorf("listen quic %s: %w", uaddr, err)
		}
		return &multiListener{subs: []Listener{newTCPListener(tln, cfg), ql}}, nil
	}
	return nil, fmt.Errorf("listen %s: no port free for both tcp and udp after %d attempts", addr, attempts)
}

// multiListener fans in connections from several listeners. One goroutine
// per listener feeds Accept; they start with the first Accept and end on
// Close.
type multiListener struct {
	subs []Listener // subs[0] provides Addr

	ctx     context.Context // cancelled by Close
	cancel  context.CancelFunc
	results chan acceptResult
	wg      sync.WaitGroup

	mu      sync.Mutex
	started bool
	closed  bool
}

type acceptResult struct {
	c   Conn
	err error
}

func (m *multiListener) Accept(ctx context.Context) (Conn, error) {
	m.mu.Lock()
	if m.closed {
		m.mu.Unlock()
		return nil, ErrClosed
	}
	if !m.started {
		m.started = true
		m.ctx, m.cancel = context.WithCancel(context.Background())
		m.results = make(chan acceptResult)
		for _, l := range m.subs {
			m.wg.Add(1)
			go m.feed(l)
		}
	}
	m.mu.Unlock()

	select {
	case r := <-m.results:
		return r.c, r.err
	case <-ctx.Done():
		return nil, ctx.Err()
	case <-m.ctx.Done():
		return nil, ErrClosed
	}
}

// feed passes l's connections to Accept. A listener that fails for a
// reason other than Close reports the error once and stops; the others
// carry on.
func (m *multiListener) feed(l Listener) {
	defer m.wg.Done()
	for {
		c, err := l.Accept(m.ctx)
		if err != nil {
			if m.ctx.Err() != nil {
				return
			}
			err = fmt.Errorf("accept on %s: %w", l.Addr(), err)
		}
		select {
		case m.results <- acceptResult{c, err}:
			if err != nil {
				return
			}
		case <-m.ctx.Done():
			if c != nil {
				c.CloseWithError(closeCodeListener, "listener closed")
			}
			return
		}
	}
}

func (m *multiListener) Addr() net.Addr { return m.subs[0].Addr() }

// Close closes every listener (and with them the connections they
// accepted) and waits for the fan-in goroutines to end.
func (m *multiListener) Close() error {
	m.mu.Lock()
	if m.closed {
		m.mu.Unlock()
		return nil
	}
	m.closed = true
	started := m.started
	m.mu.Unlock()

	if started {
		m.cancel()
	}
	var errs []error
	for _, l := range m.subs {
		errs = append(errs, l.Close())
	}
	m.wg.Wait()
	return errors.Join(errs...)
}

// connSet tracks the connections a listener accepted so that closing the
// listener closes them.
type connSet struct {
	mu      sync.Mutex
	closed  bool
	conns   map[Conn]struct{}
	pruneAt int
}

// add records c, or reports false once the set is closed.
func (s *connSet) add(c Conn) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return false
	}
	if s.conns == nil {
		s.conns = make(map[Conn]struct{})
	}
	// Prune finished connections only when the set has doubled since the
	// last prune: amortised O(1) per add, where a scan on every add made a
	// storm of 10,000 reconnects quadratic.
	if len(s.conns) >= s.pruneAt {
		for old := range s.conns {
			select {
			case <-old.Done():
				delete(s.conns, old)
			default:
			}
		}
		s.pruneAt = max(minPruneAt, 2*len(s.conns))
	}
	s.conns[c] = struct{}{}
	return true
}

// minPruneAt is the set size below which finished connections are left
// until the listener closes.
const minPruneAt = 64

// closeAll closes every recorded connection; later adds fail.
func (s *connSet) closeAll() {
	s.mu.Lock()
	s.closed = true
	conns := s.conns
	s.conns = nil
	s.mu.Unlock()
	for c := range conns {
		c.CloseWithError(closeCodeListener, "listener closed")
	}
}
