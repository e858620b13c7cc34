//go:build unix

package accounting

import (
	"context"
	"path/filepath"
	"sync"
	"syscall"
	"testing"
	"time"
)

// BenchmarkRecorderMemory: what recording usage costs a busy replica without
// Redis. 16 goroutines hand a Recorder 8000 records a second in all (a
// gateway serving 8000 small requests a second), into the embedded store
// with its file. A paced load, not a flood: how many records the writer
// finds queued together, and so how many system calls each record shares,
// depends on the rate. Reported per record: the CPU time of the whole
// process (the pacing's own timers included; the discard case is that
// floor), allocations, and per 1000 records the write(2)s and fsyncs of the
// usage file. Run:
//
//	go test -run '^$' -bench RecorderMemory -benchtime 24000x -count 3 ./accounting/
func BenchmarkRecorderMemory(b *testing.B) {
	b.Run("memory", func(b *testing.B) {
		m, err := OpenMemory(filepath.Join(b.TempDir(), "usage.jsonl"), Options{}, nil)
		if err != nil {
			b.Fatal(err)
		}
		defer m.Close()
		benchRecorderPaced(b, m, 8000)
		n := float64(b.N) / 1000
		b.ReportMetric(float64(m.writes.Load())/n, "writes/1k")
		b.ReportMetric(float64(m.syncs.Load())/n, "fsyncs/1k")
	})
	b.Run("discard", func(b *testing.B) { benchRecorderPaced(b, discard{}, 8000) })
}

// benchRecorderPaced hands b.N records to a Recorder in front of st at rate
// records a second and reports the CPU time per record.
func benchRecorderPaced(b *testing.B, st Store, rate int) {
	const writers = 16
	r := NewRecorder(st, RecorderOptions{SpoolPath: filepath.Join(b.TempDir(), "spool.jsonl")})
	defer r.Close(context.Background())
	p := NewPricer(testConfig())
	recs := make([]Record, b.N)
	for i := range recs {
		recs[i] = benchRecord(p)
	}
	every := time.Duration(writers) * time.Second / time.Duration(rate)
	b.ReportAllocs()
	b.ResetTimer()
	cpu0 := cpuTime(b)
	var wg sync.WaitGroup
	for w := range writers {
		wg.Go(func() {
			t := time.NewTicker(every)
			defer t.Stop()
			for i := w; i < len(recs); i += writers {
				<-t.C
				r.Record(recs[i])
			}
		})
	}
	wg.Wait()
	if err := r.Flush(context.Background()); err != nil {
		b.Fatal(err)
	}
	cpu := cpuTime(b) - cpu0
	b.StopTimer()
	b.ReportMetric(float64(cpu.Nanoseconds())/float64(b.N), "cpu-ns/record")
	if st := r.Stats(); st.Spooled > 0 || st.Applied != int64(b.N) {
		b.Fatalf("applied %d of %d, spooled %d", st.Applied, b.N, st.Spooled)
	}
}

// cpuTime is the process's user and system CPU time so far.
func cpuTime(b *testing.B) time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		b.Fatal(err)
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}
