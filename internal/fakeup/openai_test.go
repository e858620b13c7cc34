package fakeup

import (
	"bytes"
	"encoding/json"
	"net/http"
	"strings"
	"testing"
)

type chatCompletion struct {
	ID      string `json:"id"`
	Object  string `json:"object"`
	Created int64  `json:"created"`
	Model   string `json:"model"`
	Choices []struct {
		Index   int `json:"index"`
		Message struct {
			Role    string `json:"role"`
			Content string `json:"content"`
			Images  []struct {
				Type     string `json:"type"`
				ImageURL struct {
					URL string `json:"url"`
				} `json:"image_url"`
			} `json:"images"`
		} `json:"message"`
		FinishReason string `json:"finish_reason"`
	} `json:"choices"`
	Usage struct {
		PromptTokens      int            `json:"prompt_tokens"`
		CompletionTokens  int            `json:"completion_tokens"`
		TotalTokens       int            `json:"total_tokens"`
		PromptDetails     map[string]int `json:"prompt_tokens_details"`
		CompletionDetails map[string]int `json:"completion_tokens_details"`
	} `json:"usage"`
}

// markdownImages returns the base64 of each ![image](data:image/png;base64,...) in s (a regexp takes
// seconds on megabytes under the race detector).
func markdownImages(s string) []string {
	const open = "![image](data:image/png;base64,"
	var out []string
	for {
		i := strings.Index(s, open)
		if i < 0 {
			return out
		}
		s = s[i+len(open):]
		j := strings.IndexByte(s, ')')
		if j < 0 {
			return out
		}
		out = append(out, s[:j])
		s = s[j+1:]
	}
}

func TestOpenAIChatMarkdownImages(t *testing.T) {
	s := startT(t, Options{Kind: OpenAI, Key: testKey})
	const size = 1_500_000
	s.SetImageSize(size)
	s.SetImages(2)
	a := do(t, "POST", chatURL(s), chatBody, bearer(testKey))
	if a.status != 200 || a.err != nil {
		t.Fatalf("status %d, err %v: %s", a.status, a.err, clipS(string(a.body)))
	}
	if ct := a.header.Get("Content-Type"); ct != "application/json" {
		t.Errorf("Content-Type %q", ct)
	}
	var c chatCompletion
	if err := json.Unmarshal(a.body, &c); err != nil {
		t.Fatal(err)
	}
	if c.Object != "chat.completion" || c.Model != "gemini-2.5-flash-image-preview" || !strings.HasPrefix(c.ID, "chatcmpl-") || c.Created < 1e9 {
		t.Errorf("envelope: %+v", c)
	}
	if len(c.Choices) != 1 || c.Choices[0].FinishReason != "stop" || c.Choices[0].Message.Role != "assistant" {
		t.Fatalf("choices: %+v", c.Choices)
	}
	content := c.Choices[0].Message.Content
	if !strings.HasPrefix(content, Text+"\n\n![image](data:image/png;base64,") {
		t.Errorf("content starts %q", clipS(content))
	}
	m := markdownImages(content)
	if len(m) != 2 || !strings.Contains(content, ")\n\n![image](") {
		t.Fatalf("found %d markdown images", len(m))
	}
	for i, mm := range m {
		if raw := checkPNG(t, mm, size); !bytes.Equal(raw, NthPNG(size, i)) {
			t.Errorf("image %d is not NthPNG(size, %d)", i, i)
		}
	}
	u := c.Usage
	if u.CompletionTokens != 2*ImageTokens+8 || u.PromptTokens != 540 || u.TotalTokens != u.PromptTokens+u.CompletionTokens {
		t.Errorf("usage %+v", u)
	}
	if len(u.PromptDetails) != 4 || len(u.CompletionDetails) != 3 {
		t.Errorf("usage details %v %v", u.PromptDetails, u.CompletionDetails)
	}
	if got := s.LastAuth(); got != "Bearer "+testKey {
		t.Errorf("LastAuth %q", got)
	}
}

func TestOpenAIImagesStyle(t *testing.T) {
	s := startT(t, Options{Kind: OpenAI})
	s.SetResellerStyle(StyleImages)
	s.SetImageSize(5000)
	a := do(t, "POST", chatURL(s), chatBody, nil)
	var c chatCompletion
	if err := json.Unmarshal(a.body, &c); err != nil || a.status != 200 {
		t.Fatalf("%d %v", a.status, err)
	}
	msg := c.Choices[0].Message
	if msg.Content != Text || len(msg.Images) != 1 || msg.Images[0].Type != "image_url" {
		t.Fatalf("message %+v", msg)
	}
	b64, ok := strings.CutPrefix(msg.Images[0].ImageURL.URL, "data:image/png;base64,")
	if !ok {
		t.Fatalf("url %q", clipS(msg.Images[0].ImageURL.URL))
	}
	checkPNG(t, b64, 5000)
}

func TestOpenAITextOnly(t *testing.T) {
	s := startT(t, Options{Kind: OpenAI})
	s.SetOutcome(OutcomeTextOnly)
	var c chatCompletion
	a := do(t, "POST", chatURL(s), chatBody, nil)
	if err := json.Unmarshal(a.body, &c); err != nil {
		t.Fatal(err)
	}
	if c.Choices[0].Message.Content != Text || c.Usage.CompletionTokens != 8 {
		t.Fatalf("%+v", c)
	}
}

type chunk struct {
	Object  string `json:"object"`
	Model   string `json:"model"`
	Choices []struct {
		Delta struct {
			Role    *string `json:"role"`
			Content *string `json:"content"`
		} `json:"delta"`
		FinishReason *string `json:"finish_reason"`
	} `json:"choices"`
	Usage *struct {
		CompletionTokens int `json:"completion_tokens"`
	} `json:"usage"`
}

func TestOpenAIStreamLayout(t *testing.T) {
	s := startT(t, Options{Kind: OpenAI})
	s.SetImages(2)
	s.SetImageSize(300_000)
	plain := do(t, "POST", chatURL(s), chatBody, nil)
	var whole chatCompletion
	if err := json.Unmarshal(plain.body, &whole); err != nil {
		t.Fatal(err)
	}

	for _, includeUsage := range []bool{false, true} {
		body := chatStreamBody
		if includeUsage {
			body = chatStreamUsageBody
		}
		a := do(t, "POST", chatURL(s), body, nil)
		if a.status != 200 || a.header.Get("Content-Type") != "text/event-stream" {
			t.Fatalf("status %d, Content-Type %q", a.status, a.header.Get("Content-Type"))
		}
		evs := sseEvents(t, a.body, "\n\n")
		if evs[len(evs)-1] != "[DONE]" {
			t.Fatalf("last event %q", clipS(evs[len(evs)-1]))
		}
		evs = evs[:len(evs)-1]
		// role, text, two images, finish, [usage]
		want := 5
		if includeUsage {
			want = 6
		}
		if len(evs) != want {
			t.Fatalf("include_usage=%v: %d events", includeUsage, len(evs))
		}
		var content strings.Builder
		for i, e := range evs {
			var c chunk
			if err := json.Unmarshal([]byte(e), &c); err != nil {
				t.Fatalf("event %d: %v", i, err)
			}
			hasUsageKey := strings.Contains(e, `"usage":`)
			isUsage := includeUsage && i == len(evs)-1
			switch {
			case isUsage:
				if len(c.Choices) != 0 || !strings.Contains(e, `"choices":[]`) || c.Usage == nil || c.Usage.CompletionTokens != 2*ImageTokens+8 {
					t.Errorf("usage chunk %s", e)
				}
				continue
			case includeUsage && !strings.Contains(e, `"usage":null`):
				t.Errorf("event %d lacks usage:null", i)
			case !includeUsage && hasUsageKey:
				t.Errorf("event %d has usage without include_usage", i)
			}
			if c.Object != "chat.completion.chunk" || len(c.Choices) != 1 {
				t.Fatalf("event %d: %s", i, clipS(e))
			}
			ch := c.Choices[0]
			switch {
			case i == 0 && (ch.Delta.Role == nil || *ch.Delta.Role != "assistant"):
				t.Errorf("first chunk has no role")
			case i == len(evs)-1-b2i(includeUsage):
				if ch.FinishReason == nil || *ch.FinishReason != "stop" || !strings.Contains(e, `"delta":{}`) {
					t.Errorf("finish chunk %s", e)
				}
			case ch.FinishReason != nil:
				t.Errorf("event %d has finish_reason", i)
			}
			if ch.Delta.Content != nil {
				content.WriteString(*ch.Delta.Content)
			}
		}
		if content.String() != whole.Choices[0].Message.Content {
			t.Errorf("streamed content differs from the non-stream content")
		}
		if n := len(markdownImages(evs[2])) + len(markdownImages(evs[3])); n != 2 {
			t.Errorf("image chunks hold %d images", n)
		}
	}
}

func b2i(b bool) int {
	if b {
		return 1
	}
	return 0
}

func TestOpenAIAuthAndBadRequests(t *testing.T) {
	s := startT(t, Options{Kind: OpenAI, Key: testKey})
	cases := []struct {
		name   string
		body   string
		header map[string]string
		status int
		want   []byte // exact body, when a fixture
		code   string
	}{
		{"wrong key", chatBody, bearer("sk-wrong"), 401, Fixture("openai/error_401_invalid_api_key.json"), ""},
		{"no key", chatBody, nil, 401, Fixture("openai/error_401_invalid_api_key.json"), ""},
		{"no Bearer", chatBody, map[string]string{"Authorization": testKey}, 401, Fixture("openai/error_401_invalid_api_key.json"), ""},
		{"not JSON", `{"model": `, bearer(testKey), 400, Fixture("openai/error_400_invalid_request.json"), ""},
		{"no messages", `{"model":"m"}`, bearer(testKey), 400, nil, "missing_required_parameter"},
		{"good", chatBody, bearer(testKey), 200, nil, ""},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			a := do(t, "POST", chatURL(s), c.body, c.header)
			if a.status != c.status {
				t.Fatalf("status %d, want %d: %s", a.status, c.status, clipS(string(a.body)))
			}
			if c.want != nil && !bytes.Equal(a.body, c.want) {
				t.Errorf("body %s", a.body)
			}
			if c.code != "" && !strings.Contains(string(a.body), `"code": "`+c.code+`"`) {
				t.Errorf("body %s", a.body)
			}
		})
	}
	open := startT(t, Options{Kind: OpenAI})
	if a := do(t, "POST", chatURL(open), chatBody, bearer("anything")); a.status != 200 {
		t.Errorf("keyless server refused a key: %d", a.status)
	}
	if a := do(t, "POST", chatURL(open), chatBody, nil); a.status != 200 {
		t.Errorf("keyless server refused no key: %d", a.status)
	}
}

func TestOpenAIModelsAndUnknownPath(t *testing.T) {
	s := startT(t, Options{Kind: OpenAI, Key: testKey})
	a := do(t, "GET", s.URL()+"/models", "", bearer(testKey))
	if a.status != 200 || !bytes.Equal(a.body, Fixture("openai/response_models.json")) {
		t.Fatalf("models: %d %s", a.status, a.body)
	}
	if a := do(t, "GET", s.URL()+"/models", "", nil); a.status != http.StatusUnauthorized {
		t.Errorf("models without key: %d", a.status)
	}
	a = do(t, "POST", s.URL()+"/images/edits", "{}", bearer(testKey))
	if a.status != 404 || !json.Valid(a.body) || !strings.Contains(string(a.body), "Invalid URL (POST /v1/images/edits)") {
		t.Errorf("unknown path: %d %s", a.status, a.body)
	}
	if s.LastPath() != "/v1/images/edits" || s.Requests() != 3 {
		t.Errorf("LastPath %q, Requests %d", s.LastPath(), s.Requests())
	}
}
