package cli

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"sync"
	"time"

	"github.com/spf13/cobra"

	"github.com/pzone/pzone/zone/api"
	"github.com/pzone/pzone/zone/wire"
)

// The stream commands: connect (stdin and stdout), expose (a local TCP
// service behind a stream service) and forward (a local TCP port to a
// stream service). Each joins two byte streams, half-closes included.

// halfCloser is a connection whose write direction can end alone.
type halfCloser interface {
	io.ReadWriteCloser
	CloseWrite() error
}

// join copies a and b into each other until both directions end, ending
// each direction at the other side as it ends here; it returns the first
// failure, if any, and closes both.
func join(a, b halfCloser) error {
	var wg sync.WaitGroup
	var mu sync.Mutex
	var first error
	pump := func(dst, src halfCloser) {
		defer wg.Done()
		_, err := io.Copy(dst, src)
		if err == nil {
			err = dst.CloseWrite()
		}
		if err != nil {
			mu.Lock()
			if first == nil {
				first = err
				// One way failed: the other is not wanted either.
				a.Close()
				b.Close()
			}
			mu.Unlock()
		}
	}
	wg.Add(2)
	go pump(a, b)
	go pump(b, a)
	wg.Wait()
	a.Close()
	b.Close()
	return first
}

// dialOpts are the stream commands' options for opening a stream.
type dialOpts struct {
	token        string
	timeout, ttl time.Duration
}

// flags adds the options to cmd.
func (o *dialOpts) flags(cmd *cobra.Command) {
	cmd.Flags().StringVar(&o.token, "token", "", "a service token (ID.SECRET from pzh tokens issue), for services that require one")
	cmd.Flags().DurationVar(&o.timeout, "timeout", wire.DefaultCallTimeout, "give up opening a stream after this long")
	cmd.Flags().DurationVar(&o.ttl, "ttl", 0, "wait up to this long for a device that is asleep or offline")
}

// dial opens a stream to addr, giving up after the timeout (and time to
// live).
func (o *dialOpts) dial(ctx context.Context, c *api.Client, addr string) (*api.Stream, error) {
	ctx, cancel := context.WithTimeout(ctx, o.timeout+o.ttl)
	defer cancel()
	return c.DialWith(ctx, addr, api.DialOptions{Token: o.token, TTL: o.ttl})
}

func newPeerConnectCmd(g *globals) *cobra.Command {
	var o dialOpts
	cmd := &cobra.Command{
		Use:   "connect ADDR",
		Short: "Open a stream to a service and join it to standard input and output",
		Long: `connect opens a byte stream to the service at ADDR (DEVICE/SERVICE, or
FRIEND/DEVICE/SERVICE in a friend zone), which an application there serves
(pzp expose, or the Go client's Listen), and copies standard input to it and
it to standard output until the other end is done. It works as an ssh
ProxyCommand:

  ssh -o ProxyCommand='pzp connect laptop/ssh' laptop

A stream that cannot be opened, or that is cut (by the other end, a service
token's limit, a lost link), exits 1 saying why.`,
		Args: addrArgs(1, 1, 0, "connect takes ADDR", nil),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, hint, err := peerClient(g)
			if err != nil {
				return err
			}
			s, err := o.dial(cmd.Context(), c, args[0])
			if err != nil {
				return hint(err)
			}
			go func() {
				// Standard input to the stream, then its end; a failure
				// here shows as the stream's own failure.
				if _, err := io.Copy(s, cmd.InOrStdin()); err == nil {
					s.CloseWrite()
				}
			}()
			_, err = io.Copy(cmd.OutOrStdout(), s)
			s.Close()
			return err
		},
	}
	o.flags(cmd)
	return cmd
}

func newPeerExposeCmd(g *globals) *cobra.Command {
	var to, description string
	var tokenRequired bool
	cmd := &cobra.Command{
		Use:   "expose SERVICE --to HOST:PORT",
		Short: "Serve SERVICE as a stream service by connecting each stream to a local TCP port",
		Long: `expose serves SERVICE on this device: each stream opened to it (pzp connect,
pzp forward, the Go client's Dial) is carried to a new TCP connection to
HOST:PORT, until interrupted. Who may open one is the zone's policy (rules
naming DEVICE/SERVICE). A stream whose TCP connection cannot be made is cut,
and the opener told why.`,
		Args: func(cmd *cobra.Command, args []string) error {
			if len(args) != 1 {
				return usagef("expose takes SERVICE")
			}
			if err := wire.ValidateServiceName(args[0]); err != nil {
				return usageError{err}
			}
			if _, _, err := net.SplitHostPort(to); err != nil {
				return usagef("--to %q: want HOST:PORT of the local service", to)
			}
			return nil
		},
		RunE: func(cmd *cobra.Command, args []string) error {
			c, hint, err := peerClient(g)
			if err != nil {
				return err
			}
			l, err := c.ListenWith(cmd.Context(), api.ServiceInfo{Name: args[0], Description: description, TokenRequired: tokenRequired})
			if err != nil {
				return hint(err)
			}
			defer l.Close()
			stderr := cmd.ErrOrStderr()
			fmt.Fprintf(stderr, "exposing %s: streams go to %s\n", args[0], to)
			for {
				s, err := l.AcceptStream()
				if err != nil {
					if cmd.Context().Err() != nil {
						return nil
					}
					return hint(err)
				}
				go func() {
					var d net.Dialer
					ctx, cancel := context.WithTimeout(cmd.Context(), 10*time.Second)
					tc, err := d.DialContext(ctx, "tcp", to)
					cancel()
					if err != nil {
						fmt.Fprintf(stderr, "stream from %s: %v\n", s.Peer(), err)
						s.Abort(fmt.Sprintf("%s could not connect to its local service: %v", args[0], err))
						return
					}
					fmt.Fprintf(stderr, "stream from %s to %s\n", s.Peer(), to)
					if err := join(s, tc.(*net.TCPConn)); err != nil && !errors.Is(err, net.ErrClosed) {
						fmt.Fprintf(stderr, "stream from %s ended: %v\n", s.Peer(), err)
					}
				}()
			}
		},
	}
	cmd.Flags().StringVar(&to, "to", "", "the local TCP service each stream connects to (HOST:PORT)")
	cmd.Flags().StringVar(&description, "description", "", "what the service is, for pzp services")
	cmd.Flags().BoolVar(&tokenRequired, "token-required", false, "take only streams opened with a service token")
	return cmd
}

func newPeerForwardCmd(g *globals) *cobra.Command {
	var o dialOpts
	cmd := &cobra.Command{
		Use:   "forward LISTEN ADDR",
		Short: "Listen on a local TCP address and carry each connection over a stream to ADDR",
		Long: `forward listens on LISTEN (HOST:PORT; use a loopback address unless others
should reach it) and carries each TCP connection to it over a new stream to
the service at ADDR, until interrupted. For example, with 'pzp expose ssh --to
127.0.0.1:22' on the laptop:

  pzp forward 127.0.0.1:2222 laptop/ssh
  ssh -p 2222 localhost`,
		Args: addrArgs(2, 2, 1, "forward takes LISTEN ADDR", func(args []string) error {
			if _, _, err := net.SplitHostPort(args[0]); err != nil {
				return usagef("LISTEN %q: want HOST:PORT", args[0])
			}
			return nil
		}),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, hint, err := peerClient(g)
			if err != nil {
				return err
			}
			ln, err := net.Listen("tcp", args[0])
			if err != nil {
				return fmt.Errorf("listen on %s: %w", args[0], err)
			}
			stop := context.AfterFunc(cmd.Context(), func() { ln.Close() })
			defer stop()
			stderr := cmd.ErrOrStderr()
			fmt.Fprintf(stderr, "forwarding %s to %s\n", ln.Addr(), args[1])
			for {
				tc, err := ln.Accept()
				if err != nil {
					if cmd.Context().Err() != nil {
						return nil
					}
					return err
				}
				go func() {
					s, err := o.dial(cmd.Context(), c, args[1])
					if err != nil {
						fmt.Fprintf(stderr, "connection from %s: %v\n", tc.RemoteAddr(), hint(err))
						tc.Close()
						return
					}
					if err := join(tc.(*net.TCPConn), s); err != nil && !errors.Is(err, net.ErrClosed) {
						fmt.Fprintf(stderr, "connection from %s ended: %v\n", tc.RemoteAddr(), err)
					}
				}()
			}
		},
	}
	o.flags(cmd)
	return cmd
}
