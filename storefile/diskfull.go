package storefile

import (
	"errors"
	"strings"
	"syscall"
)

// IsDiskFull reports whether err is a write refused for want of space: no
// room on the disk, or the user's quota spent. bbolt reports some of its
// file growth errors as text only, so their words count too.
func IsDiskFull(err error) bool {
	if err == nil {
		return false
	}
	if errors.Is(err, syscall.ENOSPC) || errors.Is(err, syscall.EDQUOT) {
		return true
	}
	msg := err.Error()
	return strings.Contains(msg, "no space left on device") || strings.Contains(msg, "disk quota exceeded")
}
