package cli

import (
	"errors"
	"io"
	"net"
	"strings"
	"syscall"
	"time"

	"github.com/rogpeppe/go-internal/testscript"
)

// Commands for the stream scripts: a real TCP echo server, and a TCP
// client that sends a message and prints what comes back.

// tcpecho VAR: start a TCP echo server on 127.0.0.1 for the rest of the
// script and set VAR to its address. It echoes each connection and ends
// its direction when the client ends its own.
func cmdTCPEcho(ts *testscript.TestScript, neg bool, args []string) {
	if neg || len(args) != 1 {
		ts.Fatalf("usage: tcpecho VAR")
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	ts.Check(err)
	ts.Defer(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				if _, err := io.Copy(c, c); err == nil {
					c.(*net.TCPConn).CloseWrite()
				}
			}()
		}
	}()
	ts.Setenv(args[0], ln.Addr().String())
}

// tcpsend ADDR MESSAGE: connect to ADDR (waiting up to 20 s for something
// to listen there), send MESSAGE, end the direction, and print what comes
// back until the other end ends its own.
func cmdTCPSend(ts *testscript.TestScript, neg bool, args []string) {
	if len(args) != 2 {
		ts.Fatalf("usage: tcpsend ADDR MESSAGE")
	}
	var c net.Conn
	var err error
	for deadline := time.Now().Add(20 * time.Second); ; {
		if c, err = net.DialTimeout("tcp", args[0], 5*time.Second); err == nil || !errors.Is(err, syscall.ECONNREFUSED) || time.Now().After(deadline) {
			break
		}
		<-time.After(50 * time.Millisecond) // nothing listens yet: ask again
	}
	ts.Check(err)
	defer c.Close()
	c.SetDeadline(time.Now().Add(30 * time.Second))
	_, err = io.WriteString(c, args[1])
	if err == nil {
		err = c.(*net.TCPConn).CloseWrite()
	}
	var got []byte
	if err == nil {
		got, err = io.ReadAll(c)
	}
	if err == nil && len(got) == 0 {
		err = errors.New("the connection ended with nothing")
	}
	if neg {
		if err == nil {
			ts.Fatalf("tcpsend got %q", got)
		}
		return
	}
	if err != nil {
		ts.Fatalf("tcpsend %s: %v", args[0], err)
	}
	ts.Stdout().Write([]byte(strings.TrimSpace(string(got)) + "\n"))
}
