package logsink

import (
	"io"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"sync/atomic"
	"testing"

	"go.uber.org/zap/zapcore"
)

// counting counts the writes that reach the output.
type counting struct {
	w      io.Writer
	writes atomic.Int64
}

func (c *counting) Write(p []byte) (int, error) {
	c.writes.Add(1)
	return c.w.Write(p)
}

// benchLine is a request line of about the size the gateway logs.
var benchLine = []byte(`{"level":"info","ts":"2026-12-07T03:16:09.123Z","msg":"request","id":"01JEXAMPLE0000000000000000","key":"ci",` +
	`"team":"design","model":"gemini-2.5-flash-image-preview","provider":"cheap","attempts":1,"status":200,` +
	`"latency":0.012345678,"images":1,"prompt_tokens":12,"completion_tokens":1290,"cost_usd":0.035,` +
	`"list_cost_usd":0.039,"path":"/v1/chat/completions","stream":false,` + strings.Repeat(" ", 20) + "}\n")

// outputs are where the benchmarks write: a file, as a log on disk, and a
// pipe drained by another goroutine, as stderr read by a log collector.
func outputs(b *testing.B) []struct {
	name string
	w    io.Writer
} {
	f, err := os.Create(filepath.Join(b.TempDir(), "log"))
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { f.Close() })
	r, w, err := os.Pipe()
	if err != nil {
		b.Fatal(err)
	}
	go io.Copy(io.Discard, r)
	b.Cleanup(func() { w.Close(); r.Close() })
	return []struct {
		name string
		w    io.Writer
	}{{"file", f}, {"pipe", w}}
}

// benchWrites logs b.N lines from 32 goroutines (on 2 cores, 16 per core)
// through ws and reports the CPU time and the writes per line that reached
// out.
func benchWrites(b *testing.B, out *counting, ws zapcore.WriteSyncer) {
	b.SetBytes(int64(len(benchLine)))
	b.ReportAllocs()
	b.SetParallelism(max(1, 32/runtime.GOMAXPROCS(0)))
	b.ResetTimer()
	cpu := cpuTime()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			ws.Write(benchLine)
		}
	})
	ws.Sync()
	b.StopTimer()
	// CPU, not wall time, is what logging takes from requests: the
	// process's user and system time (the reader of the pipe included).
	b.ReportMetric(float64(cpuTime()-cpu)/float64(b.N), "cpu-ns/line")
	b.ReportMetric(float64(out.writes.Load())/float64(b.N), "writes/line")
}

func BenchmarkLines(b *testing.B) {
	for _, o := range outputs(b) {
		b.Run("locked/"+o.name, func(b *testing.B) {
			out := &counting{w: o.w}
			benchWrites(b, out, zapcore.Lock(zapcore.AddSync(out)))
		})
		b.Run("sink/"+o.name, func(b *testing.B) {
			out := &counting{w: o.w}
			s := New(out, 0)
			defer s.Close()
			benchWrites(b, out, s)
		})
	}
}
