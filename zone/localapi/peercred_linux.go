package localapi

import (
	"net"
	"syscall"
)

// peerCred asks the kernel who is at the other end of a Unix socket.
func peerCred(c *net.UnixConn) (pid, uid int) {
	pid, uid = -1, -1
	raw, err := c.SyscallConn()
	if err != nil {
		return
	}
	raw.Control(func(fd uintptr) {
		if u, err := syscall.GetsockoptUcred(int(fd), syscall.SOL_SOCKET, syscall.SO_PEERCRED); err == nil {
			pid, uid = int(u.Pid), int(u.Uid)
		}
	})
	return
}
