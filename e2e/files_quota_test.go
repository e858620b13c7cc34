package e2e

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"mime/multipart"
	"strconv"
	"strings"
	"sync"
	"testing"

	"github.com/redis/go-redis/v9"

	"nanogate/internal/fakeup"
	"nanogate/internal/gwtest"
	"nanogate/internal/redistest"
)

const (
	// quotaChunk is the bytes of each upload: under 512 KiB, so that its
	// Redis string (with its header) fits one allocator size class.
	quotaChunk = 500 << 10
	quotaBytes = 8 * quotaChunk // files.max_bytes_per_team of the quota tests
)

// startQuotaEnv starts a gateway whose teams may keep quotaBytes of files,
// on Redis at redisAddr or embedded when it is "".
func startQuotaEnv(t *testing.T, redisAddr string) *gwtest.Gateway {
	t.Helper()
	up := startFake(t, fakeup.Options{Kind: fakeup.OpenAI, Key: upstreamK1})
	rb := ""
	if redisAddr != "" {
		rb = fmt.Sprintf("redis:\n  addrs: [%q]\n  read_timeout: 3s\n  write_timeout: 3s\n", redisAddr)
	}
	dir := t.TempDir()
	cfg := fmt.Sprintf(`
server:
  listen: "{{ADDR}}"
  max_body_bytes: 2097152
log: { level: info, format: json }
providers:
  - name: cheap
    kind: openai
    base_url: %s
    api_key: ${CHEAP_KEY}
    models: { %s: upstream-model-a }
    price: { per_image: 0.035 }
images:
  offload: { dir: %q }
files: { max_bytes_per_team: %d, max_files_per_team: 50, default_ttl: 48h }
%s
teams:
  - name: design
  - name: ops
keys:
  - name: ci
    team: design
    key: ${CLIENT_KEY}
  - name: ops
    team: ops
    key: ${OPS_KEY}
`, up.URL(), model, dir+"/data/images", quotaBytes, rb)
	return gwtest.StartIn(t, dir, cfg, "CHEAP_KEY="+upstreamK1, "CLIENT_KEY="+clientKey, "OPS_KEY="+opsKey)
}

// quotaUpload posts a multipart upload of size bytes with purpose batch and
// the extra form fields (name, value pairs).
func quotaUpload(t *testing.T, base, key string, size int, fields ...string) (int, []byte) {
	t.Helper()
	var buf bytes.Buffer
	mw := multipart.NewWriter(&buf)
	mw.WriteField("purpose", "batch")
	fw, _ := mw.CreateFormFile("file", "requests.jsonl")
	line := `{"custom_id":"x","method":"POST","url":"/v1/chat/completions","body":{}}` + "\n"
	fw.Write([]byte(strings.Repeat(line, size/len(line)+1)[:size]))
	for i := 0; i+1 < len(fields); i += 2 {
		mw.WriteField(fields[i], fields[i+1])
	}
	mw.Close()
	return do(t, "POST", base+"/v1/files", key, mw.FormDataContentType(), buf.Bytes())
}

type quotaFile struct {
	ID        string `json:"id"`
	Bytes     int64  `json:"bytes"`
	CreatedAt int64  `json:"created_at"`
	ExpiresAt *int64 `json:"expires_at"`
}

// expectQuotaError checks the answer of an upload over the quota.
func expectQuotaError(t *testing.T, code int, body []byte) {
	t.Helper()
	var env envelope
	if err := json.Unmarshal(body, &env); err != nil || code != 400 {
		t.Fatalf("upload over the quota: %d %s", code, body)
	}
	e := env.Error
	if e.Code == nil || *e.Code != "files_quota_exceeded" || e.Type != "invalid_request_error" || e.Param == nil ||
		*e.Param != "file" || !strings.Contains(e.Message, "files.max_bytes_per_team") || !strings.Contains(e.Message, "in use") {
		t.Fatalf("upload over the quota: %s", body)
	}
}

// usedMemory is Redis's used_memory_dataset: what it stores, without the
// transient query buffers of the connections an upload flood keeps busy.
func usedMemory(t *testing.T, c *redis.Client) int64 {
	t.Helper()
	info, err := c.Info(context.Background(), "memory").Result()
	if err != nil {
		t.Fatal(err)
	}
	for _, l := range strings.Split(info, "\n") {
		if v, ok := strings.CutPrefix(strings.TrimSpace(l), "used_memory_dataset:"); ok {
			n, _ := strconv.ParseInt(v, 10, 64)
			return n
		}
	}
	t.Fatal("no used_memory_dataset in INFO memory")
	return 0
}

// One key that keeps uploading, from several connections at once, fills its
// team's quota and then gets files_quota_exceeded: Redis grows by the quota,
// not by what was sent.
func TestOneKeyUploadingIsBoundedByTheTeamQuotaRedis(t *testing.T) {
	srv := redistest.Start(t)
	c := redis.NewClient(&redis.Options{Addr: srv.Addr})
	defer c.Close()
	gw := startQuotaEnv(t, srv.Addr)
	before := usedMemory(t, c)
	stored := runUploadFlood(t, gw)
	grown := usedMemory(t, c) - before
	t.Logf("Redis grew by %d bytes for %d bytes of files", grown, stored)
	if grown > quotaBytes+2<<20 {
		t.Fatalf("Redis grew by %d bytes for %d stored; the quota is %d", grown, stored, quotaBytes)
	}
	checkFilesAPIBounds(t, gw)
}

func TestOneKeyUploadingIsBoundedByTheTeamQuotaEmbedded(t *testing.T) {
	gw := startQuotaEnv(t, "")
	runUploadFlood(t, gw)
	checkFilesAPIBounds(t, gw)
}

// runUploadFlood sends 8 x 20 uploads of quotaChunk bytes as key ci (78 MiB
// in all) and returns the bytes stored, checking every refusal.
func runUploadFlood(t *testing.T, gw *gwtest.Gateway) int64 {
	t.Helper()
	type answer struct {
		code int
		body []byte
	}
	var mu sync.Mutex
	var answers []answer
	var wg sync.WaitGroup
	for range 8 {
		wg.Go(func() {
			for range 20 {
				code, body := quotaUpload(t, gw.URL, clientKey, quotaChunk)
				mu.Lock()
				answers = append(answers, answer{code, body})
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	var stored int64
	var ok, refused int
	for _, a := range answers {
		if a.code != 200 {
			refused++
			expectQuotaError(t, a.code, a.body)
			continue
		}
		var f quotaFile
		json.Unmarshal(a.body, &f)
		stored += f.Bytes
		ok++
	}
	if want := quotaBytes / quotaChunk; ok != want || stored != quotaBytes {
		t.Fatalf("%d uploads stored (%d bytes), %d refused; want exactly %d stored", ok, stored, refused, want)
	}
	return stored
}

// checkFilesAPIBounds runs after the flood: the team is full, other teams are
// not, a delete gives room back, and expires_after is honoured and checked.
func checkFilesAPIBounds(t *testing.T, gw *gwtest.Gateway) {
	t.Helper()
	code, body := quotaUpload(t, gw.URL, clientKey, 1)
	expectQuotaError(t, code, body)
	if code, body := quotaUpload(t, gw.URL, opsKey, quotaChunk); code != 200 {
		t.Fatalf("another team's upload: %d %s", code, body)
	}
	var list struct {
		Data []quotaFile `json:"data"`
	}
	if code := getJSON(t, gw.URL+"/v1/files", clientKey, &list); code != 200 || len(list.Data) != quotaBytes/quotaChunk {
		t.Fatalf("list: %d, %d files", code, len(list.Data))
	}
	f := list.Data[0]
	if f.ExpiresAt == nil || *f.ExpiresAt != f.CreatedAt+48*3600 {
		t.Fatalf("expires_at of an upload without expires_after: %+v, want created_at + files.default_ttl", f)
	}
	if code, body := do(t, "DELETE", gw.URL+"/v1/files/"+f.ID, clientKey, "", nil); code != 200 {
		t.Fatalf("delete: %d %s", code, body)
	}
	// The room is back: one upload fits again, with the client's expiry.
	code, body = quotaUpload(t, gw.URL, clientKey, quotaChunk, "expires_after[anchor]", "created_at",
		"expires_after[seconds]", "3600")
	var nf quotaFile
	if code != 200 || json.Unmarshal(body, &nf) != nil || nf.ExpiresAt == nil || *nf.ExpiresAt != nf.CreatedAt+3600 {
		t.Fatalf("upload after a delete, expires_after 3600: %d %s", code, body)
	}
	code, body = quotaUpload(t, gw.URL, clientKey, 1)
	expectQuotaError(t, code, body)

	for _, c := range []struct{ anchor, seconds, param string }{
		{"created_at", "60", "expires_after[seconds]"},
		{"created_at", "2592001", "expires_after[seconds]"},
		{"last_active_at", "3600", "expires_after[anchor]"},
	} {
		code, body := quotaUpload(t, gw.URL, opsKey, 10, "expires_after[anchor]", c.anchor, "expires_after[seconds]", c.seconds)
		var env envelope
		json.Unmarshal(body, &env)
		if code != 400 || env.Error.Param == nil || *env.Error.Param != c.param {
			t.Fatalf("expires_after %s %s: %d %s, want 400 naming %s", c.anchor, c.seconds, code, body, c.param)
		}
	}
	code, body = do(t, "POST", gw.URL+"/v1/batches", opsKey, "application/json", []byte(`{"input_file_id":"`+nf.ID+
		`","endpoint":"/v1/chat/completions","completion_window":"24h","output_expires_after":{"anchor":"created_at","seconds":10}}`))
	var env envelope
	json.Unmarshal(body, &env)
	if code != 400 || env.Error.Param == nil || *env.Error.Param != "output_expires_after.seconds" {
		t.Fatalf("output_expires_after of 10 s: %d %s", code, body)
	}
}
