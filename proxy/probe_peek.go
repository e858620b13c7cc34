//go:build unix && !aix

package proxy

import "syscall"

// peek waits until the socket is readable and reports a closed peer.
func peek(rc syscall.RawConn, done chan struct{}, gone func()) {
	defer close(done)
	var buf [1]byte
	closed := false
	rc.Read(func(fd uintptr) bool {
		n, _, err := syscall.Recvfrom(int(fd), buf[:], syscall.MSG_PEEK|syscall.MSG_DONTWAIT)
		if err == syscall.EAGAIN || err == syscall.EWOULDBLOCK {
			return false // wait until readable
		}
		closed = err != nil || n == 0
		return true
	})
	if closed {
		gone()
	}
}
