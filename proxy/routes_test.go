package proxy

import (
	"encoding/json"
	"net"
	"net/http"
	"slices"
	"strings"
	"testing"
	"time"

	"go.uber.org/zap"

	"nanogate/auth"
	"nanogate/config"
	"nanogate/gateway"
	"nanogate/images"
	"nanogate/metrics"
	"nanogate/provider"
	"nanogate/router"
)

const (
	testClientKey = "sk-route-table-client-0123"
	testAdminKey  = "admin-route-table-0123456789"
)

// startRouteServer serves a gateway with no providers (no request reaches
// an upstream here) and a filesystem image store on loopback.
func startRouteServer(t *testing.T) (*Server, string) {
	return startServerWithLog(t, zap.NewNop())
}

func startServerWithLog(t *testing.T, log *zap.Logger) (*Server, string) {
	t.Helper()
	cfg := &config.Config{AdminKey: testAdminKey, Keys: []config.Key{{Name: "k", Key: testClientKey}}}
	cfg.Defaults()
	m := metrics.New()
	fs, err := images.NewFS(images.FSConfig{Dir: t.TempDir(), PublicURL: "http://127.0.0.1", SigningKey: strings.Repeat("s", 32),
		TTL: time.Hour}, log)
	if err != nil {
		t.Fatal(err)
	}
	off := images.NewOffloader(fs, images.Options{})
	t.Cleanup(func() { off.Close() })
	st := &State{Config: cfg, Keys: auth.NewTable(cfg.Keys), Offload: off,
		Gateway: gateway.New(router.New(nil, cfg.Routing, nil, log, m), gateway.Options{Log: log})}
	s := New(st, log, m)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go s.Serve(ln)
	t.Cleanup(func() { s.srv.Shutdown() })
	return s, "http://" + ln.Addr().String()
}

// routePath is a path of r with its {id} filled in.
func routePath(p string) string {
	if strings.HasSuffix(p, "/images/{id}") {
		return strings.Replace(p, "{id}", "0123456789abcdef0123456789abcdef.png", 1)
	}
	return strings.Replace(p, "{id}", "file-abc123", 1)
}

func do(t *testing.T, method, url, bearer string) *http.Response {
	t.Helper()
	req, err := http.NewRequest(method, url, nil)
	if err != nil {
		t.Fatal(err)
	}
	if bearer != "" {
		req.Header.Set("Authorization", "Bearer "+bearer)
	}
	c := &http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	resp, err := c.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	return resp
}

func (g *authGuard) count(ip string) int {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.fails[ip]
}

var loopback = string(net.ParseIP("127.0.0.1").To16())

// TestRouteTable walks every route: a wrong method is 405 with Allow (key or
// not), a client or admin route refuses a bad key with 401 and the guard
// counts it, a signed link with a bad signature is refused and counted, a
// public route answers without a key; then, with the address over its
// allowance, every guarded route answers 429 to a bad credential while a
// valid key still works.
func TestRouteTable(t *testing.T) {
	s, base := startRouteServer(t)
	s.guard.maxFails = 1 << 20
	methods := []string{"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE"}
	for _, r := range routes {
		for _, p := range r.paths {
			url := base + routePath(p)
			for _, m := range methods {
				if r.allows([]byte(m)) {
					continue
				}
				resp := do(t, m, url, testClientKey)
				if resp.StatusCode != 405 || resp.Header.Get("Allow") != r.allow {
					t.Errorf("%s %s: %d, Allow %q; want 405, Allow %q", m, p, resp.StatusCode, resp.Header.Get("Allow"), r.allow)
				}
			}
			before := s.guard.count(loopback)
			switch r.auth {
			case authClient, authAdmin:
				for _, bad := range []string{"", "sk-wrong-key-0123456789abcdef"} {
					if resp := do(t, r.methods[0], url, bad); resp.StatusCode != 401 {
						t.Errorf("%s %s with key %q: %d, want 401", r.methods[0], p, bad, resp.StatusCode)
					}
				}
				if r.auth == authClient {
					// A client key is not an admin key, nor the other way.
					if resp := do(t, r.methods[0], url, testAdminKey); resp.StatusCode != 401 {
						t.Errorf("%s with the admin key: %d, want 401", p, resp.StatusCode)
					}
				} else if resp := do(t, r.methods[0], url, testClientKey); resp.StatusCode != 401 {
					t.Errorf("%s with a client key: %d, want 401", p, resp.StatusCode)
				}
				if got := s.guard.count(loopback) - before; got != 3 {
					t.Errorf("%s: the guard counted %d of 3 refusals", p, got)
				}
			case authSigned:
				if resp := do(t, "GET", url+"?exp=9999999999&sig=bad", ""); resp.StatusCode != 403 {
					t.Errorf("%s with a bad signature: %d, want 403", p, resp.StatusCode)
				}
				if got := s.guard.count(loopback) - before; got != 1 {
					t.Errorf("%s: the guard counted %d of 1 refusal", p, got)
				}
			case authNone:
				resp := do(t, r.methods[0], url, "")
				if resp.StatusCode == 401 || resp.StatusCode == 403 || resp.StatusCode == 404 || resp.StatusCode == 405 {
					t.Errorf("public %s: %d", p, resp.StatusCode)
				}
				if got := s.guard.count(loopback) - before; got != 0 {
					t.Errorf("public %s: the guard counted %d", p, got)
				}
			}
		}
	}

	// The address is now over its allowance.
	s.guard.mu.Lock()
	s.guard.maxFails = s.guard.fails[loopback]
	s.guard.mu.Unlock()
	for _, r := range routes {
		url := base + routePath(r.paths[0])
		switch r.auth {
		case authClient, authAdmin:
			if resp := do(t, r.methods[0], url, "sk-wrong-key-0123456789abcdef"); resp.StatusCode != 429 {
				t.Errorf("%s over the allowance: %d, want 429", r.paths[0], resp.StatusCode)
			}
		case authSigned:
			if resp := do(t, "GET", url+"?exp=9999999999&sig=bad", ""); resp.StatusCode != 429 {
				t.Errorf("%s over the allowance: %d, want 429", r.paths[0], resp.StatusCode)
			}
		}
	}
	if resp := do(t, "GET", base+"/v1/models", testClientKey); resp.StatusCode != 200 {
		t.Errorf("a valid key from a blocked address: %d, want 200", resp.StatusCode)
	}
	if resp := do(t, "GET", base+"/admin/providers", testAdminKey); resp.StatusCode != 200 {
		t.Errorf("the admin key from a blocked address: %d, want 200", resp.StatusCode)
	}
}

// Every path the gateway answered before the table keeps a route, and an
// unknown path is 404 whatever its method.
func TestRouteTableCoversThePublicPaths(t *testing.T) {
	for _, p := range []string{"/v1/chat/completions", "/chat/completions", "/v1/images/generations", "/v1/images/edits",
		"/v1/models", "/v1/models/gemini-2.5-flash-image", "/models/m", "/v1/usage", "/v1/files", "/v1/files/file-1", "/v1/files/file-1/content", "/v1/batches",
		"/v1/batches/batch_1", "/v1/batches/batch_1/cancel", "/admin/usage", "/admin/providers", "/admin/batches",
		"/admin", "/admin/", "/admin/dashboard.js", "/admin/dashboard.css", "/images/x.png", "/healthz", "/readyz", "/metrics"} {
		if r, _ := findRoute([]byte(p)); r == nil {
			t.Errorf("no route for %s", p)
		}
	}
	for _, p := range []string{"/", "/v1", "/v1/files/", "/v1/files/a/b", "/v1/files/a/contents", "/images/", "/images/a/b",
		"/v1/batches/b/cancel/x", "/admin/other"} {
		if r, _ := findRoute([]byte(p)); r != nil {
			t.Errorf("%s has a route", p)
		}
	}
	if r, id := findRoute([]byte("/images/edits")); r == nil || id != "" || r.logAs != "images_edits" {
		t.Error("/images/edits is taken for an image id")
	}
	if _, id := findRoute([]byte("/v1/files/file-7/content")); id != "file-7" {
		t.Errorf("id %q", id)
	}
	kinds := map[authKind]bool{}
	for _, r := range routes {
		kinds[r.auth] = true
		if len(r.methods) == 0 || r.handle == nil {
			t.Errorf("%v: no method or handler", r.paths)
		}
		if slices.Contains(r.methods, "GET") && !strings.Contains(r.allow, "HEAD") {
			t.Errorf("%v: Allow %q lacks HEAD", r.paths, r.allow)
		}
	}
	if len(kinds) != 4 {
		t.Errorf("auth kinds in the table: %v", kinds)
	}
}

// TestModelRetrieve: GET /v1/models/{id} is OpenAI's model object for a
// model the key may use, and 404 model_not_found in OpenAI's envelope for a
// model no provider serves or the key may not use.
func TestModelRetrieve(t *testing.T) {
	log := zap.NewNop()
	cfg := &config.Config{Keys: []config.Key{{Name: "k", Key: testClientKey},
		{Name: "narrow", Key: "sk-route-table-narrow-0123", Models: []string{"other"}}}}
	cfg.Defaults()
	pc := config.Provider{Name: "p", Kind: "openai", BaseURL: "http://127.0.0.1:9/v1", APIKey: "x",
		Models: map[string]string{"gemini-2.5-flash-image": "g", "other": "o"}}
	p, err := provider.NewOpenAI(pc, provider.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(p.Close)
	m := metrics.New()
	st := &State{Config: cfg, Keys: auth.NewTable(cfg.Keys),
		Gateway: gateway.New(router.New([]router.Entry{{Provider: p, Config: pc}}, cfg.Routing, nil, log, m), gateway.Options{Log: log})}
	s := New(st, log, m)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go s.Serve(ln)
	t.Cleanup(func() { s.srv.Shutdown() })
	base := "http://" + ln.Addr().String()

	get := func(path, key string) (int, map[string]any) {
		req, _ := http.NewRequest("GET", base+path, nil)
		req.Header.Set("Authorization", "Bearer "+key)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		var v map[string]any
		if err := json.NewDecoder(resp.Body).Decode(&v); err != nil {
			t.Fatalf("%s: %v", path, err)
		}
		return resp.StatusCode, v
	}
	for _, path := range []string{"/v1/models/gemini-2.5-flash-image", "/models/gemini-2.5-flash-image"} {
		code, v := get(path, testClientKey)
		if code != 200 || v["id"] != "gemini-2.5-flash-image" || v["object"] != "model" || v["owned_by"] != "google" || v["created"] != float64(1759363200) {
			t.Errorf("%s: %d %v", path, code, v)
		}
	}
	for _, tt := range []struct{ path, key string }{
		{"/v1/models/no-such-model", testClientKey},
		{"/v1/models/gemini-2.5-flash-image", "sk-route-table-narrow-0123"},
	} {
		code, v := get(tt.path, tt.key)
		e, _ := v["error"].(map[string]any)
		if code != 404 || e["code"] != "model_not_found" || e["type"] != "invalid_request_error" || e["param"] != "model" {
			t.Errorf("%s: %d %v", tt.path, code, v)
		}
	}
	if code, v := get("/v1/models/other", "sk-route-table-narrow-0123"); code != 200 || v["id"] != "other" || v["created"] != float64(0) {
		t.Errorf("allowed model of a narrow key: %d %v", code, v)
	}
}
