package web

import "context"

// contextUntil is ctx, also cancelled when done closes.
func contextUntil(ctx context.Context, done <-chan struct{}) (context.Context, context.CancelFunc) {
	ctx, cancel := context.WithCancel(ctx)
	go func() {
		select {
		case <-done:
			cancel()
		case <-ctx.Done():
		}
	}()
	return ctx, cancel
}

// liveStream makes a long-lived request of c's (an event stream, a long
// poll) a live stream of its session, if it has one: the session does not
// idle while it lasts, and its end cancels the returned context. release
// ends it.
func (h *Handler) liveStream(ctx context.Context, c *caller) (context.Context, func(), error) {
	if c.session == nil {
		return ctx, func() {}, nil // an API token: nothing to keep alive
	}
	done, release, err := h.M.Stream(c.id)
	if err != nil {
		return nil, nil, err
	}
	ctx, cancel := contextUntil(ctx, done)
	return ctx, func() { cancel(); release() }, nil
}
