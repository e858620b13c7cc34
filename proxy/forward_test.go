package proxy

import (
	"bytes"
	"encoding/json"
	"io"
	"net/http"
	"os"
	"strings"
	"testing"

	"nanogate/internal/fakeup"
)

// TestForwardedAnswerHeadersAndBody: a large image answer is forwarded as it
// arrives (no Content-Length, chunked) with the headers a buffered one had;
// a small one still goes whole, with its length.
func TestForwardedAnswerHeadersAndBody(t *testing.T) {
	ts := startServer(t, serverOpts{kind: fakeup.Gemini, keyCI: "    rpm: 20\n    tpm: 1000000\n"})
	for _, size := range []int{0, 1500 << 10} {
		ts.up.SetImageSize(size)
		r := ts.postJSON(t, "/v1/chat/completions", ciKey, chatBody(testModel, ""))
		if r.status != 200 {
			t.Fatalf("size %d: status %d: %.300s", size, r.status, r.body)
		}
		h := r.header
		if h.Get("x-nanogate-provider") != "up" || h.Get("Content-Type") != "application/json" ||
			h.Get("x-ratelimit-limit-requests") != "20" || h.Get("x-request-id") == "" {
			t.Errorf("size %d: headers %v", size, h)
		}
		chunked := h.Get("Content-Length") == ""
		if chunked != (size > 0) {
			t.Errorf("size %d: Content-Length %q", size, h.Get("Content-Length"))
		}
		var a struct {
			Choices []struct {
				Message struct{ Content string } `json:"message"`
			} `json:"choices"`
			Usage struct {
				CompletionTokens int64 `json:"completion_tokens"`
			} `json:"usage"`
		}
		decode(t, r, &a)
		if len(a.Choices) != 1 || !strings.Contains(a.Choices[0].Message.Content, "![image](data:image/png;base64,") ||
			a.Usage.CompletionTokens == 0 {
			t.Errorf("size %d: answer %.300s", size, r.body)
		}
	}
}

// TestAnswerCutAfterCommitFailsClearly: an upstream that drops the
// connection half-way through a 1.5 MB image, after the answer was
// committed: the client got its 200 but cannot read a whole body (the
// connection closes without the final chunk), the request is logged with
// the failure, and nothing is billed.
func TestAnswerCutAfterCommitFailsClearly(t *testing.T) {
	ts := startServer(t, serverOpts{kind: fakeup.Gemini})
	ts.up.SetImageSize(1500 << 10)
	ts.up.SetFault(fakeup.Fault{DropMidBody: true, Times: 1})
	req, err := http.NewRequest("POST", ts.url+"/v1/chat/completions", strings.NewReader(chatBody(testModel, "")))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Authorization", "Bearer "+ciKey)
	resp, err := httpClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	body, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 {
		t.Fatalf("status %d: %.300s", resp.StatusCode, body)
	}
	if err == nil {
		t.Fatalf("the cut answer read as whole (%d bytes)", len(body))
	}
	if json.Valid(body) || !bytes.Contains(body, []byte(";base64,iVBOR")) {
		t.Errorf("body %.200q... (%d bytes)", body, len(body))
	}
	line := ts.requestLine(t, resp.Header.Get("x-request-id"))
	if line["error"] == nil || line["images"] != int64(0) || line["cost_micros"] != int64(0) {
		t.Errorf("log line %v", line)
	}
	u := ts.usageOf(t, ciKey)
	if u.Key.Images != 0 || u.Key.CostUSD != 0 || u.Key.Failed != 1 {
		t.Errorf("usage %+v", u.Key)
	}
	// The next answer is whole again.
	r := ts.postJSON(t, "/v1/chat/completions", ciKey, chatBody(testModel, ""))
	if r.status != 200 || !json.Valid(r.body) {
		t.Fatalf("next answer: %d %.200s", r.status, r.body)
	}
}

// TestImagesFormatIsNotForwarded: the images format (text in content
// before the images) is still answered whole, with its length.
func TestImagesFormatIsNotForwarded(t *testing.T) {
	ts := startServer(t, serverOpts{kind: fakeup.Gemini})
	ts.up.SetImageSize(200 << 10)
	r := ts.postJSON(t, "/v1/chat/completions", ciKey, chatBody(testModel, ""), "x-nanogate-image-format", "images")
	if r.status != 200 || r.header.Get("Content-Length") == "" || !json.Valid(r.body) {
		t.Fatalf("status %d, Content-Length %q", r.status, r.header.Get("Content-Length"))
	}
}

// TestOffloadedAnswerIsForwarded: an answer whose image becomes a link is
// forwarded into the store and answered whole, with its length, once the
// image is stored; the link serves the decoded image, and the store's
// directory holds it alone. An upstream that breaks mid-image, before
// anything went to the client, is answered with an error status, bills
// nothing and leaves nothing in the store.
func TestOffloadedAnswerIsForwarded(t *testing.T) {
	const size = 1500 << 10
	ts := startServer(t, serverOpts{kind: fakeup.Gemini, keyCI: "    offload_images: true\n"})
	ts.up.SetImageSize(size)
	r := ts.postJSON(t, "/v1/chat/completions", ciKey, chatBody(testModel, ""))
	if r.status != 200 || r.header.Get("Content-Length") == "" {
		t.Fatalf("status %d, Content-Length %q: %.300s", r.status, r.header.Get("Content-Length"), r.body)
	}
	var a struct {
		Choices []struct {
			Message struct{ Content string } `json:"message"`
		} `json:"choices"`
	}
	decode(t, r, &a)
	content := ""
	if len(a.Choices) == 1 {
		content = a.Choices[0].Message.Content
	}
	_, link, ok := strings.Cut(content, "![image]("+ts.url+"/images/")
	if !ok || !strings.HasSuffix(link, ")") {
		t.Fatalf("content %.300q", content)
	}
	img := send(t, "GET", ts.url+"/images/"+strings.TrimSuffix(link, ")"), "", "", nil)
	if img.status != 200 || !bytes.Equal(img.body, fakeup.PNG(size)) {
		t.Fatalf("the link answers %d with %d bytes that are not the image", img.status, len(img.body))
	}
	// The images format too: its choice is held, links and all, until it
	// ends.
	r = ts.postJSON(t, "/v1/chat/completions", ciKey, chatBody(testModel, ""), "x-nanogate-image-format", "images")
	if r.status != 200 || r.header.Get("Content-Length") == "" ||
		!bytes.Contains(r.body, []byte(`"images":[{"type":"image_url","image_url":{"url":"`+ts.url+`/images/`)) {
		t.Fatalf("images format: status %d: %.400s", r.status, r.body)
	}
	dir := ts.cfg.Images.Offload.Dir
	if names := dirEntries(t, dir); len(names) != 2 {
		t.Fatalf("store directory %v", names)
	}

	ts.up.SetFault(fakeup.Fault{DropMidBody: true, Times: 1})
	r = ts.postJSON(t, "/v1/chat/completions", ciKey, chatBody(testModel, ""))
	wantError(t, r, 502, "server_error", "upstream_error", "")
	line := ts.requestLine(t, r.header.Get("x-request-id"))
	if line["error"] == nil || line["images"] != int64(0) || line["cost_micros"] != int64(0) {
		t.Errorf("log line %v", line)
	}
	if names := dirEntries(t, dir); len(names) != 2 {
		t.Fatalf("store directory after the cut %v", names)
	}
}

// dirEntries lists a directory.
func dirEntries(t *testing.T, dir string) []string {
	t.Helper()
	es, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, e := range es {
		names = append(names, e.Name())
	}
	return names
}
