package transport

import (
	"crypto/tls"
	"errors"
	"fmt"
	"net"
)

// MaxStreamsLimit is the largest accepted Config.MaxIncomingStreams. It is
// far above anything a session needs and keeps the per-connection slot
// table of the TCP transport small.
const MaxStreamsLimit = 1 << 16

// Validate reports a configuration that cannot work. Zero values are fine:
// they select the documented defaults.
func (c Config) Validate() error {
	if c.TLS == nil {
		return errors.New("transport: Config.TLS is nil: set the certificates, verification and NextProtos to use")
	}
	if len(c.TLS.NextProtos) == 0 {
		return errors.New("transport: Config.TLS.NextProtos is empty: name the protocol (ALPNSession or ALPNPairing)")
	}
	if c.HandshakeTimeout < 0 || c.IdleTimeout < 0 {
		return errors.New("transport: negative timeout in Config")
	}
	if c.MaxIncomingStreams < 0 || c.MaxIncomingStreams > MaxStreamsLimit {
		return fmt.Errorf("transport: MaxIncomingStreams %d out of range [0, %d]", c.MaxIncomingStreams, MaxStreamsLimit)
	}
	return nil
}

// resolve validates c and fills in defaults.
func (c Config) resolve() (Config, error) {
	if err := c.Validate(); err != nil {
		return Config{}, err
	}
	if c.HandshakeTimeout == 0 {
		c.HandshakeTimeout = DefaultHandshakeTimeout
	}
	if c.IdleTimeout == 0 {
		c.IdleTimeout = DefaultIdleTimeout
	}
	if c.MaxIncomingStreams == 0 {
		c.MaxIncomingStreams = DefaultMaxIncomingStreams
	}
	return c, nil
}

func (c Config) debug(msg string, args ...any) {
	if c.Logger != nil {
		c.Logger.Debug(msg, args...)
	}
}

// tls13 returns a copy of base that only speaks TLS 1.3 and never resumes
// sessions. Resumption is off because a resumed handshake skips
// VerifyPeerCertificate, and the caller's verification (revocation
// included) must run on every connection.
func tls13(base *tls.Config) *tls.Config {
	t := base.Clone()
	t.MinVersion = tls.VersionTLS13
	if t.MaxVersion != 0 && t.MaxVersion < tls.VersionTLS13 {
		t.MaxVersion = tls.VersionTLS13
	}
	t.SessionTicketsDisabled = true
	t.ClientSessionCache = nil
	return t
}

// serverTLS is the listener's TLS configuration. A GetConfigForClient
// callback is wrapped so that the configurations it returns get the same
// treatment.
func (c Config) serverTLS() *tls.Config {
	t := tls13(c.TLS)
	if get := t.GetConfigForClient; get != nil {
		t.GetConfigForClient = func(hello *tls.ClientHelloInfo) (*tls.Config, error) {
			sub, err := get(hello)
			if sub == nil || err != nil {
				return sub, err
			}
			return tls13(sub), nil
		}
	}
	return t
}

// clientTLS is the dialer's TLS configuration for addr. Like tls.Dial, it
// names the server by the host in addr when ServerName is unset.
func (c Config) clientTLS(addr string) *tls.Config {
	t := tls13(c.TLS)
	if t.ServerName == "" {
		if host, _, err := net.SplitHostPort(addr); err == nil {
			t.ServerName = host
		}
	}
	return t
}

// checkALPN refuses a connection that negotiated no application protocol.
// A TLS server accepts a client that offers no ALPN at all; QUIC does not,
// and neither do we: the protocol name is how both ends agree on what
// follows.
func checkALPN(cs tls.ConnectionState) error {
	if cs.NegotiatedProtocol == "" {
		return errors.New("transport: no application protocol negotiated (ALPN)")
	}
	return nil
}
