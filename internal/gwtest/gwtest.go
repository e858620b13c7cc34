// Package gwtest runs the real nanogate binary for black-box tests and
// benchmarks: it builds the binary once per test process (with the race
// detector when the tests have it), starts it on a free loopback port with a
// given config, and keeps everything it logs.
package gwtest

import (
	"bytes"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

var (
	buildOnce sync.Once
	binPath   string
	buildErr  error
)

// Cleanup removes the binary Binary built: call it from TestMain after the
// tests ran, so that each run does not leave tens of megabytes in the
// temporary directory.
func Cleanup() {
	if binPath != "" {
		os.RemoveAll(filepath.Dir(binPath))
	}
}

// Binary builds nanogate once and returns its path.
func Binary(t testing.TB) string {
	t.Helper()
	buildOnce.Do(func() {
		dir, err := os.MkdirTemp("", "nanogate-bin-")
		if err != nil {
			buildErr = err
			return
		}
		binPath = filepath.Join(dir, "nanogate")
		args := []string{"build", "-o", binPath}
		if raceEnabled {
			args = append(args, "-race")
		}
		args = append(args, "nanogate")
		out, err := exec.Command("go", args...).CombinedOutput()
		if err != nil {
			buildErr = fmt.Errorf("go build: %v\n%s", err, out)
		}
	})
	if buildErr != nil {
		t.Fatal(buildErr)
	}
	return binPath
}

// Gateway is a running nanogate process.
type Gateway struct {
	t    testing.TB
	URL  string // http://127.0.0.1:port
	Addr string
	// ConfigPath is the config file the process reads (rewrite it and send
	// SIGHUP to test reloads).
	ConfigPath string
	// Dir is the working directory of the process.
	Dir  string
	cmd  *exec.Cmd
	logs *syncBuffer
	done chan struct{}
	code int
}

type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// FreeAddr returns a loopback address with a port free at the time of the call.
func FreeAddr(t testing.TB) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().String()
}

// Start writes config (with {{ADDR}} replaced by a free address) to a file and
// runs the gateway on it with env added to the environment. It waits until
// /healthz answers and stops the process when the test ends.
func Start(t testing.TB, config string, env ...string) *Gateway {
	t.Helper()
	return StartIn(t, t.TempDir(), config, env...)
}

// StartIn is Start with the process working in dir, so that a second
// gateway can pick up what a first one left there (embedded usage records).
func StartIn(t testing.TB, dir, config string, env ...string) *Gateway {
	t.Helper()
	return StartArgs(t, dir, config, nil, env...)
}

// StartArgs is StartIn with more command-line arguments after -config.
func StartArgs(t testing.TB, dir, config string, args []string, env ...string) *Gateway {
	t.Helper()
	addr := FreeAddr(t)
	config = replaceAll(config, "{{ADDR}}", addr)
	path := filepath.Join(t.TempDir(), "config.yaml")
	if err := os.WriteFile(path, []byte(config), 0o600); err != nil {
		t.Fatal(err)
	}
	g := &Gateway{t: t, URL: "http://" + addr, Addr: addr, ConfigPath: path, logs: &syncBuffer{}, done: make(chan struct{})}
	g.cmd = exec.Command(Binary(t), append([]string{"-config", path}, args...)...)
	// Relative paths of the config (data/usage.jsonl, ...) land in a
	// directory of the test's own.
	g.Dir = dir
	g.cmd.Dir = g.Dir
	g.cmd.Env = append(os.Environ(), env...)
	g.cmd.Stdout, g.cmd.Stderr = g.logs, g.logs
	if err := g.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() {
		g.cmd.Wait()
		g.code = g.cmd.ProcessState.ExitCode()
		close(g.done)
	}()
	t.Cleanup(func() {
		// Killed, not stopped: a graceful stop would wait for the requests
		// a test left hanging. The log's last lines are written within
		// microseconds of being logged; only those can be lost.
		g.cmd.Process.Kill()
		<-g.done
		// Every test checks that no secret it gave the gateway appears in
		// anything the gateway printed, at any level.
		logs := g.Logs()
		for _, kv := range env {
			name, val, _ := strings.Cut(kv, "=")
			if isSecretName(name) && len(val) >= 8 && strings.Contains(logs, val) {
				t.Errorf("the gateway logged the secret %s", name)
			}
		}
		if t.Failed() {
			t.Logf("gateway logs:\n%s", logs)
		}
	})
	deadline := time.Now().Add(30 * time.Second)
	for time.Now().Before(deadline) {
		select {
		case <-g.done:
			t.Fatalf("gateway exited with %d before serving:\n%s", g.code, g.Logs())
		default:
		}
		resp, err := http.Get(g.URL + "/healthz")
		if err == nil {
			io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			if resp.StatusCode == 200 {
				return g
			}
		}
		time.Sleep(20 * time.Millisecond)
	}
	t.Fatalf("gateway did not become healthy:\n%s", g.Logs())
	return nil
}

// Logs returns everything the gateway printed so far.
func (g *Gateway) Logs() string { return g.logs.String() }

// Signal sends sig to the process.
func (g *Gateway) Signal(sig syscall.Signal) {
	g.cmd.Process.Signal(sig)
}

// Wait waits up to d for the process to exit and returns its exit code, or -1
// if it is still running.
func (g *Gateway) Wait(d time.Duration) int {
	select {
	case <-g.done:
		return g.code
	case <-time.After(d):
		return -1
	}
}

// Check runs `nanogate -check -config` on config text and returns the exit
// code and the output.
func Check(t testing.TB, config string, env ...string) (int, string) {
	t.Helper()
	path := filepath.Join(t.TempDir(), "config.yaml")
	if err := os.WriteFile(path, []byte(config), 0o600); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(Binary(t), "-check", "-config", path)
	cmd.Env = append(os.Environ(), env...)
	out, err := cmd.CombinedOutput()
	if err != nil {
		if ee, ok := err.(*exec.ExitError); ok {
			return ee.ExitCode(), string(out)
		}
		t.Fatal(err)
	}
	return 0, string(out)
}

// isSecretName tells the environment variables that carry secrets.
func isSecretName(name string) bool {
	for _, w := range []string{"KEY", "SECRET", "PASSWORD", "TOKEN"} {
		if strings.Contains(strings.ToUpper(name), w) {
			return true
		}
	}
	return false
}

func replaceAll(s, old, new string) string {
	return string(bytes.ReplaceAll([]byte(s), []byte(old), []byte(new)))
}

// Itoa is strconv.Itoa, for building configs.
func Itoa(n int) string { return strconv.Itoa(n) }

// PeakRSS returns the process's peak resident set (VmHWM) in bytes, or 0 when
// it cannot be read.
func (g *Gateway) PeakRSS() int64 {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(g.cmd.Process.Pid) + "/status")
	if err != nil {
		return 0
	}
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, "VmHWM:"); ok {
			kb, _ := strconv.ParseInt(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(v), "kB")), 10, 64)
			return kb << 10
		}
	}
	return 0
}
