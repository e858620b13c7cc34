package e2e

import (
	"net/http"
	"strings"
	"testing"
)

// TestErrorRows covers the 400/401/403/404/413 rows of the error table: each
// answered in OpenAI's envelope before any upstream call.
func TestErrorRows(t *testing.T) {
	e := startEnv(t, opts{maxBody: 64 << 10})
	big := `{"model":"` + model + `","messages":[{"role":"user","content":"` + strings.Repeat("a", 70<<10) + `"}]}`
	tests := []struct {
		name    string
		body    string
		headers []string
		status  int
		code    string
		param   string
	}{
		{"malformed json", `{"model":`, nil, 400, "invalid_request", ""},
		{"json not an object", `["a"]`, nil, 400, "invalid_request", ""},
		{"empty body", ``, nil, 400, "invalid_request", ""},
		{"missing model", `{"messages":[{"role":"user","content":"x"}]}`, nil, 400, "invalid_request", "model"},
		{"messages not array", `{"model":"` + model + `","messages":"hi"}`, nil, 400, "invalid_request", "messages"},
		{"bad role", `{"model":"` + model + `","messages":[{"role":"robot","content":"x"}]}`, nil, 400, "invalid_request", "messages[0].role"},
		{"bad base64 image", `{"model":"` + model + `","messages":[{"role":"user","content":[{"type":"image_url","image_url":{"url":"data:image/png;base64,!!"}}]}]}`, nil, 400, "invalid_request", "messages[0].content[0].image_url.url"},
		{"unknown parameter", chatBody(`,"foo":1`), nil, 400, "invalid_request", "foo"},
		{"n zero", chatBody(`,"n":0`), nil, 400, "invalid_request", "n"},
		{"wrong content type", chatBody(""), []string{"Content-Type", "multipart/form-data; boundary=x"}, 415, "invalid_request", ""},
		{"no key", chatBody(""), []string{"Authorization", ""}, 401, "invalid_api_key", ""},
		{"wrong key", chatBody(""), []string{"Authorization", "Bearer sk-nope"}, 401, "invalid_api_key", ""},
		{"not bearer", chatBody(""), []string{"Authorization", "Basic " + clientKey}, 401, "invalid_api_key", ""},
		{"model not allowed", chatBody(""), []string{"Authorization", "Bearer " + otherKey}, 403, "model_not_allowed", "model"},
		{"unknown model", `{"model":"dall-e-3","messages":[{"role":"user","content":"x"}]}`, nil, 404, "model_not_found", "model"},
		{"too large", big, nil, 413, "request_too_large", ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			env := expectError(t, e.post(t, tt.body, tt.headers...), tt.status, tt.code)
			got := ""
			if env.Error.Param != nil {
				got = *env.Error.Param
			}
			if got != tt.param {
				t.Errorf("param = %q, want %q", got, tt.param)
			}
		})
	}
	if n := e.cheap.Requests() + e.dear.Requests(); n != 0 {
		t.Fatalf("%d bad requests reached an upstream", n)
	}
}

func TestOtherKeyHeadersAuthenticate(t *testing.T) {
	e := startEnv(t, opts{})
	for _, h := range []string{"x-api-key", "x-goog-api-key"} {
		resp := e.post(t, chatBody(""), "Authorization", "", h, clientKey)
		if resp.StatusCode != 200 {
			t.Errorf("%s: status %d: %s", h, resp.StatusCode, readAll(t, resp))
			continue
		}
		readAll(t, resp)
	}
}

func TestPathsAndMethods(t *testing.T) {
	e := startEnv(t, opts{adminKey: adminKey})
	do := func(method, path, key string) *http.Response {
		req, _ := http.NewRequest(method, e.gw.URL+path, nil)
		if key != "" {
			req.Header.Set("Authorization", "Bearer "+key)
		}
		resp, err := client.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		return resp
	}
	get := func(path, key string) *http.Response { return do("GET", path, key) }
	expectError(t, get("/v1/nothing", clientKey), 404, "not_found")
	expectError(t, get("/v1/chat/completions", clientKey), 405, "method_not_allowed")
	expectError(t, get("/v1/models", ""), 401, "invalid_api_key")
	// Read-only paths answered 200 to any method once; now 405 with Allow.
	for _, tc := range []struct{ method, path, key string }{
		{"POST", "/v1/usage", clientKey}, {"PUT", "/admin/usage", adminKey}, {"DELETE", "/admin/providers", adminKey},
		{"POST", "/healthz", ""},
	} {
		resp := do(tc.method, tc.path, tc.key)
		if allow := resp.Header.Get("Allow"); allow != "GET, HEAD" {
			t.Errorf("%s %s: Allow %q", tc.method, tc.path, allow)
		}
		expectError(t, resp, 405, "method_not_allowed")
	}
	for _, p := range []string{"/healthz", "/readyz"} {
		resp := get(p, "")
		if resp.StatusCode != 200 {
			t.Errorf("%s: %d", p, resp.StatusCode)
		}
		readAll(t, resp)
	}
}

func TestModelsListsWhatTheKeyMayUse(t *testing.T) {
	e := startEnv(t, opts{})
	list := func(key string) []string {
		req, _ := http.NewRequest("GET", e.gw.URL+"/v1/models", nil)
		req.Header.Set("Authorization", "Bearer "+key)
		resp, err := client.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		var l struct {
			Object string `json:"object"`
			Data   []struct {
				ID, Object, OwnedBy string
				Created             int64
			} `json:"data"`
		}
		if err := jsonDecode(readAll(t, resp), &l); err != nil || l.Object != "list" {
			t.Fatalf("bad list: %v %+v", err, l)
		}
		var ids []string
		for _, m := range l.Data {
			if m.Object != "model" {
				t.Errorf("object = %q", m.Object)
			}
			ids = append(ids, m.ID)
		}
		return ids
	}
	if got := strings.Join(list(clientKey), ","); got != model+",other-model" {
		t.Errorf("unrestricted key sees %q", got)
	}
	if got := strings.Join(list(otherKey), ","); got != "other-model" {
		t.Errorf("restricted key sees %q", got)
	}
}

func TestFailedAuthIsRateLimitedPerAddress(t *testing.T) {
	e := startEnv(t, opts{adminKey: adminKey})
	codes := map[int]int{}
	// Guesses spread over client and admin routes share one allowance.
	paths := []string{"/v1/chat/completions", "/v1/files", "/v1/batches", "/admin/usage", "/admin/providers"}
	for i := 0; i < 70; i++ {
		var resp *http.Response
		if p := paths[i%len(paths)]; p == "/v1/chat/completions" {
			resp = e.post(t, chatBody(""), "Authorization", "Bearer sk-guess-0123456789-"+itoa(i))
		} else {
			req, _ := http.NewRequest("GET", e.gw.URL+p, nil)
			req.Header.Set("Authorization", "Bearer sk-guess-0123456789-"+itoa(i))
			var err error
			if resp, err = client.Do(req); err != nil {
				t.Fatal(err)
			}
		}
		readAll(t, resp)
		codes[resp.StatusCode]++
	}
	if codes[401] != 60 || codes[429] != 10 {
		t.Fatalf("statuses %v, want 60 x 401 then 429", codes)
	}
	// A valid key from the same address (a neighbour behind one NAT) still
	// gets through.
	resp := e.post(t, chatBody(""))
	readAll(t, resp)
	if resp.StatusCode != 200 {
		t.Fatalf("a valid key from a blocked address got %d", resp.StatusCode)
	}
}
