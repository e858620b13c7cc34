package main

import (
	"fmt"
	"slices"
	"strings"
	"time"

	"nanogate/bench/load"
)

type latRun struct{ direct, gateway load.Result }

// latCase is one scenario at c=1: a run is a pair of fixed-rate phases.
type latCase struct {
	name, note string
	rate       float64
	runs       []latRun
}

func (c *latCase) med(f func(latRun) time.Duration) time.Duration {
	vs := make([]time.Duration, len(c.runs))
	for i, r := range c.runs {
		vs[i] = f(r)
	}
	return medianD(vs)
}

// added is the median over runs of the gateway's quantile minus the direct
// one, each run's pair measured back to back.
func (c *latCase) added(q float64) time.Duration {
	return c.med(func(r latRun) time.Duration { return r.gateway.Pct(q) - r.direct.Pct(q) })
}

type tpRun struct {
	direct, gateway  load.Result
	cpuDirect, cpuGW cpuSet
}

// tpCase is one closed-loop concurrency, run directly and through the
// gateway.
type tpCase struct {
	name string
	c    int
	runs []tpRun
}

func (c *tpCase) res(r *tpRun, gw bool) *load.Result {
	if gw {
		return &r.gateway
	}
	return &r.direct
}

func (c *tpCase) rps(gw bool) float64 {
	vs := make([]float64, len(c.runs))
	for i := range c.runs {
		vs[i] = c.res(&c.runs[i], gw).RPS()
	}
	return medianF(vs)
}

func (c *tpCase) ratio() float64 {
	if d := c.rps(false); d > 0 {
		return c.rps(true) / d
	}
	return 0
}

func (c *tpCase) pct(gw bool, q float64) time.Duration {
	vs := make([]time.Duration, len(c.runs))
	for i := range c.runs {
		vs[i] = c.res(&c.runs[i], gw).Pct(q)
	}
	return medianD(vs)
}

// cpuPerReq is the median over runs of one process's CPU time per answer of
// the direct or the gateway side.
func (c *tpCase) cpuPerReq(f func(cpuSet) time.Duration, gw bool) time.Duration {
	vs := make([]time.Duration, 0, len(c.runs))
	for i := range c.runs {
		r := &c.runs[i]
		cpu, res := r.cpuDirect, &r.direct
		if gw {
			cpu, res = r.cpuGW, &r.gateway
		}
		if res.Total > 0 {
			vs = append(vs, f(cpu)/time.Duration(res.Total))
		}
	}
	return medianD(vs)
}

// ioPerReq is the median over runs of the gateway's read and write calls per
// answer of its side.
func (c *tpCase) ioPerReq() (r, w float64) {
	var rs, ws []float64
	for i := range c.runs {
		x := &c.runs[i]
		if n := float64(x.gateway.Total); n > 0 {
			rs = append(rs, float64(x.cpuGW.gwReads)/n)
			ws = append(ws, float64(x.cpuGW.gwWrites)/n)
		}
	}
	return medianF(rs), medianF(ws)
}

// foreign is the median share of the machine used by other processes during
// the gateway (or direct) side of the runs.
func (c *tpCase) foreign(gw bool, cores int) float64 {
	vs := make([]float64, len(c.runs))
	for i := range c.runs {
		cpu := c.runs[i].cpuDirect
		if gw {
			cpu = c.runs[i].cpuGW
		}
		vs[i] = cpu.foreign(cores)
	}
	return medianF(vs)
}

func (c *tpCase) failures() (n int, first string) {
	for i := range c.runs {
		for _, r := range []*load.Result{&c.runs[i].direct, &c.runs[i].gateway} {
			n += r.Errors + r.Bad
			if first == "" {
				first = r.FirstErr
			}
		}
	}
	return n, first
}

type ablRun struct {
	fixed, closed load.Result
	cpu           cpuSet // around the closed-loop phase
}

// ablCase is one gateway variant (or the direct request) in the breakdown.
type ablCase struct {
	name string
	runs []ablRun
}

func (c *ablCase) p50() time.Duration {
	vs := make([]time.Duration, len(c.runs))
	for i := range c.runs {
		vs[i] = c.runs[i].fixed.Pct(.5)
	}
	return medianD(vs)
}

func (c *ablCase) p99() time.Duration {
	vs := make([]time.Duration, len(c.runs))
	for i := range c.runs {
		vs[i] = c.runs[i].fixed.Pct(.99)
	}
	return medianD(vs)
}

// addedP50 is the median over runs of this p50 minus the direct one of the
// same run.
func (c *ablCase) addedP50(direct *ablCase) time.Duration {
	var vs []time.Duration
	for i := range c.runs {
		if i < len(direct.runs) {
			vs = append(vs, c.runs[i].fixed.Pct(.5)-direct.runs[i].fixed.Pct(.5))
		}
	}
	return medianD(vs)
}

func (c *ablCase) rps() float64 {
	vs := make([]float64, len(c.runs))
	for i := range c.runs {
		vs[i] = c.runs[i].closed.RPS()
	}
	return medianF(vs)
}

func (c *ablCase) cpuPerReq(f func(cpuSet) time.Duration) time.Duration {
	var vs []time.Duration
	for i := range c.runs {
		if n := c.runs[i].closed.Total; n > 0 {
			vs = append(vs, f(c.runs[i].cpu)/time.Duration(n))
		}
	}
	return medianD(vs)
}

func (c *ablCase) ioPerReq() (r, w float64) {
	var rs, ws []float64
	for i := range c.runs {
		x := &c.runs[i]
		if n := float64(x.closed.Total); n > 0 {
			rs = append(rs, float64(x.cpu.gwReads)/n)
			ws = append(ws, float64(x.cpu.gwWrites)/n)
		}
	}
	return medianF(rs), medianF(ws)
}

func (c *ablCase) foreign(cores int) float64 {
	vs := make([]float64, len(c.runs))
	for i := range c.runs {
		vs[i] = c.runs[i].cpu.foreign(cores)
	}
	return medianF(vs)
}

func (c *ablCase) failures() int {
	n := 0
	for _, r := range c.runs {
		n += r.fixed.Errors + r.fixed.Bad + r.closed.Errors + r.closed.Bad
	}
	return n
}

// redisCmd is one Redis command's share of a profiled phase.
type redisCmd struct {
	name                string
	perReq, usecPerCall float64
}

type profResult struct {
	name                  string
	c                     int
	secs                  time.Duration
	err                   string
	requests              int
	cpuUsed               time.Duration
	allocBytes, allocs    float64
	cpuFile, allocFile    string
	components, kinds     []share
	allocComponents       []share
	topFlat, topCum       string
	allocTop, allocObjTop string
	redis                 []redisCmd
}

type rssResult struct {
	what                     string
	offload                  bool
	conns                    int
	err                      string
	res                      load.Result
	cpu                      time.Duration
	idleKB, hwmKB, sampledKB int64
	heapTop, heapFile        string
}

type report struct {
	m         machine
	quick     bool
	runs      int
	command   string
	elapsed   time.Duration
	lat       []latCase
	sweep     []tpCase
	abl       []ablCase
	ablDirect *ablCase
	// ablPing: per run, the p50 of Redis PING round trips at the rate of
	// the breakdown's c=1 (the floor of asking Redis anything once).
	ablPing   []time.Duration
	large     []tpCase
	prof      *profResult
	profLarge *profResult
	rss       []rssResult
	inflight  []inflightResult
	micro     []microResult
	microErr  string
	// otherBefore is the share of the machine busy with other work just
	// before the measured phases.
	otherBefore float64
	analysis    []byte
}

func medianD(vs []time.Duration) time.Duration {
	if len(vs) == 0 {
		return 0
	}
	s := slices.Clone(vs)
	slices.Sort(s)
	if len(s)%2 == 1 {
		return s[len(s)/2]
	}
	return (s[len(s)/2-1] + s[len(s)/2]) / 2
}

// fd formats a duration for a table.
func fd(d time.Duration) string {
	switch a := max(d, -d); {
	case a < time.Millisecond:
		return fmt.Sprintf("%.0f µs", float64(d)/1e3)
	case a < 100*time.Millisecond:
		return fmt.Sprintf("%.2f ms", float64(d)/1e6)
	default:
		return fmt.Sprintf("%.0f ms", float64(d)/1e6)
	}
}

func verdict(ok bool) string {
	if ok {
		return "met"
	}
	return "**missed**"
}

func (r *report) find(name string) *latCase {
	for i := range r.lat {
		if r.lat[i].name == name {
			return &r.lat[i]
		}
	}
	return nil
}

func (r *report) sweepAt(c int) *tpCase {
	for i := range r.sweep {
		if r.sweep[i].c == c {
			return &r.sweep[i]
		}
	}
	return nil
}

type targetRow struct{ figure, target, measured, verdict string }

func (r *report) targets() []targetRow {
	var rows []targetRow
	if c := r.find("small"); c != nil {
		a := c.added(0.5)
		rows = append(rows, targetRow{"added p50 latency, c=1, small answer (text + 2 KB image), Redis limits + accounting on",
			"≤ " + fd(targetAddedSmall), fd(a), verdict(a <= targetAddedSmall)})
	}
	for _, n := range []struct{ name, what string }{{"large", "plain"}, {"stream", "streaming"}} {
		if c := r.find(n.name); c != nil {
			a := c.added(0.5)
			rows = append(rows, targetRow{"added p50 latency, c=1, 1.5 MB Gemini image translated (" + n.what + ")",
				"≤ " + fd(targetAddedLarge), fd(a), verdict(a <= targetAddedLarge)})
		}
	}
	if c := r.sweepAt(32); c != nil {
		rows = append(rows, targetRow{"throughput at c=32, small answer, gateway / direct",
			fmt.Sprintf("≥ %.0f%%", 100*targetRatio32), fmt.Sprintf("%.0f%% (%.0f / %.0f req/s)", 100*c.ratio(), c.rps(true), c.rps(false)),
			verdict(c.ratio() >= targetRatio32)})
	}
	rows = append(rows, r.ablationTargets()...)
	rows = append(rows, r.inflightTargets()...)
	for _, x := range r.rss {
		what := "peak RSS of the gateway, 200 concurrent 1.5 MB image answers, " + x.what
		if x.err != "" && x.hwmKB == 0 {
			rows = append(rows, targetRow{what, fmt.Sprintf("≤ %d MiB", targetRSSMiB), "failed: " + x.err, "-"})
			continue
		}
		mib := float64(x.hwmKB) / 1024
		rows = append(rows, targetRow{what, fmt.Sprintf("≤ %d MiB", targetRSSMiB), fmt.Sprintf("%.0f MiB", mib), verdict(mib <= targetRSSMiB)})
	}
	return rows
}

// summary is what the command prints at the end.
func (r *report) summary() string {
	var b strings.Builder
	b.WriteString("\nTargets (2-core figures; see bench/RESULTS.md):\n")
	for _, t := range r.targets() {
		fmt.Fprintf(&b, "  %-100s %-10s %-28s %s\n", t.figure, t.target, t.measured, strings.Trim(t.verdict, "*"))
	}
	return b.String()
}

func (r *report) markdown() string {
	var b strings.Builder
	w := func(format string, args ...any) { fmt.Fprintf(&b, format, args...) }
	w("# nanogate benchmark results\n\n")
	w("Written by `%s` (bench/run) on %s, in %.0f s (building the binaries included). ", r.command,
		r.m.Started.UTC().Format("2006-01-02 15:04 MST"), r.elapsed.Seconds())
	if r.quick {
		w("**Quick mode**: one short run per figure, noisier than `make bench`. ")
	} else {
		w("Every figure is the median of %d runs. ", r.runs)
	}
	w("Warm-up requests are excluded. Everything runs on one machine over loopback: the load generator, the\n" +
		"gateway, the fake upstreams and Redis share its cores, so the figures compare the gateway with the same\n" +
		"requests sent directly to the fake upstream, measured side by side in the same run.\n\n")
	w("| machine | |\n|---|---|\n")
	w("| cores | %d |\n| CPU | %s |\n| memory | %.1f GiB |\n| Go | %s |\n| kernel | %s |\n| Redis | %s |\n| commit | %s |\n\n",
		r.m.Cores, r.m.CPU, r.m.MemGiB, r.m.Go, r.m.Kernel, r.m.Redis, r.m.Commit)
	w("Other load on the machine in the second before the measured phases: **%.0f%%** of its CPU capacity", 100*r.otherBefore)
	if r.otherBefore > 0.1 {
		w(" (a shared machine: every figure below is slower than on an idle one, the direct ones included; the\n" +
			"throughput tables show the other load during each phase)")
	}
	w(".\n\n")

	w("## Set-up\n\n")
	w("- **Gateway**: the binary built with `go build -trimpath`, config written by the harness: `redis:` on a real\n" +
		"  `redis-server` (no persistence), one key in one team with very large rpm/tpm and a large monthly budget, so\n" +
		"  every request runs the limiter's Lua script and the budget reservation on Redis, and its usage record\n" +
		"  and the TPM correction after the answer. Log level info (one JSON line per request to a file).\n")
	w("- **Fake upstreams**: `internal/fakeup/cmd/fakeup`, both kinds, no added latency: the reseller answers text\n" +
		"  and a 2 KB PNG as a markdown data URL (passed through), Gemini a 1.5 MB PNG (2 MB of base64) in its\n" +
		"  native format, translated by the gateway into a `chat.completion` (or `chat.completion.chunk` events).\n")
	w("- **Direct** requests are the bodies the gateway sent upstream (read back from the fake), sent to the fake\n" +
		"  upstream with its key: the same work for the upstream, minus the gateway.\n")
	w("- **Load generator** (bench/load): keep-alive connections, a minimal HTTP/1.1 client. At c=1 open loop on\n" +
		"  one connection at a fixed rate (a quarter of what one connection through the gateway sustains): a request\n" +
		"  held up by a slow answer is measured from the time it was due (no coordinated omission), the generator's own\n" +
		"  timer lateness is not counted. Throughput phases closed loop.\n\n")

	w("## Targets\n\n| figure | target | measured | |\n|---|---|---|---|\n")
	for _, t := range r.targets() {
		w("| %s | %s | %s | %s |\n", t.figure, t.target, t.measured, t.verdict)
	}
	w("\n")

	w("## Latency at c=1 (open loop, fixed rate)\n\n")
	w("| answer | rate | samples | direct p50 / p90 / p99 | gateway p50 / p90 / p99 | added p50 / p90 / p99 | send lag p99 | errors |\n")
	w("|---|---|---|---|---|---|---|---|\n")
	for i := range r.lat {
		c := &r.lat[i]
		q := func(gw bool, p float64) time.Duration {
			return c.med(func(x latRun) time.Duration {
				if gw {
					return x.gateway.Pct(p)
				}
				return x.direct.Pct(p)
			})
		}
		errs := 0
		for _, x := range c.runs {
			errs += x.direct.Errors + x.direct.Bad + x.gateway.Errors + x.gateway.Bad
		}
		lag := c.med(func(x latRun) time.Duration { return load.Quantile(x.gateway.Lag, 0.99) })
		n := c.med(func(x latRun) time.Duration { return time.Duration(len(x.gateway.Lat)) })
		w("| %s: %s | %.0f/s | %d | %s / %s / %s | %s / %s / %s | %s / %s / %s | %s | %d |\n",
			c.name, c.note, c.rate, n,
			fd(q(false, .5)), fd(q(false, .9)), fd(q(false, .99)),
			fd(q(true, .5)), fd(q(true, .9)), fd(q(true, .99)),
			fd(c.added(.5)), fd(c.added(.9)), fd(c.added(.99)), fd(lag), errs)
	}
	w("\nAdded = gateway minus direct, per run, then the median. Send lag: how late the generator sent a request\n" +
		"after its due time: its timer's own error (not counted in the latencies; sleeps overshoot by up to 1 ms on\n" +
		"some VMs) plus any wait behind a slow answer (counted).\n\n")

	tpTable := func(title string, cases []tpCase) {
		w("%s\n\n", title)
		w("| answer | c | direct req/s | gateway req/s | gateway / direct | direct p50 / p99 | gateway p50 / p99 | gateway CPU / req | gateway read, write calls / req | upstream CPU / req (direct, via gateway) | Redis CPU / req | load gen CPU / req (direct, via gateway) | other load (direct, via gateway) | errors |\n")
		w("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|\n")
		for i := range cases {
			c := &cases[i]
			n, first := c.failures()
			errs := fmt.Sprint(n)
			if n > 0 {
				errs += " (" + first + ")"
			}
			rd, wr := c.ioPerReq()
			w("| %s | %d | %.0f | %.0f | %.0f%% | %s / %s | %s / %s | %s | %.1f, %.1f | %s, %s | %s | %s, %s | %.0f%%, %.0f%% | %s |\n",
				c.name, c.c, c.rps(false), c.rps(true), 100*c.ratio(),
				fd(c.pct(false, .5)), fd(c.pct(false, .99)), fd(c.pct(true, .5)), fd(c.pct(true, .99)),
				fd(c.cpuPerReq(func(s cpuSet) time.Duration { return s.gw }, true)), rd, wr,
				fd(c.cpuPerReq(func(s cpuSet) time.Duration { return s.fake }, false)),
				fd(c.cpuPerReq(func(s cpuSet) time.Duration { return s.fake }, true)),
				fd(c.cpuPerReq(func(s cpuSet) time.Duration { return s.redis }, true)),
				fd(c.cpuPerReq(func(s cpuSet) time.Duration { return s.self }, false)),
				fd(c.cpuPerReq(func(s cpuSet) time.Duration { return s.self }, true)),
				100*c.foreign(false, r.m.Cores), 100*c.foreign(true, r.m.Cores), errs)
		}
		w("\n")
	}
	tpTable("## Throughput, small answer (closed loop, sweep of connections)", r.sweep)
	w("CPU per request is user + system time of each process (/proc/<pid>/stat) over the phase, warm-up\n"+
		"included, divided by the answers of the phase. On %d cores the processes compete for the same CPUs: the\n"+
		"gateway's throughput is bounded by its CPU per request plus what the upstream, Redis and the load\n"+
		"generator spend on the same request. Other load is the share of the machine's CPU capacity used by\n"+
		"processes outside the benchmark during the phase (other work on a shared machine, steal time).\n\n", r.m.Cores)
	if len(r.abl) > 0 && r.ablDirect != nil {
		w("## Where the added latency and the lost throughput go: gateway variants (small answer)\n\n")
		w("The same request through gateways that each leave one part out, run side by side (order rotated per run).\n" +
			"c=1 is open loop at the rate of the latency table; c=32 closed loop.\n\n")
		w("| gateway | c=1 p50 | added p50 | c=1 p99 | c=32 req/s | of direct | gateway CPU / req (c=32) | gateway read, write calls / req | Redis CPU / req (c=32) | other load | errors |\n")
		w("|---|---|---|---|---|---|---|---|---|---|---|\n")
		d := r.ablDirect
		w("| %s | %s | - | %s | %.0f | 100%% | - | - | - | %.0f%% | %d |\n", d.name, fd(d.p50()), fd(d.p99()), d.rps(),
			100*d.foreign(r.m.Cores), d.failures())
		for i := range r.abl {
			c := &r.abl[i]
			ratio := 0.0
			if d.rps() > 0 {
				ratio = c.rps() / d.rps()
			}
			rd, wr := c.ioPerReq()
			w("| %s | %s | %s | %s | %.0f | %.0f%% | %s | %.1f, %.1f | %s | %.0f%% | %d |\n", c.name, fd(c.p50()), fd(c.addedP50(d)),
				fd(c.p99()), c.rps(), 100*ratio,
				fd(c.cpuPerReq(func(s cpuSet) time.Duration { return s.gw })), rd, wr,
				fd(c.cpuPerReq(func(s cpuSet) time.Duration { return s.redis })),
				100*c.foreign(r.m.Cores), c.failures())
		}
		w("\n")
		if len(r.ablPing) > 0 {
			w("One Redis round trip alone (PING on one connection, open loop at the same rate, from the load\n"+
				"generator): p50 %s. Every variant with Redis makes at least one per request.\n\n", fd(medianD(r.ablPing)))
		}
	}
	tpTable("## Throughput, 1.5 MB Gemini image (closed loop)", r.large)

	w("## Memory: %d concurrent 1.5 MB image answers\n\n", r.rssConnsOr(200))
	w("A fresh gateway process per row (VmHWM is the peak since its start), %d connections each sending the\n"+
		"Gemini 1.5 MB request as soon as the previous answer is read.\n\n", r.rssConnsOr(200))
	w("| gateway | peak RSS (VmHWM) | largest sampled VmRSS | RSS at start | answers | req/s | p50 / p99 | CPU / req | errors |\n|---|---|---|---|---|---|---|---|---|\n")
	for _, x := range r.rss {
		name := x.what
		errs := fmt.Sprint(x.res.Errors + x.res.Bad)
		if x.err != "" {
			errs += " (" + x.err + ")"
		} else if x.res.FirstErr != "" {
			errs += " (" + x.res.FirstErr + ")"
		}
		cpu := time.Duration(0)
		if x.res.Total > 0 {
			cpu = x.cpu / time.Duration(x.res.Total)
		}
		w("| %s | %.0f MiB | %.0f MiB | %.0f MiB | %d | %.0f | %s / %s | %s | %s |\n", name,
			float64(x.hwmKB)/1024, float64(x.sampledKB)/1024, float64(x.idleKB)/1024, x.res.Total, x.res.RPS(),
			fd(x.res.Pct(.5)), fd(x.res.Pct(.99)), fd(cpu), errs)
	}
	w("\n")

	r.inflightSection(w)

	w("## Micro-benchmarks (package bench, `go test -bench . -benchmem ./bench`)\n\n")
	if r.microErr != "" {
		w("Not complete: %s\n\n", r.microErr)
	}
	if len(r.micro) > 0 {
		w("| benchmark | ns/op | B/op | allocs/op | other |\n|---|---|---|---|---|\n")
		for _, m := range r.micro {
			var other []string
			for _, u := range m.units {
				switch u {
				case "ns/op", "B/op", "allocs/op":
				default:
					other = append(other, fmt.Sprintf("%.4g %s", m.metrics[u], u))
				}
			}
			w("| %s | %.0f | %.0f | %.0f | %s |\n", m.name, m.metrics["ns/op"], m.metrics["B/op"], m.metrics["allocs/op"], strings.Join(other, ", "))
		}
		w("\nMedians of the `-count` runs. See bench/bench_test.go for what each one covers.\n\n")
	}

	w("## Profiles\n\n")
	for _, p := range []*profResult{r.prof, r.profLarge} {
		if p == nil {
			continue
		}
		what := "small answer at c=32"
		if p.name == "large" {
			what = "1.5 MB Gemini image (plain) at c=8"
		}
		w("### CPU of the gateway, %s (%s profile)\n\n", what, p.secs)
		if p.err != "" {
			w("Profile failed: %s\n\n", p.err)
			continue
		}
		if p.requests > 0 {
			w("%d requests during the phase; the gateway used %s of CPU in the %s profiled. ", p.requests, fd(p.cpuUsed), p.secs)
		}
		if p.allocBytes > 0 {
			w("Allocated per request (from /metrics, go_memstats): **%.0f B in %.0f allocations**.", p.allocBytes, p.allocs)
		}
		w(" Files (left by the run in bench/out, not committed): `%s`", p.cpuFile)
		if p.allocFile != "" {
			w(", `%s` (`go tool pprof -sample_index=alloc_space -base bench/out/allocs-%s-before.pprof %s`)", p.allocFile, p.name, p.allocFile)
		}
		w(".\n\n")
		w("By component (each sample charged to the first matching area, in this order: a Redis round trip made by the\nlimiter counts for the limiter):\n\n| component | share of gateway CPU |\n|---|---|\n")
		for _, s := range p.components {
			w("| %s | %.1f%% |\n", s.name, s.pct)
		}
		w("\nBy kind of work (a sample counts in every kind on its stack):\n\n| kind | share of gateway CPU |\n|---|---|\n")
		for _, s := range p.kinds {
			w("| %s | %.1f%% |\n", s.name, s.pct)
		}
		if len(p.redis) > 0 {
			w("\nRedis commands per request during the phase (INFO commandstats; µs is Redis's own time in the command,\n" +
				"Lua scripts included, on the same cores):\n\n| command | calls / request | µs / call | µs / request |\n|---|---|---|---|\n")
			total := 0.0
			for _, c := range p.redis {
				if c.name == "info" {
					continue
				}
				w("| %s | %.2f | %.1f | %.1f |\n", c.name, c.perReq, c.usecPerCall, c.perReq*c.usecPerCall)
				total += c.perReq * c.usecPerCall
			}
			w("| total | | | %.1f |\n", total)
		}
		w("\n<details><summary>pprof -top (flat)</summary>\n\n```\n%s\n```\n</details>\n\n", p.topFlat)
		w("<details><summary>pprof -top -cum</summary>\n\n```\n%s\n```\n</details>\n\n", p.topCum)
		if p.allocTop != "" {
			w("Allocations during the phase by component (alloc_space):\n\n| component | share of bytes allocated |\n|---|---|\n")
			for _, s := range p.allocComponents {
				w("| %s | %.1f%% |\n", s.name, s.pct)
			}
			w("\n<details><summary>pprof -top, alloc_space</summary>\n\n```\n%s\n```\n</details>\n\n", p.allocTop)
			w("<details><summary>pprof -top, alloc_objects</summary>\n\n```\n%s\n```\n</details>\n\n", p.allocObjTop)
		}
	}
	for _, x := range r.rss {
		if x.heapTop != "" {
			w("### Heap in use in the middle of the %d concurrent 1.5 MB answers\n\n`%s`\n\n```\n%s\n```\n\n", x.conns, x.heapFile, x.heapTop)
		}
	}

	b.WriteString(analysisSection(r.analysis))
	return b.String()
}

// findingsHeading starts the hand-written part of the report.
const findingsHeading = "## Findings and proposed optimisations\n"

// analysisSection is the end of the report: bench/ANALYSIS.md, written by
// hand from a full run.
func analysisSection(analysis []byte) string {
	if len(analysis) == 0 {
		return findingsHeading + "\n(bench/ANALYSIS.md is missing.)\n"
	}
	return findingsHeading + "\nFrom bench/ANALYSIS.md, written by hand from a full run (its figures are that run's; the tables above\n" +
		"are this one's).\n\n" + string(analysis)
}

func (r *report) rssConnsOr(n int) int {
	if len(r.rss) > 0 {
		return r.rss[0].conns
	}
	return n
}
