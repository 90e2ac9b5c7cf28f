package localapi

import (
	"context"
	"net"
	"sync"
)

// Conn is what the daemon knows of one connection to its socket: the
// process at the other end, as the kernel says (SO_PEERCRED on Linux),
// and which app identities it has used, so each is logged once.
type Conn struct {
	// PID and UID of the connecting process; -1 where the system does not
	// say.
	PID, UID int

	mu   sync.Mutex
	seen map[string]bool
}

// FirstAs reports whether app is new on this connection (and notes it).
func (c *Conn) FirstAs(app string) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.seen[app] {
		return false
	}
	if c.seen == nil {
		c.seen = map[string]bool{}
	}
	c.seen[app] = true
	return true
}

type connKey struct{}

// ConnOf returns the connection a request came on; nil outside Serve.
func ConnOf(ctx context.Context) *Conn {
	c, _ := ctx.Value(connKey{}).(*Conn)
	return c
}

// connContext is Serve's http.Server.ConnContext: it reads the peer's
// credentials once per connection.
func connContext(ctx context.Context, c net.Conn) context.Context {
	pc := &Conn{PID: -1, UID: -1}
	if uc, ok := c.(*net.UnixConn); ok {
		pc.PID, pc.UID = peerCred(uc)
	}
	return context.WithValue(ctx, connKey{}, pc)
}
