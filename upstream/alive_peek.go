//go:build unix && !aix

package upstream

import (
	"crypto/tls"
	"net"
	"syscall"
)

// alive reports whether an idle connection is still open: a peer that closed it
// makes it readable with EOF. The peek does not consume bytes.
func alive(nc net.Conn) bool {
	if tc, ok := nc.(*tls.Conn); ok {
		// Pending bytes under TLS on an idle connection are a close_notify or
		// garbage: either way the connection is done.
		nc = tc.NetConn()
	}
	sc, ok := nc.(syscall.Conn)
	if !ok {
		return true
	}
	rc, err := sc.SyscallConn()
	if err != nil {
		return false
	}
	ok = true
	var buf [1]byte
	rc.Read(func(fd uintptr) bool {
		n, _, err := syscall.Recvfrom(int(fd), buf[:], syscall.MSG_PEEK|syscall.MSG_DONTWAIT)
		switch {
		case err == syscall.EAGAIN || err == syscall.EWOULDBLOCK:
			ok = true
		case err != nil || n == 0:
			ok = false
		default:
			ok = false // unexpected bytes on an idle connection
		}
		return true
	})
	return ok
}
