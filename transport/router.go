package transport

import (
	"context"
	"crypto/tls"
	"errors"
	"net"
	"strings"
	"sync"
)

// Router shares one listener among several servers, each reached by its
// own TLS server names (SNI): a provider's hubs, one per zone. The name
// picks the server's TLS configuration in the handshake, so a client
// authenticates against that server's certificates and no other; after
// the handshake the connection goes to that server's Route, whose Accept
// returns it. Nothing of a server is read or sent for a name it did not
// register.
//
// A name no route has gets the listener's own configuration (Config.TLS
// of ListenRouted): its certificate is one a pinning client refuses, and a
// connection that completes a handshake with it anyway is closed.
type Router struct {
	ln Listener
	// resolve, if set, names the route of a server name that is not
	// registered itself (a provider's short-code names).
	resolve func(hello *tls.ClientHelloInfo) string
	log     Logger

	mu     sync.RWMutex
	routes map[string]*Route
}

// RouteQueue is how many handshaken connections wait for one route's
// Accept before more are refused: a server that stops accepting must
// not hold up the others.
const RouteQueue = 256

// CodeUnrouted is the close code of a connection whose server name no
// route has.
const CodeUnrouted = 0x1001

// ListenRouted listens like ListenBoth and routes by server name. cfg.TLS
// serves names no route has. resolve, if not nil, maps a server name that
// is not a route's own to the name of the route that serves it ("" for
// none).
func ListenRouted(addr string, cfg Config, resolve func(*tls.ClientHelloInfo) string, kinds ...Kind) (*Router, error) {
	if cfg.TLS == nil {
		return nil, errors.New("transport: ListenRouted needs Config.TLS for unknown names")
	}
	r := &Router{resolve: resolve, log: cfg.Logger, routes: map[string]*Route{}}
	fallback := cfg.TLS.Clone()
	base := cfg.TLS.Clone()
	base.GetConfigForClient = func(hello *tls.ClientHelloInfo) (*tls.Config, error) {
		rt := r.lookup(hello)
		if rt == nil {
			return fallback, nil
		}
		if get := rt.tls.GetConfigForClient; get != nil {
			return get(hello)
		}
		return rt.tls, nil
	}
	cfg.TLS = base
	ln, err := ListenBoth(addr, cfg, kinds...)
	if err != nil {
		return nil, err
	}
	r.ln = ln
	return r, nil
}

func (r *Router) lookup(hello *tls.ClientHelloInfo) *Route {
	name := strings.ToLower(hello.ServerName)
	r.mu.RLock()
	rt := r.routes[name]
	r.mu.RUnlock()
	if rt == nil && r.resolve != nil {
		if alias := r.resolve(hello); alias != "" {
			r.mu.RLock()
			rt = r.routes[strings.ToLower(alias)]
			r.mu.RUnlock()
		}
	}
	return rt
}

// Addr is the listener's address.
func (r *Router) Addr() net.Addr { return r.ln.Addr() }

// Datagrams is the listener's UDP socket, if it has one.
func (r *Router) Datagrams() DatagramWriter { return Datagrams(r.ln) }

// Route registers a server for name. conf is its TLS configuration (its
// GetConfigForClient, if set, is asked per handshake, as a listener
// would). Close the route to take the server off.
func (r *Router) Route(name string, conf *tls.Config) (*Route, error) {
	name = strings.ToLower(name)
	if conf == nil {
		return nil, errors.New("transport: route " + name + " has no TLS configuration")
	}
	rt := &Route{r: r, name: name, tls: tls13(conf), conns: make(chan Conn, RouteQueue), closed: make(chan struct{})}
	if get := conf.GetConfigForClient; get != nil {
		rt.tls.GetConfigForClient = func(hello *tls.ClientHelloInfo) (*tls.Config, error) {
			sub, err := get(hello)
			if sub == nil || err != nil {
				return sub, err
			}
			return tls13(sub), nil
		}
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if _, taken := r.routes[name]; taken {
		return nil, errors.New("transport: a server is routed by " + name + " already")
	}
	r.routes[name] = rt
	return rt, nil
}

// Run accepts connections and hands each to its route, until ctx ends or
// the listener fails.
func (r *Router) Run(ctx context.Context) error {
	for {
		c, err := r.ln.Accept(ctx)
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			return err
		}
		cs := c.ConnectionState()
		rt := r.lookup(&tls.ClientHelloInfo{ServerName: cs.ServerName, SupportedProtos: []string{cs.NegotiatedProtocol}})
		if rt == nil {
			if r.log != nil {
				r.log.Debug("connection for no routed name closed", "server_name", cs.ServerName, "remote", c.RemoteAddr().String())
			}
			c.CloseWithError(CodeUnrouted, "no server here by the name "+cs.ServerName)
			continue
		}
		rt.deliver(c)
	}
}

// Close closes the listener, and with it every connection.
func (r *Router) Close() error { return r.ln.Close() }

// Route is one server's share of a Router: a Listener of the
// connections for its name.
type Route struct {
	r      *Router
	name   string
	tls    *tls.Config
	conns  chan Conn
	once   sync.Once
	closed chan struct{}
	mu     sync.Mutex // orders deliver with Close
	done   bool
}

func (rt *Route) deliver(c Conn) {
	rt.mu.Lock()
	defer rt.mu.Unlock()
	if rt.done {
		c.CloseWithError(CodeUnrouted, "server "+rt.name+" is stopping")
		return
	}
	select {
	case rt.conns <- c:
	default:
		c.CloseWithError(CodeUnrouted, "server "+rt.name+" is busy; try again")
	}
}

// Accept returns the next connection for the route's name.
func (rt *Route) Accept(ctx context.Context) (Conn, error) {
	select {
	case c := <-rt.conns:
		return c, nil
	case <-rt.closed:
		return nil, net.ErrClosed
	case <-ctx.Done():
		return nil, ctx.Err()
	}
}

// Addr is the shared listener's address.
func (rt *Route) Addr() net.Addr { return rt.r.Addr() }

// Datagrams is the shared listener's UDP socket, if it has one.
func (rt *Route) Datagrams() DatagramWriter { return rt.r.Datagrams() }

// Close takes the route off the router and closes the connections that
// wait for Accept. Unlike a listener's, it leaves the connections Accept
// returned to their server, which closes them itself.
func (rt *Route) Close() error {
	rt.once.Do(func() {
		rt.r.mu.Lock()
		if rt.r.routes[rt.name] == rt {
			delete(rt.r.routes, rt.name)
		}
		rt.r.mu.Unlock()
		rt.mu.Lock()
		rt.done = true
		rt.mu.Unlock()
		close(rt.closed)
		for {
			select {
			case c := <-rt.conns:
				c.CloseWithError(CodeUnrouted, "server "+rt.name+" is stopping")
			default:
				return
			}
		}
	})
	return nil
}
