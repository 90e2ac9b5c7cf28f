package cli

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"time"

	"github.com/pzone/pzone/zone/api"
)

// defaultWait is how long wait subcommands wait unless told otherwise.
const defaultWait = 30 * time.Second

// waitReady waits until a daemon answers on its socket. The daemon may not
// have created the socket yet, so this retries with a short, growing pause;
// it is the one place the CLI polls.
func waitReady(ctx context.Context, c *api.Client, statusPath string, out any) error {
	pause := 10 * time.Millisecond
	for {
		err := c.Do(ctx, http.MethodGet, statusPath, nil, out)
		if err == nil || !errors.Is(err, api.ErrNotRunning) {
			return err
		}
		t := time.NewTimer(pause)
		select {
		case <-ctx.Done():
			t.Stop()
			return fmt.Errorf("gave up waiting: %w", err)
		case <-t.C:
		}
		if pause < 200*time.Millisecond {
			pause *= 2
		}
	}
}

// watch long-polls path until done reports true for the decoded answer.
// version extracts the answer's change version.
func watch[T any](ctx context.Context, c *api.Client, path string, version func(*T) uint64, done func(*T) bool) (*T, error) {
	var ver uint64
	first := true
	for {
		var v T
		p := path
		if !first {
			p = fmt.Sprintf("%s?wait=%d&timeout=%s", path, ver, remaining(ctx))
		}
		if err := c.Do(ctx, http.MethodGet, p, nil, &v); err != nil {
			if ctx.Err() != nil {
				return &v, fmt.Errorf("timed out")
			}
			return nil, err
		}
		if done(&v) {
			return &v, nil
		}
		if ctx.Err() != nil {
			return &v, fmt.Errorf("timed out")
		}
		first, ver = false, version(&v)
	}
}

func remaining(ctx context.Context) time.Duration {
	if d, ok := ctx.Deadline(); ok {
		return time.Until(d).Round(time.Millisecond) + time.Millisecond
	}
	return time.Minute
}
