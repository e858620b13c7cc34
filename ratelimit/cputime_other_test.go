//go:build !unix

package ratelimit

import "time"

// cpuTime has no getrusage to ask here: the benchmarks' CPU metrics read zero.
func cpuTime() [2]time.Duration { return [2]time.Duration{} }
