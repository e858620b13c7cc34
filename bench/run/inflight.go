package main

import (
	"fmt"
	"time"

	"nanogate/bench/load"
)

// inflightLatency is the upstream's wait before each answer in the
// in-flight phase: image generation takes seconds, so answers pile up.
const inflightLatency = time.Second

// Targets of the in-flight phase.
const (
	targetInflightRSSMiB = 300 // 300 concurrent answers, 1 s upstream
	inflightLimit        = "512MiB"
)

// inflightResult is one row of the in-flight phase.
type inflightResult struct {
	what     string
	conns    int
	memLimit string // server.memory_limit, "" when unset
	err      string
	res      load.Result
	// hwmKB is VmHWM at the end (the process's peak), sampledKB the
	// largest VmRSS seen while it ran.
	hwmKB, sampledKB int64
	// alive: the gateway was still running after the load (not killed).
	alive bool
	// overloaded is nanogate_overloaded_total after the load.
	overloaded float64
}

// inflightPhase is many image answers in flight at once: C connections
// each sending the 1.5 MB Gemini request again as soon as the previous
// answer is read, the upstream waiting inflightLatency before each answer,
// a fresh gateway per row. Without a memory limit every request is served;
// with server.memory_limit the gateway must refuse the excess with 503 (the
// clients wait retry-after, as the SDKs do) and never be killed.
func (h *harness) inflightPhase(sc *scenarios) {
	ctl := "http://" + h.fakeAddrs[2]
	if err := httpPost(fmt.Sprintf("%s/latency?server=gemini&d=%s", ctl, inflightLatency)); err != nil {
		h.logf("in-flight phase skipped: %v", err)
		return
	}
	defer httpPost(ctl + "/latency?server=gemini&d=0s")
	limited := full
	limited.server = "  memory_limit: " + inflightLimit + "\n"
	for _, c := range []struct {
		name, what string
		conns      int
		v          variant
		limit      string
	}{
		{"gateway-inflight", "defaults (no memory limit)", 300, full, ""},
		{"gateway-inflight-limit", "server.memory_limit: " + inflightLimit, 2000, limited, inflightLimit},
	} {
		r := inflightResult{what: c.what, conns: c.conns, memLimit: c.limit}
		g, err := h.startGateway(c.name, c.v)
		if err != nil {
			r.err = err.Error()
			h.rep.inflight = append(h.rep.inflight, r)
			h.logf("%s: %v", c.name, err)
			continue
		}
		req, _ := load.NewPost(g.url+"/v1/chat/completions", bodyOf(sc.large.gateway), "Authorization: Bearer "+clientKey)
		s := load.SampleRSS(g.pid())
		// The warm-up is the first round of answers: every connection's
		// first request waits the whole upstream latency at once.
		r.res = load.ClosedBackoff(req, c.conns, inflightLatency+500*time.Millisecond, h.plan.inflight, overloadBackoff)
		r.sampledKB = s.Stop()
		r.hwmKB = load.StatusKB(g.pid(), "VmHWM")
		r.alive = !g.exited()
		if m, err := httpGet(g.url+"/metrics", 5*time.Second); err == nil {
			r.overloaded, _ = metricValue(string(m), "nanogate_overloaded_total")
		}
		if !r.alive {
			r.err = "the gateway exited: " + lastLines(g.tail(), 3)
		}
		g.stop()
		h.rep.inflight = append(h.rep.inflight, r)
		h.logf("%s: %d conns, peak RSS %.0f MiB (sampled %.0f MiB), %d ok (%.0f/s), %v refused, %d transport errors, alive %v",
			c.name, c.conns, float64(r.hwmKB)/1024, float64(r.sampledKB)/1024, r.res.OK, r.res.RPS(), r.res.Status,
			r.res.Errors, r.alive)
	}
}

// overloadBackoff is how long a refused client waits: the gateway's
// retry-after for server_overloaded.
const overloadBackoff = 2 * time.Second

// Targets of the Redis-vs-memory comparison (the breakdown phase's full and
// embedded variants, measured side by side).
const (
	targetRedisExtra    = 90 * time.Microsecond // added p50 with Redis minus in memory
	targetRedisVsMemory = 0.8                   // c=32 throughput with Redis / in memory
	targetMemoryAdded   = 150 * time.Microsecond
	targetMemoryRatio   = 0.45 // c=32 in memory / direct
)

// ablCaseNamed is the breakdown's variant of that name, nil when it did
// not run.
func (r *report) ablCaseNamed(name string) *ablCase {
	for i := range r.abl {
		if r.abl[i].name == name {
			return &r.abl[i]
		}
	}
	return nil
}

// ablationTargets compares Redis with the embedded state, and the embedded
// state with the direct request, from the breakdown phase.
func (r *report) ablationTargets() []targetRow {
	redis, mem := r.ablCaseNamed(full.name), r.ablCaseNamed(embedded.name)
	if redis == nil || mem == nil || r.ablDirect == nil {
		return nil
	}
	d := r.ablDirect
	extra := redis.addedP50(d) - mem.addedP50(d)
	ratio := redis.rps() / max(mem.rps(), 1e-9)
	memAdded := mem.addedP50(d)
	memRatio := mem.rps() / max(d.rps(), 1e-9)
	// The floor proxy's figures put the in-memory ones in scale: what a
	// gateway that does nothing but copy bytes adds on this machine.
	var floorAdded, floorRatio string
	if f := r.ablCaseNamed(floor.name); f != nil {
		floorAdded = fmt.Sprintf(" (floor proxy: %s)", fd(f.addedP50(d)))
		floorRatio = fmt.Sprintf("; floor proxy %.2f×", f.rps()/max(d.rps(), 1e-9))
	}
	return []targetRow{
		{"added p50, c=1, small answer: Redis limits + budget minus the same in memory", "≤ " + fd(targetRedisExtra),
			fmt.Sprintf("%s (%s − %s%s)", fd(extra), fd(redis.addedP50(d)), fd(memAdded), r.pingNote()), verdict(extra <= targetRedisExtra)},
		{"throughput at c=32, small answer: Redis / in memory", fmt.Sprintf("≥ %.1f×", targetRedisVsMemory),
			fmt.Sprintf("%.2f× (%.0f / %.0f req/s)", ratio, redis.rps(), mem.rps()), verdict(ratio >= targetRedisVsMemory)},
		{"added p50, c=1, small answer, limits + budget in memory", "≤ " + fd(targetMemoryAdded), fd(memAdded) + floorAdded,
			verdict(memAdded <= targetMemoryAdded)},
		{"throughput at c=32, small answer, in memory / direct", fmt.Sprintf("≥ %.2f×", targetMemoryRatio),
			fmt.Sprintf("%.2f× (%.0f / %.0f req/s%s)", memRatio, mem.rps(), d.rps(), floorRatio), verdict(memRatio >= targetMemoryRatio)},
	}
}

// pingNote is the breakdown's Redis round trip, for the Redis target row:
// the floor of a request that asks Redis once.
func (r *report) pingNote() string {
	if len(r.ablPing) == 0 {
		return ""
	}
	return "; one Redis round trip alone: " + fd(medianD(r.ablPing))
}

func (r *report) inflightTargets() []targetRow {
	var rows []targetRow
	for _, x := range r.inflight {
		what := fmt.Sprintf("%d concurrent 1.5 MB Gemini answers, %s upstream, %s", x.conns, inflightLatency, x.what)
		if x.err != "" && x.hwmKB == 0 {
			rows = append(rows, targetRow{what, "-", "failed: " + x.err, "-"})
			continue
		}
		mib := float64(x.hwmKB) / 1024
		if x.memLimit == "" {
			errs := x.res.Errors + x.res.Bad
			rows = append(rows, targetRow{what + ": errors, peak RSS", fmt.Sprintf("0, ≤ %d MiB", targetInflightRSSMiB),
				fmt.Sprintf("%d, %.0f MiB", errs, mib), verdict(errs == 0 && mib <= targetInflightRSSMiB)})
			continue
		}
		ok := x.alive && x.res.Errors == 0 && x.res.Status[503] > 0
		rows = append(rows, targetRow{what + ": no OOM, excess refused with 503", "alive, 503s, no transport error",
			fmt.Sprintf("alive %v, %d served, %d × 503, %d transport errors, peak %.0f MiB", x.alive, x.res.OK,
				x.res.Status[503], x.res.Errors, mib), verdict(ok)})
	}
	return rows
}

func (r *report) inflightSection(w func(string, ...any)) {
	if len(r.inflight) == 0 {
		return
	}
	w("## Many images in flight: 1.5 MB answers with a %s upstream\n\n", inflightLatency)
	w("A fresh gateway per row (Redis limits + budget), each connection sending the Gemini 1.5 MB request again as\n" +
		"soon as its answer is read; the fake upstream waits before every answer, so the answers of all connections\n" +
		"are in flight at once. A client refused with 503 or 429 waits " + overloadBackoff.String() + " (the gateway's\n" +
		"retry-after), as the SDKs do. Warm-up: the first round of answers.\n\n")
	w("| gateway | connections | peak RSS (VmHWM) | largest sampled VmRSS | served | req/s | p50 / p99 | refused | transport errors | alive after |\n")
	w("|---|---|---|---|---|---|---|---|---|---|\n")
	for _, x := range r.inflight {
		refused := "0"
		if len(x.res.Status) > 0 {
			refused = fmt.Sprint(x.res.Status)
		}
		errs := fmt.Sprint(x.res.Errors)
		if x.err != "" {
			errs += " (" + x.err + ")"
		}
		w("| %s | %d | %.0f MiB | %.0f MiB | %d | %.0f | %s / %s | %s | %s | %v |\n", x.what, x.conns,
			float64(x.hwmKB)/1024, float64(x.sampledKB)/1024, x.res.OK, x.res.RPS(), fd(x.res.Pct(.5)), fd(x.res.Pct(.99)),
			refused, errs, x.alive)
	}
	w("\n")
}
