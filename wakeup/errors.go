package wakeup

import "errors"

// Parse's errors. Parse wraps them with the byte counts it saw, so match
// them with errors.Is.
var (
	// ErrTruncated: the datagram is empty or shorter than PingSize.
	ErrTruncated = errors.New("wake ping truncated")
	// ErrOversized: the datagram is longer than PingSize.
	ErrOversized = errors.New("wake ping oversized")
	// ErrVersion: the first byte is not Version.
	ErrVersion = errors.New("wake ping has an unknown version")
)
