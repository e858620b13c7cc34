package proxy

import (
	"bufio"
	"bytes"
	"encoding/json"
	"io"
	"net"
	"strconv"
	"strings"
	"testing"
	"time"

	"nanogate/internal/fakeup"
)

// chatCompletion is the part of a chat.completion the tests read.
type chatCompletion struct {
	ID      string `json:"id"`
	Object  string `json:"object"`
	Model   string `json:"model"`
	Choices []struct {
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
		PromptTokens     int64 `json:"prompt_tokens"`
		CompletionTokens int64 `json:"completion_tokens"`
		TotalTokens      int64 `json:"total_tokens"`
	} `json:"usage"`
}

// TestChatCompletionIsAnsweredLoggedAndBilledOnce: a chat completion is
// OpenAI's chat.completion with the image inline as markdown, the client's
// request id echoed and the provider named in headers; it gets one request
// log line with who asked, who served, usage and cost, and one usage record
// at that cost.
func TestChatCompletionIsAnsweredLoggedAndBilledOnce(t *testing.T) {
	ts := startServer(t, serverOpts{})
	r := ts.postJSON(t, "/v1/chat/completions", ciKey, chatBody(testModel, ""), "x-request-id", "trace-chat-1")
	if r.status != 200 {
		t.Fatalf("%d %s", r.status, r.body)
	}
	if r.header.Get("x-request-id") != "trace-chat-1" || r.header.Get("x-nanogate-provider") != "up" ||
		r.header.Get("Content-Type") != "application/json" {
		t.Errorf("headers %v", r.header)
	}
	var c chatCompletion
	decode(t, r, &c)
	if c.Object != "chat.completion" || c.Model != testModel || len(c.Choices) != 1 {
		t.Fatalf("completion %+v", c)
	}
	ch := c.Choices[0]
	if ch.Message.Role != "assistant" || ch.FinishReason != "stop" ||
		!strings.HasPrefix(ch.Message.Content, fakeup.Text+"\n\n![image](data:image/png;base64,"+fakeup.PNGBase64(0)) {
		t.Errorf("choice %+v", ch)
	}
	if c.Usage.PromptTokens != 540 || c.Usage.CompletionTokens != 8+fakeup.ImageTokens ||
		c.Usage.TotalTokens != c.Usage.PromptTokens+c.Usage.CompletionTokens {
		t.Errorf("usage %+v", c.Usage)
	}
	if ts.up.Requests() != 1 || ts.up.LastAuth() != "Bearer "+upKey {
		t.Errorf("upstream saw %d requests, auth %q", ts.up.Requests(), ts.up.LastAuth())
	}

	l := ts.requestLine(t, "trace-chat-1")
	for k, want := range map[string]any{"route": "chat", "model": testModel, "stream": false, "status": int64(200),
		"key": "ci", "team": "design", "provider": "up", "attempts": int64(1), "images": int64(1),
		"prompt_tokens": int64(540), "completion_tokens": int64(8 + fakeup.ImageTokens), "finish_reason": "stop",
		"client_ip": "127.0.0.1"} {
		if l[k] != want {
			t.Errorf("log field %s = %#v, want %#v", k, l[k], want)
		}
	}
	if tried, _ := l["tried"].([]any); len(tried) != 1 || tried[0] != "up" {
		t.Errorf("log field tried = %#v", l["tried"])
	}
	cost, _ := l["cost_micros"].(int64)
	if cost <= 35000 { // the image's 0.035 USD and the tokens
		t.Errorf("cost_micros %d", cost)
	}
	if _, ok := l["error_code"]; ok {
		t.Errorf("a success logged an error code: %v", l)
	}

	u := ts.usageOf(t, ciKey)
	if u.Key.Name != "ci" || u.Key.Requests != 1 || u.Key.Failed != 0 || u.Key.Images != 1 ||
		u.Key.CostUSD != float64(cost)/1e6 || u.Team == nil || u.Team.Name != "design" || u.Team.Requests != 1 {
		t.Errorf("usage after one request: %+v team %+v", u.Key, u.Team)
	}
	if st := ts.rec.Stats(); st.Applied != 1 || st.Duplicates != 0 {
		t.Errorf("recorder applied %d records (%d duplicates), want 1", st.Applied, st.Duplicates)
	}
}

// TestChatRequestIDIsReplacedWhenUnsafe: a request id that could break a
// log line or a header is replaced by one of the gateway's own, on
// answers and errors alike.
func TestChatRequestIDIsReplacedWhenUnsafe(t *testing.T) {
	ts := startServer(t, serverOpts{})
	for _, id := range []string{`has"quote`, strings.Repeat("x", 200)} {
		r := ts.postJSON(t, "/v1/chat/completions", ciKey, chatBody(testModel, ""), "x-request-id", id)
		got := r.header.Get("x-request-id")
		if r.status != 200 || got == id || !strings.HasPrefix(got, "req_") {
			t.Errorf("id %.20q: %d, x-request-id %q", id, r.status, got)
		}
	}
	r := ts.postJSON(t, "/v1/chat/completions", "", chatBody(testModel, ""), "x-request-id", "trace-no-key")
	if r.status != 401 || r.header.Get("x-request-id") != "trace-no-key" {
		t.Errorf("refusal: %d, x-request-id %q", r.status, r.header.Get("x-request-id"))
	}
}

// TestChatImageFormatHeaderPicksTheRendering: x-nanogate-image-format
// renders the image as markdown (the default), as the data URL itself in
// content, or in message.images; any other value is a 400 naming the
// header, and no upstream call is made for it.
func TestChatImageFormatHeaderPicksTheRendering(t *testing.T) {
	ts := startServer(t, serverOpts{})
	dataURL := "data:image/png;base64," + fakeup.PNGBase64(0)
	for _, tc := range []struct {
		format string
		check  func(c chatCompletion) bool
	}{
		{"markdown", func(c chatCompletion) bool {
			m := c.Choices[0].Message
			return strings.HasSuffix(m.Content, "![image]("+dataURL+")") && len(m.Images) == 0
		}},
		{"data_url", func(c chatCompletion) bool {
			m := c.Choices[0].Message
			return m.Content == dataURL && len(m.Images) == 0
		}},
		{"images", func(c chatCompletion) bool {
			m := c.Choices[0].Message
			return m.Content == fakeup.Text && len(m.Images) == 1 && m.Images[0].Type == "image_url" &&
				m.Images[0].ImageURL.URL == dataURL
		}},
	} {
		r := ts.postJSON(t, "/v1/chat/completions", ciKey, chatBody(testModel, ""), "x-nanogate-image-format", tc.format)
		var c chatCompletion
		decode(t, r, &c)
		if r.status != 200 || len(c.Choices) != 1 || !tc.check(c) {
			t.Errorf("format %s: %d %.300s", tc.format, r.status, r.body)
		}
	}
	before := ts.up.Requests()
	r := ts.postJSON(t, "/v1/chat/completions", ciKey, chatBody(testModel, ""), "x-nanogate-image-format", "gif")
	wantError(t, r, 400, "invalid_request_error", "invalid_request", "x-nanogate-image-format")
	if ts.up.Requests() != before {
		t.Error("a bad format header reached the upstream")
	}
}

// TestChatRefusesWhatItCannotServeBeforeTheUpstream: a body that is not
// JSON by its content type (415), not JSON (400), without messages (400),
// for a model no provider serves (404 model_not_found) or that the key may
// not use (403 model_not_allowed) never reaches the upstream, gets its
// request log line with the error code, and bills nothing.
func TestChatRefusesWhatItCannotServeBeforeTheUpstream(t *testing.T) {
	ts := startServer(t, serverOpts{})
	for _, tc := range []struct {
		name, key, ctype, body string
		status                 int
		code, param            string
	}{
		{"multipart", ciKey, "multipart/form-data; boundary=x", chatBody(testModel, ""), 415, "invalid_request", ""},
		{"not json", ciKey, "application/json", `{"model":`, 400, "invalid_request", ""},
		{"no messages", ciKey, "application/json", `{"model":"` + testModel + `"}`, 400, "invalid_request", "messages"},
		{"unknown model", ciKey, "application/json", chatBody("no-such-model", ""), 404, "model_not_found", "model"},
		{"model not allowed", narrowKey, "application/json", chatBody(testModel, ""), 403, "model_not_allowed", "model"},
	} {
		rid := "trace-refused-" + strings.ReplaceAll(tc.name, " ", "-")
		r := send(t, "POST", ts.url+"/v1/chat/completions", tc.key, tc.ctype, []byte(tc.body), "x-request-id", rid)
		t.Run(tc.name, func(t *testing.T) {
			wantError(t, r, tc.status, "invalid_request_error", tc.code, tc.param)
			l := ts.requestLine(t, rid)
			if l["status"] != int64(tc.status) || l["error_code"] != tc.code || l["route"] != "chat" {
				t.Errorf("log line %v", l)
			}
		})
	}
	if n := ts.up.Requests(); n != 0 {
		t.Errorf("%d refused requests reached the upstream", n)
	}
	for _, key := range []string{ciKey, narrowKey} {
		if u := ts.usageOf(t, key); u.Key.Requests != 0 || u.Key.Failed != 0 {
			t.Errorf("refusals were billed: %+v", u.Key)
		}
	}
}

// TestChatUpstreamFailuresAnswerInTheEnvelope: an upstream 500 that made
// nothing is an overload a retry may fix (429 with retry-after, no
// x-should-retry: false); an upstream answer that is not JSON is a 502
// upstream_error the client should not retry. Both are logged with the
// upstream's error and counted as failed requests of the key.
func TestChatUpstreamFailuresAnswerInTheEnvelope(t *testing.T) {
	ts := startServer(t, serverOpts{})
	ts.up.SetFault(fakeup.Fault{Status: 500})
	r := ts.postJSON(t, "/v1/chat/completions", ciKey, chatBody(testModel, ""), "x-request-id", "trace-500")
	msg := wantError(t, r, 429, "requests", "rate_limit_exceeded", "")
	if r.header.Get("retry-after") != "1" || r.header.Get("retry-after-ms") != "1000" || r.header.Get("x-should-retry") != "" {
		t.Errorf("headers %v", r.header)
	}
	if !strings.Contains(msg, "upstream status 500") || strings.Contains(msg, upKey) {
		t.Errorf("message %q", msg)
	}
	l := ts.requestLine(t, "trace-500")
	if l["status"] != int64(429) || l["error_code"] != "rate_limit_exceeded" || !strings.Contains(l["error"].(string), "500") {
		t.Errorf("log line %v", l)
	}

	ts.up.SetFault(fakeup.Fault{Garbage: true})
	r = ts.postJSON(t, "/v1/chat/completions", ciKey, chatBody(testModel, ""), "x-request-id", "trace-garbage")
	wantError(t, r, 502, "server_error", "upstream_error", "")
	if r.header.Get("x-should-retry") != "false" {
		t.Errorf("x-should-retry %q", r.header.Get("x-should-retry"))
	}
	if l := ts.requestLine(t, "trace-garbage"); l["status"] != int64(502) || l["error_code"] != "upstream_error" {
		t.Errorf("log line %v", l)
	}
	if u := ts.usageOf(t, ciKey); u.Key.Requests != 0 || u.Key.Failed != 2 || u.Key.CostUSD != 0 {
		t.Errorf("usage after two failures: %+v", u.Key)
	}
}

// TestChatRateLimitsShowInHeadersAndRefuse: with RPM and TPM limits on the
// key, answers carry OpenAI's x-ratelimit-* headers; past the RPM limit the
// request is a 429 naming the limit, with retry-after, and never reaches
// the upstream.
func TestChatRateLimitsShowInHeadersAndRefuse(t *testing.T) {
	ts := startServer(t, serverOpts{keyCI: "    rpm: 2\n    tpm: 100000\n"})
	for i, wantLeft := range []string{"1", "0"} {
		r := ts.postJSON(t, "/v1/chat/completions", ciKey, chatBody(testModel, ""))
		if r.status != 200 {
			t.Fatalf("request %d: %d %s", i, r.status, r.body)
		}
		h := r.header
		if h.Get("x-ratelimit-limit-requests") != "2" || h.Get("x-ratelimit-remaining-requests") != wantLeft ||
			h.Get("x-ratelimit-limit-tokens") != "100000" {
			t.Errorf("request %d: headers %v", i, h)
		}
		for _, name := range []string{"x-ratelimit-reset-requests", "x-ratelimit-reset-tokens"} {
			if _, err := time.ParseDuration(h.Get(name)); err != nil {
				t.Errorf("%s = %q", name, h.Get(name))
			}
		}
		left, err := strconv.Atoi(h.Get("x-ratelimit-remaining-tokens"))
		if err != nil || left >= 100000 || left < 0 {
			t.Errorf("x-ratelimit-remaining-tokens %q", h.Get("x-ratelimit-remaining-tokens"))
		}
	}
	r := ts.postJSON(t, "/v1/chat/completions", ciKey, chatBody(testModel, ""))
	msg := wantError(t, r, 429, "requests", "rate_limit_exceeded", "")
	if !strings.Contains(msg, "key ci") || !strings.Contains(msg, "(RPM)") {
		t.Errorf("message %q", msg)
	}
	secs, err := strconv.Atoi(r.header.Get("retry-after"))
	if err != nil || secs < 1 || r.header.Get("retry-after-ms") == "" || r.header.Get("x-ratelimit-remaining-requests") != "0" {
		t.Errorf("headers %v", r.header)
	}
	if ts.up.Requests() != 2 {
		t.Errorf("upstream saw %d requests, want 2", ts.up.Requests())
	}
	// Another key has limits of its own.
	if r := ts.postJSON(t, "/v1/chat/completions", opsKey, chatBody(testModel, "")); r.status != 200 ||
		r.header.Get("x-ratelimit-limit-requests") != "" {
		t.Errorf("ops: %d %v", r.status, r.header)
	}
}

// TestChatRetiredModelIsServedWithAWarning: a model id Google retired is
// served by its successor, with a Warning header naming both.
func TestChatRetiredModelIsServedWithAWarning(t *testing.T) {
	ts := startServer(t, serverOpts{})
	r := ts.postJSON(t, "/v1/chat/completions", ciKey, chatBody(retiredModel, ""))
	if r.status != 200 {
		t.Fatalf("%d %s", r.status, r.body)
	}
	w := r.header.Get("Warning")
	if !strings.HasPrefix(w, "299 nanogate ") || !strings.Contains(w, retiredModel) || !strings.Contains(w, "use "+testModel) {
		t.Errorf("Warning %q", w)
	}
	if r := ts.postJSON(t, "/v1/chat/completions", ciKey, chatBody(testModel, "")); r.header.Get("Warning") != "" {
		t.Errorf("a current model got a Warning: %q", r.header.Get("Warning"))
	}
}

// sseEvents splits an SSE body into its data payloads, checking that every
// event is a "data: " line followed by a blank line.
func sseEvents(t *testing.T, body []byte) []string {
	t.Helper()
	var out []string
	for _, ev := range strings.SplitAfter(string(body), "\n\n") {
		if ev == "" {
			continue
		}
		data, ok := strings.CutPrefix(ev, "data: ")
		if !ok || !strings.HasSuffix(data, "\n\n") || strings.Count(data, "\n") != 2 {
			t.Fatalf("not an SSE data event: %q", ev)
		}
		out = append(out, strings.TrimSuffix(data, "\n\n"))
	}
	return out
}

// chunk is a chat.completion.chunk as the tests read it.
type chunk struct {
	ID      string `json:"id"`
	Object  string `json:"object"`
	Model   string `json:"model"`
	Choices []struct {
		Delta struct {
			Role    string `json:"role"`
			Content string `json:"content"`
		} `json:"delta"`
		FinishReason *string `json:"finish_reason"`
	} `json:"choices"`
	Usage *struct {
		PromptTokens     int64 `json:"prompt_tokens"`
		CompletionTokens int64 `json:"completion_tokens"`
	} `json:"usage"`
	Error *struct {
		Message string `json:"message"`
		Code    string `json:"code"`
	} `json:"error"`
}

// TestChatStreamRelaysChunksThenDone: a stream is text/event-stream, not
// buffered by proxies, of chat.completion.chunk events under the request's
// id: the role, the text, the image as markdown, the finish reason, the
// usage chunk asked for by stream_options, then [DONE]. Its log line
// comes once the stream ended, and it is billed once.
func TestChatStreamRelaysChunksThenDone(t *testing.T) {
	ts := startServer(t, serverOpts{})
	r := ts.postJSON(t, "/v1/chat/completions", ciKey,
		chatBody(testModel, `,"stream":true,"stream_options":{"include_usage":true}`), "x-request-id", "trace-stream")
	if r.status != 200 {
		t.Fatalf("%d %s", r.status, r.body)
	}
	for k, want := range map[string]string{"Content-Type": "text/event-stream", "Cache-Control": "no-cache",
		"X-Accel-Buffering": "no", "x-nanogate-provider": "up", "x-request-id": "trace-stream"} {
		if got := r.header.Get(k); got != want {
			t.Errorf("%s = %q, want %q", k, got, want)
		}
	}
	events := sseEvents(t, r.body)
	if len(events) < 4 || events[len(events)-1] != "[DONE]" {
		t.Fatalf("events %q", events)
	}
	var content strings.Builder
	var finish []string
	var usage int
	for i, ev := range events[:len(events)-1] {
		var c chunk
		if err := json.Unmarshal([]byte(ev), &c); err != nil {
			t.Fatalf("event %d is not JSON: %q", i, ev)
		}
		if c.Object != "chat.completion.chunk" || c.ID != "chatcmpl-trace-stream" || c.Model != testModel || c.Error != nil {
			t.Errorf("event %d: %q", i, ev)
		}
		if i == 0 && (len(c.Choices) != 1 || c.Choices[0].Delta.Role != "assistant") {
			t.Errorf("the first chunk does not give the role: %q", ev)
		}
		for _, ch := range c.Choices {
			content.WriteString(ch.Delta.Content)
			if ch.FinishReason != nil {
				finish = append(finish, *ch.FinishReason)
			}
		}
		if c.Usage != nil {
			usage++
			if len(c.Choices) != 0 || c.Usage.PromptTokens != 540 || c.Usage.CompletionTokens != 8+fakeup.ImageTokens {
				t.Errorf("usage chunk %q", ev)
			}
			if i != len(events)-2 {
				t.Error("the usage chunk is not the last before [DONE]")
			}
		}
	}
	if want := fakeup.Text + "\n\n![image](data:image/png;base64," + fakeup.PNGBase64(0) + ")"; content.String() != want {
		t.Errorf("content %q, want %q", content.String(), want)
	}
	if len(finish) != 1 || finish[0] != "stop" || usage != 1 {
		t.Errorf("finish reasons %q, %d usage chunks", finish, usage)
	}

	l := ts.requestLine(t, "trace-stream")
	if l["stream"] != true || l["status"] != int64(200) || l["finish_reason"] != "stop" || l["images"] != int64(1) ||
		l["provider"] != "up" {
		t.Errorf("log line %v", l)
	}
	if u := ts.usageOf(t, ciKey); u.Key.Requests != 1 || u.Key.Images != 1 || u.Key.CostUSD != float64(l["cost_micros"].(int64))/1e6 {
		t.Errorf("usage %+v, log cost %v", u.Key, l["cost_micros"])
	}

	// Without stream_options there is no usage chunk.
	r = ts.postJSON(t, "/v1/chat/completions", ciKey, chatBody(testModel, `,"stream":true`))
	for _, ev := range sseEvents(t, r.body) {
		if strings.Contains(ev, `"usage":{`) {
			t.Errorf("usage chunk without include_usage: %q", ev)
		}
	}
}

// TestChatStreamThatFailsBeforeItStartsIsAPlainError: a stream whose
// upstream fails before the first event is answered as any failure, a JSON
// envelope with its status, not an event stream.
func TestChatStreamThatFailsBeforeItStartsIsAPlainError(t *testing.T) {
	ts := startServer(t, serverOpts{})
	ts.up.SetFault(fakeup.Fault{Garbage: true})
	r := ts.postJSON(t, "/v1/chat/completions", ciKey, chatBody(testModel, `,"stream":true`), "x-request-id", "trace-sfail")
	wantError(t, r, 502, "server_error", "upstream_error", "")
	if l := ts.requestLine(t, "trace-sfail"); l["stream"] != true || l["status"] != int64(502) || l["error_code"] != "upstream_error" {
		t.Errorf("log line %v", l)
	}
}

// TestChatStreamCutMidwayEndsWithAnErrorEvent: when the upstream dies
// after the stream started, the client gets what came, then an error event
// in OpenAI's stream error shape, then [DONE]; the log line keeps the
// error.
func TestChatStreamCutMidwayEndsWithAnErrorEvent(t *testing.T) {
	ts := startServer(t, serverOpts{})
	ts.up.SetFault(fakeup.Fault{DropMidBody: true})
	r := ts.postJSON(t, "/v1/chat/completions", ciKey, chatBody(testModel, `,"stream":true`), "x-request-id", "trace-cut")
	if r.status != 200 {
		t.Fatalf("%d %s", r.status, r.body)
	}
	events := sseEvents(t, r.body)
	if len(events) < 3 || events[len(events)-1] != "[DONE]" {
		t.Fatalf("events %q", events)
	}
	var last chunk
	if err := json.Unmarshal([]byte(events[len(events)-2]), &last); err != nil || last.Error == nil ||
		last.Error.Code != "upstream_error" || !strings.Contains(last.Error.Message, "mid-stream") {
		t.Errorf("the event before [DONE] is not the error: %q", events[len(events)-2])
	}
	if !strings.Contains(string(r.body), fakeup.Text) {
		t.Error("the text sent before the cut was not relayed")
	}
	l := ts.requestLine(t, "trace-cut")
	if e, _ := l["error"].(string); e == "" || l["stream"] != true {
		t.Errorf("log line %v", l)
	}
}

// TestChatClientThatLeavesEndsTheUpstreamCall: a client that closes its
// connection while the upstream works ends the upstream call; the request
// is logged as the client's going, with status 499.
func TestChatClientThatLeavesEndsTheUpstreamCall(t *testing.T) {
	ts := startServer(t, serverOpts{})
	ts.up.SetFault(fakeup.Fault{Hang: true})
	conn, err := net.Dial("tcp", strings.TrimPrefix(ts.url, "http://"))
	if err != nil {
		t.Fatal(err)
	}
	body := chatBody(testModel, "")
	var req bytes.Buffer
	req.WriteString("POST /v1/chat/completions HTTP/1.1\r\nHost: gw\r\nAuthorization: Bearer " + ciKey +
		"\r\nContent-Type: application/json\r\nx-request-id: trace-gone\r\nContent-Length: " + strconv.Itoa(len(body)) + "\r\n\r\n")
	req.WriteString(body)
	if _, err := conn.Write(req.Bytes()); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the upstream call", func() bool { return ts.up.InFlight() == 1 })
	conn.Close()
	waitFor(t, "the upstream call to end", func() bool { return ts.up.Canceled() == 1 })
	l := ts.requestLine(t, "trace-gone")
	if l["client_gone"] != true || l["status"] != int64(499) || l["error_code"] != "client_closed_request" {
		t.Errorf("log line %v", l)
	}
}

// TestChatOverAKeepAliveConnection: answers on one connection follow each
// other (the client watch leaves the next request's bytes alone).
func TestChatOverAKeepAliveConnection(t *testing.T) {
	ts := startServer(t, serverOpts{})
	ts.up.SetLatency(50 * time.Millisecond) // long enough for the client watch to start
	conn, err := net.Dial("tcp", strings.TrimPrefix(ts.url, "http://"))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	conn.SetDeadline(time.Now().Add(30 * time.Second)) // a bound against hanging, not a measure
	body := chatBody(testModel, "")
	one := "POST /v1/chat/completions HTTP/1.1\r\nHost: gw\r\nAuthorization: Bearer " + ciKey +
		"\r\nContent-Type: application/json\r\nContent-Length: " + strconv.Itoa(len(body)) + "\r\n\r\n" + body
	// Both requests at once: the second waits in the socket while the
	// first is served.
	if _, err := conn.Write([]byte(one + one)); err != nil {
		t.Fatal(err)
	}
	br := bufio.NewReader(conn)
	for i := range 2 {
		line, err := br.ReadString('\n')
		if err != nil || !strings.HasPrefix(line, "HTTP/1.1 200") {
			t.Fatalf("answer %d: %q %v", i, line, err)
		}
		n := -1
		for {
			h, err := br.ReadString('\n')
			if err != nil {
				t.Fatal(err)
			}
			if h == "\r\n" {
				break
			}
			if v, ok := strings.CutPrefix(strings.ToLower(h), "content-length: "); ok {
				n, _ = strconv.Atoi(strings.TrimSpace(v))
			}
		}
		if n <= 0 {
			t.Fatalf("answer %d has no length", i)
		}
		b := make([]byte, n)
		if _, err := io.ReadFull(br, b); err != nil {
			t.Fatal(err)
		}
		if !json.Valid(b) {
			t.Fatalf("answer %d is not JSON", i)
		}
	}
	if ts.up.Requests() != 2 {
		t.Errorf("upstream saw %d requests", ts.up.Requests())
	}
}
