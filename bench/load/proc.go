package load

import (
	"os"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// StatusKB returns a field ("VmRSS", "VmHWM") of /proc/<pid>/status in KiB,
// 0 when it cannot be read (or off Linux).
func StatusKB(pid int, field string) int64 {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/status")
	if err != nil {
		return 0
	}
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, field+":"); ok {
			n, _ := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(v), " kB"), 10, 64)
			return n
		}
	}
	return 0
}

// RSSSampler reads a process's VmRSS every 10 ms until stopped: a second
// opinion to VmHWM, which the kernel keeps for the whole life of the
// process.
type RSSSampler struct {
	peak atomic.Int64
	stop chan struct{}
	wg   sync.WaitGroup
}

// SampleRSS starts sampling the process pid.
func SampleRSS(pid int) *RSSSampler {
	s := &RSSSampler{stop: make(chan struct{})}
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		t := time.NewTicker(10 * time.Millisecond)
		defer t.Stop()
		for {
			select {
			case <-s.stop:
				return
			case <-t.C:
				if kb := StatusKB(pid, "VmRSS"); kb > s.peak.Load() {
					s.peak.Store(kb)
				}
			}
		}
	}()
	return s
}

// Stop ends the sampling and returns the largest VmRSS seen, in KiB.
func (s *RSSSampler) Stop() int64 {
	close(s.stop)
	s.wg.Wait()
	return s.peak.Load()
}
