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

// clientWatch calls a request's gone when its client closes the connection
// while the gateway waits for an upstream. fasthttp only notices a gone
// client when a write fails, and an image takes ~10 s before the first byte:
// a paid upstream call must not go on for a client that left. The watch
// peeks at the socket (MSG_PEEK) from the runtime's poller, so it consumes
// no byte of a pipelined next request.
//
// The requests of every connection share one timer: a request joins a
// queue (in the order it came, which is the order its delay ends), and the
// timer, armed only while the queue holds a request, starts the peeks of
// the requests still waiting past the delay. A timer per request cost a
// few allocations and a timer-heap insertion and removal each, and its
// stopped timer still woke the runtime's poller when it came due.
type clientWatch struct {
	delay time.Duration
	mu    sync.Mutex
	queue []*watch
	spare []*watch
	armed bool
	timer *time.Timer
}

// watch is one request's part of the clientWatch.
type watch struct {
	cw   *clientWatch
	conn net.Conn
	gone func()
	due  time.Time
	// Under cw.mu: 0 waiting in the queue, 1 peeking (done is its end),
	// 2 stopped.
	state int
	done  chan struct{}
	once  sync.Once
}

const (
	watchWaiting = iota
	watchPeeking
	watchStopped
)

func newClientWatch(delay time.Duration) *clientWatch {
	cw := &clientWatch{delay: delay}
	cw.timer = time.AfterFunc(time.Hour, cw.fire)
	cw.timer.Stop()
	return cw
}

// watchClient starts watching c for the request that calls gone when the
// client leaves. stop ends the watch (any number of times) and must be
// called before fasthttp reads the connection again.
func (cw *clientWatch) watchClient(c net.Conn, gone func()) (stop func()) {
	w := &watch{cw: cw, conn: c, gone: gone, due: time.Now().Add(cw.delay)}
	cw.mu.Lock()
	cw.queue = append(cw.queue, w)
	if !cw.armed {
		cw.armed = true
		cw.timer.Reset(cw.delay)
	}
	cw.mu.Unlock()
	return w.stop
}

// fire starts the peeks of the requests waiting past the delay, drops the
// stopped ones, and arms the timer for the next request due, if any.
func (cw *clientWatch) fire() {
	now := time.Now()
	var start []*watch
	cw.mu.Lock()
	keep := cw.spare[:0]
	for i, w := range cw.queue {
		switch {
		case w.state == watchStopped:
		case now.Before(w.due):
			keep = append(keep, w)
		default:
			w.state, w.done = watchPeeking, make(chan struct{})
			start = append(start, w)
		}
		cw.queue[i] = nil
	}
	cw.spare, cw.queue = cw.queue[:0], keep
	if len(keep) > 0 {
		cw.timer.Reset(keep[0].due.Sub(now))
	} else {
		cw.armed = false
	}
	cw.mu.Unlock()
	for _, w := range start {
		w.watch()
	}
}

// watch starts the peek of a request whose client is still connected
// after the delay.
func (w *watch) watch() {
	sc, ok := w.conn.(syscall.Conn)
	var rc syscall.RawConn
	var err error
	if ok {
		rc, err = sc.SyscallConn()
	}
	if !ok || err != nil {
		close(w.done)
		return
	}
	go peek(rc, w.done, w.gone)
}

// stop ends the watch; a second call waits for the first to finish.
func (w *watch) stop() { w.once.Do(w.end) }

func (w *watch) end() {
	w.cw.mu.Lock()
	st, d := w.state, w.done
	w.state = watchStopped
	w.cw.mu.Unlock()
	if st != watchPeeking {
		return
	}
	// An expired read deadline wakes the parked peek.
	w.conn.SetReadDeadline(time.Unix(1, 0))
	<-d
	w.conn.SetReadDeadline(time.Time{})
}
