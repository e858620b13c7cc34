package bench

import (
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"nanogate/bench/load"
	"nanogate/internal/poll"
	"nanogate/internal/redistest"
)

// TestPeakRSSInFlight measures the gateway binary's peak RSS while many
// 1.5 MB Gemini answers are in flight at once: the fake upstream takes a
// second before each answer, as image generation does (seconds), so every
// connection holds an answer most of the time. It is a measurement, not a
// check, and runs only when NANOGATE_RSS is set:
//
//	NANOGATE_RSS=1 go test -run TestPeakRSSInFlight -v -timeout 10m ./bench/
//
// NANOGATE_RSS_CONNS (default 300), NANOGATE_RSS_LATENCY (1s) and
// NANOGATE_RSS_DURATION (8s) shape the load; NANOGATE_RSS_BIN measures a
// prebuilt gateway binary (another commit) instead of this tree's, and
// NANOGATE_RSS_PPROF serves its pprof endpoints on that address. The
// gateway runs with Redis limits and a budget, as bench/run's full variant.
func TestPeakRSSInFlight(t *testing.T) {
	if os.Getenv("NANOGATE_RSS") == "" {
		t.Skip("a measurement: set NANOGATE_RSS=1 to run it")
	}
	conns := envInt("NANOGATE_RSS_CONNS", 300)
	latency := envDuration("NANOGATE_RSS_LATENCY", time.Second)
	dur := envDuration("NANOGATE_RSS_DURATION", 8*time.Second)
	b := startBinaries(t, latency)
	req, gw := b.gateway, b.gw
	pid := gw.Process.Pid
	idle := load.StatusKB(pid, "VmRSS")
	sampler := load.SampleRSS(pid)
	res := load.Closed(req, conns, latency+500*time.Millisecond, dur)
	peak := sampler.Stop()
	hwm := load.StatusKB(pid, "VmHWM")
	t.Logf("%d connections, upstream latency %v: %d answers (%d measured, %.0f/s), errors %d, bad %d %s",
		conns, latency, res.Total, res.OK, res.RPS(), res.Errors, res.Bad, res.FirstErr)
	if len(res.Lat) > 0 {
		t.Logf("latency p50 %v p99 %v", load.Quantile(res.Lat, 0.5), load.Quantile(res.Lat, 0.99))
	}
	t.Logf("RSS idle %.0f MiB, peak %.0f MiB (VmHWM), %.0f MiB (sampled every 10 ms)",
		float64(idle)/1024, float64(hwm)/1024, float64(peak)/1024)
}

// binaries are the gateway binary in front of the fake Gemini upstream
// binary, with their requests for a 1.5 MB image.
type binaries struct {
	gw              *exec.Cmd
	gateway, direct load.Request
}

// startBinaries builds and starts the fake upstream (latency before each
// answer, 1.5 MB images), Redis and the gateway (NANOGATE_RSS_BIN, or
// this tree built), and checks one answer through the gateway.
func startBinaries(t *testing.T, latency time.Duration) binaries {
	t.Helper()
	dir := t.TempDir()
	gwBin := os.Getenv("NANOGATE_RSS_BIN")
	if gwBin == "" {
		gwBin = filepath.Join(dir, "nanogate")
		build(t, gwBin, ".")
	}
	fakeBin := filepath.Join(dir, "fakeup")
	build(t, fakeBin, "internal/fakeup/cmd/fakeup")

	geminiAddr := freeAddr(t)
	start(t, dir, "fakeup", nil, fakeBin, "-openai", "", "-gemini", geminiAddr, "-key", "up-key",
		"-image-size", "1500000", "-latency", latency.String())
	rd := redistest.Start(t)
	listen := freeAddr(t)
	cfg := fmt.Sprintf(`server:
  listen: %q
log: { level: info, format: json }
redis:
  addrs: [%q]
  key_prefix: "rss:"
providers:
  - name: google
    kind: gemini
    base_url: http://%s/v1beta
    api_key: up-key
    models: { gemini-2.5-flash-image: gemini-2.5-flash-image }
    price: { per_image: 0.039, input_per_mtok: 0.30, output_per_mtok: 2.50 }
    timeout: 60s
teams:
  - { name: bench, rpm: 1000000000, tpm: 1000000000000, budget: { usd: 1000000000, period: monthly } }
keys:
  - { name: bench, key: sk-rss-bench-key-0123456789, team: bench, rpm: 1000000000, tpm: 1000000000000 }
`, listen, rd.Addr, geminiAddr)
	cfgPath := filepath.Join(dir, "config.yaml")
	if err := os.WriteFile(cfgPath, []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
	args := []string{"-config", cfgPath}
	if pp := os.Getenv("NANOGATE_RSS_PPROF"); pp != "" {
		args = append(args, "-pprof", pp) // profiles of the run, for a closer look
	}
	gw := start(t, dir, "nanogate", nil, gwBin, args...)
	poll.Until(t, 30*time.Second, "the gateway to be ready", func() bool {
		c, err := net.Dial("tcp", listen)
		if err == nil {
			c.Close()
		}
		return err == nil
	})
	req, err := load.NewPost("http://"+listen+"/v1/chat/completions",
		[]byte(`{"model":"gemini-2.5-flash-image","messages":[{"role":"user","content":"draw a nano banana"}]}`),
		"Authorization: Bearer sk-rss-bench-key-0123456789")
	if err != nil {
		t.Fatal(err)
	}
	if st, body, err := load.Fetch(req); err != nil || st != 200 || !strings.Contains(string(body), `"image_tokens":1290`) {
		t.Fatalf("check: %d %v %.300s", st, err, body)
	}
	direct, err := load.NewPost("http://"+geminiAddr+"/v1beta/models/gemini-2.5-flash-image:generateContent",
		[]byte(`{"contents":[{"role":"user","parts":[{"text":"draw a nano banana"}]}],"generationConfig":{"responseModalities":["TEXT","IMAGE"]}}`),
		"x-goog-api-key: up-key")
	if err != nil {
		t.Fatal(err)
	}
	if st, body, err := load.Fetch(direct); err != nil || st != 200 {
		t.Fatalf("direct check: %d %v %.300s", st, err, body)
	}
	return binaries{gw: gw, gateway: req, direct: direct}
}

// TestAddedLatencyLargeC1 measures what the gateway binary adds to a
// 1.5 MB Gemini answer at c=1 (closed loop, no upstream latency): p50
// through the gateway minus p50 direct, in alternating rounds. Run with
//
//	NANOGATE_RSS=1 go test -run TestAddedLatencyLargeC1 -v ./bench/
func TestAddedLatencyLargeC1(t *testing.T) {
	if os.Getenv("NANOGATE_RSS") == "" {
		t.Skip("a measurement: set NANOGATE_RSS=1 to run it")
	}
	b := startBinaries(t, 0)
	var added []time.Duration
	for round := range 5 {
		d := load.Closed(b.direct, 1, 200*time.Millisecond, 2*time.Second)
		g := load.Closed(b.gateway, 1, 200*time.Millisecond, 2*time.Second)
		if len(d.Lat) == 0 || len(g.Lat) == 0 || g.Errors+g.Bad+d.Errors+d.Bad > 0 {
			t.Fatalf("round %d: direct %+v, gateway %+v", round, d.FirstErr, g.FirstErr)
		}
		dp, gp := load.Quantile(d.Lat, 0.5), load.Quantile(g.Lat, 0.5)
		added = append(added, gp-dp)
		t.Logf("round %d: direct p50 %v, gateway p50 %v, added %v", round, dp, gp, gp-dp)
	}
	slices.Sort(added)
	t.Logf("added p50 at c=1, median of %d rounds: %v", len(added), added[len(added)/2])
}

func envInt(name string, def int) int {
	if v, err := strconv.Atoi(os.Getenv(name)); err == nil && v > 0 {
		return v
	}
	return def
}

func envDuration(name string, def time.Duration) time.Duration {
	if v, err := time.ParseDuration(os.Getenv(name)); err == nil && v > 0 {
		return v
	}
	return def
}

func build(t *testing.T, out, pkg string) {
	t.Helper()
	// The tests run in a directory of their own: the module is found from
	// this file.
	_, file, _, _ := runtime.Caller(0)
	root := filepath.Dir(filepath.Dir(file))
	cmd := exec.Command("go", "build", "-o", out, "./"+pkg)
	cmd.Dir = root
	if b, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("go build %s: %v\n%s", pkg, err, b)
	}
}

func freeAddr(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().String()
}

// start runs bin in dir, logging to dir/name.log, until the test ends.
func start(t *testing.T, dir, name string, env []string, bin string, args ...string) *exec.Cmd {
	t.Helper()
	lf, err := os.Create(filepath.Join(dir, name+".log"))
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(bin, args...)
	cmd.Dir, cmd.Stdout, cmd.Stderr = dir, lf, lf
	cmd.Env = append(os.Environ(), env...)
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		cmd.Process.Kill()
		cmd.Wait()
		lf.Close()
	})
	return cmd
}
