//go:build unix && !aix

package upstream

import (
	"crypto/tls"
	"net"
	"syscall"
)

// prober tells whether an idle connection is still open: a peer that closed
// it makes it readable with EOF. The peek does not consume bytes. It is made
// once per connection, so that the check before each reuse allocates
// nothing.
type prober struct {
	rc     syscall.RawConn // nil: not a socket, trusted
	broken bool            // the socket could not be reached: never reuse
	ok     bool
	buf    [1]byte
	peekFn func(fd uintptr) bool
}

func newProber(nc net.Conn) *prober {
	if tc, ok := nc.(*tls.Conn); ok {
		// Pending bytes under TLS on an idle connection are a close_notify or
		// garbage: either way the connection is done.
		nc = tc.NetConn()
	}
	p := &prober{}
	sc, ok := nc.(syscall.Conn)
	if !ok {
		return p
	}
	rc, err := sc.SyscallConn()
	if err != nil {
		p.broken = true
		return p
	}
	p.rc = rc
	p.peekFn = p.peek
	return p
}

func (p *prober) alive() bool {
	if p.rc == nil {
		return !p.broken
	}
	p.ok = true
	p.rc.Read(p.peekFn)
	return p.ok
}

func (p *prober) peek(fd uintptr) bool {
	n, _, err := syscall.Recvfrom(int(fd), p.buf[:], syscall.MSG_PEEK|syscall.MSG_DONTWAIT)
	switch {
	case err == syscall.EAGAIN || err == syscall.EWOULDBLOCK:
		p.ok = true
	case err != nil || n == 0:
		p.ok = false
	default:
		p.ok = false // unexpected bytes on an idle connection
	}
	return true
}
