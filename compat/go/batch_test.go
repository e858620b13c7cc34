package compat

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/openai/openai-go/v3"
)

// batchOutputLine is a line of a batch's output file, the body kept raw to decode into the SDK's own type.
type batchOutputLine struct {
	ID       string `json:"id"`
	CustomID string `json:"custom_id"`
	Response *struct {
		StatusCode int             `json:"status_code"`
		Body       json.RawMessage `json:"body"`
	} `json:"response"`
	Error json.RawMessage `json:"error"`
}

// runBatch uploads lines as a JSONL (Files.New), creates a batch on endpoint, polls Batches.Get to a final status
// (every 100 ms, up to 60 s) and checks that it completed with every line; it returns the batch and the output
// lines by custom_id.
func runBatch(t *testing.T, ctx context.Context, c openai.Client, endpoint openai.BatchNewParamsEndpoint, lines []map[string]any) (*openai.Batch, map[string]batchOutputLine) {
	t.Helper()
	var in bytes.Buffer
	var ids []string
	for _, l := range lines {
		b, err := json.Marshal(l)
		if err != nil {
			t.Fatal(err)
		}
		in.Write(append(b, '\n'))
		ids = append(ids, l["custom_id"].(string))
	}
	f, err := c.Files.New(ctx, openai.FileNewParams{
		File: openai.File(&in, "requests.jsonl", "application/jsonl"), Purpose: openai.FilePurposeBatch})
	if err != nil {
		t.Fatal(err)
	}
	if f.Purpose != openai.FileObjectPurposeBatch || !strings.HasPrefix(f.ID, "file-") {
		t.Fatalf("file %s", f.RawJSON())
	}
	b, err := c.Batches.New(ctx, openai.BatchNewParams{InputFileID: f.ID, Endpoint: endpoint,
		CompletionWindow: openai.BatchNewParamsCompletionWindow24h})
	if err != nil {
		t.Fatal(err)
	}
	if b.Endpoint != string(endpoint) || b.InputFileID != f.ID {
		t.Fatalf("created batch %s", b.RawJSON())
	}
	final := []openai.BatchStatus{openai.BatchStatusCompleted, openai.BatchStatusFailed,
		openai.BatchStatusExpired, openai.BatchStatusCancelled}
	waitFor(t, "batch "+b.ID+" to end", 60*time.Second, func() bool {
		if b, err = c.Batches.Get(ctx, b.ID); err != nil {
			t.Fatal(err)
		}
		return slices.Contains(final, b.Status)
	})
	n := int64(len(lines))
	if b.Status != openai.BatchStatusCompleted || b.RequestCounts.Total != n || b.RequestCounts.Completed != n ||
		b.RequestCounts.Failed != 0 || b.OutputFileID == "" || b.ErrorFileID != "" {
		t.Fatalf("batch %s", b.RawJSON())
	}

	res, err := c.Files.Content(ctx, b.OutputFileID)
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	out := map[string]batchOutputLine{}
	sc := bufio.NewScanner(res.Body)
	sc.Buffer(nil, 16<<20)
	for sc.Scan() {
		var l batchOutputLine
		if err := json.Unmarshal(sc.Bytes(), &l); err != nil {
			t.Fatalf("output line: %v: %.200s", err, sc.Bytes())
		}
		if _, dup := out[l.CustomID]; dup {
			t.Errorf("custom_id %s twice", l.CustomID)
		}
		out[l.CustomID] = l
		if l.Response == nil || l.Response.StatusCode != 200 || (len(l.Error) > 0 && string(l.Error) != "null") {
			t.Errorf("%s: %.300s", l.CustomID, sc.Bytes())
		}
	}
	if err := sc.Err(); err != nil {
		t.Fatal(err)
	}
	for _, id := range ids {
		if _, ok := out[id]; !ok {
			t.Errorf("custom_id %s missing from the output", id)
		}
	}
	if len(out) != len(ids) {
		t.Fatalf("%d custom_ids in the output, want %d", len(out), len(ids))
	}
	return b, out
}

// batchImage matches the markdown image of a chat answer in a batch: a link (images.offload) or a data URL.
var batchImage = regexp.MustCompile(`!\[[^\]]*\]\(((?:https?://|data:image/png;base64,)[^)\s]+)\)`)

// fetchPNG GETs an image link as a user does (plain HTTP, no key) and checks that it serves a PNG.
func fetchPNG(t *testing.T, url string) {
	t.Helper()
	res, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	png, err := io.ReadAll(res.Body)
	res.Body.Close()
	if err != nil || res.StatusCode != 200 || res.Header.Get("Content-Type") != "image/png" {
		t.Fatalf("GET %s: %d %s %v", url, res.StatusCode, res.Header.Get("Content-Type"), err)
	}
	assertPNGBytes(t, png)
}

func TestBatchChatAndImages(t *testing.T) {
	cleanFakes(t)
	c := newClient(env.key)
	ctx, cancel := context.WithTimeout(context.Background(), 150*time.Second)
	defer cancel()
	model := kindNamed("openai").model

	var chatLines []map[string]any
	for i := range 20 {
		chatLines = append(chatLines, map[string]any{"custom_id": fmt.Sprintf("chat-%d", i), "method": "POST",
			"url": "/v1/chat/completions", "body": map[string]any{"model": model,
				"messages": []map[string]any{{"role": "user", "content": fmt.Sprintf("draw nano banana %d", i)}}}})
	}
	chat, out := runBatch(t, ctx, c, openai.BatchNewParamsEndpointV1ChatCompletions, chatLines)
	for id, l := range out {
		var cc openai.ChatCompletion
		if err := json.Unmarshal(l.Response.Body, &cc); err != nil || cc.Object != "chat.completion" || len(cc.Choices) != 1 {
			t.Fatalf("%s: %v %.300s", id, err, l.Response.Body)
		}
		m := batchImage.FindAllStringSubmatch(cc.Choices[0].Message.Content, -1)
		if len(m) != 1 {
			t.Fatalf("%s: %d images in %.300q, want 1", id, len(m), cc.Choices[0].Message.Content)
		}
		if id == "chat-7" {
			if strings.HasPrefix(m[0][1], "data:") {
				assertPNG(t, m[0][1])
			} else {
				fetchPNG(t, m[0][1])
			}
		}
	}

	var imageLines []map[string]any
	for i := range 5 {
		imageLines = append(imageLines, map[string]any{"custom_id": fmt.Sprintf("img-%d", i), "method": "POST",
			"url": "/v1/images/generations", "body": map[string]any{"model": model,
				"prompt": fmt.Sprintf("%s %d", imagePrompt, i)}})
	}
	imgs, out := runBatch(t, ctx, c, openai.BatchNewParamsEndpointV1ImagesGenerations, imageLines)
	for id, l := range out {
		var r openai.ImagesResponse
		if err := json.Unmarshal(l.Response.Body, &r); err != nil || len(r.Data) != 1 ||
			!strings.HasPrefix(r.Data[0].URL, "http") {
			t.Fatalf("%s: %v %.300s", id, err, l.Response.Body)
		}
		fetchPNG(t, r.Data[0].URL)
	}

	// Every line one upstream call, all to the reseller.
	assertUpstreamCalls(t, kindNamed("openai"), 25)

	// Batches.ListAutoPaging shows both.
	listed := map[string]openai.Batch{}
	iter := c.Batches.ListAutoPaging(ctx, openai.BatchListParams{})
	for iter.Next() {
		listed[iter.Current().ID] = iter.Current()
	}
	if err := iter.Err(); err != nil {
		t.Fatal(err)
	}
	for _, b := range []*openai.Batch{chat, imgs} {
		if got, ok := listed[b.ID]; !ok || got.Status != openai.BatchStatusCompleted || got.OutputFileID != b.OutputFileID {
			t.Errorf("Batches.List: %s %v %s", b.ID, ok, got.RawJSON())
		}
	}
}
