package proxy

import (
	"context"
	"encoding/json"
	"strings"
	"testing"

	"github.com/valyala/fasthttp"

	"nanogate/config"
	"nanogate/keys"
)

// withDirectory gives the test server a keys directory (embedded, in
// memory) and rebuilds its state on every change, as main does.
func withDirectory(t *testing.T, ts *testServer) *keys.Directory {
	t.Helper()
	store, err := keys.OpenFile("", nil)
	if err != nil {
		t.Fatal(err)
	}
	d := keys.Open(store, ts.cfg, keys.Options{})
	t.Cleanup(d.Close)
	swap := func() {
		st := *ts.s.State()
		st.Config, st.Keys, st.Directory = d.Effective(ts.cfg), d.Table(ts.cfg), d
		ts.s.SetState(&st)
	}
	d.OnChange(swap)
	swap()
	return d
}

// errorOf is the error envelope of an answer.
func errorOf(t *testing.T, r reply) (code, param, msg string) {
	t.Helper()
	var env struct {
		Error struct {
			Code, Message string
			Param         *string
		}
	}
	if err := json.Unmarshal(r.body, &env); err != nil {
		t.Fatalf("not an error envelope: %d %s", r.status, r.body)
	}
	if env.Error.Param != nil {
		param = *env.Error.Param
	}
	return env.Error.Code, param, env.Error.Message
}

func TestAdminKeysAPI(t *testing.T) {
	ts := startServer(t, serverOpts{})
	withDirectory(t, ts)
	admin := func(method, path, body string) reply {
		t.Helper()
		return send(t, method, ts.url+path, adminKey, "application/json", []byte(body))
	}
	refused := func(r reply, status int, code, param string) {
		t.Helper()
		c, p, msg := errorOf(t, r)
		if r.status != status || c != code || p != param {
			t.Fatalf("got %d %s param %q (%s), want %d %s param %q", r.status, c, p, msg, status, code, param)
		}
	}

	if r := admin("POST", "/admin/teams", `{"name":"web","rpm":10,"budget":{"usd":5}}`); r.status != 201 ||
		!strings.Contains(string(r.body), `"source":"api"`) {
		t.Fatalf("create team: %d %s", r.status, r.body)
	}
	refused(admin("POST", "/admin/teams", `{"name":"x","colour":"red"}`), 400, "invalid_request", "colour")
	refused(admin("POST", "/admin/teams", `{"name":"x","rpm":-5}`), 400, "invalid_request", "rpm")
	refused(admin("POST", "/admin/teams", `{"name":"x","budget":{"usd":-1}}`), 400, "invalid_request", "budget.usd")
	refused(admin("POST", "/admin/teams", `{"name":"web"}`), 409, "already_exists", "")
	refused(admin("PATCH", "/admin/teams/design", `{"rpm":1}`), 409, "managed_by_config", "")
	refused(admin("POST", "/admin/keys", `{"name":"k","team":"nope"}`), 400, "invalid_request", "team")
	refused(admin("GET", "/admin/keys/key_missing", ""), 404, "not_found", "")
	refused(admin("POST", "/admin/keys", strings.Repeat(" ", maxAdminBody+1)), 413, "request_too_large", "")

	r := admin("POST", "/admin/keys", `{"name":"web-1","team":"web","models":["other-model"]}`)
	var k struct {
		ID, Key, Object string
	}
	if json.Unmarshal(r.body, &k); r.status != 201 || !strings.HasPrefix(k.Key, keys.SecretPrefix) || k.Object != "api_key" {
		t.Fatalf("create key: %d %s", r.status, r.body)
	}
	if m := send(t, "GET", ts.url+"/v1/models", k.Key, "", nil); m.status != 200 || !strings.Contains(string(m.body), "other-model") ||
		strings.Contains(string(m.body), testModel) {
		t.Fatalf("the new key's models: %d %s", m.status, m.body)
	}

	list := admin("GET", "/admin/keys", "")
	var l struct {
		Object string
		Data   []map[string]any
	}
	if json.Unmarshal(list.body, &l); list.status != 200 || l.Object != "list" || len(l.Data) != 4 {
		t.Fatalf("list: %d %s", list.status, list.body)
	}
	for _, secret := range []string{k.Key, ciKey, adminKey} {
		if strings.Contains(string(list.body), secret) {
			t.Fatalf("the listing shows a secret: %s", list.body)
		}
	}
	for _, item := range l.Data {
		if _, ok := item["key"]; ok {
			t.Fatalf("a listed key carries a key field: %v", item)
		}
	}

	rot := admin("POST", "/admin/keys/"+k.ID+"/rotate", `{"grace_seconds":600}`)
	var k2 struct{ Key string }
	if json.Unmarshal(rot.body, &k2); rot.status != 200 || k2.Key == "" || k2.Key == k.Key {
		t.Fatalf("rotate: %d %s", rot.status, rot.body)
	}
	for _, s := range []string{k.Key, k2.Key} {
		if m := send(t, "GET", ts.url+"/v1/models", s, "", nil); m.status != 200 {
			t.Fatalf("within the grace period both secrets answer: %d", m.status)
		}
	}
	refused(admin("DELETE", "/admin/teams/web", ""), 409, "team_in_use", "")
	if r := admin("DELETE", "/admin/keys/"+k.ID, ""); r.status != 200 || !strings.Contains(string(r.body), `"revoked_at":"`) {
		t.Fatalf("revoke: %d %s", r.status, r.body)
	}
	for _, s := range []string{k.Key, k2.Key} {
		m := send(t, "GET", ts.url+"/v1/models", s, "", nil)
		if c, _, msg := errorOf(t, m); m.status != 401 || c != "invalid_api_key" || msg != "This API key was revoked." {
			t.Fatalf("a revoked key: %d %s", m.status, m.body)
		}
	}
	if r := admin("DELETE", "/admin/teams/web", ""); r.status != 200 {
		t.Fatalf("a team whose keys are revoked is deleted: %d %s", r.status, r.body)
	}
	if m := send(t, "GET", ts.url+"/v1/models", adminKey, "", nil); m.status != 401 {
		t.Fatalf("the admin key as a client key: %d", m.status)
	}

	audit := admin("GET", "/admin/audit?limit=2", "")
	var a struct {
		Object string
		Data   []keys.Event
	}
	if json.Unmarshal(audit.body, &a); audit.status != 200 || len(a.Data) != 2 || a.Data[0].Action != "team.delete" ||
		a.Data[1].Action != "key.revoke" {
		t.Fatalf("audit: %d %s", audit.status, audit.body)
	}
	refused(admin("GET", "/admin/audit?limit=0", ""), 400, "invalid_request", "limit")
	if r := send(t, "GET", ts.url+"/admin/audit", k2.Key, "", nil); r.status != 401 {
		t.Fatalf("a client key on the admin API: %d", r.status)
	}
}

// TestBatchOfARunTimeKey: batch lines run as the key that created them,
// found in the state's configuration, so a key made at run time runs its
// batches like a key of the file; /admin/config shows the file only.
func TestBatchOfARunTimeKey(t *testing.T) {
	ts := startServer(t, serverOpts{})
	withDirectory(t, ts)
	r := send(t, "POST", ts.url+"/admin/keys", adminKey, "application/json", []byte(`{"name":"batcher","team":"design"}`))
	var k struct{ Key string }
	if json.Unmarshal(r.body, &k); r.status != 201 {
		t.Fatalf("create key: %d %s", r.status, r.body)
	}
	b := ts.createBatch(t, k.Key, chatLines(2))
	b = ts.waitBatch(t, k.Key, b.ID, "completed")
	if b.RequestCounts.Completed != 2 || b.RequestCounts.Failed != 0 {
		t.Fatalf("batch of a run-time key: %+v", b)
	}
	cfg := send(t, "GET", ts.url+"/admin/config", adminKey, "", nil)
	if cfg.status != 200 || strings.Contains(string(cfg.body), "batcher") {
		t.Fatalf("/admin/config shows a run-time key: %d %s", cfg.status, cfg.body)
	}
}

func TestAdminKeysWithoutDirectory(t *testing.T) {
	ts := startServer(t, serverOpts{})
	r := send(t, "GET", ts.url+"/admin/keys", adminKey, "", nil)
	if c, _, _ := errorOf(t, r); r.status != 404 || c != "not_found" {
		t.Fatalf("%d %s", r.status, r.body)
	}
}

// BenchmarkFindClientAPIKey: authenticating a key made at run time (expiry
// checked, use noted) costs no allocation, like a key of the file.
func BenchmarkFindClientAPIKey(b *testing.B) {
	store, err := keys.OpenFile("", nil)
	if err != nil {
		b.Fatal(err)
	}
	cfg := &config.Config{AdminKey: adminKey, Keys: []config.Key{{Name: "file", Key: ciKey}}}
	d := keys.Open(store, cfg, keys.Options{})
	defer d.Close()
	_, secret, err := d.CreateKey(context.Background(), "bench", []byte(`{"name":"k","expires_at":"2999-01-01T00:00:00Z"}`))
	if err != nil {
		b.Fatal(err)
	}
	tab := d.Table(cfg)
	for _, tc := range []struct{ name, secret string }{{"api", secret}, {"file", ciKey}} {
		b.Run(tc.name, func(b *testing.B) {
			var ctx fasthttp.RequestCtx
			ctx.Request.Header.Set("Authorization", "Bearer "+tc.secret)
			b.ReportAllocs()
			for b.Loop() {
				if c, aerr := findClient(&ctx, tab); c == nil || aerr != nil {
					b.Fatal("refused")
				}
			}
		})
	}
}

// TestBatchLinesSeeTheKeyAsRequestsDo: the batch runtime gives the lines
// of a run-time key its own budget, which they reserve against as requests
// do, and its revocation before the state is rebuilt; none to a key without
// a budget.
func TestBatchLinesSeeTheKeyAsRequestsDo(t *testing.T) {
	ts := startServer(t, serverOpts{})
	withDirectory(t, ts)
	r := send(t, "POST", ts.url+"/admin/keys", adminKey, "application/json",
		[]byte(`{"name":"capped","team":"design","budget":{"usd":0.01,"period":"total"}}`))
	var k struct{ ID string }
	if json.Unmarshal(r.body, &k); r.status != 201 {
		t.Fatalf("create key: %d %s", r.status, r.body)
	}
	rt := ts.s.State().BatchRuntime()
	if c := rt.Key("capped"); c == nil || c.Budget == nil || c.Budget.USD != 0.01 || c.Budget.Period != "total" || c.Revoked {
		t.Fatalf("the run-time key: %+v", c)
	}
	if c := rt.Key("ci"); c == nil || c.Budget != nil {
		t.Fatalf("a key without a budget of its own: %+v", c)
	}
	if r := send(t, "DELETE", ts.url+"/admin/keys/"+k.ID, adminKey, "", nil); r.status != 200 {
		t.Fatalf("revoke: %d %s", r.status, r.body)
	}
	if c := ts.s.State().BatchRuntime().Key("capped"); c == nil || !c.Revoked {
		t.Fatalf("the revoked key: %+v", c)
	}
}
