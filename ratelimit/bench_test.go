package ratelimit

import (
	"context"
	"fmt"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"nanogate/config"
	"nanogate/internal/redistest"
)

// The benchmarks measure one decision with the four limits of a key in a
// team, as the gateway asks it. Run them with
//
//	go test -run '^$' -bench . -benchtime 2s ./ratelimit/
//
// cpu-us/op is the gateway process's own CPU time (user + kernel) per
// decision, the Redis server's excluded, and user-us/op its user-space part
// (the rest is the kernel's side of the socket calls); server-us/op is the
// time Redis spends in the script; p50-us and p99-us are the latency of one
// decision under RunParallel. BenchmarkRedisGetBaseline is the floor: one
// GET through the same client.

func benchRequest(i int) Request {
	return Request{
		Key: fmt.Sprint("key", i%16), Team: fmt.Sprint("team", i%4), Tokens: 1290,
		Limits: Limits{KeyRPM: 1e7, KeyTPM: 1e12, TeamRPM: 1e7, TeamTPM: 1e12},
	}
}

func BenchmarkMemoryAllow(b *testing.B) {
	benchSerial(b, NewMemory())
}

func BenchmarkMemoryAllowParallel(b *testing.B) {
	benchParallel(b, NewMemory())
}

func BenchmarkRedisAllow(b *testing.B) {
	for _, tr := range transports {
		b.Run(tr.name, func(b *testing.B) { benchSerial(b, tr.limiter(b)) })
	}
}

func BenchmarkRedisAllowParallel(b *testing.B) {
	for _, tr := range transports {
		b.Run(tr.name, func(b *testing.B) { benchParallel(b, tr.limiter(b)) })
	}
}

// BenchmarkRedisGetBaseline is one GET through the same client: the floor of
// any round trip to Redis on this machine, for comparison.
func BenchmarkRedisGetBaseline(b *testing.B) {
	for _, tr := range transports {
		b.Run(tr.name, func(b *testing.B) {
			c := tr.limiter(b).(*Redis).client
			ctx := context.Background()
			c.Set(ctx, "x", "1", 0)
			b.ReportAllocs()
			cpu := cpuTime()
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				if err := c.Get(ctx, "x").Err(); err != nil {
					b.Fatal(err)
				}
			}
			b.StopTimer()
			reportCPU(b, cpu)
		})
	}
}

var transports = []struct {
	name    string
	limiter func(b *testing.B) Limiter
}{
	{"tcp", func(b *testing.B) Limiter {
		srv := redistest.Start(b)
		return benchRedis(b, srv.Addr)
	}},
	{"unix", func(b *testing.B) Limiter {
		sock := filepath.Join(b.TempDir(), "redis.sock")
		redistest.Start(b, "--unixsocket", sock, "--unixsocketperm", "700")
		return benchRedis(b, sock) // go-redis dials a path as a unix socket
	}},
}

func benchRedis(b *testing.B, addr string) Limiter {
	cfg := config.Redis{Addrs: []string{addr}, KeyPrefix: "bench:", OnOutage: "closed",
		ReadTimeout: 5 * time.Second, WriteTimeout: 5 * time.Second, DecisionTimeout: 5 * time.Second}
	l := NewRedis(NewClient(cfg), cfg, nil)
	b.Cleanup(func() {
		if s := l.Stats(); s.RedisErrors != 0 {
			b.Errorf("Redis errors during the benchmark: %+v", s)
		}
		l.Close()
	})
	return l
}

func benchSerial(b *testing.B, l Limiter) {
	ctx := context.Background()
	reqs := make([]Request, 64)
	for i := range reqs {
		reqs[i] = benchRequest(i)
		if _, err := l.Allow(ctx, reqs[i]); err != nil { // create the buckets, load the script
			b.Fatal(err)
		}
	}
	b.ReportAllocs()
	resetServerStats(b, l)
	cpu := cpuTime()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		if _, err := l.Allow(ctx, reqs[i%len(reqs)]); err != nil {
			b.Fatal(err)
		}
	}
	b.StopTimer()
	reportCPU(b, cpu)
	reportServer(b, l)
}

// resetServerStats and reportServer measure the time Redis spends running
// the script (INFO commandstats), reported as server-us/op.
func resetServerStats(b *testing.B, l Limiter) {
	if r, ok := l.(*Redis); ok {
		if err := r.client.ConfigResetStat(context.Background()).Err(); err != nil {
			b.Fatal(err)
		}
	}
}

func reportServer(b *testing.B, l Limiter) {
	r, ok := l.(*Redis)
	if !ok {
		return
	}
	info, err := r.client.Info(context.Background(), "commandstats").Result()
	if err != nil {
		b.Fatal(err)
	}
	_, stats, _ := strings.Cut(info, "cmdstat_evalsha:")
	_, perCall, _ := strings.Cut(stats, "usec_per_call=")
	perCall, _, _ = strings.Cut(perCall, ",")
	if v, err := strconv.ParseFloat(perCall, 64); err == nil {
		b.ReportMetric(v, "server-us/op")
	}
}

func benchParallel(b *testing.B, l Limiter) {
	ctx := context.Background()
	for i := range 64 {
		if _, err := l.Allow(ctx, benchRequest(i)); err != nil {
			b.Fatal(err)
		}
	}
	var mu sync.Mutex
	var all []time.Duration
	var next atomic.Int64
	b.ReportAllocs()
	resetServerStats(b, l)
	cpu := cpuTime()
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		g := int(next.Add(1))
		r := benchRequest(g)
		lat := make([]time.Duration, 0, 1<<16)
		for pb.Next() {
			start := time.Now()
			if _, err := l.Allow(ctx, r); err != nil {
				b.Error(err)
				return
			}
			lat = append(lat, time.Since(start))
		}
		mu.Lock()
		all = append(all, lat...)
		mu.Unlock()
	})
	b.StopTimer()
	reportCPU(b, cpu)
	reportServer(b, l)
	if len(all) > 0 {
		slices.Sort(all)
		b.ReportMetric(float64(all[len(all)/2].Nanoseconds())/1e3, "p50-us")
		b.ReportMetric(float64(all[len(all)*99/100].Nanoseconds())/1e3, "p99-us")
	}
}

func reportCPU(b *testing.B, since [2]time.Duration) {
	if b.N == 0 {
		return
	}
	now := cpuTime()
	user, sys := now[0]-since[0], now[1]-since[1]
	perOp := func(d time.Duration) float64 { return float64(d.Nanoseconds()) / 1e3 / float64(b.N) }
	b.ReportMetric(perOp(user+sys), "cpu-us/op")
	b.ReportMetric(perOp(user), "user-us/op")
}
