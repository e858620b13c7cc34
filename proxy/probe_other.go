//go:build !unix || aix

package proxy

import "syscall"

// peek cannot wait for a closed peer without consuming bytes on these systems
// (no MSG_PEEK with MSG_DONTWAIT: Windows, Plan 9, AIX), so the client is not
// watched: a client that leaves is noticed when its answer is written.
func peek(_ syscall.RawConn, done chan struct{}, _ func()) { close(done) }
