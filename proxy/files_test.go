package proxy

import (
	"bytes"
	"slices"
	"strings"
	"testing"
	"time"
)

// fileObject is OpenAI's file object.
type fileObject struct {
	ID        string `json:"id"`
	Object    string `json:"object"`
	Bytes     int64  `json:"bytes"`
	CreatedAt int64  `json:"created_at"`
	ExpiresAt *int64 `json:"expires_at"`
	Filename  string `json:"filename"`
	Purpose   string `json:"purpose"`
	Status    string `json:"status"`
}

// filePage is OpenAI's cursor page of files.
type filePage struct {
	Object  string       `json:"object"`
	Data    []fileObject `json:"data"`
	FirstID *string      `json:"first_id"`
	LastID  *string      `json:"last_id"`
	HasMore bool         `json:"has_more"`
}

// upload posts content as a batch file named name (purpose first, as the
// SDKs send it), with more form fields after the file.
func (ts *testServer) upload(t *testing.T, key, name string, content []byte, more ...string) reply {
	t.Helper()
	ct, body := multipartForm(t, []string{"purpose", "batch"}, [3]string{"file", name, string(content)})
	if len(more) > 0 {
		ct, body = multipartForm(t, append([]string{"purpose", "batch"}, more...), [3]string{"file", name, string(content)})
	}
	return send(t, "POST", ts.url+"/v1/files", key, ct, body)
}

// uploaded uploads content and returns the file object.
func (ts *testServer) uploaded(t *testing.T, key string, content []byte) fileObject {
	t.Helper()
	r := ts.upload(t, key, "requests.jsonl", content)
	if r.status != 200 {
		t.Fatalf("upload: %d %s", r.status, r.body)
	}
	var f fileObject
	decode(t, r, &f)
	return f
}

func (ts *testServer) files(t *testing.T, key, query string) filePage {
	t.Helper()
	r := ts.get(t, "/v1/files"+query, key)
	if r.status != 200 {
		t.Fatalf("list files%s: %d %s", query, r.status, r.body)
	}
	var p filePage
	decode(t, r, &p)
	if p.Object != "list" || p.Data == nil {
		t.Fatalf("not a list page: %s", r.body)
	}
	return p
}

// TestFilesUploadGetContentDelete: an upload answers OpenAI's file object
// (the base name of the file, purpose batch, processed, expiring after
// files.default_ttl); the file reads back whole as an attachment, for its
// team only (another team is told it does not exist); deleting it answers
// OpenAI's deletion object, and it is gone. Upload and deletion are
// logged with who did them.
func TestFilesUploadGetContentDelete(t *testing.T) {
	ts := startServer(t, serverOpts{top: "files: { default_ttl: 48h }\n"})
	content := []byte(`{"custom_id":"a","method":"POST","url":"/v1/chat/completions","body":{}}` + "\n")
	start := time.Now().Unix()
	r := ts.upload(t, ciKey, `C:\Users\me\requests.jsonl`, content)
	if r.status != 200 || r.header.Get("Content-Type") != "application/json" {
		t.Fatalf("upload: %d %s", r.status, r.body)
	}
	var f fileObject
	decode(t, r, &f)
	if !strings.HasPrefix(f.ID, "file-") || f.Object != "file" || f.Bytes != int64(len(content)) || f.Filename != "requests.jsonl" ||
		f.Purpose != "batch" || f.Status != "processed" || f.CreatedAt < start || f.ExpiresAt == nil ||
		*f.ExpiresAt != f.CreatedAt+48*3600 {
		t.Fatalf("file object %s", r.body)
	}

	if g := ts.get(t, "/v1/files/"+f.ID, ciKey); g.status != 200 || !bytes.Equal(g.body, r.body) {
		t.Errorf("GET file: %d %s, uploaded %s", g.status, g.body, r.body)
	}
	// A key of the same team sees the team's files.
	if r := ts.get(t, "/v1/files/"+f.ID, narrowKey); r.status != 200 {
		t.Errorf("GET as a teammate: %d", r.status)
	}
	c := ts.get(t, "/v1/files/"+f.ID+"/content", ciKey)
	if c.status != 200 || !bytes.Equal(c.body, content) || c.header.Get("Content-Type") != "application/octet-stream" ||
		c.header.Get("Content-Disposition") != `attachment; filename="requests.jsonl"` {
		t.Errorf("content: %d %v %q", c.status, c.header, c.body)
	}

	for _, tc := range []struct{ method, path string }{
		{"GET", "/v1/files/" + f.ID}, {"GET", "/v1/files/" + f.ID + "/content"}, {"DELETE", "/v1/files/" + f.ID},
	} {
		msg := wantError(t, send(t, tc.method, ts.url+tc.path, opsKey, "", nil), 404, "invalid_request_error", "not_found", "")
		if msg != "No such file." {
			t.Errorf("%s %s as another team: %q", tc.method, tc.path, msg)
		}
	}
	if p := ts.files(t, opsKey, ""); len(p.Data) != 0 || p.FirstID != nil || p.HasMore {
		t.Errorf("another team lists %+v", p)
	}

	d := send(t, "DELETE", ts.url+"/v1/files/"+f.ID, ciKey, "", nil)
	var del struct {
		ID      string `json:"id"`
		Object  string `json:"object"`
		Deleted bool   `json:"deleted"`
	}
	decode(t, d, &del)
	if d.status != 200 || del.ID != f.ID || del.Object != "file" || !del.Deleted {
		t.Errorf("delete: %d %s", d.status, d.body)
	}
	wantError(t, ts.get(t, "/v1/files/"+f.ID, ciKey), 404, "invalid_request_error", "not_found", "")
	wantError(t, send(t, "DELETE", ts.url+"/v1/files/"+f.ID, ciKey, "", nil), 404, "invalid_request_error", "not_found", "")

	for msg, want := range map[string]int64{"file uploaded": int64(len(content)), "file deleted": 0} {
		entries := ts.logs.FilterMessage(msg).All()
		if len(entries) != 1 {
			t.Fatalf("%q logged %d times", msg, len(entries))
		}
		m := entries[0].ContextMap()
		if m["file"] != f.ID || m["key"] != "ci" || m["team"] != "design" || (want > 0 && m["bytes"] != want) {
			t.Errorf("%q: %v", msg, m)
		}
	}
}

// TestFilesListPagesByCursor: the list is newest first (oldest first with
// order=asc), limit pages it with has_more and first_id/last_id, after
// continues from a file, and purpose filters.
func TestFilesListPagesByCursor(t *testing.T) {
	ts := startServer(t, serverOpts{})
	var ids []string
	for i := range 3 {
		ids = append(ids, ts.uploaded(t, ciKey, []byte(strings.Repeat("x", i+1))).ID)
	}
	// Ids sort in creation order to the millisecond; uploads within one
	// millisecond have no order of their own.
	slices.Sort(ids)
	idsOf := func(p filePage) []string {
		var out []string
		for _, f := range p.Data {
			out = append(out, f.ID)
		}
		return out
	}
	all := ts.files(t, ciKey, "")
	if got := idsOf(all); len(got) != 3 || got[0] != ids[2] || got[2] != ids[0] || all.HasMore ||
		*all.FirstID != ids[2] || *all.LastID != ids[0] {
		t.Fatalf("list %v (uploaded %v)", got, ids)
	}
	if got := idsOf(ts.files(t, ciKey, "?order=asc")); len(got) != 3 || got[0] != ids[0] || got[2] != ids[2] {
		t.Errorf("asc %v (uploaded %v)", got, ids)
	}
	p := ts.files(t, ciKey, "?limit=2")
	if got := idsOf(p); len(got) != 2 || !p.HasMore || got[0] != ids[2] || *p.LastID != ids[1] {
		t.Errorf("limit=2: %v has_more %v", got, p.HasMore)
	}
	p = ts.files(t, ciKey, "?limit=2&after="+*p.LastID)
	if got := idsOf(p); len(got) != 1 || got[0] != ids[0] || p.HasMore {
		t.Errorf("the next page: %v has_more %v", got, p.HasMore)
	}
	if p := ts.files(t, ciKey, "?purpose=batch_output"); len(p.Data) != 0 {
		t.Errorf("purpose=batch_output lists %v", idsOf(p))
	}
	if p := ts.files(t, ciKey, "?purpose=batch"); len(p.Data) != 3 {
		t.Errorf("purpose=batch lists %v", idsOf(p))
	}
}

// TestFilesRefuseBadRequests: an upload that is not a multipart form
// (415), lacks the file or the purpose, names another purpose, an unknown
// field, two files, a wrong expiry or is cut short is refused in OpenAI's
// envelope and stores nothing; list parameters out of range are refused,
// and an id that is no file id is a 404.
func TestFilesRefuseBadRequests(t *testing.T) {
	ts := startServer(t, serverOpts{})
	content := "{}\n"
	ctFile, file := multipartForm(t, []string{"purpose", "batch"}, [3]string{"file", "a.jsonl", content})
	ctNoFile, noFile := multipartForm(t, []string{"purpose", "batch"})
	ctNoPurpose, noPurpose := multipartForm(t, nil, [3]string{"file", "a.jsonl", content})
	ctTune, tune := multipartForm(t, []string{"purpose", "fine-tune"}, [3]string{"file", "a.jsonl", content})
	ctOdd, odd := multipartForm(t, []string{"purpose", "batch", "colour", "red"}, [3]string{"file", "a.jsonl", content})
	ctTwo, two := multipartForm(t, []string{"purpose", "batch"}, [3]string{"file", "a.jsonl", content}, [3]string{"file", "b.jsonl", content})
	ctAnchor, anchor := multipartForm(t, []string{"purpose", "batch", "expires_after[anchor]", "last_used", "expires_after[seconds]", "3600"},
		[3]string{"file", "a.jsonl", content})
	ctSecs, secs := multipartForm(t, []string{"purpose", "batch", "expires_after[anchor]", "created_at", "expires_after[seconds]", "60"},
		[3]string{"file", "a.jsonl", content})
	for _, tc := range []struct {
		name, ctype string
		body        []byte
		status      int
		param       string
	}{
		{"json", "application/json", []byte(`{"purpose":"batch"}`), 415, ""},
		{"no boundary", "multipart/form-data", file, 415, ""},
		{"no file", ctNoFile, noFile, 400, "file"},
		{"no purpose", ctNoPurpose, noPurpose, 400, "purpose"},
		{"fine-tune", ctTune, tune, 400, "purpose"},
		{"unknown field", ctOdd, odd, 400, "colour"},
		{"two files", ctTwo, two, 400, "file"},
		{"bad anchor", ctAnchor, anchor, 400, "expires_after[anchor]"},
		{"short expiry", ctSecs, secs, 400, "expires_after[seconds]"},
		{"cut short", ctFile, file[:len(file)-8], 400, "file"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			wantError(t, send(t, "POST", ts.url+"/v1/files", ciKey, tc.ctype, tc.body), tc.status, "invalid_request_error",
				"invalid_request", tc.param)
		})
	}
	if p := ts.files(t, ciKey, ""); len(p.Data) != 0 {
		t.Errorf("refused uploads were stored: %+v", p.Data)
	}
	for _, q := range []string{"limit=0", "limit=10001", "limit=ten", "after=nonsense", "order=sideways"} {
		param, _, _ := strings.Cut(q, "=")
		wantError(t, ts.get(t, "/v1/files?"+q, ciKey), 400, "invalid_request_error", "invalid_request", param)
	}
	for _, path := range []string{"/v1/files/not-a-file-id", "/v1/files/file-0123456789abcdefghijklmnop", "/v1/files/x/content"} {
		wantError(t, ts.get(t, path, ciKey), 404, "invalid_request_error", "not_found", "")
	}
}

// TestFilesUploadKeepsAnExpiryAsked: expires_after sets the file's expiry
// from its creation.
func TestFilesUploadKeepsAnExpiryAsked(t *testing.T) {
	ts := startServer(t, serverOpts{})
	r := ts.upload(t, ciKey, "a.jsonl", []byte("{}\n"), "expires_after[anchor]", "created_at", "expires_after[seconds]", "7200")
	var f fileObject
	decode(t, r, &f)
	if r.status != 200 || f.ExpiresAt == nil || *f.ExpiresAt != f.CreatedAt+7200 {
		t.Errorf("%d %s", r.status, r.body)
	}
}

// TestFilesQuotaIsA400: past files.max_files_per_team or
// files.max_bytes_per_team an upload is a 400 files_quota_exceeded (not a
// 429: waiting does not make room), and deleting a file makes room again.
func TestFilesQuotaIsA400(t *testing.T) {
	ts := startServer(t, serverOpts{top: "files: { max_files_per_team: 1, max_bytes_per_team: 100 }\n"})
	f := ts.uploaded(t, ciKey, []byte("{}\n"))
	msg := wantError(t, ts.upload(t, narrowKey, "b.jsonl", []byte("{}\n")), 400, "invalid_request_error", "files_quota_exceeded", "file")
	if !strings.Contains(msg, "files.max_files_per_team") {
		t.Errorf("message %q", msg)
	}
	// Another team has its own quota.
	ts.uploaded(t, opsKey, []byte("{}\n"))
	if r := send(t, "DELETE", ts.url+"/v1/files/"+f.ID, ciKey, "", nil); r.status != 200 {
		t.Fatalf("delete: %d %s", r.status, r.body)
	}
	msg = wantError(t, ts.upload(t, ciKey, "big.jsonl", bytes.Repeat([]byte("x"), 200)), 400, "invalid_request_error",
		"files_quota_exceeded", "file")
	if !strings.Contains(msg, "files.max_bytes_per_team") {
		t.Errorf("message %q", msg)
	}
	ts.uploaded(t, ciKey, []byte("{}\n"))
}

// TestFilesAndBatchesAreAbsentWithoutAManager: a gateway without the
// batch manager answers every Files and Batches path 404, saying so.
func TestFilesAndBatchesAreAbsentWithoutAManager(t *testing.T) {
	ts := startServer(t, serverOpts{noBatches: true})
	for _, tc := range []struct{ method, path, key string }{
		{"GET", "/v1/files", ciKey}, {"POST", "/v1/files", ciKey}, {"GET", "/v1/files/file-1", ciKey},
		{"GET", "/v1/files/file-1/content", ciKey}, {"DELETE", "/v1/files/file-1", ciKey}, {"GET", "/v1/batches", ciKey},
		{"POST", "/v1/batches", ciKey}, {"GET", "/v1/batches/batch_1", ciKey}, {"POST", "/v1/batches/batch_1/cancel", ciKey},
		{"GET", "/admin/batches", adminKey},
	} {
		msg := wantError(t, send(t, tc.method, ts.url+tc.path, tc.key, "", nil), 404, "invalid_request_error", "not_found", "")
		if msg != "Batches are not set up on this gateway." {
			t.Errorf("%s %s: %q", tc.method, tc.path, msg)
		}
	}
}
