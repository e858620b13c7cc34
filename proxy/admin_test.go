package proxy

import (
	"context"
	"io"
	"net/http"
	"slices"
	"strings"
	"testing"
	"time"
	"unicode/utf8"

	"gopkg.in/yaml.v3"

	"nanogate/auth"
	"nanogate/config"
	"nanogate/internal/fakeup"
	"nanogate/openai"
)

// TestAdminConfigShowsTheConfigInForceMasked: GET /admin/config is the
// configuration in force as YAML with every secret masked (the admin key,
// client keys, the provider's key, the signing key), and gets an access
// log line naming the admin.
func TestAdminConfigShowsTheConfigInForceMasked(t *testing.T) {
	ts := startServer(t, serverOpts{})
	r := send(t, "GET", ts.url+"/admin/config", adminKey, "", nil, "x-request-id", "trace-config")
	if r.status != 200 || r.header.Get("Content-Type") != "application/yaml; charset=utf-8" {
		t.Fatalf("%d %v %s", r.status, r.header, r.body)
	}
	out := string(r.body)
	for name, secret := range map[string]string{"admin key": adminKey, "ci": ciKey, "narrow": narrowKey, "ops": opsKey,
		"provider key": upKey, "signing key": ts.cfg.Images.Offload.SigningKey} {
		if strings.Contains(out, secret) {
			t.Errorf("/admin/config shows the %s", name)
		}
	}
	var shown config.Config
	if err := yaml.Unmarshal(r.body, &shown); err != nil {
		t.Fatalf("not YAML: %v", err)
	}
	if shown.AdminKey != "********" || len(shown.Keys) != 3 || shown.Keys[0].Name != "ci" || shown.Keys[0].Key != "********" ||
		len(shown.Providers) != 1 || shown.Providers[0].APIKey != "********" || shown.Providers[0].BaseURL != ts.up.URL() ||
		shown.Server.MaxBodyBytes != ts.cfg.Server.MaxBodyBytes {
		t.Errorf("shown %+v", shown)
	}
	if ts.st.Config.Keys[0].Key != ciKey || ts.st.Config.AdminKey != adminKey {
		t.Error("masking changed the config in force")
	}

	var access map[string]any
	waitFor(t, "the access line", func() bool {
		for _, e := range ts.logs.FilterMessage("access").All() {
			if m := e.ContextMap(); m["request_id"] == "trace-config" {
				access = m
				return true
			}
		}
		return false
	})
	for k, want := range map[string]any{"method": "GET", "path": "/admin/config", "status": int64(200), "auth": "admin",
		"key": "admin", "client_ip": "127.0.0.1"} {
		if access[k] != want {
			t.Errorf("access field %s = %#v, want %#v", k, access[k], want)
		}
	}
	// A refused admin call is logged without a key.
	send(t, "GET", ts.url+"/admin/config", "wrong-admin-key-0123456789", "", nil, "x-request-id", "trace-config-bad")
	waitFor(t, "the refusal's access line", func() bool {
		for _, e := range ts.logs.FilterMessage("access").All() {
			if m := e.ContextMap(); m["request_id"] == "trace-config-bad" {
				if _, ok := m["key"]; ok || m["status"] != int64(401) {
					t.Errorf("refusal logged %v", m)
				}
				return true
			}
		}
		return false
	})
}

// TestAdminProvidersListsHealthAndPrice: GET /admin/providers lists each
// provider with its kind, state, price and request counts.
func TestAdminProvidersListsHealthAndPrice(t *testing.T) {
	ts := startServer(t, serverOpts{})
	ts.postJSON(t, "/v1/chat/completions", ciKey, chatBody(testModel, ""))
	var v struct {
		Providers []struct {
			Name     string  `json:"name"`
			Kind     string  `json:"kind"`
			State    string  `json:"state"`
			Price    float64 `json:"price_per_image_usd"`
			Requests int64   `json:"requests"`
		} `json:"providers"`
	}
	r := ts.get(t, "/admin/providers", adminKey)
	decode(t, r, &v)
	if r.status != 200 || r.header.Get("Content-Type") != "application/json" || len(v.Providers) != 1 {
		t.Fatalf("%d %s", r.status, r.body)
	}
	if p := v.Providers[0]; p.Name != "up" || p.Kind != "openai" || p.State == "" || p.Price != 0.035 || p.Requests != 1 {
		t.Errorf("provider %+v", p)
	}
}

// TestModelsListsWhatTheKeyMayUse: GET /v1/models is OpenAI's list of the
// models the key may use.
func TestModelsListsWhatTheKeyMayUse(t *testing.T) {
	ts := startServer(t, serverOpts{})
	type list struct {
		Object string `json:"object"`
		Data   []struct {
			ID, Object, OwnedBy string
			Created             int64
		} `json:"data"`
	}
	ids := func(key string) []string {
		var l list
		r := ts.get(t, "/v1/models", key)
		decode(t, r, &l)
		if r.status != 200 || l.Object != "list" {
			t.Fatalf("%d %s", r.status, r.body)
		}
		var out []string
		for _, m := range l.Data {
			if m.Object != "model" {
				t.Errorf("%+v", m)
			}
			out = append(out, m.ID)
		}
		slices.Sort(out)
		return out
	}
	if got := ids(ciKey); !slices.Equal(got, []string{testModel, "other-model"}) {
		t.Errorf("ci sees %v", got)
	}
	if got := ids(narrowKey); !slices.Equal(got, []string{"other-model"}) {
		t.Errorf("narrow sees %v", got)
	}
}

// TestAdminListenerServesTheAdminAPIApart: with server.admin_listen, the
// admin API, its dashboard and /metrics are served on the admin listener
// only (404 on the public one), the API on the public one only, and the
// health checks on both.
func TestAdminListenerServesTheAdminAPIApart(t *testing.T) {
	ts := startServer(t, serverOpts{adminListen: true})
	if ts.postJSON(t, "/v1/chat/completions", ciKey, chatBody(testModel, "")).status != 200 {
		t.Fatal("chat on the public listener failed")
	}
	for _, tc := range []struct {
		path, key string
		public    int
		admin     int
	}{
		{"/admin/config", adminKey, 404, 200},
		{"/admin/providers", adminKey, 404, 200},
		{"/admin/usage", adminKey, 404, 200},
		{"/admin", "", 404, 308},
		{"/admin/", "", 404, 200},
		{"/metrics", "", 404, 200},
		{"/v1/models", ciKey, 200, 404},
		{"/v1/usage", ciKey, 200, 404},
		{"/healthz", "", 200, 200},
		{"/readyz", "", 200, 200},
	} {
		if r := send(t, "GET", ts.url+tc.path, tc.key, "", nil); r.status != tc.public {
			t.Errorf("public %s: %d, want %d", tc.path, r.status, tc.public)
		} else if r.status == 404 && !strings.Contains(string(r.body), `"Unknown path."`) {
			t.Errorf("public %s: %s", tc.path, r.body)
		}
		if r := send(t, "GET", ts.adminURL+tc.path, tc.key, "", nil); r.status != tc.admin {
			t.Errorf("admin %s: %d, want %d", tc.path, r.status, tc.admin)
		}
	}
	m := send(t, "GET", ts.adminURL+"/metrics", "", "", nil)
	if !strings.Contains(string(m.body), `nanogate_requests_total{model="`+testModel+`",provider="up",route="chat",status="200"} 1`) {
		t.Errorf("/metrics does not count the request:\n%.2000s", m.body)
	}
}

// TestSetStateSwapsTheStateForNewRequests: a reload's new state serves the
// requests that start after it: its keys, its image format.
func TestSetStateSwapsTheStateForNewRequests(t *testing.T) {
	ts := startServer(t, serverOpts{})
	if ts.s.State() != ts.st {
		t.Fatal("State is not the state the server started with")
	}
	const newKey = "sk-proxy-test-reloaded-0123456789"
	next := *ts.st
	next.Keys = auth.NewTable([]config.Key{{Name: "reloaded", Team: "design", Key: newKey}})
	next.Format = openai.FormatDataURL
	ts.s.SetState(&next)
	if ts.s.State() != &next {
		t.Fatal("State is not the new state")
	}
	wantError(t, ts.postJSON(t, "/v1/chat/completions", ciKey, chatBody(testModel, "")), 401, "invalid_request_error",
		"invalid_api_key", "")
	r := ts.postJSON(t, "/v1/chat/completions", newKey, chatBody(testModel, ""), "x-request-id", "trace-reloaded")
	var c chatCompletion
	decode(t, r, &c)
	if r.status != 200 || len(c.Choices) != 1 || c.Choices[0].Message.Content != "data:image/png;base64,"+fakeup.PNGBase64(0) {
		t.Errorf("after the swap: %d %.300s", r.status, r.body)
	}
	if l := ts.requestLine(t, "trace-reloaded"); l["key"] != "reloaded" {
		t.Errorf("log line %v", l)
	}
}

// TestShutdownFinishesStreamsInFlight: Shutdown stops taking connections
// but lets a stream in flight run to its [DONE]; then Serve returns
// without an error.
func TestShutdownFinishesStreamsInFlight(t *testing.T) {
	ts := startServer(t, serverOpts{adminListen: true})
	ts.up.SetFault(fakeup.Fault{StallMidStream: 300 * time.Millisecond})
	done := make(chan reply, 1)
	go func() {
		req, _ := http.NewRequest("POST", ts.url+"/v1/chat/completions",
			strings.NewReader(chatBody(testModel, `,"stream":true`)))
		req.Header.Set("Authorization", "Bearer "+ciKey)
		req.Header.Set("Content-Type", "application/json")
		resp, err := httpClient.Do(req)
		if err != nil {
			done <- reply{status: -1, body: []byte(err.Error())}
			return
		}
		defer resp.Body.Close()
		b, err := io.ReadAll(resp.Body)
		if err != nil {
			b = append(b, "\nread error: "+err.Error()...)
		}
		done <- reply{status: resp.StatusCode, body: b}
	}()
	waitFor(t, "the stream to start", func() bool { return ts.up.InFlight() == 1 })
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := ts.s.Shutdown(ctx); err != nil {
		t.Fatalf("Shutdown: %v", err)
	}
	r := <-done
	if r.status != 200 || !strings.HasSuffix(string(r.body), "data: [DONE]\n\n") {
		t.Errorf("the stream in flight: %d %q", r.status, r.body)
	}
	for range 2 { // the public and the admin listener
		select {
		case err := <-ts.serveErr:
			if err != nil {
				t.Errorf("Serve: %v", err)
			}
		case <-time.After(30 * time.Second): // a bound against hanging, not a measure
			t.Fatal("Serve did not return after Shutdown")
		}
	}
	if _, err := http.Get(ts.url + "/healthz"); err == nil {
		t.Error("the server still takes requests after Shutdown")
	}
}

// TestCleanFilenameKeepsABoundedBaseName: an uploaded file's name is kept
// as its base name (either slash), valid UTF-8 and at most 255 bytes
// without cutting a character; a name with nothing left is upload.jsonl.
func TestCleanFilenameKeepsABoundedBaseName(t *testing.T) {
	long := strings.Repeat("é", 200) // 400 bytes
	for in, want := range map[string]string{
		"requests.jsonl":                  "requests.jsonl",
		"/etc/passwd":                     "passwd",
		`C:\Users\me\in.jsonl`:            "in.jsonl",
		"../../x.jsonl":                   "x.jsonl",
		"":                                "upload.jsonl",
		"/":                               "upload.jsonl",
		".":                               "upload.jsonl",
		"bad\xffname":                     "upload.jsonl",
		long:                              strings.Repeat("é", 127),
		strings.Repeat("a", 300) + ".txt": strings.Repeat("a", 255),
	} {
		got := cleanFilename(in)
		if got != want || len(got) > 255 || !utf8.ValidString(got) {
			t.Errorf("cleanFilename(%.40q) = %.40q (%d bytes), want %.40q", in, got, len(got), want)
		}
	}
}
