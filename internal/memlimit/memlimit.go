// Package memlimit chooses the Go runtime's soft memory limit: the one
// configured, else GOMEMLIMIT, else a share of the container's cgroup limit.
//
// Without a soft limit the runtime lets the heap grow to twice what is live
// before it collects, so a gateway holding a few hundred megabytes of images
// in a container of 512 MiB is killed by the kernel while half its heap is
// garbage. With the limit set just under the container's, the collector runs
// harder as the heap nears it instead.
package memlimit

import (
	"bufio"
	"bytes"
	"io/fs"
	"math"
	"os"
	"runtime/debug"
	"strconv"
	"strings"
)

// CgroupShare is the part of a cgroup limit given to the Go heap when no
// limit is configured: the rest is for what the runtime does not count
// (goroutine stacks of idle connections, the kernel's socket buffers).
const CgroupShare = 0.9

// unlimited is the value at or above which a cgroup v1 limit means none
// (the kernel reports the largest page-aligned int64).
const unlimited = 1 << 60

// Source says where a limit came from.
type Source string

// Sources of a limit.
const (
	FromConfig  Source = "server.memory_limit"
	FromEnv     Source = "GOMEMLIMIT"
	FromCgroup  Source = "cgroup"
	FromNowhere Source = "none"
)

// Resolve returns the limit to set and where it came from: configured when
// positive; else, when GOMEMLIMIT is set, the runtime's own (0 here: leave
// it); else CgroupShare of the cgroup limit; else none (0).
func Resolve(configured int64, env string, cgroup int64) (int64, Source) {
	switch {
	case configured > 0:
		return configured, FromConfig
	case strings.TrimSpace(env) != "":
		return 0, FromEnv
	case cgroup > 0:
		return int64(float64(cgroup) * CgroupShare), FromCgroup
	}
	return 0, FromNowhere
}

// Apply resolves the limit from configured, the environment and the cgroup
// of this process, sets it, and returns the limit in force (0: none) and
// its source.
func Apply(configured int64) (int64, Source) {
	cg, _ := Cgroup(os.DirFS("/"))
	limit, src := Resolve(configured, os.Getenv("GOMEMLIMIT"), cg)
	switch {
	case limit > 0:
		debug.SetMemoryLimit(limit)
	case src == FromEnv:
		limit = debug.SetMemoryLimit(-1)
		if limit == math.MaxInt64 {
			limit = 0 // GOMEMLIMIT=off
		}
	}
	return limit, src
}

// Cgroup returns the memory limit of the cgroup this process runs in,
// read from root (the file system's root): cgroup v2's memory.max or v1's
// memory.limit_in_bytes. False when there is none or it cannot be read.
func Cgroup(root fs.FS) (int64, bool) {
	for _, p := range candidates(root) {
		b, err := fs.ReadFile(root, p)
		if err != nil {
			continue
		}
		s := string(bytes.TrimSpace(b))
		if s == "max" {
			return 0, false
		}
		n, err := strconv.ParseInt(s, 10, 64)
		if err != nil || n <= 0 || n >= unlimited {
			return 0, false
		}
		return n, true
	}
	return 0, false
}

// candidates are the files that may hold the limit, most specific first:
// the process's own cgroup (from proc/self/cgroup), then the root of the
// hierarchy, which is the process's own inside a container with a cgroup
// namespace.
func candidates(root fs.FS) []string {
	var out []string
	if f, err := root.Open("proc/self/cgroup"); err == nil {
		sc := bufio.NewScanner(f)
		for sc.Scan() {
			// hierarchy-id:controllers:path
			parts := strings.SplitN(sc.Text(), ":", 3)
			if len(parts) != 3 {
				continue
			}
			path := strings.Trim(parts[2], "/")
			switch {
			case parts[0] == "0" && parts[1] == "":
				out = append(out, join("sys/fs/cgroup", path, "memory.max"))
			case hasController(parts[1], "memory"):
				out = append(out, join("sys/fs/cgroup/memory", path, "memory.limit_in_bytes"))
			}
		}
		f.Close()
	}
	return append(out, "sys/fs/cgroup/memory.max", "sys/fs/cgroup/memory/memory.limit_in_bytes")
}

func hasController(list, name string) bool {
	for c := range strings.SplitSeq(list, ",") {
		if c == name {
			return true
		}
	}
	return false
}

func join(dir, path, file string) string {
	if path == "" {
		return dir + "/" + file
	}
	return dir + "/" + path + "/" + file
}
