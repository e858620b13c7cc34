package e2e

import (
	"encoding/base64"
	"net"
	"net/http"
	"os"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"nanogate/internal/fakeup"
	"nanogate/internal/gwtest"
)

// TestLogsHoldNoSecretsOrImages runs successes, failures and streams with
// debug logging, then searches everything the gateway printed.
func TestLogsHoldNoSecretsOrImages(t *testing.T) {
	e := startEnv(t, opts{})
	e.cheap.SetImageSize(200 << 10)
	readAll(t, e.post(t, chatBody("")))
	readAll(t, e.post(t, chatBody(`,"stream":true`)))
	readAll(t, e.post(t, chatBody(""), "Authorization", "Bearer sk-wrong-"+clientKey))
	e.cheap.SetFault(fakeup.Fault{Status: 500, Body: []byte(`{"error":{"message":"bad key ` + upstreamK1 + ` at https://x/?key=` + upstreamK1 + `"}}`)})
	e.dear.SetFault(fakeup.Fault{Status: 500})
	readAll(t, e.post(t, chatBody("")))
	// A request's line may follow its answer by a moment.
	waitRequestLines(t, e.gw, 4)
	logs := e.gw.Logs()
	img := fakeup.PNGBase64(200 << 10)
	for name, s := range map[string]string{
		"client key": clientKey, "restricted key": otherKey, "upstream key 1": upstreamK1, "upstream key 2": upstreamK2,
		"image base64": img[1000:1100], "tiny image base64": base64.StdEncoding.EncodeToString(fakeup.PNG(0))[:40],
	} {
		if strings.Contains(logs, s) {
			t.Errorf("logs contain the %s", name)
		}
	}
}

func TestCheckNamesUnknownKeysWithLines(t *testing.T) {
	code, out := gwtest.Check(t, `server:
  listen: "127.0.0.1:0"
  lisen: "x"
providers:
  - name: p
    kind: openai
    base_url: http://127.0.0.1:1/v1
    api_key: k
    modles: {}
    models: { m: m }
`)
	if code != 1 {
		t.Fatalf("exit %d, want 1:\n%s", code, out)
	}
	for _, want := range []string{":3:", "lisen", ":9:", "modles"} {
		if !strings.Contains(out, want) {
			t.Errorf("output lacks %q:\n%s", want, out)
		}
	}
	code, out = gwtest.Check(t, `providers:
  - name: p
    kind: openai
    base_url: http://127.0.0.1:1/v1
    api_key: ${K}
    models: { m: m }
    price: { per_image: 0.035 }
keys: [{ name: k, key: client-key-0123456789 }]
`, "K=secret")
	if code != 0 {
		t.Fatalf("valid config: exit %d:\n%s", code, out)
	}
}

func TestExampleConfigIsValid(t *testing.T) {
	code, out := gwtest.Check(t, mustRead(t, "../config.yaml"))
	if code != 0 {
		t.Fatalf("config.yaml: exit %d:\n%s", code, out)
	}
}

// TestSIGTERMDrainsInFlight sends SIGTERM while requests are in flight: they
// finish with 200, new connections are refused, and the process exits 0.
func TestSIGTERMDrainsInFlight(t *testing.T) {
	e := startEnv(t, opts{})
	e.cheap.SetLatency(700 * time.Millisecond)
	var wg sync.WaitGroup
	statuses := make([]int, 3)
	for i := range statuses {
		wg.Add(1)
		go func(i int) {
			defer wg.Done()
			extra := ""
			if i == 2 {
				extra = `,"stream":true`
			}
			resp := e.post(t, chatBody(extra))
			body := readAll(t, resp)
			statuses[i] = resp.StatusCode
			if i == 2 && !strings.Contains(string(body), "[DONE]") {
				statuses[i] = -1
			}
		}(i)
	}
	waitFor(t, 10*time.Second, "requests in flight", func() bool { return e.cheap.InFlight() == 3 })
	e.gw.Signal(syscall.SIGTERM)
	wg.Wait()
	for i, s := range statuses {
		if s != 200 {
			t.Errorf("request %d ended with %d during drain", i, s)
		}
	}
	if code := e.gw.Wait(15 * time.Second); code != 0 {
		t.Fatalf("exit code %d, want 0", code)
	}
}

func TestHeadersTooLarge(t *testing.T) {
	e := startEnv(t, opts{})
	resp := e.post(t, chatBody(""), "X-Big", strings.Repeat("a", 20<<10))
	expectError(t, resp, 431, "invalid_request")
}

// TestSIGHUPReloads adds a key by rewriting the config; an invalid config
// afterwards is refused and the previous one stays in force.
func TestSIGHUPReloads(t *testing.T) {
	e := startEnv(t, opts{})
	orig, err := os.ReadFile(e.gw.ConfigPath)
	if err != nil {
		t.Fatal(err)
	}
	const newKey = "sk-e2e-added-by-reload-555"
	added := string(orig) + "  - name: added\n    key: " + newKey + "\n"
	if err := os.WriteFile(e.gw.ConfigPath, []byte(added), 0o600); err != nil {
		t.Fatal(err)
	}
	e.gw.Signal(syscall.SIGHUP)
	waitFor(t, 10*time.Second, "the new key to work", func() bool {
		resp := e.post(t, chatBody(""), "Authorization", "Bearer "+newKey)
		readAll(t, resp)
		return resp.StatusCode == 200
	})
	// The new state is in force a moment before its summary is logged.
	waitFor(t, 10*time.Second, "the reload's summary saying the keys changed", func() bool {
		return strings.Contains(e.gw.Logs(), `"msg":"config reloaded","changed":["keys"]`)
	})
	// A setting that needs a restart is named in a warning.
	moved := strings.Replace(added, "max_body_bytes: ", "max_body_bytes: 1", 1)
	if err := os.WriteFile(e.gw.ConfigPath, []byte(moved), 0o600); err != nil {
		t.Fatal(err)
	}
	e.gw.Signal(syscall.SIGHUP)
	waitFor(t, 10*time.Second, "the restart warning", func() bool {
		return strings.Contains(e.gw.Logs(), `"restart_needed":["server"]`)
	})
	if err := os.WriteFile(e.gw.ConfigPath, []byte(added+"  bogus_key: 1\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	e.gw.Signal(syscall.SIGHUP)
	waitFor(t, 10*time.Second, "the refusal in the log", func() bool {
		return strings.Contains(e.gw.Logs(), "reload refused")
	})
	resp := e.post(t, chatBody(""), "Authorization", "Bearer "+newKey)
	readAll(t, resp)
	if resp.StatusCode != 200 {
		t.Fatalf("after a refused reload the previous config is not in force: %d", resp.StatusCode)
	}
	waitRequestLine(t, e.gw, resp)
	if strings.Contains(e.gw.Logs(), newKey) {
		t.Fatal("the reload logged a key")
	}
	_, metrics := do(t, "GET", e.gw.URL+"/metrics", "", "", nil)
	for _, want := range []string{`nanogate_config_reloads_total{result="applied"} 2`, `nanogate_config_reloads_total{result="refused"} 1`} {
		if !strings.Contains(string(metrics), want) {
			t.Errorf("/metrics lacks %s", want)
		}
	}
}

// TestHalfSentConnectionsDoNotBlockService: 200 connections that send half a
// request and stall do not keep a real request from being served.
func TestHalfSentConnectionsDoNotBlockService(t *testing.T) {
	e := startEnv(t, opts{})
	var conns []net.Conn
	for i := 0; i < 200; i++ {
		c, err := net.Dial("tcp", e.gw.Addr)
		if err != nil {
			t.Fatal(err)
		}
		conns = append(conns, c)
		if i%2 == 0 {
			c.Write([]byte("POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Length: 1000\r\n\r\n{\"mo"))
		}
	}
	defer func() {
		for _, c := range conns {
			c.Close()
		}
	}()
	resp := e.post(t, chatBody(""))
	readAll(t, resp)
	if resp.StatusCode != 200 {
		t.Fatalf("status %d with 200 stalled connections open", resp.StatusCode)
	}
}

func TestSecondSignalExitsAtOnce(t *testing.T) {
	e := startEnv(t, opts{})
	e.cheap.SetLatency(time.Minute)
	go func() {
		req, _ := http.NewRequest("POST", e.gw.URL+"/v1/chat/completions", strings.NewReader(chatBody("")))
		req.Header.Set("Authorization", "Bearer "+clientKey)
		if resp, err := client.Do(req); err == nil {
			resp.Body.Close()
		}
	}()
	waitFor(t, 10*time.Second, "a request in flight", func() bool { return e.cheap.InFlight() == 1 })
	e.gw.Signal(syscall.SIGTERM)
	waitFor(t, 10*time.Second, "the first SIGTERM to start the drain", func() bool {
		return strings.Contains(e.gw.Logs(), `"msg":"draining"`)
	})
	e.gw.Signal(syscall.SIGTERM)
	if code := e.gw.Wait(5 * time.Second); code == -1 {
		t.Fatal("a second SIGTERM did not end the process while a request was in flight")
	}
}

// TestAdminConfigShowsTheConfigInForceWithoutSecrets: GET /admin/config
// answers the running config as YAML, every secret masked.
func TestAdminConfigShowsTheConfigInForceWithoutSecrets(t *testing.T) {
	e := startEnv(t, opts{adminKey: adminKey})
	code, body := do(t, "GET", e.gw.URL+"/admin/config", adminKey, "", nil)
	if code != 200 || !strings.Contains(string(body), "providers:") || !strings.Contains(string(body), "name: cheap") {
		t.Fatalf("status %d:\n%s", code, body)
	}
	for _, secret := range []string{adminKey, clientKey, otherKey, upstreamK1, upstreamK2} {
		if strings.Contains(string(body), secret) {
			t.Errorf("/admin/config shows a secret")
		}
	}
	if code, _ := do(t, "GET", e.gw.URL+"/admin/config", clientKey, "", nil); code != 401 {
		t.Errorf("a client key reads /admin/config: %d", code)
	}
}

// TestAdminListenServesAdminAndMetricsApart: with server.admin_listen,
// /admin/* and /metrics answer only there, the API only on server.listen,
// and both answer health checks.
func TestAdminListenServesAdminAndMetricsApart(t *testing.T) {
	adminAddr := gwtest.FreeAddr(t)
	e := startEnv(t, opts{adminKey: adminKey, adminListen: adminAddr})
	admin := "http://" + adminAddr
	waitFor(t, 10*time.Second, "the admin listener", func() bool {
		resp, err := client.Get(admin + "/healthz")
		if err != nil {
			return false
		}
		readAll(t, resp)
		return resp.StatusCode == 200
	})
	for _, c := range []struct {
		base, path, key string
		want            int
	}{
		{admin, "/admin/providers", adminKey, 200},
		{admin, "/metrics", "", 200},
		{admin, "/readyz", "", 200},
		{admin, "/v1/models", clientKey, 404},
		{e.gw.URL, "/admin/providers", adminKey, 404},
		{e.gw.URL, "/metrics", "", 404},
		{e.gw.URL, "/admin/", "", 404},
		{e.gw.URL, "/v1/models", clientKey, 200},
		{e.gw.URL, "/healthz", "", 200},
	} {
		if code, _ := do(t, "GET", c.base+c.path, c.key, "", nil); code != c.want {
			t.Errorf("%s%s: %d, want %d", c.base, c.path, code, c.want)
		}
	}
}

// TestWatchedConfigReloadsWithoutASignal: with -watch-config, a rewritten
// config file (a ConfigMap update) is reloaded as SIGHUP would.
func TestWatchedConfigReloadsWithoutASignal(t *testing.T) {
	e, _ := startOneReseller(t, []string{"-watch-config", "100ms"})
	gw := e.gw
	orig, err := os.ReadFile(gw.ConfigPath)
	if err != nil {
		t.Fatal(err)
	}
	const added = "sk-e2e-added-by-watching-77"
	if err := os.WriteFile(gw.ConfigPath, []byte(string(orig)+"  - { name: added, key: "+added+" }\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 10*time.Second, "the watched reload", func() bool {
		resp := e.post(t, chatBody(""), "Authorization", "Bearer "+added)
		readAll(t, resp)
		return resp.StatusCode == 200
	})
	waitLog(t, gw, "config file changed; reloading")
}

// TestTeamMetricsAndTheAccessLog: /metrics has a series per team, and every
// endpoint without a request log of its own (here /admin/usage and
// /v1/models) writes an access line with the client's address and who it
// was.
func TestTeamMetricsAndTheAccessLog(t *testing.T) {
	e := startEnv(t, opts{adminKey: adminKey})
	readAll(t, e.post(t, chatBody("")))
	if code, _ := do(t, "GET", e.gw.URL+"/admin/usage", adminKey, "", nil); code != 200 {
		t.Fatalf("/admin/usage: %d", code)
	}
	if code, _ := do(t, "GET", e.gw.URL+"/v1/models", clientKey, "", nil); code != 200 {
		t.Fatalf("/v1/models: %d", code)
	}
	_, metrics := do(t, "GET", e.gw.URL+"/metrics", "", "", nil)
	for _, want := range []string{
		`nanogate_team_requests_total{status="200",team="design"} 1`,
		`nanogate_team_images_total{provider="cheap",team="design"} 1`,
		`nanogate_team_cost_usd_total{provider="cheap",team="design"} 0.03`,
		`nanogate_cost_usd_total{model="` + model + `",provider="cheap"} 0.03`,
	} {
		if !strings.Contains(string(metrics), want) {
			t.Errorf("/metrics lacks %s", want)
		}
	}
	waitFor(t, 5*time.Second, "the access lines", func() bool {
		logs := e.gw.Logs()
		return strings.Contains(logs, `"msg":"access"`) && strings.Contains(logs, `"path":"/admin/usage"`) &&
			strings.Contains(logs, `"path":"/v1/models"`)
	})
	for _, line := range strings.Split(e.gw.Logs(), "\n") {
		if strings.Contains(line, `"path":"/admin/usage"`) &&
			(!strings.Contains(line, `"client_ip":"127.0.0.1"`) || !strings.Contains(line, `"key":"admin"`) || !strings.Contains(line, `"status":200`)) {
			t.Errorf("access line %s", line)
		}
		if strings.Contains(line, adminKey) || strings.Contains(line, clientKey) {
			t.Errorf("a log line holds a key: %s", line)
		}
	}
}
