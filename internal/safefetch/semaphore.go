package safefetch

import (
	"context"
	"sync"
)

// Semaphore caps a number of bytes held at once across the process, such
// as those of images being fetched for requests in flight. It is safe for
// concurrent use.
type Semaphore struct {
	mu   sync.Mutex
	size int64
	used int64
	// freed is closed, and replaced, whenever bytes are released, waking
	// the waiters to try again.
	freed chan struct{}
}

// NewSemaphore returns a Semaphore of size bytes.
func NewSemaphore(size int64) *Semaphore {
	return &Semaphore{size: size, freed: make(chan struct{})}
}

// Acquire claims n bytes, waiting for room until ctx ends; then it returns
// ctx's error and claims nothing. n larger than the size waits in vain.
func (s *Semaphore) Acquire(ctx context.Context, n int64) error {
	for {
		s.mu.Lock()
		if n <= s.size-s.used {
			s.used += n
			s.mu.Unlock()
			return nil
		}
		freed := s.freed
		s.mu.Unlock()
		select {
		case <-freed:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}

// Release gives back n bytes claimed by Acquire.
func (s *Semaphore) Release(n int64) {
	if n <= 0 {
		return
	}
	s.mu.Lock()
	s.used -= n
	close(s.freed)
	s.freed = make(chan struct{})
	s.mu.Unlock()
}

// InUse returns the bytes claimed now.
func (s *Semaphore) InUse() int64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.used
}
