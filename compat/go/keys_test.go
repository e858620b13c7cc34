package compat

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/openai/openai-go/v3"
)

// admin calls the gateway's admin API with the admin key (net/http, as an operator's program would) and
// decodes its JSON answer into out.
func admin(t *testing.T, method, path string, body any, out any) int {
	t.Helper()
	var r io.Reader
	if body != nil {
		b, err := json.Marshal(body)
		if err != nil {
			t.Fatal(err)
		}
		r = bytes.NewReader(b)
	}
	req, err := http.NewRequestWithContext(ctx(t), method, strings.TrimSuffix(env.baseURL, "/v1")+path, r)
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Authorization", "Bearer "+env.adminKey)
	req.Header.Set("Content-Type", "application/json")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	if err := json.Unmarshal(b, out); err != nil {
		t.Fatalf("%s %s: %d %s", method, path, resp.StatusCode, b)
	}
	return resp.StatusCode
}

// TestKeyMadeAtRunTime: a key made with POST /admin/keys works with the SDK, unchanged, until
// DELETE /admin/keys/{id} revokes it; then the SDK's error is a 401 saying the key was revoked.
func TestKeyMadeAtRunTime(t *testing.T) {
	cleanFakes(t)
	// Unique per run, so that the case can run again on the same `serve` stack (revoked names stay taken).
	name := fmt.Sprintf("sdk-go-%d", time.Now().UnixNano())
	var made struct {
		ID, Name, Key string
	}
	if code := admin(t, "POST", "/admin/keys", map[string]string{"name": name, "team": "compat"}, &made); code != 201 ||
		!strings.HasPrefix(made.Key, "ng-") || made.Name != name {
		t.Fatalf("POST /admin/keys: %d %+v", code, made)
	}

	c := newClient(made.Key)
	it := c.Models.ListAutoPaging(ctx(t))
	var ids []string
	for it.Next() {
		ids = append(ids, it.Current().ID)
	}
	if err := it.Err(); err != nil {
		t.Fatal(err)
	}
	want := []string{env.modelBoth, env.modelPro}
	for _, k := range kinds {
		want = append(want, k.model)
	}
	slices.Sort(want)
	if slices.Sort(ids); !slices.Equal(ids, want) {
		t.Errorf("the new key sees %q, want %q", ids, want)
	}
	r, err := c.Chat.Completions.New(ctx(t), openai.ChatCompletionNewParams{Model: kinds[0].model, Messages: prompt})
	if err != nil {
		t.Fatal(err)
	}
	images := markdownImages(r.Choices[0].Message.Content)
	if len(images) != 1 {
		t.Fatalf("%d images in %.200q", len(images), r.Choices[0].Message.Content)
	}
	assertPNG(t, images[0])

	var revoked struct {
		RevokedAt *time.Time `json:"revoked_at"`
	}
	if code := admin(t, "DELETE", "/admin/keys/"+made.ID, nil, &revoked); code != 200 || revoked.RevokedAt == nil {
		t.Fatalf("DELETE /admin/keys/%s: %d %+v", made.ID, code, revoked)
	}
	_, err = c.Models.List(ctx(t))
	e := apiError(t, err, 401, "invalid_api_key")
	if e.Message != "This API key was revoked." {
		t.Errorf("message %q, want the key's revocation", e.Message)
	}
}
