package stores

import (
	"errors"
	"fmt"
	"syscall"
)

// ErrDiskFull marks a write refused because the disk holding the data
// directory is full: nothing of it was written.
var ErrDiskFull = errors.New("the disk is full, so nothing was written")

// ExplainWrite says a failed write was for want of disk space when it
// was (syscall.ENOSPC), and what to do; other errors come back as they
// are.
func ExplainWrite(err error) error {
	if err == nil || !errors.Is(err, syscall.ENOSPC) || errors.Is(err, ErrDiskFull) {
		return err
	}
	return fmt.Errorf("%w (%w): free space where the data directory is, and try again", ErrDiskFull, err)
}
