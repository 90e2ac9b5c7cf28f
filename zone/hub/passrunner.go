package hub

import "time"

// passRunner is the bookkeeping of a queue that one goroutine at a time
// works through in passes: the device couriers (wake.go) and the friend
// outboxes (outbox.go). A kick while a pass runs asks for another pass
// rather than a second runner; a pass that leaves work for later arms a
// retry with backoff from courierRetryMin to courierRetryMax, which a
// pass with progress resets. Its owner holds its own lock around every
// method.
type passRunner struct {
	running, again bool
	delay          time.Duration
	retry          *time.Timer
}

// claim reports whether the caller should start a runner now; if one
// runs, it is asked for another pass instead. A pending retry is
// cancelled: the runner starts now.
func (r *passRunner) claim() bool {
	if r.running {
		r.again = true
		return false
	}
	r.stop()
	r.running, r.again = true, false
	return true
}

// passDone records the end of a pass and reports whether the runner
// should make another at once (a kick came meanwhile). Otherwise it
// stops, arming fire after the backoff if retry (some work could not be
// done now), unless stopped (the owner is shutting down).
func (r *passRunner) passDone(retry, progress, stopped bool, fire func()) (again bool) {
	if r.again && !stopped {
		r.again = false
		return true
	}
	r.running = false
	if progress || !retry {
		r.delay = 0
	}
	if retry && !stopped {
		r.delay = min(max(r.delay*2, courierRetryMin), courierRetryMax)
		r.retry = time.AfterFunc(r.delay, fire)
	}
	return false
}

// stop cancels a pending retry.
func (r *passRunner) stop() {
	if r.retry != nil {
		r.retry.Stop()
		r.retry = nil
	}
}
