package bench

import (
	"context"
	"fmt"
	"os/exec"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"nanogate/accounting"
	"nanogate/config"
	"nanogate/internal/redistest"
	"nanogate/ratelimit"
)

// The Redis round trips of a request, against a real redis-server on
// loopback (skipped when there is none): what the limiter's decision and the
// budget reservation cost on top of the floor, one GET through the limiter's
// own client.

func redisConfig(b *testing.B) config.Redis {
	if _, err := exec.LookPath("redis-server"); err != nil {
		b.Skip("redis-server not in PATH")
	}
	// A generous decision timeout: these measure cost, and 32 admissions
	// at a time on two loaded cores can pass the default 50 ms, which
	// would send the rest of a run to the local fallback.
	cfg := config.Redis{Addrs: []string{redistest.Start(b).Addr}, DecisionTimeout: time.Second}
	cfg.KeyPrefix = "bench:"
	return cfg
}

// redisTime resets Redis's command statistics and returns a function that
// reports, per operation of b, the µs Redis spent in the commands clients
// send here (EVALSHA, EVAL, GET; a script's time includes the commands it
// calls, which INFO commandstats also lists on their own): the share of
// one machine's CPU the operation costs Redis, which a gateway on the same
// cores competes with.
//
// It also reports redis-cpu-µs/op, the server process's CPU (INFO cpu)
// per operation: the commands and the reading, parsing and writing around
// them, which commandstats leaves out and a pipeline shares.
func redisTime(b *testing.B, c redis.UniversalClient) func() {
	ctx := context.Background()
	if err := c.ConfigResetStat(ctx).Err(); err != nil {
		b.Fatal(err)
	}
	cpu0 := redisCPU(b, c)
	return func() {
		b.ReportMetric((redisCPU(b, c)-cpu0)*1e6/float64(b.N), "redis-cpu-µs/op")
		info, err := c.Info(ctx, "commandstats").Result()
		if err != nil {
			b.Fatal(err)
		}
		var usec float64
		for _, line := range strings.Split(info, "\n") {
			_, rest, ok := strings.Cut(line, ",usec=")
			name, _, _ := strings.Cut(line, ":")
			if !ok || (name != "cmdstat_evalsha" && name != "cmdstat_eval" && name != "cmdstat_get") {
				continue
			}
			v, _, _ := strings.Cut(rest, ",")
			f, _ := strconv.ParseFloat(v, 64)
			usec += f
		}
		b.ReportMetric(usec/float64(b.N), "redis-µs/op")
	}
}

// redisCPU is the Redis server's CPU time so far, in seconds.
func redisCPU(b *testing.B, c redis.UniversalClient) float64 {
	info, err := c.Info(context.Background(), "cpu").Result()
	if err != nil {
		b.Fatal(err)
	}
	var sum float64
	for _, line := range strings.Split(info, "\n") {
		name, v, ok := strings.Cut(strings.TrimSpace(line), ":")
		if ok && (name == "used_cpu_sys" || name == "used_cpu_user") {
			f, _ := strconv.ParseFloat(v, 64)
			sum += f
		}
	}
	return sum
}

// BenchmarkRedisFloorGet: one GET through the limiter's client (its
// timeouts, no retries).
func BenchmarkRedisFloorGet(b *testing.B) {
	c := ratelimit.NewClient(redisConfig(b))
	defer c.Close()
	ctx := context.Background()
	c.Set(ctx, "bench:x", "1", 0)
	b.ReportAllocs()
	for b.Loop() {
		if err := c.Get(ctx, "bench:x").Err(); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkLimiterRedis: one decision over the four limits of a key in a
// team, the Lua script on Redis.
func BenchmarkLimiterRedis(b *testing.B) {
	cfg := redisConfig(b)
	l := ratelimit.NewRedis(ratelimit.NewClient(cfg), cfg, nil)
	defer l.Close()
	ctx := context.Background()
	report := redisTime(b, l.Client())
	b.ReportAllocs()
	for b.Loop() {
		if r, err := l.Allow(ctx, limiterRequest); err != nil || !r.Allowed || r.Degraded {
			b.Fatal(r, err)
		}
	}
	report()
}

// BenchmarkBudgetReserveRedis: one budget reservation on the accounting
// client as main.go builds it (the id string is made per call).
func BenchmarkBudgetReserveRedis(b *testing.B) {
	cfg := redisConfig(b)
	c := redis.NewUniversalClient(&redis.UniversalOptions{Addrs: cfg.Addrs,
		DialTimeout: time.Second, ReadTimeout: time.Second, WriteTimeout: time.Second})
	defer c.Close()
	st := accounting.NewRedis(c, &cfg, accounting.Options{})
	budget := config.Budget{USD: 1e9, Period: "monthly"}
	ctx := context.Background()
	i := 0
	report := redisTime(b, c)
	b.ReportAllocs()
	for b.Loop() {
		i++
		if _, err := st.Reserve(ctx, accounting.Ask{ID: "req_bench" + strconv.Itoa(i), Team: "bench", Budget: &budget, Micros: 1000}); err != nil {
			b.Fatal(err)
		}
	}
	report()
}

// BenchmarkAdmissionRedis: what admitting a request costs on Redis, the
// limiter's decision and the budget reservation, each client as main.go
// builds it: one after the other (two round trips), and in one pipeline on
// the limiter's client (gateway's admission), serially and 32 at a time.
// benchJoin is a reservation joining its admission's pipeline, as the
// gateway's: the reservations of one pipeline go together.
type benchJoin struct {
	st  accounting.Store
	ask accounting.Ask
	rc  accounting.ReserveCall
}

func (j *benchJoin) Join(p redis.Pipeliner, js []ratelimit.Joiner) {
	asks := make([]accounting.Ask, len(js))
	calls := make([]*accounting.ReserveCall, len(js))
	for i, x := range js {
		asks[i], calls[i] = x.(*benchJoin).ask, &x.(*benchJoin).rc
	}
	accounting.QueueReserves(context.Background(), p, j.st, asks, calls)
}

func BenchmarkAdmissionRedis(b *testing.B) {
	cfg := redisConfig(b)
	l := ratelimit.NewRedis(ratelimit.NewClient(cfg), cfg, nil)
	defer l.Close()
	c := redis.NewUniversalClient(&redis.UniversalOptions{Addrs: cfg.Addrs,
		DialTimeout: time.Second, ReadTimeout: time.Second, WriteTimeout: time.Second, ContextTimeoutEnabled: true})
	defer c.Close()
	st := accounting.NewGuarded(accounting.NewRedis(c, &cfg, accounting.Options{}),
		accounting.GuardOptions{Timeout: time.Second})
	budget := config.Budget{USD: 1e9, Period: "monthly"}
	var seq atomic.Int64
	allowed := func(r ratelimit.Result, err error) error {
		if err == nil && (!r.Allowed || r.Degraded) {
			err = fmt.Errorf("decision %+v", r)
		}
		return err
	}
	sequential := func(ctx context.Context) error {
		if err := allowed(l.Allow(ctx, limiterRequest)); err != nil {
			return err
		}
		_, err := st.Reserve(ctx, accounting.Ask{ID: "req_bench" + strconv.FormatInt(seq.Add(1), 10), Team: "bench", Budget: &budget, Micros: 1000})
		return err
	}
	pipelined := func(ctx context.Context) error {
		var d ratelimit.Pending
		var rc accounting.ReserveCall
		p := l.Pipeline()
		l.Queue(ctx, p, limiterRequest, &d)
		accounting.QueueReserve(ctx, p, st, accounting.Ask{ID: "req_bench" + strconv.FormatInt(seq.Add(1), 10), Team: "bench", Budget: &budget, Micros: 1000}, &rc)
		l.Exec(ctx, p)
		err := allowed(d.Result(ctx))
		if _, rerr := rc.Result(ctx); err == nil {
			err = rerr
		}
		return err
	}
	// grouped: the decisions of concurrent admissions share a pipeline and
	// an allow script, each reservation a script of its own.
	grouped := func(ctx context.Context) error {
		var d ratelimit.Pending
		var rc accounting.ReserveCall
		id := "req_bench" + strconv.FormatInt(seq.Add(1), 10)
		l.Admit(limiterRequest, &d, ratelimit.JoinFunc(func(p redis.Pipeliner) {
			accounting.QueueReserve(ctx, p, st, accounting.Ask{ID: id, Team: "bench", Budget: &budget, Micros: 1000}, &rc)
		}))
		err := allowed(d.Result(ctx))
		if _, rerr := rc.Result(ctx); err == nil {
			err = rerr
		}
		return err
	}
	// joint: and the reservations of a pipeline share a script, as the
	// gateway sends them.
	joint := func(ctx context.Context) error {
		var d ratelimit.Pending
		j := &benchJoin{st: st, ask: accounting.Ask{ID: "req_bench" + strconv.FormatInt(seq.Add(1), 10), Team: "bench",
			Budget: &budget, Micros: 1000}}
		l.Admit(limiterRequest, &d, j)
		err := allowed(d.Result(ctx))
		if _, rerr := j.rc.Result(ctx); err == nil {
			err = rerr
		}
		return err
	}
	for _, m := range []struct {
		name  string
		admit func(context.Context) error
	}{{"sequential", sequential}, {"pipelined", pipelined}, {"grouped", grouped}, {"joint", joint}} {
		b.Run(m.name, func(b *testing.B) {
			ctx := context.Background()
			if err := m.admit(ctx); err != nil { // loads the scripts
				b.Fatal(err)
			}
			report := redisTime(b, c)
			b.ReportAllocs()
			for b.Loop() {
				if err := m.admit(ctx); err != nil {
					b.Fatal(err)
				}
			}
			report()
		})
		b.Run(m.name+"/c=32", func(b *testing.B) {
			ctx := context.Background()
			b.SetParallelism(16)
			report := redisTime(b, c)
			b.ReportAllocs()
			b.RunParallel(func(pb *testing.PB) {
				for pb.Next() {
					if err := m.admit(ctx); err != nil {
						b.Error(err)
						return
					}
				}
			})
			report()
		})
	}
}
