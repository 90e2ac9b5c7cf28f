package stores

import (
	"errors"
	"fmt"

	"github.com/pzone/pzone/storefile"
)

// ErrDiskFull marks a write refused because the disk holding the data
// directory is full: nothing of it was written.
var ErrDiskFull = errors.New("the disk is full, so nothing was written")

// IsDiskFull reports whether err is a write refused for want of space.
func IsDiskFull(err error) bool { return storefile.IsDiskFull(err) }

// ExplainWrite says a failed write was for want of disk space when it
// was, and what to do, for the hub's or the device's own operator; other
// errors come back as they are.
func ExplainWrite(err error) error {
	if err == nil || !IsDiskFull(err) || errors.Is(err, ErrDiskFull) {
		return err
	}
	return fmt.Errorf("%w (%w): free space where the data directory is, and try again", ErrDiskFull, err)
}

// ExplainRemote is what a device elsewhere is told of a write of the
// hub's that failed: the hub's disk, not its own, and no path.
func ExplainRemote(err error) string {
	if IsDiskFull(err) {
		return "the hub's disk is full; try again later"
	}
	return err.Error()
}
