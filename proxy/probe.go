package proxy

import (
	"net"
	"sync"
	"syscall"
	"time"
)

// watchDelay is how long a request waits before its client is watched: fast
// answers never pay for the watch, and a paid image call takes seconds.
const watchDelay = 30 * time.Millisecond

// watchClient calls gone when the client closes its connection while the
// gateway waits for an upstream. fasthttp only notices a gone client when a
// write fails, and an image takes ~10 s before the first byte: a paid upstream
// call must not go on for a client that left. The watch peeks at the socket
// (MSG_PEEK) from the runtime's poller, so it consumes no byte of a pipelined
// next request. stop ends the watch and must be called before fasthttp reads
// the connection again.
func watchClient(c net.Conn, gone func()) (stop func()) {
	sc, ok := c.(syscall.Conn)
	if !ok {
		return func() {}
	}
	rc, err := sc.SyscallConn()
	if err != nil {
		return func() {}
	}
	var mu sync.Mutex
	var stopped bool
	var done chan struct{}
	t := time.AfterFunc(watchDelay, func() {
		mu.Lock()
		defer mu.Unlock()
		if stopped {
			return
		}
		done = make(chan struct{})
		go peek(rc, done, gone)
	})
	var once sync.Once
	return func() {
		once.Do(func() {
			t.Stop()
			mu.Lock()
			stopped = true
			d := done
			mu.Unlock()
			if d == nil {
				return
			}
			// An expired read deadline wakes the parked peek.
			c.SetReadDeadline(time.Unix(1, 0))
			<-d
			c.SetReadDeadline(time.Time{})
		})
	}
}
