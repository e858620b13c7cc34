package e2e

import (
	"encoding/json"
	"fmt"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"nanogate/internal/poll"
	"nanogate/internal/redistest"
)

const keysAdminKey = "admin-e2e-keys-0123456789abcdef"

// follow is how long a replica may take to see another's change in these
// tests: far below the 30 s resync, so only the notification passes it.
const follow = 5 * time.Second

// admin sends an admin API request and decodes its JSON answer into out
// (nil: dropped).
func (e *env) admin(t *testing.T, method, path, body string, out any) int {
	t.Helper()
	req, err := http.NewRequest(method, e.gw.URL+path, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Authorization", "Bearer "+keysAdminKey)
	req.Header.Set("Content-Type", "application/json")
	resp, err := client.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	b := readAll(t, resp)
	if out != nil {
		if err := json.Unmarshal(b, out); err != nil {
			t.Fatalf("%s %s: %d %s", method, path, resp.StatusCode, b)
		}
	}
	return resp.StatusCode
}

// chatAs sends a chat request with key and returns the status and the
// error message, if any.
func (e *env) chatAs(t *testing.T, key string) (int, string) {
	t.Helper()
	resp := e.post(t, chatBody(""), "Authorization", "Bearer "+key)
	b := readAll(t, resp)
	var env envelope
	json.Unmarshal(b, &env)
	code := ""
	if env.Error.Code != nil {
		code = *env.Error.Code
	}
	return resp.StatusCode, code + ": " + env.Error.Message
}

type createdKey struct {
	ID     string `json:"id"`
	Key    string `json:"key"`
	Prefix string `json:"prefix"`
	Source string `json:"source"`
}

func keysReplicas(t *testing.T) (a, b *env, extra string) {
	rs := redistest.Start(t)
	extra = fmt.Sprintf("redis:\n  addrs: [%q]\n  on_outage: closed\n  decision_timeout: 3s\n  read_timeout: 3s\n  write_timeout: 3s\n  dial_timeout: 3s\n", rs.Addr)
	a = startEnv(t, opts{extra: extra, adminKey: keysAdminKey})
	b = startEnv(t, opts{extra: extra, adminKey: keysAdminKey})
	return a, b, extra
}

// TestKeysAcrossReplicas: two replicas on one Redis. A key made on A
// works on B, revoked on B it fails on A, and stays revoked after A
// restarts; the audit trail shows each change without secrets; the admin
// key is never a client key.
func TestKeysAcrossReplicas(t *testing.T) {
	a, b, extra := keysReplicas(t)

	var k createdKey
	if code := a.admin(t, "POST", "/admin/keys", `{"name":"runtime","team":"design"}`, &k); code != 201 ||
		!strings.HasPrefix(k.Key, "ng-") || k.Source != "api" || !strings.HasPrefix(k.Key, k.Prefix) {
		t.Fatalf("create: %d %+v", code, k)
	}
	if code, msg := a.chatAs(t, k.Key); code != 200 {
		t.Fatalf("the new key on the replica that made it: %d %s", code, msg)
	}
	start := time.Now()
	poll.Until(t, follow, "the key made on A to work on B", func() bool {
		code, _ := b.chatAs(t, k.Key)
		return code == 200
	})
	t.Logf("B accepted A's new key after %v", time.Since(start))

	if code := b.admin(t, "DELETE", "/admin/keys/"+k.ID, "", nil); code != 200 {
		t.Fatalf("revoke on B: %d", code)
	}
	start = time.Now()
	poll.Until(t, follow, "the key revoked on B to fail on A", func() bool {
		code, msg := a.chatAs(t, k.Key)
		return code == 401 && strings.Contains(msg, "revoked")
	})
	t.Logf("A refused the key revoked on B after %v", time.Since(start))

	a.gw.Signal(syscall.SIGTERM)
	if code := a.gw.Wait(30 * time.Second); code != 0 {
		t.Fatalf("A exited %d", code)
	}
	a2 := startEnv(t, opts{extra: extra, adminKey: keysAdminKey})
	if code, msg := a2.chatAs(t, k.Key); code != 401 || !strings.Contains(msg, "This API key was revoked.") {
		t.Fatalf("the revoked key after a restart: %d %s", code, msg)
	}

	for _, e := range []*env{a2, b} {
		code, msg := e.chatAs(t, keysAdminKey)
		if code != 401 || !strings.Contains(msg, "invalid_api_key") {
			t.Fatalf("the admin key as a client key: %d %s", code, msg)
		}
	}

	var audit struct {
		Object string `json:"object"`
		Data   []struct {
			Actor, Action, Target string
			Before, After         json.RawMessage
		} `json:"data"`
	}
	if code := b.admin(t, "GET", "/admin/audit", "", &audit); code != 200 || audit.Object != "list" || len(audit.Data) != 2 {
		t.Fatalf("audit: %d %+v", code, audit)
	}
	if audit.Data[0].Action != "key.revoke" || audit.Data[1].Action != "key.create" || audit.Data[0].Target != "key:"+k.ID ||
		!strings.HasPrefix(audit.Data[0].Actor, "admin:") {
		t.Fatalf("audit events: %+v", audit.Data)
	}
	raw, _ := json.Marshal(audit)
	for _, secret := range []string{k.Key, keysAdminKey, clientKey} {
		if strings.Contains(string(raw), secret) {
			t.Fatalf("the audit trail shows a secret: %s", raw)
		}
	}
	// The last request on each replica, the admin key's refusal, has its
	// line in the log: a2 served two requests, both refused; b's last
	// before it was served.
	waitRequestLines(t, a2.gw, 2)
	waitFor(t, logWait, "b's log line of the admin key's refusal", func() bool {
		lines := logLines(t, b.gw)
		return len(lines) > 0 && lines[len(lines)-1]["status"] == float64(401)
	})
	for _, e := range []*env{a2, b} {
		if logs := e.gw.Logs(); strings.Contains(logs, k.Key) || strings.Contains(logs, keysAdminKey) {
			t.Fatal("a log shows a secret")
		}
	}
	waitLog(t, b.gw, `"action":"key.revoke"`)
}

// TestTeamBudgetLoweredAtRunTime: a team made through the API, its budget
// lowered below its spend on one replica, is enforced on both.
func TestTeamBudgetLoweredAtRunTime(t *testing.T) {
	a, b, _ := keysReplicas(t)
	if code := a.admin(t, "POST", "/admin/teams", `{"name":"web","budget":{"usd":100,"period":"monthly"}}`, nil); code != 201 {
		t.Fatalf("create team: %d", code)
	}
	var k createdKey
	if code := a.admin(t, "POST", "/admin/keys", `{"name":"web-1","team":"web"}`, &k); code != 201 {
		t.Fatalf("create key: %d", code)
	}
	if code, msg := a.chatAs(t, k.Key); code != 200 {
		t.Fatalf("a request within the budget: %d %s", code, msg)
	}
	poll.Until(t, follow, "B to serve the new team's key", func() bool {
		code, _ := b.chatAs(t, k.Key)
		return code == 200
	})
	// Two images cost $0.07: a budget of a cent is spent.
	if code := b.admin(t, "PATCH", "/admin/teams/web", `{"budget":{"usd":0.01}}`, nil); code != 200 {
		t.Fatalf("lower the budget: %d", code)
	}
	for name, e := range map[string]*env{"A": a, "B": b} {
		poll.Until(t, follow, "the lowered budget to be enforced on "+name, func() bool {
			code, msg := e.chatAs(t, k.Key)
			return code == 429 && strings.HasPrefix(msg, "insufficient_quota")
		})
	}
	var teams struct {
		Data []struct {
			Name, Source string
			Budget       *struct{ USD float64 }
		} `json:"data"`
	}
	a.admin(t, "GET", "/admin/teams", "", &teams)
	if len(teams.Data) != 2 || teams.Data[0].Source != "config" || teams.Data[1].Source != "api" || teams.Data[1].Budget.USD != 0.01 {
		t.Fatalf("teams: %+v", teams.Data)
	}
}

// TestKeysSurviveARestartWithoutRedis: the embedded store keeps keys in
// the data directory; an expired key says when it expired.
func TestKeysSurviveARestartWithoutRedis(t *testing.T) {
	dir := t.TempDir()
	a := startEnv(t, opts{adminKey: keysAdminKey, dir: dir})
	var live, revoked, expiring createdKey
	a.admin(t, "POST", "/admin/keys", `{"name":"live","team":"design"}`, &live)
	a.admin(t, "POST", "/admin/keys", `{"name":"gone","team":"design"}`, &revoked)
	exp := time.Now().Add(2 * time.Second).UTC().Format(time.RFC3339)
	a.admin(t, "POST", "/admin/keys", `{"name":"brief","expires_at":"`+exp+`"}`, &expiring)
	if code := a.admin(t, "DELETE", "/admin/keys/"+revoked.ID, "", nil); code != 200 {
		t.Fatalf("revoke: %d", code)
	}
	a.gw.Signal(syscall.SIGTERM)
	if code := a.gw.Wait(30 * time.Second); code != 0 {
		t.Fatalf("exit %d", code)
	}
	a = startEnv(t, opts{adminKey: keysAdminKey, dir: dir})
	if code, msg := a.chatAs(t, live.Key); code != 200 {
		t.Fatalf("a key after a restart: %d %s", code, msg)
	}
	if code, msg := a.chatAs(t, revoked.Key); code != 401 || !strings.Contains(msg, "revoked") {
		t.Fatalf("a revoked key after a restart: %d %s", code, msg)
	}
	poll.Until(t, 10*time.Second, "the key to expire", func() bool {
		code, msg := a.chatAs(t, expiring.Key)
		return code == 401 && strings.Contains(msg, "This API key expired at "+exp)
	})
	var list struct {
		Object string `json:"object"`
		Data   []map[string]any
	}
	a.admin(t, "GET", "/admin/keys", "", &list)
	raw, _ := json.Marshal(list)
	if list.Object != "list" || len(list.Data) != 5 || strings.Contains(string(raw), live.Key) || strings.Contains(string(raw), clientKey) ||
		strings.Contains(string(raw), `"hash"`) {
		t.Fatalf("listing: %s", raw)
	}
}

// TestKeyBudgetAcrossReplicas: two replicas sharing Redis hold one key's
// budget together, requests in flight on both included: of 30 concurrent
// requests split between them against room for about 3, at most 3 are
// admitted, and the key's usage is what they cost.
func TestKeyBudgetAcrossReplicas(t *testing.T) {
	a, b, _ := keysReplicas(t)
	var k createdKey
	if code := a.admin(t, "POST", "/admin/keys", `{"name":"shared-cap","team":"design","budget":{"usd":0.12,"period":"monthly"}}`, &k); code != 201 {
		t.Fatalf("create: %d", code)
	}
	poll.Until(t, follow, "B to know the key", func() bool {
		var u usageView
		return getJSON(t, b.gw.URL+"/v1/usage", k.Key, &u) == 200
	})
	a.cheap.SetLatency(300 * time.Millisecond)
	b.cheap.SetLatency(300 * time.Millisecond)
	var ok atomic.Int64
	var wg sync.WaitGroup
	for i := range 30 {
		e := a
		if i%2 == 1 {
			e = b
		}
		wg.Go(func() {
			if code, _ := e.chatAs(t, k.Key); code == 200 {
				ok.Add(1)
			}
		})
	}
	wg.Wait()
	if n := ok.Load(); n < 2 || n > 3 {
		t.Fatalf("%d of 30 concurrent requests on two replicas admitted against a $0.12 key budget", n)
	}
	var u usageView
	poll.Until(t, 10*time.Second, "the records", func() bool {
		getJSON(t, a.gw.URL+"/v1/usage", k.Key, &u)
		return u.Key.Requests == ok.Load()
	})
	if u.Key.CostUSD > 0.12 {
		t.Fatalf("the key spent $%v of a $0.12 budget", u.Key.CostUSD)
	}
}

// TestKeyBudget: a key's own budget is enforced like its team's, requests
// in flight included: of 30 concurrent requests against room for about 3,
// at most 3 are admitted; the refusal names the key's budget, and the
// team's other keys go on.
func TestKeyBudget(t *testing.T) {
	e := startEnv(t, opts{adminKey: keysAdminKey})
	var k createdKey
	if code := e.admin(t, "POST", "/admin/keys", `{"name":"capped","team":"design","budget":{"usd":0.12,"period":"daily"}}`, &k); code != 201 {
		t.Fatalf("create: %d", code)
	}
	e.cheap.SetLatency(200 * time.Millisecond)
	var ok atomic.Int64
	var wg sync.WaitGroup
	for range 30 {
		wg.Go(func() {
			if code, _ := e.chatAs(t, k.Key); code == 200 {
				ok.Add(1)
			}
		})
	}
	wg.Wait()
	// Each request reserves about $0.039 (the dearest provider's price).
	if n := ok.Load(); n < 2 || n > 3 {
		t.Fatalf("%d of 30 concurrent requests admitted against a $0.12 key budget", n)
	}
	day := time.Now().UTC().Format(time.DateOnly)
	poll.Until(t, 10*time.Second, "the key's spent budget to refuse it", func() bool {
		code, msg := e.chatAs(t, k.Key)
		return code == 429 && strings.HasPrefix(msg, "insufficient_quota: This API key's budget of $0.12 for "+day)
	})
	if code, msg := e.chatAs(t, clientKey); code != 200 {
		t.Fatalf("another key of the team: %d %s", code, msg)
	}
}
