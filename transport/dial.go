package transport

import (
	"context"
	"fmt"
	"time"
)

// Dial connects to addr with the given mode. ModeAuto dials QUIC, then
// TCP as well after AutoFallbackDelay (or at once if QUIC fails), returns
// the first to succeed and closes the other; if both have succeeded by the
// time one is picked, QUIC wins. The TLS client configuration is cfg.TLS
// (certificates, verification, NextProtos), restricted to TLS 1.3.
//
// In TLS 1.3 the server checks the client's certificate after the client
// has finished its handshake. Over TCP, Dial waits one more round trip so
// that a refusal is its error; over QUIC a refusal can arrive just after
// Dial returns, as the connection closing.
func Dial(ctx context.Context, addr string, mode Mode, cfg Config) (Conn, error) {
	cfg, err := cfg.resolve()
	if err != nil {
		return nil, err
	}
	switch mode {
	case ModeQUIC:
		return dialQUIC(ctx, addr, cfg)
	case ModeTCP:
		return dialTCP(ctx, addr, cfg)
	case ModeAuto:
		return dialAuto(ctx, addr, cfg)
	}
	return nil, fmt.Errorf("dial %s: unknown transport mode %q: use auto, quic or tcp", addr, mode)
}

type dialResult struct {
	kind Kind
	c    Conn
	err  error
}

func dialAuto(ctx context.Context, addr string, cfg Config) (Conn, error) {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel() // stops the loser
	results := make(chan dialResult, 2)
	dial := func(kind Kind, f func(context.Context, string, Config) (Conn, error)) {
		go func() {
			c, err := f(ctx, addr, cfg)
			results <- dialResult{kind, c, err}
		}()
	}
	dial(KindQUIC, dialQUIC)
	pending := 1

	fallback := time.NewTimer(AutoFallbackDelay)
	defer fallback.Stop()
	tcpStarted := false
	startTCP := func() {
		if !tcpStarted {
			tcpStarted = true
			pending++
			dial(KindTCP, dialTCP)
		}
	}

	var quicErr, tcpErr error
	for pending > 0 {
		select {
		case <-fallback.C:
			startTCP()
		case r := <-results:
			pending--
			if r.err == nil {
				won := r
				if won.kind == KindTCP && pending > 0 {
					// Prefer QUIC if it has finished too.
					select {
					case q := <-results:
						pending--
						if q.err == nil {
							won, q = q, won
						}
						closeLoser(q)
					default:
					}
				}
				if pending > 0 {
					go func() { closeLoser(<-results) }()
				}
				return won.c, nil
			}
			if r.kind == KindQUIC {
				quicErr = r.err
				startTCP()
			} else {
				tcpErr = r.err
			}
		}
	}
	return nil, fmt.Errorf("dial %s (auto): %w; %w", addr, quicErr, tcpErr)
}

// closeLoser closes the connection that lost the ModeAuto race, if it
// succeeded at all.
func closeLoser(r dialResult) {
	if r.c != nil {
		r.c.CloseWithError(closeCodeListener, "lost dial race")
	}
}
