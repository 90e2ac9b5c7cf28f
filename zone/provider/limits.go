package provider

import (
	"log/slog"
	"syscall"
)

// filesPerZone is about how many files one zone's hub holds open while it
// serves, its sessions aside: hub.db, sync.db, mailbox.db and its admin
// socket, and some to spare.
const filesPerZone = 5

// filesReserve are the files kept for the listener, devices' TCP
// connections and the provider's own: a rough floor.
const filesReserve = 1024

// fileLimit is the process's limit on open files (Go raises the soft
// limit to the hard one at start).
func fileLimit() int {
	var l syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &l); err != nil {
		return 1 << 30
	}
	return int(l.Cur) - filesReserve
}

// checkFileLimit raises the open-file limit for zones zones where this
// process may (as root), and says in the log when it stays too low.
func checkFileLimit(zones int, log *slog.Logger) {
	need := uint64(zones*filesPerZone + filesReserve)
	var l syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &l); err != nil || l.Cur >= need {
		return
	}
	want := max(need*2, l.Cur)
	if err := syscall.Setrlimit(syscall.RLIMIT_NOFILE, &syscall.Rlimit{Cur: want, Max: max(want, l.Max)}); err == nil {
		return
	}
	if l.Max > l.Cur {
		syscall.Setrlimit(syscall.RLIMIT_NOFILE, &syscall.Rlimit{Cur: l.Max, Max: l.Max})
		syscall.Getrlimit(syscall.RLIMIT_NOFILE, &l)
	}
	if l.Cur < need {
		log.Warn("too few open files allowed for the zones: some will fail to start; raise the limit (ulimit -n, or LimitNOFILE= in the service unit)",
			"zones", zones, "need", need, "limit", l.Cur)
	}
}
