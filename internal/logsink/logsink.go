// Package logsink batches log lines into few writes. A gateway logs one line
// per request; written one by one, every line is a write(2) of its own, a
// system call (and, when stderr is a pipe to a log collector, a wake-up of
// the reader) per request. The Sink here hands lines to one goroutine that
// writes them in batches. A line that comes after a quiet spell is written
// at once; the flusher then looks again every Interval for as long as lines
// keep coming, and lines logged meanwhile wait for that look instead of
// waking it. Under load, and at a steady trickle of requests alike, the
// output sees at most one write per Interval and the logging goroutines no
// wake-up at all, while a lone line still goes out within microseconds.
package logsink

import (
	"io"
	"sync"
	"time"
)

// Interval is how long lines wait, while lines keep coming, for the write
// that takes them together: the most a line stays in memory on a busy
// gateway.
const Interval = 10 * time.Millisecond

// DefaultMaxPending is the pending bytes a Sink holds before a Write waits:
// thousands of request lines, far more than pile up while one write is under
// way unless the output has stalled.
const DefaultMaxPending = 1 << 20

// Sink is a zapcore.WriteSyncer that copies each line into a pending buffer
// and has one goroutine write all that is pending in one write. It never
// drops a line: when the pending buffer is full, Write waits for the output
// (back-pressure) rather than grow without bound.
type Sink struct {
	w   io.Writer
	max int

	mu sync.Mutex
	// cond is signalled when pending is handed to a write (room for the
	// lines waiting in Write) and when a write ends (Sync, Close).
	cond    sync.Cond
	pending []byte
	// spare is the buffer of the last write, reused as the next pending
	// one: two buffers swap, so steady logging allocates nothing.
	spare []byte
	// writing is set while one goroutine writes a batch outside mu: writes
	// of batches never overlap, so they reach w in the order of the lines.
	writing bool
	// err is the first failed write since the last Sync.
	err error
	// closed: Close has run and Write writes through on its caller.
	closed bool
	// ticking: the flusher looks again within Interval, so lines need
	// not wake it (but past half of max pending).
	ticking bool

	wake chan struct{} // one slot: lines wait, the flusher should look
	stop chan struct{}
	done chan struct{}
}

// New returns a Sink writing to w, holding up to maxPending bytes (0 or less
// for DefaultMaxPending; a single line longer than that is taken whole). It
// starts the goroutine that writes; Close ends it.
func New(w io.Writer, maxPending int) *Sink {
	if maxPending <= 0 {
		maxPending = DefaultMaxPending
	}
	s := &Sink{
		w:    w,
		max:  maxPending,
		wake: make(chan struct{}, 1),
		stop: make(chan struct{}),
		done: make(chan struct{}),
	}
	s.cond.L = &s.mu
	go s.flusher()
	return s
}

// Write copies p, one encoded log line, to the pending buffer and returns;
// the flusher writes it. It waits only while the buffer is full, and after
// Close writes p itself. A failed write of the output is reported by Sync,
// not here: the line's caller has long moved on by then.
func (s *Sink) Write(p []byte) (int, error) {
	s.mu.Lock()
	for !s.closed && len(s.pending) > 0 && len(s.pending)+len(p) > s.max {
		s.cond.Wait()
	}
	wasEmpty := len(s.pending) == 0
	s.pending = append(s.pending, p...)
	switch {
	case s.closed:
		// No flusher any more: the caller writes, so that the lines
		// of a shutdown still come out.
		s.flushLocked()
	case wasEmpty && !s.ticking, len(s.pending) >= s.max/2:
		// The first line after a quiet spell goes out at once; the
		// others wait for the flusher's next look, unless so many wait
		// that Write would soon have to.
		select {
		case s.wake <- struct{}{}:
		default:
		}
	}
	s.mu.Unlock()
	return len(p), nil
}

// Sync writes what is pending on the caller and returns once every line
// written before it is out, with the first write error since the last Sync
// (the sink keeps writing after an error: a full disk or a collector that
// restarted loses lines, not the log). It does not sync w itself: the lines
// are handed to the output, which for stderr is all there is to do.
func (s *Sink) Sync() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.flushLocked()
	err := s.err
	s.err = nil
	return err
}

// Close writes what is pending, ends the flusher and returns what Sync
// would. Lines written after Close are written at once by their caller, so
// nothing logged late in a shutdown is lost.
func (s *Sink) Close() error {
	s.mu.Lock()
	if !s.closed {
		s.closed = true
		close(s.stop)
		// Writers waiting for room write their own lines now.
		s.cond.Broadcast()
	}
	s.mu.Unlock()
	<-s.done
	return s.Sync()
}

func (s *Sink) flusher() {
	defer close(s.done)
	look := time.NewTimer(Interval)
	look.Stop()
	for {
		select {
		case <-s.wake:
		case <-s.stop:
			return
		}
		// Write what is pending, then look again every Interval until
		// a look finds nothing: a wake-up per quiet spell, not per line.
		for {
			s.mu.Lock()
			if len(s.pending) == 0 {
				s.ticking = false
				s.mu.Unlock()
				break
			}
			s.ticking = true
			s.flushLocked()
			s.mu.Unlock()
			look.Reset(Interval)
			select {
			case <-look.C:
			case <-s.wake: // half of max pending waits
				look.Stop()
			case <-s.stop:
				look.Stop()
				return
			}
		}
	}
}

// flushLocked waits for a write under way, then writes all that is pending
// in one write. s.mu is held on entry and on return, released during the
// write so that lines keep arriving meanwhile.
func (s *Sink) flushLocked() {
	for s.writing {
		s.cond.Wait()
	}
	if len(s.pending) == 0 {
		return
	}
	batch := s.pending
	s.pending, s.spare = s.spare[:0], nil
	s.writing = true
	s.cond.Broadcast()
	s.mu.Unlock()
	_, err := s.w.Write(batch)
	s.mu.Lock()
	if err != nil && s.err == nil {
		s.err = err
	}
	// A buffer grown by a line far above the cap is not kept: one huge
	// line must not pin its size for the life of the process.
	if cap(batch) <= 2*s.max {
		s.spare = batch[:0]
	}
	s.writing = false
	s.cond.Broadcast()
}
