package e2e

import (
	"bufio"
	"encoding/json"
	"net"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"

	"nanogate/internal/fakeup"
)

func TestChatReturnsImageWithBilledUsage(t *testing.T) {
	e := startEnv(t, opts{})
	e.cheap.SetImageSize(1500 << 10) // a real-sized image: 1.5 MB of PNG
	resp := e.post(t, chatBody(""), "x-request-id", "my-trace-42")
	body := readAll(t, resp)
	if resp.StatusCode != 200 {
		t.Fatalf("status %d: %.300s", resp.StatusCode, body)
	}
	if got := resp.Header.Get("x-request-id"); got != "my-trace-42" {
		t.Errorf("x-request-id = %q, want the client's", got)
	}
	if got := resp.Header.Get("x-nanogate-provider"); got != "cheap" {
		t.Errorf("x-nanogate-provider = %q, want cheap (the cheaper provider)", got)
	}
	var c completion
	if err := json.Unmarshal(body, &c); err != nil {
		t.Fatal(err)
	}
	if c.Object != "chat.completion" || c.Model != model || len(c.Choices) != 1 || c.Choices[0].FinishReason != "stop" {
		t.Fatalf("unexpected completion: %.300s", body)
	}
	m := mdImage.FindStringSubmatch(c.Choices[0].Message.Content)
	if m == nil {
		t.Fatalf("no markdown image in content %.200q", c.Choices[0].Message.Content)
	}
	sameBytes(t, decodeDataURL(t, "data:"+m[1]+";base64,"+m[2]), fakeup.PNG(1500<<10))
	if !strings.HasPrefix(c.Choices[0].Message.Content, fakeup.Text+"\n\n![image](") {
		t.Errorf("content does not start with the text then the image: %.100q", c.Choices[0].Message.Content)
	}
	// Usage: 1290 per image whatever the upstream said; text tokens kept.
	u := c.Usage
	if u.CompletionTokensDetails.ImageTokens != 1290 || u.CompletionTokens != 1290+8 || u.PromptTokens != 540 || u.TotalTokens != 540+1298 {
		t.Errorf("usage = %+v", u)
	}
	// The provider got its own key and its own model name.
	if e.cheap.LastAuth() != "Bearer "+upstreamK1 {
		t.Errorf("upstream auth = %q", e.cheap.LastAuth())
	}
	var sent map[string]any
	json.Unmarshal(e.cheap.LastBody(), &sent)
	if sent["model"] != "upstream-model-a" {
		t.Errorf("upstream model = %v", sent["model"])
	}
}

func TestChatUsageBillsTokensPerImageWhateverUpstreamSays(t *testing.T) {
	e := startEnv(t, opts{})
	e.cheap.SetImages(2)
	e.cheap.SetTextTokens(0)
	var c completion
	resp := e.post(t, chatBody(""))
	if err := json.Unmarshal(readAll(t, resp), &c); err != nil {
		t.Fatal(err)
	}
	if n := len(mdImage.FindAllString(c.Choices[0].Message.Content, -1)); n != 2 {
		t.Fatalf("images = %d, want 2", n)
	}
	if c.Usage.CompletionTokensDetails.ImageTokens != 2580 || c.Usage.CompletionTokens != 2580 {
		t.Errorf("usage = %+v", c.Usage)
	}
}

func TestChatImageFormats(t *testing.T) {
	e := startEnv(t, opts{})
	e.cheap.SetImages(2)
	want0, want1 := fakeup.NthPNG(0, 0), fakeup.NthPNG(0, 1)
	t.Run("data_url", func(t *testing.T) {
		var c completion
		json.Unmarshal(readAll(t, e.post(t, chatBody(""), "x-nanogate-image-format", "data_url")), &c)
		msg := c.Choices[0].Message
		sameBytes(t, decodeDataURL(t, msg.Content), want0)
		if len(msg.Images) != 1 {
			t.Fatalf("images = %d, want the second image in message.images", len(msg.Images))
		}
		sameBytes(t, decodeDataURL(t, msg.Images[0].ImageURL.URL), want1)
	})
	t.Run("images", func(t *testing.T) {
		var c completion
		json.Unmarshal(readAll(t, e.post(t, chatBody(""), "x-nanogate-image-format", "images")), &c)
		msg := c.Choices[0].Message
		if msg.Content != fakeup.Text {
			t.Errorf("content = %q, want the text alone", msg.Content)
		}
		if len(msg.Images) != 2 || msg.Images[0].Type != "image_url" {
			t.Fatalf("images = %+v", msg.Images)
		}
		sameBytes(t, decodeDataURL(t, msg.Images[0].ImageURL.URL), want0)
		sameBytes(t, decodeDataURL(t, msg.Images[1].ImageURL.URL), want1)
	})
	t.Run("bad header", func(t *testing.T) {
		expectError(t, e.post(t, chatBody(""), "x-nanogate-image-format", "gif"), 400, "invalid_request")
	})
	t.Run("openrouter style upstream", func(t *testing.T) {
		e.cheap.SetResellerStyle(fakeup.StyleImages)
		defer e.cheap.SetResellerStyle(fakeup.StyleMarkdown)
		var c completion
		json.Unmarshal(readAll(t, e.post(t, chatBody(""))), &c)
		if n := len(mdImage.FindAllString(c.Choices[0].Message.Content, -1)); n != 2 {
			t.Fatalf("markdown images = %d, want 2 from message.images upstream", n)
		}
	})
}

// sseEvents reads data: payloads until [DONE] or EOF.
func sseEvents(t *testing.T, resp *http.Response) []string {
	t.Helper()
	defer resp.Body.Close()
	var out []string
	br := bufio.NewReaderSize(resp.Body, 1<<20)
	for {
		line, err := br.ReadString('\n')
		if strings.HasPrefix(line, "data: ") {
			out = append(out, strings.TrimSuffix(line[6:], "\n"))
		}
		if err != nil {
			return out
		}
	}
}

type chunk struct {
	Object  string `json:"object"`
	Choices []struct {
		Delta struct {
			Role    string `json:"role"`
			Content string `json:"content"`
			Refusal string `json:"refusal"`
		} `json:"delta"`
		FinishReason *string `json:"finish_reason"`
	} `json:"choices"`
	Usage *usage `json:"usage"`
}

func TestStreamRelaysChunksWithUsage(t *testing.T) {
	e := startEnv(t, opts{})
	e.cheap.SetImageSize(1 << 20)
	for _, include := range []bool{true, false} {
		extra := `,"stream":true`
		if include {
			extra += `,"stream_options":{"include_usage":true}`
		}
		resp := e.post(t, chatBody(extra))
		if resp.StatusCode != 200 || !strings.HasPrefix(resp.Header.Get("Content-Type"), "text/event-stream") {
			t.Fatalf("status %d, type %q", resp.StatusCode, resp.Header.Get("Content-Type"))
		}
		if resp.Header.Get("x-nanogate-provider") != "cheap" {
			t.Errorf("x-nanogate-provider = %q", resp.Header.Get("x-nanogate-provider"))
		}
		events := sseEvents(t, resp)
		if len(events) == 0 || events[len(events)-1] != "[DONE]" {
			t.Fatalf("stream does not end with [DONE]: %d events", len(events))
		}
		var content strings.Builder
		var finish string
		var u *usage
		for i, ev := range events[:len(events)-1] {
			var c chunk
			if err := json.Unmarshal([]byte(ev), &c); err != nil {
				t.Fatalf("event %d not JSON: %v", i, err)
			}
			if c.Object != "chat.completion.chunk" {
				t.Fatalf("event %d object %q", i, c.Object)
			}
			if i == 0 && (len(c.Choices) != 1 || c.Choices[0].Delta.Role != "assistant") {
				t.Fatalf("first chunk is not the role: %s", ev)
			}
			for _, ch := range c.Choices {
				content.WriteString(ch.Delta.Content)
				if ch.FinishReason != nil {
					finish = *ch.FinishReason
				}
			}
			if c.Usage != nil {
				if len(c.Choices) != 0 {
					t.Errorf("usage chunk has choices")
				}
				u = c.Usage
			}
		}
		if finish != "stop" {
			t.Errorf("finish_reason = %q", finish)
		}
		m := mdImage.FindStringSubmatch(content.String())
		if m == nil {
			t.Fatalf("no image in streamed content")
		}
		sameBytes(t, decodeDataURL(t, "data:"+m[1]+";base64,"+m[2]), fakeup.PNG(1<<20))
		if include && (u == nil || u.CompletionTokensDetails.ImageTokens != 1290 || u.CompletionTokens != 1298) {
			t.Errorf("include_usage: usage = %+v", u)
		}
		if !include && u != nil {
			t.Errorf("usage chunk sent without include_usage")
		}
	}
	// The gateway always asks the upstream for usage (it bills from it).
	var sent map[string]any
	json.Unmarshal(e.cheap.LastBody(), &sent)
	if so, _ := sent["stream_options"].(map[string]any); so["include_usage"] != true {
		t.Errorf("upstream stream_options = %v", sent["stream_options"])
	}
}

// TestStreamIsRelayedAsItArrives holds the upstream after its text events
// (until the client leaves) and checks the client already has them: nothing
// is buffered to the end of the stream.
func TestStreamIsRelayedAsItArrives(t *testing.T) {
	e := startEnv(t, opts{})
	e.cheap.SetFault(fakeup.Fault{StallMidStream: time.Minute})
	conn, err := net.Dial("tcp", e.gw.Addr)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	body := chatBody(`,"stream":true`)
	req := "POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer " + clientKey +
		"\r\nContent-Type: application/json\r\nContent-Length: " + itoa(len(body)) + "\r\n\r\n" + body
	if _, err := conn.Write([]byte(req)); err != nil {
		t.Fatal(err)
	}
	conn.SetReadDeadline(time.Now().Add(20 * time.Second))
	br := bufio.NewReader(conn)
	sawText := false
	for !sawText {
		line, err := br.ReadString('\n')
		if err != nil {
			t.Fatalf("stream stalled before the text arrived (buffered?): %v", err)
		}
		sawText = strings.Contains(line, fakeup.Text)
	}
	// Leaving ends the upstream call.
	conn.Close()
	waitFor(t, 10*time.Second, "the upstream call to be canceled", func() bool { return e.cheap.Canceled() == 1 })
}

func TestClientDisconnectCancelsUpstream(t *testing.T) {
	e := startEnv(t, opts{})
	e.cheap.SetLatency(time.Minute)
	conn, err := net.Dial("tcp", e.gw.Addr)
	if err != nil {
		t.Fatal(err)
	}
	body := chatBody("")
	req := "POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer " + clientKey +
		"\r\nContent-Type: application/json\r\nContent-Length: " + itoa(len(body)) + "\r\n\r\n" + body
	conn.Write([]byte(req))
	waitFor(t, 10*time.Second, "the upstream to receive the request", func() bool { return e.cheap.InFlight() == 1 })
	conn.Close()
	waitFor(t, 10*time.Second, "the upstream call to be canceled", func() bool { return e.cheap.Canceled() == 1 })
	if e.dear.Requests() != 0 {
		t.Errorf("a canceled request was failed over to another provider")
	}
	waitFor(t, 10*time.Second, "the log line", func() bool {
		for _, l := range logLines(t, e.gw) {
			if l["client_gone"] == true {
				return true
			}
		}
		return false
	})
}

func itoa(n int) string { return strconv.Itoa(n) }

// TestStreamCutMidwayEndsWithErrorEvent: once bytes reached the client a
// stream cannot fail over; it ends with OpenAI's stream error shape and
// [DONE] so SDKs raise instead of hanging.
func TestStreamCutMidwayEndsWithErrorEvent(t *testing.T) {
	e := startEnv(t, opts{})
	e.cheap.SetImageSize(256 << 10)
	e.cheap.SetFault(fakeup.Fault{DropMidBody: true})
	resp := e.post(t, chatBody(`,"stream":true`))
	if resp.StatusCode != 200 {
		t.Fatalf("status %d", resp.StatusCode)
	}
	events := sseEvents(t, resp)
	if len(events) < 3 || events[len(events)-1] != "[DONE]" {
		t.Fatalf("stream did not end with [DONE]: %q", events)
	}
	var errEv struct {
		Error *struct {
			Message string `json:"message"`
			Code    string `json:"code"`
		} `json:"error"`
	}
	if err := json.Unmarshal([]byte(events[len(events)-2]), &errEv); err != nil || errEv.Error == nil || errEv.Error.Code != "upstream_error" {
		t.Fatalf("last event before [DONE] is not an error: %.200s", events[len(events)-2])
	}
	for _, ev := range events {
		if strings.Contains(ev, "base64,") {
			t.Fatalf("a cut image was relayed")
		}
	}
	if e.dear.Requests() != 0 {
		t.Fatalf("a stream that had started was retried elsewhere")
	}
}
