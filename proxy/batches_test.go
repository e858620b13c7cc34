package proxy

import (
	"bytes"
	"encoding/json"
	"fmt"
	"strings"
	"testing"

	"nanogate/internal/fakeup"
)

// batchObject is OpenAI's batch object.
type batchObject struct {
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
			Code    string `json:"code"`
			Message string `json:"message"`
			Line    *int   `json:"line"`
		} `json:"data"`
	} `json:"errors"`
	CreatedAt     int64  `json:"created_at"`
	InProgressAt  *int64 `json:"in_progress_at"`
	CancellingAt  *int64 `json:"cancelling_at"`
	CancelledAt   *int64 `json:"cancelled_at"`
	CompletedAt   *int64 `json:"completed_at"`
	FailedAt      *int64 `json:"failed_at"`
	RequestCounts struct {
		Total     int64 `json:"total"`
		Completed int64 `json:"completed"`
		Failed    int64 `json:"failed"`
	} `json:"request_counts"`
	Metadata map[string]string `json:"metadata"`
}

// chatLines is a batch input file of n chat completion requests.
func chatLines(n int) []byte {
	var b bytes.Buffer
	for i := range n {
		fmt.Fprintf(&b, `{"custom_id":"line-%d","method":"POST","url":"/v1/chat/completions","body":{"model":%q,"messages":[{"role":"user","content":"draw %d"}]}}`+"\n",
			i, testModel, i)
	}
	return b.Bytes()
}

// createBatch uploads lines and creates a chat batch on them as key.
func (ts *testServer) createBatch(t *testing.T, key string, lines []byte) batchObject {
	t.Helper()
	f := ts.uploaded(t, key, lines)
	r := ts.postJSON(t, "/v1/batches", key, `{"input_file_id":"`+f.ID+`","endpoint":"/v1/chat/completions",`+
		`"completion_window":"24h","metadata":{"job":"unit"}}`)
	if r.status != 200 {
		t.Fatalf("create batch: %d %s", r.status, r.body)
	}
	var b batchObject
	decode(t, r, &b)
	return b
}

func (ts *testServer) batch(t *testing.T, key, id string) batchObject {
	t.Helper()
	r := ts.get(t, "/v1/batches/"+id, key)
	if r.status != 200 {
		t.Fatalf("get batch: %d %s", r.status, r.body)
	}
	var b batchObject
	decode(t, r, &b)
	return b
}

// waitBatch polls the batch until it reaches status.
func (ts *testServer) waitBatch(t *testing.T, key, id, status string) batchObject {
	t.Helper()
	var b batchObject
	waitFor(t, "batch "+id+" to be "+status, func() bool {
		b = ts.batch(t, key, id)
		return b.Status == status
	})
	return b
}

// TestBatchRunsToCompletion: a batch created over the HTTP API is OpenAI's
// batch object, in progress with its line count; it completes, its output
// file holds one chat.completion per line by custom_id, every line is
// billed once to the key, and the list and the admin list show it.
func TestBatchRunsToCompletion(t *testing.T) {
	ts := startServer(t, serverOpts{})
	b := ts.createBatch(t, ciKey, chatLines(3))
	if !strings.HasPrefix(b.ID, "batch_") || b.Object != "batch" || b.Endpoint != "/v1/chat/completions" ||
		b.CompletionWindow != "24h" || b.Status != "in_progress" || b.RequestCounts.Total != 3 || b.Metadata["job"] != "unit" ||
		b.InProgressAt == nil || b.Errors != nil {
		t.Fatalf("created %+v", b)
	}
	b = ts.waitBatch(t, ciKey, b.ID, "completed")
	if b.RequestCounts.Completed != 3 || b.RequestCounts.Failed != 0 || b.OutputFileID == nil || b.CompletedAt == nil {
		t.Fatalf("completed %+v", b)
	}
	out := ts.get(t, "/v1/files/"+*b.OutputFileID+"/content", ciKey)
	if out.status != 200 {
		t.Fatalf("output: %d %s", out.status, out.body)
	}
	seen := map[string]bool{}
	for _, line := range strings.Split(strings.TrimSuffix(string(out.body), "\n"), "\n") {
		var res struct {
			CustomID string `json:"custom_id"`
			Response struct {
				StatusCode int            `json:"status_code"`
				Body       chatCompletion `json:"body"`
			} `json:"response"`
		}
		if err := json.Unmarshal([]byte(line), &res); err != nil {
			t.Fatalf("output line %q: %v", line, err)
		}
		if res.Response.StatusCode != 200 || res.Response.Body.Object != "chat.completion" || seen[res.CustomID] {
			t.Errorf("output line %.300s", line)
		}
		seen[res.CustomID] = true
	}
	if len(seen) != 3 || !seen["line-0"] || !seen["line-2"] {
		t.Errorf("custom ids %v", seen)
	}
	if u := ts.usageOf(t, ciKey); u.Key.Requests != 3 || u.Key.Images != 3 {
		t.Errorf("usage %+v", u.Key)
	}
	if ts.up.Requests() != 3 {
		t.Errorf("upstream saw %d requests", ts.up.Requests())
	}

	var list struct {
		Object  string        `json:"object"`
		Data    []batchObject `json:"data"`
		FirstID *string       `json:"first_id"`
		HasMore bool          `json:"has_more"`
	}
	decode(t, ts.get(t, "/v1/batches", narrowKey), &list) // a teammate's key
	if list.Object != "list" || len(list.Data) != 1 || list.Data[0].ID != b.ID || *list.FirstID != b.ID || list.HasMore {
		t.Errorf("list %+v", list)
	}
	decode(t, ts.get(t, "/v1/batches", opsKey), &list)
	if len(list.Data) != 0 || list.FirstID != nil {
		t.Errorf("another team lists %+v", list)
	}

	var admin struct {
		Batches []struct {
			ID, Team, Key, Status string
			Total, Completed      int64
		} `json:"batches"`
		HasMore           bool    `json:"has_more"`
		QueuedLines       int64   `json:"queued_lines"`
		WorkersPerReplica int     `json:"workers_per_replica"`
		MaxShare          float64 `json:"max_share"`
	}
	r := ts.get(t, "/admin/batches", adminKey)
	decode(t, r, &admin)
	if r.status != 200 || len(admin.Batches) != 1 || admin.Batches[0].ID != b.ID || admin.Batches[0].Team != "design" ||
		admin.Batches[0].Key != "ci" || admin.Batches[0].Status != "completed" || admin.Batches[0].Total != 3 ||
		admin.Batches[0].Completed != 3 || admin.QueuedLines != 0 || admin.HasMore ||
		admin.WorkersPerReplica != ts.cfg.Batch.Workers || admin.MaxShare != ts.cfg.Batch.MaxShare {
		t.Errorf("admin list: %d %s", r.status, r.body)
	}
}

// TestBatchOfInvalidLinesFails: a file with an invalid line makes a batch
// that failed at once, its errors naming the line (OpenAI's behaviour), not
// an HTTP error; nothing runs.
func TestBatchOfInvalidLinesFails(t *testing.T) {
	ts := startServer(t, serverOpts{})
	lines := append(chatLines(1), []byte("this is not json\n")...)
	b := ts.createBatch(t, ciKey, lines)
	if b.Status != "failed" || b.FailedAt == nil || b.Errors == nil || len(b.Errors.Data) == 0 {
		t.Fatalf("batch %+v", b)
	}
	if e := b.Errors.Data[0]; e.Line == nil || *e.Line != 2 || e.Code == "" {
		t.Errorf("error %+v", e)
	}
	if ts.up.Requests() != 0 {
		t.Errorf("upstream saw %d requests", ts.up.Requests())
	}
}

// TestBatchCreateRefusesBadBodies: a create body that is not JSON, has
// unknown fields, too much metadata, no or a wrong input file, endpoint,
// window or output expiry is refused in OpenAI's envelope naming the
// parameter; another team's file does not exist.
func TestBatchCreateRefusesBadBodies(t *testing.T) {
	ts := startServer(t, serverOpts{})
	f := ts.uploaded(t, ciKey, chatLines(1))
	theirs := ts.uploaded(t, opsKey, chatLines(1))
	ok := func(extra string) string {
		return `{"input_file_id":"` + f.ID + `","endpoint":"/v1/chat/completions","completion_window":"24h"` + extra + `}`
	}
	var many []string
	for i := range 17 {
		many = append(many, fmt.Sprintf(`"k%d":"v"`, i))
	}
	for _, tc := range []struct {
		name, ctype, body string
		status            int
		code, param       string
	}{
		{"multipart", "multipart/form-data; boundary=x", ok(""), 415, "invalid_request", ""},
		{"not json", "application/json", `{"input_file_id":`, 400, "invalid_request", ""},
		{"unknown field", "application/json", ok(`,"priority":"high"`), 400, "invalid_request", ""},
		{"17 metadata pairs", "application/json", ok(`,"metadata":{` + strings.Join(many, ",") + `}`), 400, "invalid_request", "metadata"},
		{"long metadata key", "application/json", ok(`,"metadata":{"` + strings.Repeat("k", 65) + `":"v"}`), 400, "invalid_request", "metadata"},
		{"no input file", "application/json", `{"endpoint":"/v1/chat/completions","completion_window":"24h"}`, 400, "invalid_request", "input_file_id"},
		{"bad anchor", "application/json", ok(`,"output_expires_after":{"anchor":"now","seconds":3600}`), 400, "invalid_request", "output_expires_after.anchor"},
		{"anchor not a string", "application/json", ok(`,"output_expires_after":{"anchor":7,"seconds":3600}`), 400, "invalid_request", "output_expires_after.anchor"},
		{"short expiry", "application/json", ok(`,"output_expires_after":{"anchor":"created_at","seconds":60}`), 400, "invalid_request", "output_expires_after.seconds"},
		{"no endpoint", "application/json", `{"input_file_id":"` + f.ID + `","completion_window":"24h"}`, 400, "invalid_request", "endpoint"},
		{"embeddings", "application/json", `{"input_file_id":"` + f.ID + `","endpoint":"/v1/embeddings","completion_window":"24h"}`, 400, "invalid_request", "endpoint"},
		{"window", "application/json", `{"input_file_id":"` + f.ID + `","endpoint":"/v1/chat/completions","completion_window":"1h"}`, 400, "invalid_request", "completion_window"},
		{"not a file id", "application/json", `{"input_file_id":"x","endpoint":"/v1/chat/completions","completion_window":"24h"}`, 400, "invalid_request", "input_file_id"},
		{"another team's file", "application/json", `{"input_file_id":"` + theirs.ID + `","endpoint":"/v1/chat/completions","completion_window":"24h"}`, 404, "not_found", "input_file_id"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := send(t, "POST", ts.url+"/v1/batches", ciKey, tc.ctype, []byte(tc.body))
			wantError(t, r, tc.status, "invalid_request_error", tc.code, tc.param)
		})
	}
	// A valid output expiry is taken.
	if r := ts.postJSON(t, "/v1/batches", ciKey, ok(`,"output_expires_after":{"anchor":"created_at","seconds":3600}`)); r.status != 200 {
		t.Errorf("a valid expiry: %d %s", r.status, r.body)
	}
}

// TestBatchCancelStopsItAndEndsCancelled: cancelling a running batch
// answers it cancelling, and it ends cancelled with the lines it did not
// run left out; cancelling it again answers it as it is, while a batch
// that completed cannot be cancelled (400, never the 409 the SDKs retry).
func TestBatchCancelStopsItAndEndsCancelled(t *testing.T) {
	ts := startServer(t, serverOpts{top: "batch: { workers: 1 }\n"})
	ts.up.SetFault(fakeup.Fault{Hang: true})
	b := ts.createBatch(t, ciKey, chatLines(20))
	waitFor(t, "a line to reach the upstream", func() bool { return ts.up.InFlight() == 1 })
	r := ts.postJSON(t, "/v1/batches/"+b.ID+"/cancel", ciKey, "")
	var c batchObject
	decode(t, r, &c)
	if r.status != 200 || c.ID != b.ID || c.Status != "cancelling" || c.CancellingAt == nil {
		t.Fatalf("cancel: %d %s", r.status, r.body)
	}
	if r := ts.postJSON(t, "/v1/batches/"+b.ID+"/cancel", opsKey, ""); r.status != 404 {
		t.Errorf("another team cancels: %d %s", r.status, r.body)
	}
	ts.up.ClearFault()
	ts.up.Close() // ends the hanging line
	c = ts.waitBatch(t, ciKey, b.ID, "cancelled")
	if c.CancelledAt == nil || c.RequestCounts.Completed+c.RequestCounts.Failed >= 20 {
		t.Errorf("cancelled %+v", c)
	}
	if r := ts.postJSON(t, "/v1/batches/"+b.ID+"/cancel", ciKey, ""); r.status != 200 {
		t.Errorf("cancelling again: %d %s", r.status, r.body)
	}

	done := startServer(t, serverOpts{})
	d := done.createBatch(t, ciKey, chatLines(1))
	done.waitBatch(t, ciKey, d.ID, "completed")
	msg := wantError(t, done.postJSON(t, "/v1/batches/"+d.ID+"/cancel", ciKey, ""), 400, "invalid_request_error", "invalid_request", "")
	if msg != "Cannot cancel a batch with status completed." {
		t.Errorf("message %q", msg)
	}
}

// TestBatchReadsAreTheOwners: a batch is another team's 404, as an unknown
// or malformed id; list parameters out of range are 400s, and the list
// pages by cursor.
func TestBatchReadsAreTheOwners(t *testing.T) {
	ts := startServer(t, serverOpts{})
	first := ts.createBatch(t, ciKey, chatLines(1))
	second := ts.createBatch(t, ciKey, chatLines(1))
	for _, path := range []string{"/v1/batches/" + first.ID, "/v1/batches/batch_0123456789abcdefghijklmnop", "/v1/batches/nonsense"} {
		msg := wantError(t, ts.get(t, path, opsKey), 404, "invalid_request_error", "not_found", "")
		if msg != "No such batch." {
			t.Errorf("%s: %q", path, msg)
		}
	}
	wantError(t, ts.postJSON(t, "/v1/batches/nonsense/cancel", ciKey, ""), 404, "invalid_request_error", "not_found", "")
	for q, param := range map[string]string{"limit=0": "limit", "limit=101": "limit", "after=nonsense": "after"} {
		wantError(t, ts.get(t, "/v1/batches?"+q, ciKey), 400, "invalid_request_error", "invalid_request", param)
	}
	for q, param := range map[string]string{"limit=0": "limit", "limit=1001": "limit", "after=nonsense": "after"} {
		wantError(t, ts.get(t, "/admin/batches?"+q, adminKey), 400, "invalid_request_error", "invalid_request", param)
	}

	var page struct {
		Data    []batchObject `json:"data"`
		LastID  *string       `json:"last_id"`
		HasMore bool          `json:"has_more"`
	}
	newer, older := second.ID, first.ID
	if newer < older {
		newer, older = older, newer // created within one millisecond
	}
	decode(t, ts.get(t, "/v1/batches?limit=1", ciKey), &page)
	if len(page.Data) != 1 || page.Data[0].ID != newer || !page.HasMore {
		t.Fatalf("first page %+v", page)
	}
	decode(t, ts.get(t, "/v1/batches?limit=1&after="+*page.LastID, ciKey), &page)
	if len(page.Data) != 1 || page.Data[0].ID != older || page.HasMore {
		t.Errorf("second page %+v", page)
	}
	var admin struct {
		Batches []struct{ ID string } `json:"batches"`
		HasMore bool                  `json:"has_more"`
	}
	decode(t, ts.get(t, "/admin/batches?limit=1", adminKey), &admin)
	if len(admin.Batches) != 1 || admin.Batches[0].ID != newer || !admin.HasMore {
		t.Errorf("admin first page %+v", admin)
	}
	decode(t, ts.get(t, "/admin/batches?after="+newer, adminKey), &admin)
	if len(admin.Batches) != 1 || admin.Batches[0].ID != older || admin.HasMore {
		t.Errorf("admin second page %+v", admin)
	}
}
