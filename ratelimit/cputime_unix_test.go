//go:build unix

package ratelimit

import (
	"fmt"
	"os"
	"syscall"
	"time"
)

// cpuTime is the CPU time this process has used, in user space and in the
// kernel.
func cpuTime() [2]time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		fmt.Fprintln(os.Stderr, "getrusage:", err)
		return [2]time.Duration{}
	}
	return [2]time.Duration{time.Duration(ru.Utime.Nano()), time.Duration(ru.Stime.Nano())}
}
