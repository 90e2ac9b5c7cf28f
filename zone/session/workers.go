package session

import "time"

// Go runs f on a goroutine of its own, reusing one that finished earlier
// work if one is idle. A stream's handler (a call's header decoded, its
// relay) grows its goroutine's stack well past the first 8 KiB; a new
// goroutine per stream grows it, copying, every time, which was an eighth
// of the hub's CPU in a call storm. An idle one waits workerIdle for more
// before it ends, so a quiet node holds none.
func Go(f func()) {
	select {
	case idleWorkers <- f:
	default:
		go work(f)
	}
}

// workerIdle is how long an idle worker waits for more before it ends.
const workerIdle = 10 * time.Second

// idleWorkers hands work to an idle worker: a send succeeds only when one
// waits for it.
var idleWorkers = make(chan func())

func work(f func()) {
	f()
	t := time.NewTimer(workerIdle)
	defer t.Stop()
	for {
		select {
		case f = <-idleWorkers:
			f()
			t.Reset(workerIdle)
		case <-t.C:
			return
		}
	}
}
