// Command run is nanogate's benchmark harness, `make bench`. It builds the
// gateway, starts on loopback a real redis-server, the in-repo fake upstreams
// (internal/fakeup/cmd/fakeup: the reseller answering a ~2 KB image, Gemini a
// 1.5 MB one, no added latency) and the gateway with rate limits and
// accounting on Redis, then measures the same requests sent directly to the
// fake upstream and through the gateway, side by side in one run:
//
//   - latency at c=1, open loop at a fixed rate (latency from the due time);
//   - throughput and latency, closed loop, at 1, 8, 32 and 128 connections;
//   - peak RSS of the gateway under 200 concurrent 1.5 MB answers, with and
//     without image offload;
//   - CPU time and allocations per request, CPU and allocation profiles;
//   - micro-benchmarks of the per-request path (package bench).
//
// Every figure is the median of -runs runs. It writes bench/RESULTS.md and
// never fails on a number: targets are shown next to the figures, not
// asserted. -quick runs each phase once and briefly, for iteration.
package main

import (
	"cmp"
	"crypto/rand"
	"encoding/hex"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"time"

	"nanogate/bench/load"
)

// memLimit is the soft memory limit tried in the memory phase.
const memLimit = "200MiB"

// Targets on a 2-core machine (the issue's).
const (
	targetAddedSmall = 150 * time.Microsecond
	targetAddedLarge = 2 * time.Millisecond
	targetRatio32    = 0.70
	targetRSSMiB     = 300
)

// The key clients use, the key the fake upstreams expect, and the models.
const (
	clientKey   = "sk-nanogate-bench-0123456789abcdef"
	upstreamKey = "upstream-bench-key"
	adminKey    = "admin-nanogate-bench-0123456789abcdef"
	smallModel  = "gemini-2.5-flash-image-preview" // served by the reseller only
	largeModel  = "gemini-2.5-flash-image"         // served by Gemini only
	smallImage  = 2048                             // bytes of the reseller's PNG
	largeImage  = 1_500_000                        // bytes of Gemini's PNG
)

type plan struct {
	runs                        int
	latWarm, latSmall, latLarge time.Duration
	tpWarm, tp, tpLarge         time.Duration
	conns                       []int
	profCPU, profLarge          time.Duration
	ablFixed, ablClosed         time.Duration
	rss                         time.Duration
	rssConns                    int
	inflight                    time.Duration
	microCount                  int
	microTime                   string
}

func main() {
	quick := flag.Bool("quick", false, "one short run of each phase, for iteration (the figures are noisier)")
	runs := flag.Int("runs", 0, "runs per figure, the median is reported (default 3, 1 with -quick)")
	out := flag.String("out", "bench/RESULTS.md", "report to write")
	keep := flag.Bool("keep", false, "keep the work directory (logs, configs, binaries)")
	noMicro := flag.Bool("no-micro", false, "skip the micro-benchmarks")
	refresh := flag.Bool("refresh-analysis", false, "only replace the findings of the report (-out) with bench/ANALYSIS.md")
	only := flag.String("only", "", "run only these phases, comma-separated (micro, latency, sweep, ablation, large, profile, rss, inflight); the report then holds only them")
	flag.Parse()
	if *refresh {
		if err := refreshAnalysis(*out); err != nil {
			fmt.Fprintln(os.Stderr, "bench:", err)
			os.Exit(1)
		}
		return
	}

	p := plan{
		runs: 3, latWarm: 250 * time.Millisecond, latSmall: time.Second, latLarge: 1200 * time.Millisecond,
		tpWarm: 250 * time.Millisecond, tp: 800 * time.Millisecond, tpLarge: time.Second,
		conns: []int{1, 8, 32, 128}, profCPU: 3 * time.Second, profLarge: 2 * time.Second,
		ablFixed: 600 * time.Millisecond, ablClosed: 500 * time.Millisecond,
		rss: 2 * time.Second, rssConns: 200, inflight: 6 * time.Second, microCount: 3, microTime: "100ms",
	}
	if *quick {
		p = plan{
			runs: 1, latWarm: 200 * time.Millisecond, latSmall: 700 * time.Millisecond, latLarge: time.Second,
			tpWarm: 200 * time.Millisecond, tp: 500 * time.Millisecond, tpLarge: 700 * time.Millisecond,
			conns: []int{1, 8, 32, 128}, profCPU: 2 * time.Second, profLarge: time.Second,
			ablFixed: 500 * time.Millisecond, ablClosed: 400 * time.Millisecond,
			rss: 1500 * time.Millisecond, rssConns: 200, inflight: 4 * time.Second, microCount: 1, microTime: "50ms",
		}
	}
	if *runs > 0 {
		p.runs = *runs
	}
	if *noMicro {
		p.microCount = 0
	}
	h := &harness{plan: p, quick: *quick, out: *out, keep: *keep}
	if *only != "" {
		h.only = map[string]bool{}
		for _, ph := range strings.Split(*only, ",") {
			h.only[strings.TrimSpace(ph)] = true
		}
		if !h.only["micro"] {
			h.plan.microCount = 0
		}
	}
	code := h.run()
	h.cleanup()
	os.Exit(code)
}

type harness struct {
	plan  plan
	quick bool
	out   string
	keep  bool
	// only names the phases to run; nil: all of them.
	only map[string]bool

	root, work, bin, outDir string
	procs                   []*proc
	m                       machine
	started                 time.Time

	redis, fake *proc
	gw          *gateway
	redisAddr   string
	fakeAddrs   [3]string // openai, gemini, control
	signingKey  string

	rep report
}

func (h *harness) logf(format string, args ...any) {
	fmt.Fprintf(os.Stderr, "[%5.1fs] ", time.Since(h.started).Seconds())
	fmt.Fprintf(os.Stderr, format+"\n", args...)
}

func (h *harness) fail(format string, args ...any) int {
	fmt.Fprintf(os.Stderr, "bench: "+format+"\n", args...)
	return 1
}

func (h *harness) cleanup() {
	for i := len(h.procs) - 1; i >= 0; i-- {
		h.procs[i].stop()
	}
	if h.work != "" && !h.keep {
		os.RemoveAll(h.work)
	} else if h.work != "" {
		fmt.Fprintf(os.Stderr, "bench: work directory kept: %s\n", h.work)
	}
}

func (h *harness) run() int {
	h.started = time.Now()
	gomod := strings.TrimSpace(output("go", "env", "GOMOD"))
	if gomod == "" || gomod == os.DevNull {
		return h.fail("run from the nanogate module (make bench)")
	}
	h.root = filepath.Dir(gomod)
	if err := os.Chdir(h.root); err != nil {
		return h.fail("%v", err)
	}
	redisBin, err := exec.LookPath("redis-server")
	if err != nil {
		return h.fail("redis-server not found in PATH. The benchmark runs the gateway with its limits and " +
			"accounting on a real Redis. Install it with `apt-get install redis-server` (`make test` does so).")
	}
	h.m = readMachine()
	h.rep.m = h.m
	h.rep.quick, h.rep.runs = h.quick, h.plan.runs
	h.rep.command = "make bench"
	if h.quick || h.only != nil {
		h.rep.command = "go run ./bench/run " + strings.Join(os.Args[1:], " ")
	}
	h.logf("machine: %d cores, %s, %s, kernel %s", h.m.Cores, h.m.CPU, h.m.Go, h.m.Kernel)

	if h.work, err = os.MkdirTemp("", "nanogate-bench-"); err != nil {
		return h.fail("%v", err)
	}
	h.bin = filepath.Join(h.work, "bin")
	h.outDir = filepath.Join(h.root, "bench", "out")
	os.MkdirAll(h.outDir, 0o755)

	h.logf("building the gateway, the fake upstreams and the micro-benchmarks")
	build := exec.Command("go", "build", "-trimpath", "-o", h.bin+"/", ".", "./internal/fakeup/cmd/fakeup", "./bench/floorproxy")
	build.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := build.CombinedOutput(); err != nil {
		return h.fail("go build failed:\n%s", out)
	}
	testBin := filepath.Join(h.bin, "bench.test")
	if h.plan.microCount > 0 {
		if out, err := exec.Command("go", "test", "-c", "-o", testBin, "./bench").CombinedOutput(); err != nil {
			h.logf("micro-benchmarks do not build, skipped:\n%s", out)
			h.rep.microErr = "the micro-benchmarks did not build: " + firstLine(string(out))
			h.plan.microCount = 0
		}
	}

	// Micro-benchmarks first, on a quiet machine.
	if h.plan.microCount > 0 {
		h.logf("micro-benchmarks (-count %d -benchtime %s)", h.plan.microCount, h.plan.microTime)
		res, raw, err := runMicro(testBin, filepath.Join(h.root, "bench"), h.plan.microCount, h.plan.microTime)
		if err != nil {
			h.logf("%v\n%s", err, raw)
			h.rep.microErr = err.Error() + ": " + lastLines(raw, 5)
		}
		h.rep.micro = res
	}

	// Other work on the machine slows every figure: say how much there was.
	b0, t0 := machineBusy(), time.Now()
	time.Sleep(time.Second)
	h.rep.otherBefore = float64(machineBusy()-b0) / (float64(time.Since(t0)) * float64(h.m.Cores))
	h.logf("other load on the machine before the measured phases: %.0f%% of its CPU capacity", 100*h.rep.otherBefore)

	if err := h.startBackends(redisBin); err != nil {
		return h.fail("%v", err)
	}
	gw, err := h.startGateway("gateway", full)
	if err != nil {
		return h.fail("%v", err)
	}
	h.gw = gw
	sc, err := h.scenarios(gw)
	if err != nil {
		return h.fail("%v", err)
	}

	for _, ph := range []struct {
		name string
		run  func(*scenarios)
	}{
		{"latency", h.latencyPhase}, {"sweep", h.sweepPhase}, {"ablation", h.ablationPhase},
		{"large", h.largeThroughputPhase}, {"profile", h.profilePhase},
		{"rss", func(sc *scenarios) { h.gw.stop(); h.rssPhase(sc) }}, {"inflight", h.inflightPhase},
	} {
		if h.only == nil || h.only[ph.name] {
			ph.run(sc)
		}
	}
	h.gw.stop()

	h.rep.elapsed = time.Since(h.started)
	h.rep.analysis, _ = os.ReadFile(filepath.Join(h.root, "bench", "ANALYSIS.md"))
	md := h.rep.markdown()
	if err := os.WriteFile(filepath.Join(h.root, h.out), []byte(md), 0o644); err != nil {
		return h.fail("writing %s: %v", h.out, err)
	}
	h.logf("wrote %s", h.out)
	fmt.Print(h.rep.summary())
	return 0
}

// refreshAnalysis rewrites the hand-written end of an existing report, so
// that editing bench/ANALYSIS.md does not need a new run.
func refreshAnalysis(out string) error {
	report, err := os.ReadFile(out)
	if err != nil {
		return err
	}
	analysis, err := os.ReadFile(filepath.Join(filepath.Dir(out), "ANALYSIS.md"))
	if err != nil {
		return err
	}
	i := strings.Index(string(report), findingsHeading)
	if i < 0 {
		return fmt.Errorf("%s has no %q section", out, strings.TrimSpace(findingsHeading))
	}
	return os.WriteFile(out, []byte(string(report[:i])+analysisSection(analysis)), 0o644)
}

func firstLine(s string) string {
	s, _, _ = strings.Cut(strings.TrimSpace(s), "\n")
	return s
}

func lastLines(s string, n int) string {
	lines := strings.Split(strings.TrimSpace(s), "\n")
	return strings.Join(lines[max(len(lines)-n, 0):], " / ")
}

// startBackends starts redis-server and the fake upstreams.
func (h *harness) startBackends(redisBin string) error {
	var err error
	if h.redisAddr, err = freeAddr(); err != nil {
		return err
	}
	_, port, _ := strings.Cut(h.redisAddr, ":")
	rdir := filepath.Join(h.work, "redis")
	os.MkdirAll(rdir, 0o755)
	h.redis, err = startProc(rdir, "redis", nil, redisBin, "--port", port, "--bind", "127.0.0.1",
		"--save", "", "--appendonly", "no", "--protected-mode", "no", "--daemonize", "no", "--loglevel", "warning")
	if err != nil {
		return err
	}
	h.procs = append(h.procs, h.redis)
	if err := waitRedis(h.redis, h.redisAddr); err != nil {
		return err
	}
	for i := range h.fakeAddrs {
		if h.fakeAddrs[i], err = freeAddr(); err != nil {
			return err
		}
	}
	h.fake, err = startProc(h.work, "fakeup", nil, filepath.Join(h.bin, "fakeup"),
		"-openai", h.fakeAddrs[0], "-gemini", h.fakeAddrs[1], "-control", h.fakeAddrs[2],
		"-key", upstreamKey, "-image-size", fmt.Sprint(smallImage))
	if err != nil {
		return err
	}
	h.procs = append(h.procs, h.fake)
	ctl := "http://" + h.fakeAddrs[2]
	if err := waitHTTP(h.fake, ctl+"/stats", 10*time.Second); err != nil {
		return err
	}
	// Builds the 1.5 MB PNG now, not inside a measured request.
	return httpPost(fmt.Sprintf("%s/image-size?server=gemini&bytes=%d", ctl, largeImage))
}

// variant is a gateway configuration. The main one has everything on; the
// others take one part away each, so that the cost of each part shows.
type variant struct {
	name   string
	redis  bool // limits and accounting on Redis (else embedded, in memory)
	limits bool // rpm/tpm on the key and the team
	budget bool // a budget on the team: a reservation per request
	// keyBudget: the requests use a key made through the admin API with a
	// budget of its own, reserved against with the team's.
	keyBudget bool
	logLevel  string // info: one line per request
	offload   bool   // images.offload to a filesystem store
	env       []string
	server    string // more lines under server:, indented
	// floor: not nanogate but bench/floorproxy, which copies the request to
	// the reseller and its answer back and does nothing else.
	floor bool
}

var full = variant{name: "full: Redis limits + budget, request log", redis: true, limits: true, budget: true, logLevel: "info"}

// embedded is full without Redis: the limiter and the budget in memory.
var embedded = variant{name: "embedded (no Redis): limits + budget in memory", limits: true, budget: true, logLevel: "info"}

// ablation are the variants of the breakdown phase, full first.
var ablation = []variant{
	full,
	{name: "Redis limits, no budget", redis: true, limits: true, logLevel: "info"},
	{name: "full, and a key with a budget of its own", redis: true, limits: true, budget: true, keyBudget: true, logLevel: "info"},
	{name: "full, log level warn (no request line)", redis: true, limits: true, budget: true, logLevel: "warn"},
	embedded,
	{name: "bare: no limits, no budget, no Redis", logLevel: "info"},
	floor,
}

// floor is bench/floorproxy: what any gateway on fasthttp adds here.
var floor = variant{name: "floor: a minimal fasthttp proxy (bench/floorproxy), not nanogate", floor: true}

func (h *harness) gatewayConfig(listen, dir string, v variant) string {
	if h.signingKey == "" {
		b := make([]byte, 32)
		rand.Read(b)
		h.signingKey = hex.EncodeToString(b)
	}
	var b strings.Builder
	fmt.Fprintf(&b, "# Written by bench/run, variant %q.\n", v.name)
	fmt.Fprintf(&b, "server:\n  listen: %q\n%slog: { level: %s, format: json }\n", listen, v.server, v.logLevel)
	if v.redis {
		fmt.Fprintf(&b, "redis:\n  addrs: [%q]\n  key_prefix: \"bench:\"\n", h.redisAddr)
	}
	if v.keyBudget {
		fmt.Fprintf(&b, "admin_key: %q\n", adminKey)
	}
	fmt.Fprintf(&b, `providers:
  - name: reseller
    kind: openai
    base_url: http://%s/v1
    api_key: %s
    models: { %s: %s }
    price: { per_image: 0.035, input_per_mtok: 0.30, output_per_mtok: 2.50 }
  - name: google
    kind: gemini
    base_url: http://%s/v1beta
    api_key: %s
    models: { %s: %s }
    price: { per_image: 0.039, input_per_mtok: 0.30, output_per_mtok: 2.50 }
`, h.fakeAddrs[0], upstreamKey, smallModel, smallModel, h.fakeAddrs[1], upstreamKey, largeModel, largeModel)
	if v.offload {
		fmt.Fprintf(&b, "images:\n  offload: { enabled: true, store: filesystem, dir: %q, ttl: 1h, signing_key: %q }\n",
			filepath.Join(dir, "images"), h.signingKey)
	}
	// Limits far above what the benchmark sends: every decision is made
	// (and charged), none refuses.
	const rpm = "rpm: 1000000000, tpm: 1000000000000"
	switch {
	case v.limits && v.budget:
		b.WriteString("teams:\n  - { name: bench, " + rpm + ", budget: { usd: 1000000000, period: monthly } }\n")
	case v.limits:
		b.WriteString("teams:\n  - { name: bench, " + rpm + " }\n")
	case v.budget:
		b.WriteString("teams:\n  - { name: bench, budget: { usd: 1000000000, period: monthly } }\n")
	}
	b.WriteString("keys:\n  - { name: bench, key: " + clientKey)
	if v.limits || v.budget {
		b.WriteString(", team: bench")
	}
	if v.limits {
		b.WriteString(", " + rpm)
	}
	b.WriteString(" }\n")
	return b.String()
}

// gateway is a running gateway process.
type gateway struct {
	*proc
	url, pprof string
	v          variant
}

func (h *harness) startGateway(name string, v variant) (*gateway, error) {
	listen, err := freeAddr()
	if err != nil {
		return nil, err
	}
	pp, err := freeAddr()
	if err != nil {
		return nil, err
	}
	dir := filepath.Join(h.work, name)
	os.MkdirAll(dir, 0o755)
	if v.floor {
		return h.startFloor(name, dir, listen, v)
	}
	cfg := filepath.Join(dir, "config.yaml")
	if err := os.WriteFile(cfg, []byte(h.gatewayConfig(listen, dir, v)), 0o600); err != nil {
		return nil, err
	}
	p, err := startProc(dir, name, v.env, filepath.Join(h.bin, "nanogate"), "-config", cfg, "-pprof", pp)
	if err != nil {
		return nil, err
	}
	h.procs = append(h.procs, p)
	g := &gateway{proc: p, url: "http://" + listen, pprof: "http://" + pp, v: v}
	if err := waitHTTP(p, g.url+"/readyz", 30*time.Second); err != nil {
		return nil, err
	}
	return g, nil
}

// startFloor starts bench/floorproxy in front of the reseller: the floor
// row of the ablation.
func (h *harness) startFloor(name, dir, listen string, v variant) (*gateway, error) {
	p, err := startProc(dir, name, nil, filepath.Join(h.bin, "floorproxy"), "-listen", listen,
		"-upstream", "http://"+h.fakeAddrAt("openai")+"/v1/chat/completions", "-key", upstreamKey)
	if err != nil {
		return nil, err
	}
	h.procs = append(h.procs, p)
	g := &gateway{proc: p, url: "http://" + listen, v: v}
	if err := waitHTTP(p, g.url+"/readyz", 30*time.Second); err != nil {
		return nil, err
	}
	return g, nil
}

// scenario is one request sent directly to the fake upstream and through
// the gateway.
type scenario struct {
	name            string
	direct, gateway load.Request
}

type scenarios struct{ small, large, stream scenario }

// scenarios checks each request through the gateway, then takes the body the
// gateway sent upstream as the direct request, so both sides ask the fake
// upstream for the same thing.
func (h *harness) scenarios(g *gateway) (*scenarios, error) {
	ctl := "http://" + h.fakeAddrs[2]
	mk := func(name, server, header, body string, want ...string) (scenario, error) {
		gwReq, err := load.NewPost(g.url+"/v1/chat/completions", []byte(body), "Authorization: Bearer "+clientKey)
		if err != nil {
			return scenario{}, err
		}
		if err := check(name+" through the gateway", gwReq, want); err != nil {
			return scenario{}, fmt.Errorf("%w\ngateway log:\n%s", err, g.tail())
		}
		b, path, err := lastRequest(ctl, server)
		if err != nil {
			return scenario{}, err
		}
		direct, err := load.NewPost("http://"+h.fakeAddrAt(server)+path, b, header)
		if err != nil {
			return scenario{}, err
		}
		if err := check(name+" direct", direct, nil); err != nil {
			return scenario{}, err
		}
		return scenario{name: name, direct: direct, gateway: gwReq}, nil
	}
	var s scenarios
	var err error
	if s.small, err = mk("small", "openai", "Authorization: Bearer "+upstreamKey,
		`{"model":"`+smallModel+`","messages":[{"role":"user","content":"draw a nano banana"}]}`,
		`"image_tokens":1290`, "data:image/png;base64,"); err != nil {
		return nil, err
	}
	if s.large, err = mk("large", "gemini", "x-goog-api-key: "+upstreamKey,
		`{"model":"`+largeModel+`","messages":[{"role":"user","content":"draw a nano banana"}]}`,
		`"image_tokens":1290`, "data:image/png;base64,"); err != nil {
		return nil, err
	}
	if s.stream, err = mk("stream", "gemini", "x-goog-api-key: "+upstreamKey,
		`{"model":"`+largeModel+`","messages":[{"role":"user","content":"draw a nano banana"}],"stream":true}`,
		"data:image/png;base64,", "data: [DONE]"); err != nil {
		return nil, err
	}
	return &s, nil
}

func (h *harness) fakeAddrAt(server string) string {
	if server == "openai" {
		return h.fakeAddrs[0]
	}
	return h.fakeAddrs[1]
}

// check sends req once and checks the status and the body.
func check(what string, req load.Request, want []string) error {
	st, body, err := load.Fetch(req)
	if err != nil {
		return fmt.Errorf("%s: %v", what, err)
	}
	if st != 200 {
		return fmt.Errorf("%s: status %d: %.500s", what, st, body)
	}
	for _, w := range want {
		if !strings.Contains(string(body), w) {
			return fmt.Errorf("%s: the answer (%d bytes) lacks %q: %.300s", what, len(body), w, body)
		}
	}
	return nil
}

// lastRequest asks the fake upstream for the last request it received.
func lastRequest(ctl, server string) ([]byte, string, error) {
	resp, err := httpGetResp(ctl + "/last?server=" + server)
	if err != nil {
		return nil, "", err
	}
	return resp.body, resp.header.Get("X-Fakeup-Path"), nil
}

// cpuSet is the CPU time of the processes involved, and of the whole
// machine, read around a phase.
type cpuSet struct {
	gw, fake, redis, self time.Duration
	// gwReads and gwWrites count the gateway's read and write calls.
	gwReads, gwWrites int64
	// busy is the machine's non-idle time over all cores, wall the time.
	busy time.Duration
	wall time.Time
}

func (h *harness) cpuNow(g *gateway) cpuSet {
	c := cpuSet{fake: cpuTime(h.fake.pid()), redis: cpuTime(h.redis.pid()), self: cpuTime(os.Getpid()),
		busy: machineBusy(), wall: time.Now()}
	if g != nil {
		c.gw = cpuTime(g.pid())
		c.gwReads, c.gwWrites = ioCalls(g.pid())
	}
	return c
}

// sub returns the usage between b and a; wall becomes a duration since the
// zero time.
func (a cpuSet) sub(b cpuSet) cpuSet {
	return cpuSet{a.gw - b.gw, a.fake - b.fake, a.redis - b.redis, a.self - b.self,
		a.gwReads - b.gwReads, a.gwWrites - b.gwWrites, a.busy - b.busy, time.Time{}.Add(a.wall.Sub(b.wall))}
}

// foreign is the share of the machine's capacity used by processes outside
// the benchmark during a phase (sub's result): other work on a shared machine
// takes CPU from everything measured.
func (a cpuSet) foreign(cores int) float64 {
	wall := a.wall.Sub(time.Time{})
	if wall <= 0 || cores <= 0 {
		return 0
	}
	other := a.busy - a.gw - a.fake - a.redis - a.self
	return max(float64(other)/(float64(wall)*float64(cores)), 0)
}

// latencyPhase measures each scenario at c=1, open loop. The rate is a
// quarter of what one connection through the gateway can do, so the figures
// are service times, not queueing.
func (h *harness) latencyPhase(sc *scenarios) {
	for _, s := range []struct {
		sc   scenario
		dur  time.Duration
		note string
	}{
		{sc.small, h.plan.latSmall, "reseller, text + 2 KB image, passed through"},
		{sc.large, h.plan.latLarge, "Gemini, 1.5 MB image, translated to chat.completion"},
		{sc.stream, h.plan.latLarge, "Gemini SSE, 1.5 MB image, translated to chat.completion.chunk"},
	} {
		cal := load.Closed(s.sc.gateway, 1, h.plan.latWarm, 300*time.Millisecond)
		rate := 1000.0
		if p50 := cal.Pct(0.5); p50 > 0 {
			rate = min(max(0.25/p50.Seconds(), 10), 2000)
		}
		lc := latCase{name: s.sc.name, note: s.note, rate: rate}
		for run := range h.plan.runs {
			var r latRun
			first, second := &r.direct, &r.gateway
			reqs := [2]load.Request{s.sc.direct, s.sc.gateway}
			if run%2 == 1 { // alternate the order against drift
				first, second = second, first
				reqs[0], reqs[1] = reqs[1], reqs[0]
			}
			*first = load.Fixed(reqs[0], rate, h.plan.latWarm, s.dur)
			*second = load.Fixed(reqs[1], rate, h.plan.latWarm, s.dur)
			lc.runs = append(lc.runs, r)
		}
		h.rep.lat = append(h.rep.lat, lc)
		h.logf("c=1 %-6s at %4.0f/s: direct p50 %v, gateway p50 %v, added p50 %v", s.sc.name, rate,
			us(lc.med(func(r latRun) time.Duration { return r.direct.Pct(0.5) })),
			us(lc.med(func(r latRun) time.Duration { return r.gateway.Pct(0.5) })),
			us(lc.added(0.5)))
	}
}

// closedPair runs a closed-loop phase directly and through the gateway and
// reads the CPU time each process spent.
func (h *harness) closedPair(s scenario, c int, warm, dur time.Duration, run int) tpRun {
	var r tpRun
	do := func(gwSide bool) {
		req := s.direct
		if gwSide {
			req = s.gateway
		}
		before := h.cpuNow(h.gw)
		res := load.Closed(req, c, warm, dur)
		used := h.cpuNow(h.gw).sub(before)
		if gwSide {
			r.gateway, r.cpuGW = res, used
		} else {
			r.direct, r.cpuDirect = res, used
		}
	}
	if run%2 == 0 {
		do(false)
		do(true)
	} else {
		do(true)
		do(false)
	}
	return r
}

func (h *harness) sweepPhase(sc *scenarios) {
	for _, c := range h.plan.conns {
		tc := tpCase{name: "small", c: c}
		for run := range h.plan.runs {
			tc.runs = append(tc.runs, h.closedPair(sc.small, c, h.plan.tpWarm, h.plan.tp, run))
		}
		h.rep.sweep = append(h.rep.sweep, tc)
		h.logf("c=%-3d small: direct %6.0f/s, gateway %6.0f/s (%.0f%%), gateway CPU %v/req", c,
			tc.rps(false), tc.rps(true), 100*tc.ratio(), us(tc.cpuPerReq(func(c cpuSet) time.Duration { return c.gw }, true)))
	}
}

// ablationPhase runs the small request through gateways that each leave one
// part out, next to the full one and to the direct request, to split the
// added latency and the lost throughput between Redis, the budget and the
// request log.
func (h *harness) ablationPhase(sc *scenarios) {
	rate := 300.0
	if c := h.rep.find("small"); c != nil {
		rate = c.rate
	}
	gws := []*gateway{h.gw}
	reqs := []load.Request{sc.small.gateway}
	for i, v := range ablation[1:] {
		g, err := h.startGateway(fmt.Sprintf("gateway-variant%d", i+1), v)
		if err != nil {
			h.logf("variant %q: %v", v.name, err)
			continue
		}
		defer g.stop()
		key := clientKey
		if v.keyBudget {
			if key, err = budgetedKey(g.url); err != nil {
				h.logf("variant %q: %v", v.name, err)
				continue
			}
		}
		req, _ := load.NewPost(g.url+"/v1/chat/completions", bodyOf(sc.small.gateway), "Authorization: Bearer "+key)
		want := []string{`"image_tokens":1290`}
		if v.floor {
			want = []string{`"choices"`} // the reseller's answer, as it is
		}
		if err := check(v.name, req, want); err != nil {
			h.logf("variant %q: %v", v.name, err)
			continue
		}
		gws, reqs = append(gws, g), append(reqs, req)
	}
	h.rep.ablDirect = &ablCase{name: "direct to the fake upstream"}
	cases := make([]*ablCase, len(gws))
	for i, g := range gws {
		cases[i] = &ablCase{name: g.v.name}
	}
	measure := func(c *ablCase, g *gateway, req load.Request) {
		var r ablRun
		r.fixed = load.Fixed(req, rate, 150*time.Millisecond, h.plan.ablFixed)
		before := h.cpuNow(g)
		r.closed = load.Closed(req, 32, 200*time.Millisecond, h.plan.ablClosed)
		r.cpu = h.cpuNow(g).sub(before)
		c.runs = append(c.runs, r)
	}
	for run := range h.plan.runs {
		measure(h.rep.ablDirect, nil, sc.small.direct)
		if h.redisAddr != "" {
			if p := load.FixedPing(h.redisAddr, rate, 150*time.Millisecond, h.plan.ablFixed); p.OK > 0 {
				h.rep.ablPing = append(h.rep.ablPing, p.Pct(.5))
			}
		}
		for k := range gws {
			i := (k + run) % len(gws) // rotate the order against drift
			measure(cases[i], gws[i], reqs[i])
		}
	}
	for _, c := range cases {
		h.rep.abl = append(h.rep.abl, *c)
		h.logf("variant %-48s c=1 p50 %v (added %v), c=32 %6.0f/s", c.name,
			us(c.p50()), us(c.addedP50(h.rep.ablDirect)), c.rps())
	}
}

func (h *harness) largeThroughputPhase(sc *scenarios) {
	for _, s := range []scenario{sc.large, sc.stream} {
		tc := tpCase{name: s.name, c: 8}
		for run := range h.plan.runs {
			tc.runs = append(tc.runs, h.closedPair(s, 8, h.plan.tpWarm, h.plan.tpLarge, run))
		}
		h.rep.large = append(h.rep.large, tc)
		h.logf("c=8   %-6s: direct %6.0f/s, gateway %6.0f/s (%.0f%%), gateway CPU %v/req", s.name,
			tc.rps(false), tc.rps(true), 100*tc.ratio(), us(tc.cpuPerReq(func(c cpuSet) time.Duration { return c.gw }, true)))
	}
}

// profilePhase takes a CPU profile and the allocations of the gateway under
// the c=32 small load, then a CPU profile under the c=8 1.5 MB load.
func (h *harness) profilePhase(sc *scenarios) {
	h.rep.prof = h.profile("small", sc.small.gateway, 32, h.plan.profCPU, true)
	h.rep.profLarge = h.profile("large", sc.large.gateway, 8, h.plan.profLarge, false)
}

func (h *harness) profile(name string, req load.Request, c int, secs time.Duration, allocs bool) *profResult {
	pr := &profResult{name: name, c: c, secs: secs}
	cpuPath := filepath.Join(h.outDir, "cpu-"+name+".pprof")
	a0 := filepath.Join(h.outDir, "allocs-"+name+"-before.pprof")
	a1 := filepath.Join(h.outDir, "allocs-"+name+".pprof")
	m0, _ := httpGet(h.gw.url+"/metrics", 5*time.Second)
	rs0, _ := redisCommandStats(h.redisAddr)
	if allocs {
		if err := save(h.gw.pprof+"/debug/pprof/allocs", a0); err != nil {
			pr.err = err.Error()
		}
	}
	warm := 500 * time.Millisecond
	var res load.Result
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		res = load.Closed(req, c, warm, secs+time.Second)
	}()
	time.Sleep(warm)
	cpu0 := cpuTime(h.gw.pid())
	if err := save(fmt.Sprintf("%s/debug/pprof/profile?seconds=%d", h.gw.pprof, int(secs.Seconds())), cpuPath); err != nil {
		pr.err = err.Error()
	}
	pr.cpuUsed = cpuTime(h.gw.pid()) - cpu0
	wg.Wait()
	if allocs {
		if err := save(h.gw.pprof+"/debug/pprof/allocs", a1); err != nil {
			pr.err = err.Error()
		}
	}
	m1, _ := httpGet(h.gw.url+"/metrics", 5*time.Second)
	rs1, _ := redisCommandStats(h.redisAddr)
	pr.requests = res.Total
	if res.Total > 0 {
		for name, s1 := range rs1 {
			s0 := rs0[name]
			if d := s1.calls - s0.calls; d > 0 {
				pr.redis = append(pr.redis, redisCmd{name: name, perReq: d / float64(res.Total),
					usecPerCall: (s1.usec - s0.usec) / d})
			}
		}
		slices.SortFunc(pr.redis, func(a, b redisCmd) int { return cmp.Compare(b.perReq*b.usecPerCall, a.perReq*a.usecPerCall) })
	}
	for _, k := range []struct {
		metric string
		dst    *float64
	}{{"go_memstats_alloc_bytes_total", &pr.allocBytes}, {"go_memstats_mallocs_total", &pr.allocs}} {
		v0, err0 := metricValue(string(m0), k.metric)
		v1, err1 := metricValue(string(m1), k.metric)
		if err0 == nil && err1 == nil && res.Total > 0 {
			// The few /metrics and pprof requests are in there too.
			*k.dst = (v1 - v0) / float64(res.Total)
		}
	}
	if pr.err != "" {
		h.logf("profile %s: %s", name, pr.err)
		return pr
	}
	pr.cpuFile = relPath(h.root, cpuPath)
	if ss, err := readTraces(cpuPath, "", ""); err == nil {
		pr.components, pr.kinds = byComponent(ss), byKind(ss)
	} else {
		pr.err = err.Error()
	}
	pr.topFlat = topText(cpuPath, "", "", false, 25)
	pr.topCum = topText(cpuPath, "", "", true, 40)
	if allocs {
		pr.allocFile = relPath(h.root, a1)
		pr.allocTop = topText(a1, a0, "alloc_space", false, 20)
		pr.allocObjTop = topText(a1, a0, "alloc_objects", false, 20)
		if ss, err := readTraces(a1, a0, "alloc_space"); err == nil {
			pr.allocComponents = byComponent(ss)
		}
	}
	h.logf("profile %s (c=%d): %d requests, %.0f B and %.0f allocations per request", name, c, res.Total, pr.allocBytes, pr.allocs)
	return pr
}

func relPath(root, p string) string {
	if r, err := filepath.Rel(root, p); err == nil {
		return r
	}
	return p
}

func save(url, path string) error {
	b, err := httpGet(url, 60*time.Second)
	if err != nil {
		return err
	}
	return os.WriteFile(path, b, 0o644)
}

// rssPhase runs a fresh gateway (so VmHWM is this phase's peak) under
// rssConns concurrent 1.5 MB answers: as configured by default, with the Go
// runtime's soft memory limit set, and with image offload on.
func (h *harness) rssPhase(sc *scenarios) {
	limited := full
	limited.env = []string{"GOMEMLIMIT=" + memLimit}
	offload := full
	offload.offload = true
	for i, c := range []struct {
		name, what string
		v          variant
	}{
		{"gateway-rss", "images inline (base64 passed through)", full},
		{"gateway-rss-memlimit", "images inline, GOMEMLIMIT=" + memLimit + " in the environment", limited},
		{"gateway-rss-offload", "images.offload on (filesystem store, answers carry links)", offload},
	} {
		name, v := c.name, c.v
		r := rssResult{what: c.what, conns: h.plan.rssConns, offload: v.offload}
		g, err := h.startGateway(name, v)
		if err != nil {
			r.err = err.Error()
			h.rep.rss = append(h.rep.rss, r)
			h.logf("%s: %v", name, err)
			continue
		}
		req, _ := load.NewPost(g.url+"/v1/chat/completions", bodyOf(sc.large.gateway), "Authorization: Bearer "+clientKey)
		if err := check("large through "+name, req, []string{`"image_tokens":1290`}); err != nil {
			r.err = err.Error()
		}
		r.idleKB = load.StatusKB(g.pid(), "VmRSS")
		sampler := load.SampleRSS(g.pid())
		var wg sync.WaitGroup
		heap := filepath.Join(h.outDir, "heap-rss.pprof")
		if i == 0 {
			wg.Add(1)
			go func() { // the heap in the middle of the load
				defer wg.Done()
				time.Sleep(500*time.Millisecond + h.plan.rss/2)
				if err := save(g.pprof+"/debug/pprof/heap", heap); err == nil {
					r.heapTop = topText(heap, "", "inuse_space", false, 15)
					r.heapFile = relPath(h.root, heap)
				}
			}()
		}
		cpu0 := cpuTime(g.pid())
		r.res = load.Closed(req, h.plan.rssConns, 500*time.Millisecond, h.plan.rss)
		r.cpu = cpuTime(g.pid()) - cpu0
		r.sampledKB = sampler.Stop()
		wg.Wait()
		r.hwmKB = load.StatusKB(g.pid(), "VmHWM")
		g.stop()
		h.rep.rss = append(h.rep.rss, r)
		h.logf("%s: peak RSS %.0f MiB (sampled %.0f MiB), %d answers, %.0f/s, errors %d", name,
			float64(r.hwmKB)/1024, float64(r.sampledKB)/1024, r.res.Total, r.res.RPS(), r.res.Errors+r.res.Bad)
	}
}

// bodyOf returns the body of a prepared request.
func bodyOf(r load.Request) []byte {
	_, b, _ := strings.Cut(string(r.Raw), "\r\n\r\n")
	return []byte(b)
}

func us(d time.Duration) string {
	return fmt.Sprintf("%.0fµs", float64(d)/1e3)
}
