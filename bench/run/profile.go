package main

import (
	"fmt"
	"os/exec"
	"sort"
	"strconv"
	"strings"
)

// A sample of a profile: its value and its stack, leaf first.
type sample struct {
	value  float64
	frames []string
}

// readTraces runs `go tool pprof -traces` on a profile (optionally as the
// difference from base) and returns its samples.
func readTraces(path, base, sampleIndex string) ([]sample, error) {
	args := []string{"tool", "pprof", "-traces"}
	if sampleIndex != "" {
		args = append(args, "-sample_index="+sampleIndex)
	}
	if base != "" {
		args = append(args, "-base", base)
	}
	args = append(args, path)
	out, err := exec.Command("go", args...).Output()
	if err != nil {
		return nil, fmt.Errorf("go tool pprof -traces %s: %w", path, err)
	}
	var out2 []sample
	var cur *sample
	for _, line := range strings.Split(string(out), "\n") {
		if strings.HasPrefix(line, "-----------+") {
			cur = nil
			continue
		}
		if cur == nil && !strings.HasPrefix(line, " ") {
			continue // the header (File:, Type:, ...)
		}
		f := strings.Fields(line)
		if len(f) == 0 {
			continue
		}
		if cur == nil {
			v, ok := parseQuantity(f[0])
			if !ok || len(f) < 2 {
				continue
			}
			out2 = append(out2, sample{value: v})
			cur = &out2[len(out2)-1]
			f = f[1:]
		}
		if strings.HasPrefix(f[0], "bytes:") { // a heap profile's size label
			continue
		}
		cur.frames = append(cur.frames, f[0])
	}
	return out2, nil
}

// parseQuantity reads pprof's values ("10ms", "1.50s", "2.5MB", "1234"),
// in a base unit (seconds or bytes or a count): only ratios are used.
func parseQuantity(s string) (float64, bool) {
	i := 0
	for i < len(s) && (s[i] == '.' || s[i] == '-' || (s[i] >= '0' && s[i] <= '9')) {
		i++
	}
	v, err := strconv.ParseFloat(s[:i], 64)
	if err != nil {
		return 0, false
	}
	mult := map[string]float64{
		"": 1, "ns": 1e-9, "us": 1e-6, "µs": 1e-6, "ms": 1e-3, "s": 1, "mins": 60, "hrs": 3600,
		"B": 1, "kB": 1 << 10, "MB": 1 << 20, "GB": 1 << 30, "TB": 1 << 40,
	}[s[i:]]
	if mult == 0 {
		return 0, false
	}
	return v * mult, true
}

// area is a part of the gateway a sample is charged to: the first area (in
// order) with a frame containing one of its markers wins, so that, say, the
// syscalls of a Redis round trip count for the limiter that made them.
type area struct {
	name    string
	markers []string
}

var components = []area{
	{"GC, background (mark workers, sweeping)", []string{"runtime.gcBgMarkWorker", "runtime.bgsweep", "runtime.bgscavenge"}},
	{"request log line (zap encoder + write)", []string{"go.uber.org/zap."}},
	{"metrics (prometheus)", []string{"github.com/prometheus/"}},
	{"client-disconnect watch (proxy.watchClient goroutine)", []string{"nanogate/proxy.watchClient"}},
	{"rate-limit decision (ratelimit Allow, on the request's path)", []string{"nanogate/ratelimit.(*Redis).Allow", "nanogate/ratelimit.(*Memory).Allow"}},
	{"TPM correction after the answer (ratelimit Adjust, a goroutine per request)", []string{"nanogate/ratelimit.(*Redis).Adjust", "nanogate/ratelimit.(*Memory).Adjust"}},
	{"rate limiter, other", []string{"nanogate/ratelimit."}},
	{"budget reservation (accounting Reserve, on the request's path)", []string{"nanogate/accounting.(*Redis).Reserve", "nanogate/accounting.(*Memory).Reserve"}},
	{"usage records (accounting Recorder, batched off the path)", []string{"nanogate/accounting."}},
	{"request parse (openai.ParseChatRequest)", []string{"nanogate/openai.ParseChatRequest", "nanogate/openai.parser"}},
	{"auth (auth.Table.Lookup, sha256)", []string{"nanogate/auth."}},
	{"upstream call + answer parse (provider, upstream)", []string{"nanogate/provider.", "nanogate/upstream."}},
	{"answer render + write (openai.ChatBody / StreamBody)", []string{"nanogate/openai.(*ChatBody)", "nanogate/openai.(*StreamBody)", "nanogate/openai.NewChatBody", "nanogate/openai.(*segs)"}},
	{"image offload (images)", []string{"nanogate/images."}},
	{"rest of the handler (proxy, gateway, router)", []string{"nanogate/"}},
	{"go-redis, other (pool, background)", []string{"github.com/redis/go-redis"}},
	{"fasthttp server (read request, write response)", []string{"github.com/valyala/fasthttp."}},
	{"scheduler, idle, netpoll (runtime)", []string{"runtime.schedule", "runtime.findRunnable", "runtime.mcall", "runtime.netpoll", "runtime.park_m", "runtime.goexit0"}},
	{"other", []string{""}},
}

// kinds of work cut across components: a sample may count in several.
var kinds = []area{
	{"syscalls (read, write, recvfrom, setsockopt, ...)", []string{"syscall.Syscall", "syscall.RawSyscall", "internal/runtime/syscall.Syscall6", "syscall.syscall"}},
	{"futex (waking or parking threads)", []string{"runtime.futex"}},
	{"epoll (netpoll)", []string{"runtime.netpoll"}},
	{"memory allocation (runtime.mallocgc)", []string{"runtime.mallocgc"}},
	{"GC marking, assists included", []string{"runtime.gcDrain", "runtime.gcAssistAlloc"}},
	{"scheduler (runtime.schedule)", []string{"runtime.schedule"}},
	{"goroutine creation (runtime.newproc)", []string{"runtime.newproc"}},
	{"timers (runtime timers, SetDeadline)", []string{"runtime.(*timer)", "runtime.(*timers)", "internal/poll.(*FD).SetDeadline", "internal/poll.setDeadlineImpl"}},
	{"goroutine stack growth (runtime.newstack)", []string{"runtime.newstack"}},
	{"sha256", []string{"crypto/sha256", "crypto/internal/fips140/sha256"}},
	{"JSON scanning (internal/jsonx)", []string{"nanogate/internal/jsonx"}},
	{"encoding/json", []string{"encoding/json."}},
	{"memmove / memclr (copying bytes)", []string{"runtime.memmove", "runtime.memclrNoHeapPointers"}},
}

type share struct {
	name string
	pct  float64
}

// byComponent charges each sample to its first matching area.
func byComponent(ss []sample) []share {
	sum := make([]float64, len(components))
	var total float64
	for _, s := range ss {
		total += s.value
		for i, a := range components {
			if matches(s.frames, a.markers) {
				sum[i] += s.value
				break
			}
		}
	}
	return shares(components, sum, total, true)
}

// byKind reports the share of samples whose stack holds each kind of work.
// The memmove kind counts only when it is the leaf (the copy itself).
func byKind(ss []sample) []share {
	sum := make([]float64, len(kinds))
	var total float64
	for _, s := range ss {
		total += s.value
		for i, a := range kinds {
			frames := s.frames
			if strings.HasPrefix(a.name, "memmove") && len(frames) > 0 {
				frames = frames[:1]
			}
			if matches(frames, a.markers) {
				sum[i] += s.value
			}
		}
	}
	return shares(kinds, sum, total, false)
}

func matches(frames, markers []string) bool {
	for _, f := range frames {
		for _, m := range markers {
			if strings.Contains(f, m) {
				return true
			}
		}
	}
	return false
}

func shares(as []area, sum []float64, total float64, sorted bool) []share {
	out := make([]share, 0, len(as))
	for i, a := range as {
		if total > 0 && sum[i] > 0 {
			out = append(out, share{a.name, 100 * sum[i] / total})
		}
	}
	if sorted {
		sort.SliceStable(out, func(i, j int) bool { return out[i].pct > out[j].pct })
	}
	return out
}

// topText is `go tool pprof -top` output without its header lines, cut to n
// entries.
func topText(path, base, sampleIndex string, cum bool, n int) string {
	args := []string{"tool", "pprof", "-top", "-nodecount=" + strconv.Itoa(n)}
	if cum {
		args = append(args, "-cum")
	}
	if sampleIndex != "" {
		args = append(args, "-sample_index="+sampleIndex)
	}
	if base != "" {
		args = append(args, "-base", base)
	}
	args = append(args, path)
	out, err := exec.Command("go", args...).Output()
	if err != nil {
		return "(go tool pprof failed: " + err.Error() + ")"
	}
	lines := strings.Split(strings.TrimRight(string(out), "\n"), "\n")
	for i, l := range lines {
		if strings.Contains(l, "flat%") {
			return strings.Join(lines[max(i-2, 0):], "\n")
		}
	}
	return strings.Join(lines, "\n")
}
