package cli

import (
	"fmt"
	"io"
	"strings"
	"sync"
	"time"
)

// progressEvery limits how often a progress bar redraws: ten times a
// second reads as smooth and costs nothing.
const progressEvery = 100 * time.Millisecond

// progressBar draws "label [#####.....] 45%  12,345 records" on one
// terminal line. On anything but a terminal it draws nothing: logs and
// pipes get the summary line instead.
type progressBar struct {
	w     io.Writer
	label string
	on    bool

	mu    sync.Mutex
	last  time.Time
	drawn bool
}

func newProgressBar(w io.Writer, label string) *progressBar {
	return &progressBar{w: w, label: label, on: isTerminal(w)}
}

// update redraws with done out of total units of progress and count items.
func (b *progressBar) update(done, total, count uint64) {
	if !b.on {
		return
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	now := time.Now()
	if b.drawn && now.Sub(b.last) < progressEvery && done < total {
		return
	}
	b.last, b.drawn = now, true
	const width = 30
	frac := 1.0
	if total > 0 {
		frac = min(float64(done)/float64(total), 1)
	}
	n := int(frac * width)
	fmt.Fprintf(b.w, "\r%s [%s%s] %3.0f%%  %d records", b.label, strings.Repeat("#", n), strings.Repeat(".", width-n), frac*100, count)
}

// finish ends the bar's line.
func (b *progressBar) finish() {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.on && b.drawn {
		fmt.Fprintln(b.w)
	}
}
