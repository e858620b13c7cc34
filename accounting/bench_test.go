package accounting

import (
	"context"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"nanogate/config"
	"nanogate/internal/redistest"
)

// Throughput of the stores, in records per second. Run:
//
//	go test -run '^$' -bench . -benchtime 3s ./accounting/

var benchSeq atomic.Int64

func benchRecord(p *Pricer) Record {
	i := benchSeq.Add(1)
	r := Record{ID: "bench-" + strconv.FormatInt(i, 10), Time: time.Now(), Key: "k" + strconv.FormatInt(i%8, 10),
		Team: "team" + strconv.FormatInt(i%4, 10), Model: previewModel, Provider: "laozhang", Attempts: 1,
		Images: 1, PromptTokens: 25, TextTokens: 10, ImageTokens: 1290, Status: 200}
	p.Charge(&r)
	return r
}

func reportRate(b *testing.B) {
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "records/s")
}

// reportScriptTime reports Redis's own time in scripts per record (INFO
// commandstats), the part of a record's cost that Redis's single thread
// pays whatever the client.
func reportScriptTime(b *testing.B, s *Redis) {
	info, err := s.c.Info(context.Background(), "commandstats").Result()
	if err != nil {
		b.Fatal(err)
	}
	var usec float64
	for _, line := range strings.Split(info, "\n") {
		if rest, ok := strings.CutPrefix(line, "cmdstat_evalsha:"); ok {
			for _, kv := range strings.Split(strings.TrimSpace(rest), ",") {
				if v, ok := strings.CutPrefix(kv, "usec="); ok {
					usec, _ = strconv.ParseFloat(v, 64)
				}
			}
		}
	}
	b.ReportMetric(usec/float64(b.N), "redis-µs/op")
}

func benchRedis(b *testing.B) *Redis {
	srv := redistest.Start(b)
	return NewRedis(newClient(b, srv.Addr), &config.Redis{KeyPrefix: "bench:"}, Options{})
}

// BenchmarkRedisApply: one record, one script, one round trip at a time.
func BenchmarkRedisApply(b *testing.B) {
	s, p, ctx := benchRedis(b), NewPricer(testConfig()), context.Background()
	for b.Loop() {
		if _, err := s.Apply(ctx, benchRecord(p)); err != nil {
			b.Fatal(err)
		}
	}
	reportRate(b)
}

// BenchmarkRedisApplyConcurrent: 32 writers, one record each per round
// trip, as 32 gateway goroutines calling Apply would.
func BenchmarkRedisApplyConcurrent(b *testing.B) {
	s, p, ctx := benchRedis(b), NewPricer(testConfig()), context.Background()
	b.SetParallelism(16)
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			if _, err := s.Apply(ctx, benchRecord(p)); err != nil {
				b.Error(err)
				return
			}
		}
	})
	reportRate(b)
}

// BenchmarkRedisApplyBatch: the Recorder's way, pipelines of 64 scripts.
func BenchmarkRedisApplyBatch(b *testing.B) {
	p := NewPricer(testConfig())
	applyInBatches(b, benchRedis(b), func() Record { return benchRecord(p) })
}

// BenchmarkRedisApplyBatchGatewayIDs: pipelines of 64 records of one team,
// key and model with the gateway's request ids, as a replica serving one
// busy team writes them.
func BenchmarkRedisApplyBatchGatewayIDs(b *testing.B) {
	p := NewPricer(testConfig())
	applyInBatches(b, benchRedis(b), func() Record {
		r := benchRecord(p)
		r.ID, r.Team, r.Key = "req_0123456789ab"+strconv.FormatInt(benchSeq.Add(1), 36), "team0", "k0"
		return r
	})
}

// BenchmarkRedisReserveThenApplyBatch: each record's request reserved its
// estimate first (one script each) and the records, applied in pipelines
// of 64, release the reservations: Redis's script time per record is the
// reservation's and the record's.
func BenchmarkRedisReserveThenApplyBatch(b *testing.B) {
	s, p, ctx := benchRedis(b), NewPricer(testConfig()), context.Background()
	budget := &config.Budget{USD: config.MaxBudgetUSD, Period: "monthly"}
	applyInBatches(b, s, func() Record {
		r := benchRecord(p)
		r.ID, r.Team, r.Key = "req_0123456789ab"+strconv.FormatInt(benchSeq.Add(1), 36), "team0", "k0"
		if _, err := s.Reserve(ctx, Ask{ID: r.ID, Team: r.Team, Budget: budget, Key: r.Key, KeyBudget: budget, Micros: 40_000}); err != nil {
			b.Fatal(err)
		}
		return r
	})
}

// applyInBatches applies next's records in batches of 64 and reports the
// rate and Redis's script time per record.
func applyInBatches(b *testing.B, s *Redis, next func() Record) {
	ctx := context.Background()
	batch := make([]Record, 0, 64)
	flush := func() {
		if _, err := s.ApplyBatch(ctx, batch); err != nil {
			b.Fatal(err)
		}
		batch = batch[:0]
	}
	for b.Loop() {
		if batch = append(batch, next()); len(batch) == cap(batch) {
			flush()
		}
	}
	flush()
	reportRate(b)
	reportScriptTime(b, s)
}

// BenchmarkRecorderRedis: records handed to a Recorder by 32 goroutines
// until Redis has them all (Close waits for the last).
func BenchmarkRecorderRedis(b *testing.B) {
	s, p := benchRedis(b), NewPricer(testConfig())
	r := NewRecorder(s, RecorderOptions{SpoolPath: filepath.Join(b.TempDir(), "spool.jsonl"), Queue: 1 << 16})
	b.SetParallelism(16)
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			r.Record(benchRecord(p))
		}
	})
	if err := r.Close(context.Background()); err != nil {
		b.Fatal(err)
	}
	reportRate(b)
	if st := r.Stats(); st.Applied != int64(b.N) {
		b.Fatalf("applied %d of %d (%+v)", st.Applied, b.N, st)
	}
}

// BenchmarkMemoryApply: the embedded store with its file (fsync batched).
func BenchmarkMemoryApply(b *testing.B) {
	m, err := OpenMemory(filepath.Join(b.TempDir(), "usage.jsonl"), Options{}, nil)
	if err != nil {
		b.Fatal(err)
	}
	defer m.Close()
	p, ctx := NewPricer(testConfig()), context.Background()
	b.ReportAllocs()
	for b.Loop() {
		if _, err := m.Apply(ctx, benchRecord(p)); err != nil {
			b.Fatal(err)
		}
	}
	reportRate(b)
}

// BenchmarkMemoryApplyBatch: the embedded store's work per record, with
// its file, in batches of 1, 16 and 64 as the Recorder hands them over
// (records of one image at a size). Run:
//
//	go test -run '^$' -bench MemoryApplyBatch -count 3 ./accounting/
func BenchmarkMemoryApplyBatch(b *testing.B) {
	for _, size := range []int{1, 16, 64} {
		b.Run(strconv.Itoa(size), func(b *testing.B) {
			m, err := OpenMemory(filepath.Join(b.TempDir(), "usage.jsonl"), Options{}, nil)
			if err != nil {
				b.Fatal(err)
			}
			defer m.Close()
			ctx, tmpl := context.Background(), benchRecord(NewPricer(testConfig()))
			tmpl.Size = "1K"
			ids := make([]string, b.N*size)
			for i := range ids {
				ids[i] = "bench-" + strconv.FormatInt(benchSeq.Add(1), 10)
			}
			batch := make([]Record, size)
			var ms0, ms1 runtime.MemStats
			runtime.ReadMemStats(&ms0)
			b.ResetTimer()
			for i := range b.N {
				for j := range batch {
					batch[j] = tmpl
					batch[j].ID = ids[i*size+j]
				}
				if n, err := m.ApplyBatch(ctx, batch); err != nil || n != size {
					b.Fatal(n, err)
				}
			}
			b.StopTimer()
			runtime.ReadMemStats(&ms1)
			records := float64(b.N * size)
			b.ReportMetric(float64(b.Elapsed().Nanoseconds())/records, "ns/record")
			b.ReportMetric(float64(ms1.Mallocs-ms0.Mallocs)/records, "allocs/record")
			b.ReportMetric(float64(ms1.TotalAlloc-ms0.TotalAlloc)/records, "B/record")
		})
	}
}

// discard is a store that takes records and forgets them.
type discard struct{ Store }

func (discard) ApplyBatch(_ context.Context, recs []Record) (int, error) { return len(recs), nil }

// BenchmarkRecord is the cost on the request path: the hand-over alone,
// while the writer keeps up (it is given time to drain, off the clock,
// every 1024 records; a caller faster than the writer spools, see
// BenchmarkRecorderRedis).
func BenchmarkRecord(b *testing.B) {
	r := NewRecorder(discard{}, RecorderOptions{SpoolPath: filepath.Join(b.TempDir(), "spool.jsonl")})
	defer r.Close(context.Background())
	rec := benchRecord(NewPricer(testConfig()))
	b.ReportAllocs()
	b.ResetTimer()
	for i := range b.N {
		r.Record(rec)
		if i%1024 == 1023 {
			b.StopTimer()
			r.Flush(context.Background())
			b.StartTimer()
		}
	}
	b.StopTimer()
	if st := r.Stats(); st.Spooled > 0 {
		b.Fatalf("%d of %d records spooled: the writer fell behind", st.Spooled, b.N)
	}
}

// BenchmarkRedisReserve: the budget reservation on a request's path, one
// round trip at a time, and its release.
func BenchmarkRedisReserve(b *testing.B) {
	s, ctx := benchRedis(b), context.Background()
	budget := config.Budget{USD: 1e6, Period: "monthly"}
	b.ReportAllocs()
	for b.Loop() {
		id := "resv-" + strconv.FormatInt(benchSeq.Add(1), 10)
		r, err := s.Reserve(ctx, Ask{ID: id, Team: "team1", Budget: &budget, Micros: 39000})
		if err != nil {
			b.Fatal(err)
		}
		if err := s.Release(ctx, r); err != nil {
			b.Fatal(err)
		}
	}
	reportScriptTime(b, s)
}
