package e2e

import (
	"bytes"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"mime/multipart"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"nanogate/internal/fakeup"
	"nanogate/internal/gwtest"
	"nanogate/internal/poll"
	"nanogate/internal/redistest"
)

const (
	batchAdminKey = "batch-admin-key-0123456789abcdef"
	opsKey        = "sk-e2e-ops-team-key-55555"
	batchImage    = 2048 // bytes of each fake image
)

// batchOpts configure a gateway for the batch tests.
type batchOpts struct {
	up        *fakeup.Server // the upstream (shared by replicas); a new one when nil
	dir       string         // working directory (restart in the same one); a new one when ""
	imagesDir string         // image store; files and batches go beside it; default <dir>/data/images
	redis     string         // address; embedded state when ""
	workers   int
	maxShare  string
	reclaim   string
	keyLimits string // YAML lines added to key ci
	webhook   string // key ci's webhook_url
	env       []string
}

type batchEnv struct {
	gw  *gwtest.Gateway
	up  *fakeup.Server
	dir string
}

func startBatchEnv(t *testing.T, o batchOpts) *batchEnv {
	t.Helper()
	if o.up == nil {
		up := startFake(t, fakeup.Options{Kind: fakeup.OpenAI, Key: upstreamK1, ImageSize: batchImage})
		o.up = up
	}
	if o.dir == "" {
		o.dir = t.TempDir()
	}
	if o.imagesDir == "" {
		o.imagesDir = filepath.Join(o.dir, "data", "images")
	}
	if o.workers == 0 {
		o.workers = 8
	}
	if o.maxShare == "" {
		o.maxShare = "0.5"
	}
	if o.reclaim == "" {
		o.reclaim = "60s"
	}
	redis := ""
	if o.redis != "" {
		redis = fmt.Sprintf("redis:\n  addrs: [%q]\n  on_outage: closed\n  decision_timeout: 3s\n  read_timeout: 3s\n  write_timeout: 3s\n", o.redis)
	}
	webhook := ""
	if o.webhook != "" {
		webhook = fmt.Sprintf("    webhook_url: %q\n", o.webhook)
	}
	cfg := fmt.Sprintf(`
server:
  listen: "{{ADDR}}"
  public_url: "http://{{ADDR}}"
  shutdown_timeout: 10s
log: { level: info, format: json }
providers:
  - name: cheap
    kind: openai
    base_url: %s
    api_key: ${CHEAP_KEY}
    models: { %s: upstream-model-a, other-model: upstream-model-c }
    price: { per_image: 0.035, input_per_mtok: 0.30, output_per_mtok: 2.50 }
    timeout: 10s
routing: { max_attempts: 1, health: { failure_threshold: 1000 } }
images:
  offload: { dir: %q }
admin_key: %q
batch: { workers: %d, max_share: %s, reclaim_after: %s }
%s
teams:
  - name: design
  - name: ops
keys:
  - name: ci
    team: design
    key: ${CLIENT_KEY}
%s%s
  - name: restricted
    team: design
    key: ${OTHER_KEY}
    models: [other-model]
  - name: ops
    team: ops
    key: ${OPS_KEY}
`, o.up.URL(), model, o.imagesDir, batchAdminKey, o.workers, o.maxShare, o.reclaim, redis, o.keyLimits, webhook)
	env := append([]string{"CHEAP_KEY=" + upstreamK1, "CLIENT_KEY=" + clientKey, "OTHER_KEY=" + otherKey,
		"OPS_KEY=" + opsKey}, o.env...)
	gw := gwtest.StartIn(t, o.dir, cfg, env...)
	return &batchEnv{gw: gw, up: o.up, dir: o.dir}
}

type fileObj struct {
	ID        string `json:"id"`
	Object    string `json:"object"`
	Bytes     int64  `json:"bytes"`
	CreatedAt int64  `json:"created_at"`
	Filename  string `json:"filename"`
	Purpose   string `json:"purpose"`
	Status    string `json:"status"`
}

type batchObj struct {
	ID               string  `json:"id"`
	Object           string  `json:"object"`
	Endpoint         string  `json:"endpoint"`
	InputFileID      string  `json:"input_file_id"`
	CompletionWindow string  `json:"completion_window"`
	Status           string  `json:"status"`
	OutputFileID     *string `json:"output_file_id"`
	ErrorFileID      *string `json:"error_file_id"`
	Errors           *struct {
		Object string `json:"object"`
		Data   []struct {
			Code    string  `json:"code"`
			Message string  `json:"message"`
			Param   *string `json:"param"`
			Line    *int    `json:"line"`
		} `json:"data"`
	} `json:"errors"`
	CreatedAt     int64  `json:"created_at"`
	InProgressAt  *int64 `json:"in_progress_at"`
	ExpiresAt     *int64 `json:"expires_at"`
	FinalizingAt  *int64 `json:"finalizing_at"`
	CompletedAt   *int64 `json:"completed_at"`
	FailedAt      *int64 `json:"failed_at"`
	CancellingAt  *int64 `json:"cancelling_at"`
	CancelledAt   *int64 `json:"cancelled_at"`
	RequestCounts struct {
		Total     int `json:"total"`
		Completed int `json:"completed"`
		Failed    int `json:"failed"`
	} `json:"request_counts"`
	Metadata map[string]string `json:"metadata"`
}

type resultLine struct {
	ID       string `json:"id"`
	CustomID string `json:"custom_id"`
	Response *struct {
		StatusCode int             `json:"status_code"`
		RequestID  string          `json:"request_id"`
		Body       json.RawMessage `json:"body"`
	} `json:"response"`
	Error *struct {
		Code    string `json:"code"`
		Message string `json:"message"`
	} `json:"error"`
}

// do sends a request with key as bearer and returns status and body.
func do(t *testing.T, method, url, key, contentType string, body []byte) (int, []byte) {
	t.Helper()
	req, err := http.NewRequest(method, url, bytes.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	if key != "" {
		req.Header.Set("Authorization", "Bearer "+key)
	}
	if contentType != "" {
		req.Header.Set("Content-Type", contentType)
	}
	resp, err := client.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	return resp.StatusCode, readAll(t, resp)
}

// upload posts content as a multipart file (purpose batch, then the file,
// as the SDKs order them) and returns the file object.
func upload(t *testing.T, base, key string, content []byte) fileObj {
	t.Helper()
	code, body := uploadRaw(t, base, key, "batch", content)
	if code != 200 {
		t.Fatalf("upload: %d %s", code, body)
	}
	var f fileObj
	if err := json.Unmarshal(body, &f); err != nil {
		t.Fatal(err)
	}
	return f
}

func uploadRaw(t *testing.T, base, key, purpose string, content []byte) (int, []byte) {
	t.Helper()
	var buf bytes.Buffer
	mw := multipart.NewWriter(&buf)
	if purpose != "" {
		mw.WriteField("purpose", purpose)
	}
	fw, _ := mw.CreateFormFile("file", "requests.jsonl")
	fw.Write(content)
	mw.Close()
	return do(t, "POST", base+"/v1/files", key, mw.FormDataContentType(), buf.Bytes())
}

func createBatch(t *testing.T, base, key, fileID, endpoint string) batchObj {
	t.Helper()
	code, body := do(t, "POST", base+"/v1/batches", key, "application/json", []byte(fmt.Sprintf(
		`{"input_file_id":%q,"endpoint":%q,"completion_window":"24h","metadata":{"job":"e2e"}}`, fileID, endpoint)))
	if code != 200 {
		t.Fatalf("create batch: %d %s", code, body)
	}
	var b batchObj
	if err := json.Unmarshal(body, &b); err != nil {
		t.Fatal(err)
	}
	return b
}

func getBatch(t *testing.T, base, key, id string) batchObj {
	t.Helper()
	var b batchObj
	if code := getJSON(t, base+"/v1/batches/"+id, key, &b); code != 200 {
		t.Fatalf("get batch: %d", code)
	}
	return b
}

// waitBatch polls a batch (as the SDKs' users do) until it reaches status.
func waitBatch(t *testing.T, base, key, id, status string, d time.Duration) batchObj {
	t.Helper()
	var b batchObj
	if !poll.Within(d, func() bool { b = getBatch(t, base, key, id); return b.Status == status }) {
		t.Fatalf("batch %s is %s (%+v), want %s", id, b.Status, b.RequestCounts, status)
	}
	return b
}

// results downloads a file and parses its lines.
func results(t *testing.T, base, key, fileID string) []resultLine {
	t.Helper()
	code, body := do(t, "GET", base+"/v1/files/"+fileID+"/content", key, "", nil)
	if code != 200 {
		t.Fatalf("file content: %d %s", code, body)
	}
	var out []resultLine
	for _, l := range strings.Split(strings.TrimSuffix(string(body), "\n"), "\n") {
		var r resultLine
		if err := json.Unmarshal([]byte(l), &r); err != nil {
			t.Fatalf("output line is not JSON: %v: %.200s", err, l)
		}
		out = append(out, r)
	}
	return out
}

func chatLines(prefix string, n int) []byte {
	var b bytes.Buffer
	for i := 0; i < n; i++ {
		fmt.Fprintf(&b, `{"custom_id":"%s-%d","method":"POST","url":"/v1/chat/completions","body":{"model":%q,"messages":[{"role":"user","content":"draw banana %d"}]}}`+"\n",
			prefix, i, model, i)
	}
	return b.Bytes()
}

func imageLines(prefix string, n int) []byte {
	var b bytes.Buffer
	for i := 0; i < n; i++ {
		fmt.Fprintf(&b, `{"custom_id":"%s-%d","method":"POST","url":"/v1/images/generations","body":{"model":%q,"prompt":"a nano banana dish %d","size":"1792x1024"}}`+"\n",
			prefix, i, model, i)
	}
	return b.Bytes()
}

// byCustomID checks that lines hold exactly the custom ids prefix-0 ..
// prefix-(n-1), each once.
func byCustomID(t *testing.T, lines []resultLine, prefix string, n int) map[string]resultLine {
	t.Helper()
	m := map[string]resultLine{}
	for _, l := range lines {
		if _, dup := m[l.CustomID]; dup {
			t.Errorf("custom_id %s appears twice", l.CustomID)
		}
		m[l.CustomID] = l
	}
	for i := 0; i < n; i++ {
		if _, ok := m[fmt.Sprintf("%s-%d", prefix, i)]; !ok {
			t.Errorf("custom_id %s-%d missing", prefix, i)
		}
	}
	if len(m) != n {
		t.Errorf("%d distinct custom_ids, want %d", len(m), n)
	}
	return m
}

type batchUsage struct {
	Key struct {
		Requests int `json:"requests"`
		Failed   int `json:"failed"`
		Images   int `json:"images"`
	} `json:"key"`
}

func keyUsage(t *testing.T, base, key string) batchUsage {
	t.Helper()
	var u batchUsage
	if code := getJSON(t, base+"/v1/usage", key, &u); code != 200 {
		t.Fatalf("usage: %d", code)
	}
	return u
}

// batchLinesDone reads a replica's nanogate_batch_lines_total{outcome}.
func batchLinesDone(t *testing.T, base, outcome string) int {
	t.Helper()
	_, body := do(t, "GET", base+"/metrics", "", "", nil)
	m := regexp.MustCompile(`(?m)^nanogate_batch_lines_total\{outcome="` + outcome + `"\} (\d+)`).FindSubmatch(body)
	if m == nil {
		return 0
	}
	n, _ := strconv.Atoi(string(m[1]))
	return n
}

// TestBatchChatAndImagesEndToEnd: 20 chat lines and 5 image lines through
// the HTTP API as the SDKs drive it: upload, create, poll, download. Bodies
// are chat.completion and images answers whose links serve the PNG; every
// line is billed once; the webhook is called signed; the outputs survive a
// restart of the (embedded) gateway.
func TestBatchChatAndImagesEndToEnd(t *testing.T) {
	t.Parallel()
	hooks := make(chan *http.Request, 8)
	bodies := make(chan []byte, 8)
	hook := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		hooks <- r
		bodies <- b
	}))
	defer hook.Close()
	dir := t.TempDir()
	o := batchOpts{dir: dir, webhook: hook.URL + "/hook",
		env: []string{"NANOGATE_TEST_WEBHOOK_ADDRS=" + strings.TrimPrefix(hook.URL, "http://")}}
	e := startBatchEnv(t, o)
	base := e.gw.URL

	chatFile := upload(t, base, clientKey, chatLines("chat", 20))
	if chatFile.Object != "file" || chatFile.Purpose != "batch" || chatFile.Status != "processed" ||
		!strings.HasPrefix(chatFile.ID, "file-") || chatFile.Filename != "requests.jsonl" || chatFile.Bytes == 0 {
		t.Fatalf("file object %+v", chatFile)
	}
	var got fileObj
	if code := getJSON(t, base+"/v1/files/"+chatFile.ID, clientKey, &got); code != 200 || got != chatFile {
		t.Fatalf("GET file: %d %+v", code, got)
	}
	imgFile := upload(t, base, clientKey, imageLines("img", 5))

	chat := createBatch(t, base, clientKey, chatFile.ID, "/v1/chat/completions")
	if chat.Object != "batch" || chat.Status != "in_progress" || chat.RequestCounts.Total != 20 ||
		chat.CompletionWindow != "24h" || chat.ExpiresAt == nil || chat.Metadata["job"] != "e2e" || chat.Errors != nil {
		t.Fatalf("created batch %+v", chat)
	}
	imgs := createBatch(t, base, clientKey, imgFile.ID, "/v1/images/generations")

	chat = waitBatch(t, base, clientKey, chat.ID, "completed", 30*time.Second)
	imgs = waitBatch(t, base, clientKey, imgs.ID, "completed", 30*time.Second)
	for _, b := range []batchObj{chat, imgs} {
		if b.OutputFileID == nil || b.ErrorFileID != nil || b.CompletedAt == nil || b.FinalizingAt == nil ||
			b.RequestCounts.Failed != 0 || b.RequestCounts.Completed != b.RequestCounts.Total {
			t.Fatalf("completed batch %+v", b)
		}
	}

	// Chat: chat.completion bodies whose image is a link to the PNG.
	out := byCustomID(t, results(t, base, clientKey, *chat.OutputFileID), "chat", 20)
	for id, l := range out {
		if l.Response == nil || l.Response.StatusCode != 200 || l.Error != nil || !strings.HasPrefix(l.ID, "batch_req_") ||
			l.Response.RequestID == "" {
			t.Fatalf("%s: %+v", id, l)
		}
		var c completion
		if err := json.Unmarshal(l.Response.Body, &c); err != nil || c.Object != "chat.completion" ||
			c.Usage.CompletionTokensDetails.ImageTokens != 1290 {
			t.Fatalf("%s: body %.300s", id, l.Response.Body)
		}
		m := mdLink.FindStringSubmatch(c.Choices[0].Message.Content)
		if m == nil {
			t.Fatalf("%s: no image link in %q", id, c.Choices[0].Message.Content)
		}
		if id == "chat-7" {
			code, png := fetch(t, m[1])
			if code != 200 {
				t.Fatalf("image link: %d", code)
			}
			sameBytes(t, png, fakeup.PNG(batchImage))
		}
	}
	// Images: images answers with url links (the default in a batch).
	for id, l := range byCustomID(t, results(t, base, clientKey, *imgs.OutputFileID), "img", 5) {
		var r struct {
			Created int64 `json:"created"`
			Data    []struct {
				URL     string `json:"url"`
				B64JSON string `json:"b64_json"`
			} `json:"data"`
			Usage struct {
				OutputTokens int `json:"output_tokens"`
			} `json:"usage"`
		}
		if l.Response == nil || l.Response.StatusCode != 200 || json.Unmarshal(l.Response.Body, &r) != nil ||
			len(r.Data) != 1 || r.Data[0].URL == "" || r.Usage.OutputTokens != 1290 {
			t.Fatalf("%s: %.300s", id, l.Response.Body)
		}
		code, png := fetch(t, r.Data[0].URL)
		if code != 200 {
			t.Fatalf("%s: image link %d", id, code)
		}
		sameBytes(t, png, fakeup.PNG(batchImage))
	}
	// Each line was one upstream call and is billed once.
	if n := e.up.Requests(); n != 25 {
		t.Errorf("upstream requests %d, want 25", n)
	}
	if u := keyUsage(t, base, clientKey); u.Key.Requests != 25 || u.Key.Images != 25 {
		t.Errorf("usage %+v, want 25 requests and images", u.Key)
	}

	// The list pages newest first.
	var page struct {
		Object  string     `json:"object"`
		Data    []batchObj `json:"data"`
		FirstID string     `json:"first_id"`
		LastID  string     `json:"last_id"`
		HasMore bool       `json:"has_more"`
	}
	if code := getJSON(t, base+"/v1/batches?limit=1", clientKey, &page); code != 200 || page.Object != "list" ||
		len(page.Data) != 1 || page.Data[0].ID != imgs.ID || !page.HasMore || page.FirstID != imgs.ID || page.LastID != imgs.ID {
		t.Fatalf("first page: %d %+v", code, page)
	}
	if code := getJSON(t, base+"/v1/batches?limit=1&after="+imgs.ID, clientKey, &page); code != 200 ||
		len(page.Data) != 1 || page.Data[0].ID != chat.ID || page.HasMore {
		t.Fatalf("second page: %d %+v", code, page)
	}

	// Webhooks: one per batch, signed with the key's SHA-256.
	secret := sha256.Sum256([]byte(clientKey))
	for range 2 {
		select {
		case r := <-hooks:
			body := <-bodies
			sig := r.Header.Get("x-nanogate-signature")
			var ts, v1 string
			for _, p := range strings.Split(sig, ",") {
				k, v, _ := strings.Cut(p, "=")
				switch k {
				case "t":
					ts = v
				case "v1":
					v1 = v
				}
			}
			mac := hmac.New(sha256.New, []byte(hex.EncodeToString(secret[:])))
			mac.Write([]byte(ts + "." + string(body)))
			if want := hex.EncodeToString(mac.Sum(nil)); v1 != want || r.Header.Get("x-nanogate-event") != "batch.completed" {
				t.Errorf("webhook signature %q event %q, want v1=%s", sig, r.Header.Get("x-nanogate-event"), want)
			}
			var b batchObj
			if json.Unmarshal(body, &b) != nil || b.Status != "completed" || (b.ID != chat.ID && b.ID != imgs.ID) {
				t.Errorf("webhook body %.200s", body)
			}
		case <-time.After(10 * time.Second):
			t.Fatal("webhook not called")
		}
	}

	// /admin/batches shows both.
	var admin struct {
		Batches []struct {
			ID, Team, Key, Status string
			Total, Completed      int
			LinesPerSecond        float64 `json:"lines_per_second"`
		} `json:"batches"`
	}
	if code := getJSON(t, base+"/admin/batches", batchAdminKey, &admin); code != 200 || len(admin.Batches) != 2 ||
		admin.Batches[1].ID != chat.ID || admin.Batches[1].Team != "design" || admin.Batches[1].Key != "ci" ||
		admin.Batches[1].Completed != 20 || admin.Batches[1].LinesPerSecond <= 0 {
		t.Fatalf("admin: %d %+v", code, admin)
	}
	if code := getJSON(t, base+"/admin/batches", clientKey, nil); code != 401 {
		t.Errorf("admin with a client key: %d", code)
	}

	// The outputs survive a restart of the embedded gateway.
	e.gw.Signal(sigterm)
	if code := e.gw.Wait(15 * time.Second); code != 0 {
		t.Fatalf("exit code %d", code)
	}
	o.up = e.up
	e2 := startBatchEnv(t, o)
	again := getBatch(t, e2.gw.URL, clientKey, chat.ID)
	if again.Status != "completed" || again.RequestCounts != chat.RequestCounts || *again.OutputFileID != *chat.OutputFileID {
		t.Fatalf("after restart: %+v", again)
	}
	byCustomID(t, results(t, e2.gw.URL, clientKey, *again.OutputFileID), "chat", 20)
	if n := e.up.Requests(); n != 25 {
		t.Errorf("a restart ran lines again: %d upstream requests", n)
	}
}

// TestBatchPacedInsideSmallRPM: a key of 30 RPM with max_share 0.6 (18 for
// batches) finishes a batch of 20 without a 429 in its results: the last
// lines wait for room. Interactive requests still pass meanwhile.
func TestBatchPacedInsideSmallRPM(t *testing.T) {
	t.Parallel()
	e := startBatchEnv(t, batchOpts{maxShare: "0.6", keyLimits: "    rpm: 30\n"})
	base := e.gw.URL
	f := upload(t, base, clientKey, chatLines("paced", 20))
	start := time.Now()
	b := createBatch(t, base, clientKey, f.ID, "/v1/chat/completions")
	waitFor(t, 10*time.Second, "the batch to use its share", func() bool {
		return getBatch(t, base, clientKey, b.ID).RequestCounts.Completed >= 18
	})
	// The batch waits for room in its share; the key's other 12 requests
	// are there for interactive traffic.
	for i := 0; i < 3; i++ {
		resp := readAllStatus(t, (&env{gw: e.gw}).post(t, chatBody("")))
		if resp != 200 {
			t.Fatalf("interactive request during the batch: %d", resp)
		}
	}
	b = waitBatch(t, base, clientKey, b.ID, "completed", 30*time.Second)
	// 2 lines over the share of 18 at 18 per minute: at least 3 s.
	if d := time.Since(start); d < 3*time.Second {
		t.Errorf("batch took %v: it was not paced", d)
	}
	if b.RequestCounts.Completed != 20 || b.RequestCounts.Failed != 0 || b.ErrorFileID != nil {
		t.Fatalf("counts %+v", b.RequestCounts)
	}
	for id, l := range byCustomID(t, results(t, base, clientKey, *b.OutputFileID), "paced", 20) {
		if l.Response.StatusCode != 200 {
			t.Errorf("%s: %d", id, l.Response.StatusCode)
		}
	}
	_, metrics := do(t, "GET", base+"/metrics", "", "", nil)
	if !regexp.MustCompile(`nanogate_batch_waits_total\{reason="rate_limit"\} [1-9]`).Match(metrics) {
		t.Error("no batch line waited for the rate limit")
	}
}

func readAllStatus(t *testing.T, resp *http.Response) int {
	t.Helper()
	readAll(t, resp)
	return resp.StatusCode
}

// TestBatchTwoReplicasShareOneBatch: two replicas on one Redis both run
// lines of one batch, and every line runs once.
func TestBatchTwoReplicasShareOneBatch(t *testing.T) {
	t.Parallel()
	rs := redistest.Start(t)
	up, err := fakeup.Start(fakeup.Options{Kind: fakeup.OpenAI, Key: upstreamK1, ImageSize: batchImage, Latency: 300 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	defer up.Close()
	// Each replica its own data/: files and batches are shared through Redis.
	o := batchOpts{up: up, redis: rs.Addr, workers: 2}
	a := startBatchEnv(t, o)
	b := startBatchEnv(t, o)
	f := upload(t, a.gw.URL, clientKey, chatLines("two", 24))
	bt := createBatch(t, a.gw.URL, clientKey, f.ID, "/v1/chat/completions")
	// Either replica answers for the batch and its files.
	bt = waitBatch(t, b.gw.URL, clientKey, bt.ID, "completed", 40*time.Second)
	byCustomID(t, results(t, b.gw.URL, clientKey, *bt.OutputFileID), "two", 24)
	na, nb := batchLinesDone(t, a.gw.URL, "completed"), batchLinesDone(t, b.gw.URL, "completed")
	if na == 0 || nb == 0 || na+nb != 24 {
		t.Fatalf("replica a ran %d lines, b %d: want both some, 24 in all", na, nb)
	}
	if n := up.Requests(); n != 24 {
		t.Errorf("upstream requests %d, want 24", n)
	}
	if u := keyUsage(t, a.gw.URL, clientKey); u.Key.Requests != 24 {
		t.Errorf("billed requests %d, want 24", u.Key.Requests)
	}
}

// TestBatchReplicaKilledMidBatch: a replica is killed (SIGKILL) in the middle
// of a batch; the other takes its lines over after reclaim_after and the
// batch completes with every custom_id once, billed once.
func TestBatchReplicaKilledMidBatch(t *testing.T) {
	t.Parallel()
	rs := redistest.Start(t)
	up, err := fakeup.Start(fakeup.Options{Kind: fakeup.OpenAI, Key: upstreamK1, ImageSize: batchImage, Latency: 400 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	defer up.Close()
	o := batchOpts{up: up, redis: rs.Addr, workers: 3, reclaim: "2s"}
	a := startBatchEnv(t, o)
	b := startBatchEnv(t, o)
	const n = 30
	f := upload(t, b.gw.URL, clientKey, chatLines("kill", n))
	bt := createBatch(t, b.gw.URL, clientKey, f.ID, "/v1/chat/completions")
	waitFor(t, 20*time.Second, "replica a to run lines", func() bool { return batchLinesDone(t, a.gw.URL, "completed") >= 3 })
	a.gw.Signal(syscall.SIGKILL)
	a.gw.Wait(5 * time.Second)
	bt = waitBatch(t, b.gw.URL, clientKey, bt.ID, "completed", 40*time.Second)
	if bt.RequestCounts.Completed != n || bt.RequestCounts.Failed != 0 {
		t.Fatalf("counts %+v", bt.RequestCounts)
	}
	byCustomID(t, results(t, b.gw.URL, clientKey, *bt.OutputFileID), "kill", n)
	waitLog(t, b.gw, "reclaimed from a replica that stopped")
	if u := keyUsage(t, b.gw.URL, clientKey); u.Key.Requests != n {
		t.Errorf("billed requests %d, want %d (one per line)", u.Key.Requests, n)
	}
}

// TestBatchCancel: cancelling stops new lines; the running ones finish and
// the batch is finalized with them (status cancelled).
func TestBatchCancel(t *testing.T) {
	t.Parallel()
	up, err := fakeup.Start(fakeup.Options{Kind: fakeup.OpenAI, Key: upstreamK1, Latency: 700 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	defer up.Close()
	e := startBatchEnv(t, batchOpts{up: up, workers: 2})
	base := e.gw.URL
	f := upload(t, base, clientKey, chatLines("cancel", 20))
	b := createBatch(t, base, clientKey, f.ID, "/v1/chat/completions")
	waitFor(t, 10*time.Second, "two lines to finish", func() bool {
		return getBatch(t, base, clientKey, b.ID).RequestCounts.Completed >= 2
	})
	code, body := do(t, "POST", base+"/v1/batches/"+b.ID+"/cancel", clientKey, "", nil)
	var c batchObj
	if code != 200 || json.Unmarshal(body, &c) != nil || (c.Status != "cancelling" && c.Status != "cancelled") || c.CancellingAt == nil {
		t.Fatalf("cancel: %d %s", code, body)
	}
	c = waitBatch(t, base, clientKey, b.ID, "cancelled", 15*time.Second)
	done := c.RequestCounts.Completed
	if done < 2 || done >= 20 || c.RequestCounts.Failed != 0 || c.RequestCounts.Total != 20 || c.CancelledAt == nil {
		t.Fatalf("cancelled batch %+v", c)
	}
	// Nothing ran but the lines counted, and they are in the output file.
	if n := int(up.Requests()); n != done {
		t.Errorf("upstream requests %d, completed lines %d", n, done)
	}
	if lines := results(t, base, clientKey, *c.OutputFileID); len(lines) != done {
		t.Errorf("output has %d lines, want %d", len(lines), done)
	}
	// A batch created after the cancel runs on the same two workers: had
	// they kept taking the cancelled batch's lines, some would have run
	// by the time it completes.
	f2 := upload(t, base, clientKey, chatLines("after", 2))
	b2 := createBatch(t, base, clientKey, f2.ID, "/v1/chat/completions")
	waitBatch(t, base, clientKey, b2.ID, "completed", 15*time.Second)
	if n := int(up.Requests()); n != done+2 {
		t.Errorf("lines ran after the batch was cancelled: %d upstream requests, want %d and the next batch's 2", n, done)
	}
	// Cancelling again answers the batch; cancelling a completed one is a 400.
	if code, _ := do(t, "POST", base+"/v1/batches/"+b.ID+"/cancel", clientKey, "", nil); code != 200 {
		t.Errorf("second cancel: %d", code)
	}
}

// TestBatchInvalidInputFileFails: an invalid input file fails the batch with
// errors naming the lines, before any line runs; bad create requests are
// refused.
func TestBatchInvalidInputFileFails(t *testing.T) {
	t.Parallel()
	e := startBatchEnv(t, batchOpts{})
	base := e.gw.URL
	ok := `{"custom_id":"a","method":"POST","url":"/v1/chat/completions","body":{"model":"` + model + `","messages":[{"role":"user","content":"hi"}]}}`
	lines := []string{
		ok,
		`{"custom_id":"b", not json`,
		`{"method":"POST","url":"/v1/chat/completions","body":{}}`,
		strings.Replace(ok, `"a"`, `"a"`, 1), // duplicate custom_id
		strings.Replace(strings.Replace(ok, `"a"`, `"e"`, 1), "/v1/chat/completions", "/v1/embeddings", 1),
		strings.Replace(strings.Replace(ok, `"a"`, `"f"`, 1), "POST", "GET", 1),
		strings.Replace(strings.Replace(ok, `"a"`, `"g"`, 1), `"messages"`, `"bogus":1,"messages"`, 1),
		strings.Replace(strings.Replace(ok, `"a"`, `"h"`, 1), model, "no-such-model", 1),
		"",
		strings.Replace(ok, `"a"`, `"j"`, 1),
	}
	f := upload(t, base, clientKey, []byte(strings.Join(lines, "\n")))
	b := createBatch(t, base, clientKey, f.ID, "/v1/chat/completions")
	if b.Status != "failed" || b.FailedAt == nil || b.Errors == nil || b.Errors.Object != "list" {
		t.Fatalf("batch %+v", b)
	}
	want := map[int]string{2: "invalid_json_line", 3: "missing_required_parameter", 4: "duplicate_custom_id",
		5: "invalid_value", 6: "invalid_value", 7: "invalid_request", 8: "model_not_found"}
	got := map[int]string{}
	for _, d := range b.Errors.Data {
		if d.Line == nil {
			t.Fatalf("error without a line: %+v", d)
		}
		got[*d.Line] = d.Code
		if !strings.Contains(d.Message, "Line "+strconv.Itoa(*d.Line)) {
			t.Errorf("message %q does not name its line", d.Message)
		}
	}
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Errorf("errors by line %v, want %v", got, want)
	}
	if n := e.up.Requests(); n != 0 {
		t.Errorf("%d upstream requests for a failed batch", n)
	}
	if again := getBatch(t, base, clientKey, b.ID); again.Status != "failed" || len(again.Errors.Data) != len(want) {
		t.Errorf("read back: %+v", again)
	}
	// A key limited to other models: its lines fail validation.
	rf := upload(t, base, otherKey, []byte(ok))
	if rb := createBatch(t, base, otherKey, rf.ID, "/v1/chat/completions"); rb.Status != "failed" ||
		rb.Errors.Data[0].Code != "model_not_allowed" || *rb.Errors.Data[0].Line != 1 {
		t.Errorf("restricted key: %+v", rb)
	}
	// Requests that cannot make a batch at all.
	for _, tc := range []struct {
		body string
		code int
	}{
		{`{"input_file_id":"` + f.ID + `","endpoint":"/v1/embeddings","completion_window":"24h"}`, 400},
		{`{"input_file_id":"` + f.ID + `","endpoint":"/v1/chat/completions","completion_window":"1h"}`, 400},
		{`{"input_file_id":"file-00000000000000000000000000","endpoint":"/v1/chat/completions","completion_window":"24h"}`, 404},
		{`{"input_file_id":"` + f.ID + `","endpoint":"/v1/chat/completions","completion_window":"24h","bogus":1}`, 400},
		{`{"endpoint":"/v1/chat/completions","completion_window":"24h"}`, 400},
	} {
		code, body := do(t, "POST", base+"/v1/batches", clientKey, "application/json", []byte(tc.body))
		if code != tc.code || !strings.Contains(string(body), `"error"`) {
			t.Errorf("%s: %d %s, want %d", tc.body, code, body, tc.code)
		}
	}
	// Uploads: purpose batch only.
	if code, body := uploadRaw(t, base, clientKey, "fine-tune", []byte(ok)); code != 400 {
		t.Errorf("purpose fine-tune: %d %s", code, body)
	}
	if code, _ := uploadRaw(t, base, clientKey, "", []byte(ok)); code != 400 {
		t.Errorf("no purpose: %d", code)
	}
}

// TestBatchFilesArePrivateToTheTeam: another team's key gets 404 for every
// file and batch operation, and does not see them in its lists.
func TestBatchFilesArePrivateToTheTeam(t *testing.T) {
	t.Parallel()
	e := startBatchEnv(t, batchOpts{})
	base := e.gw.URL
	f := upload(t, base, clientKey, chatLines("private", 1))
	b := createBatch(t, base, clientKey, f.ID, "/v1/chat/completions")
	b = waitBatch(t, base, clientKey, b.ID, "completed", 20*time.Second)
	for _, tc := range []struct{ method, path string }{
		{"GET", "/v1/files/" + f.ID},
		{"GET", "/v1/files/" + f.ID + "/content"},
		{"GET", "/v1/files/" + *b.OutputFileID + "/content"},
		{"DELETE", "/v1/files/" + f.ID},
		{"GET", "/v1/batches/" + b.ID},
		{"POST", "/v1/batches/" + b.ID + "/cancel"},
	} {
		code, body := do(t, tc.method, base+tc.path, opsKey, "", nil)
		if code != 404 || !strings.Contains(string(body), `"not_found"`) {
			t.Errorf("%s %s as another team: %d %s", tc.method, tc.path, code, body)
		}
	}
	// Its own batch on the other team's file is refused as unknown.
	code, _ := do(t, "POST", base+"/v1/batches", opsKey, "application/json", []byte(
		`{"input_file_id":"`+f.ID+`","endpoint":"/v1/chat/completions","completion_window":"24h"}`))
	if code != 404 {
		t.Errorf("batch on another team's file: %d", code)
	}
	var list struct {
		Data []fileObj `json:"data"`
	}
	if getJSON(t, base+"/v1/files", opsKey, &list); len(list.Data) != 0 {
		t.Errorf("another team lists %d files", len(list.Data))
	}
	if getJSON(t, base+"/v1/files?purpose=batch_output", clientKey, &list); len(list.Data) != 1 || list.Data[0].ID != *b.OutputFileID {
		t.Errorf("owner's output files: %+v", list.Data)
	}
	// A key of the same team sees them; the owner deletes.
	if code := getJSON(t, base+"/v1/files/"+f.ID, otherKey, nil); code != 200 {
		t.Errorf("same team: %d", code)
	}
	if code, body := do(t, "DELETE", base+"/v1/files/"+f.ID, clientKey, "", nil); code != 200 || !strings.Contains(string(body), `"deleted":true`) {
		t.Errorf("delete: %d %s", code, body)
	}
	if code := getJSON(t, base+"/v1/files/"+f.ID, clientKey, nil); code != 404 {
		t.Errorf("deleted file: %d", code)
	}
	if code, _ := do(t, "GET", base+"/v1/files", "", "", nil); code != 401 {
		t.Errorf("no key: %d", code)
	}
}

// TestBatchEmbeddedSurvivesACrash: the embedded gateway killed (SIGKILL) in
// the middle of a batch and started again in the same directory rebuilds
// its queue from the results log: the batch completes with every custom_id
// once, each line billed once.
func TestBatchEmbeddedSurvivesACrash(t *testing.T) {
	t.Parallel()
	up, err := fakeup.Start(fakeup.Options{Kind: fakeup.OpenAI, Key: upstreamK1, Latency: 300 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	defer up.Close()
	o := batchOpts{up: up, dir: t.TempDir(), workers: 2}
	e := startBatchEnv(t, o)
	const n = 12
	f := upload(t, e.gw.URL, clientKey, chatLines("crash", n))
	b := createBatch(t, e.gw.URL, clientKey, f.ID, "/v1/chat/completions")
	waitFor(t, 10*time.Second, "lines to finish", func() bool {
		return getBatch(t, e.gw.URL, clientKey, b.ID).RequestCounts.Completed >= 3
	})
	e.gw.Signal(syscall.SIGKILL)
	e.gw.Wait(5 * time.Second)
	e2 := startBatchEnv(t, o)
	b = waitBatch(t, e2.gw.URL, clientKey, b.ID, "completed", 30*time.Second)
	if b.RequestCounts.Completed != n || b.RequestCounts.Failed != 0 {
		t.Fatalf("counts %+v", b.RequestCounts)
	}
	byCustomID(t, results(t, e2.gw.URL, clientKey, *b.OutputFileID), "crash", n)
	if u := keyUsage(t, e2.gw.URL, clientKey); u.Key.Requests != n {
		t.Errorf("billed requests %d, want %d", u.Key.Requests, n)
	}
}
