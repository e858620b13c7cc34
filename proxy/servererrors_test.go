package proxy

import (
	"bufio"
	"encoding/json"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"go.uber.org/zap"
	"go.uber.org/zap/zaptest/observer"
)

// rawExchange writes req on a new connection and reads the answer the
// gateway writes before it closes the connection.
func rawExchange(t *testing.T, ts *testServer, req string) reply {
	t.Helper()
	c, err := net.Dial("tcp", strings.TrimPrefix(ts.url, "http://"))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if _, err := c.Write([]byte(req)); err != nil {
		t.Fatal(err)
	}
	c.SetReadDeadline(time.Now().Add(30 * time.Second)) // a bound against hanging, not a measure
	resp, err := http.ReadResponse(bufio.NewReader(c), nil)
	if err != nil {
		t.Fatalf("no HTTP answer: %v", err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	if !resp.Close {
		t.Error("the gateway keeps a connection open after a request it could not read")
	}
	return reply{resp.StatusCode, resp.Header, b}
}

// invalidLines returns the request log lines of requests the gateway could
// not read.
func (ts *testServer) invalidLines() []map[string]any {
	var out []map[string]any
	for _, l := range ts.requestLines() {
		if l["route"] == "invalid" {
			out = append(out, l)
		}
	}
	return out
}

// TestOversizeBodyIs413InTheEnvelope: a body over server.max_body_bytes is
// answered 413 request_too_large in OpenAI's envelope with the client's
// request id; the rest of the body is read first, so that the client gets
// the answer rather than a reset connection. It never reaches the
// upstream, and it gets a request log line.
func TestOversizeBodyIs413InTheEnvelope(t *testing.T) {
	ts := startServer(t, serverOpts{server: "  max_body_bytes: 4096\n"})
	body := `{"model":"` + testModel + `","messages":[{"role":"user","content":"` + strings.Repeat("a", 6000) + `"}]}`
	r := send(t, "POST", ts.url+"/v1/chat/completions", ciKey, "application/json", []byte(body), "x-request-id", "trace-big")
	wantError(t, r, 413, "invalid_request_error", "request_too_large", "")
	if r.header.Get("x-request-id") != "trace-big" {
		t.Errorf("x-request-id %q", r.header.Get("x-request-id"))
	}
	if ts.up.Requests() != 0 {
		t.Error("an oversize request reached the upstream")
	}
	lines := ts.invalidLines()
	if len(lines) != 1 || lines[0]["request_id"] != "trace-big" || lines[0]["status"] != int64(413) {
		t.Errorf("log lines %v", lines)
	}
	// A body within the bound is served.
	if r := ts.postJSON(t, "/v1/chat/completions", ciKey, chatBody(testModel, "")); r.status != 200 {
		t.Errorf("a small body: %d %s", r.status, r.body)
	}
}

// TestUnreadableRequestsAnswerInTheEnvelope: headers over
// server.max_header_bytes are a 431, bytes that are not HTTP a 400, and a
// body that stops coming a 408 request_timeout after
// server.read_timeout; each in OpenAI's envelope with a request id, the
// connection closed, and one request log line.
func TestUnreadableRequestsAnswerInTheEnvelope(t *testing.T) {
	ts := startServer(t, serverOpts{server: "  max_header_bytes: 2048\n  read_timeout: 300ms\n"})
	for _, tc := range []struct {
		name, req   string
		status      int
		code, label string
	}{
		{"large headers", "GET /healthz HTTP/1.1\r\nHost: gw\r\nX-Big: " + strings.Repeat("a", 5000) + "\r\n\r\n", 431, "invalid_request", "headers"},
		{"not http", "GARBAGE\r\n\r\n", 400, "invalid_request", "not http"},
		{"stalled body", "POST /v1/chat/completions HTTP/1.1\r\nHost: gw\r\nAuthorization: Bearer " + ciKey +
			"\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n{", 408, "request_timeout", "timeout"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			before := len(ts.invalidLines())
			r := rawExchange(t, ts, tc.req)
			wantError(t, r, tc.status, "invalid_request_error", tc.code, "")
			lines := ts.invalidLines()
			if len(lines) != before+1 || lines[len(lines)-1]["status"] != int64(tc.status) ||
				lines[len(lines)-1]["request_id"] != r.header.Get("x-request-id") {
				t.Errorf("log lines %v", lines)
			}
		})
	}
	if ts.up.Requests() != 0 {
		t.Error("an unreadable request reached the upstream")
	}
}

// TestLargeHeadersCloseWithoutAReset: the rest of a request whose headers
// are too large (more headers, a body) is read before the 431 is written,
// so the connection ends with a FIN. Closed with bytes unread, it would end
// with a reset, and a client still writing its request gets a broken pipe
// instead of the 431.
func TestLargeHeadersCloseWithoutAReset(t *testing.T) {
	ts := startServer(t, serverOpts{server: "  max_header_bytes: 2048\n"})
	c, err := net.Dial("tcp", strings.TrimPrefix(ts.url, "http://"))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	req := "POST /v1/chat/completions HTTP/1.1\r\nHost: gw\r\nX-Big: " + strings.Repeat("a", 5000) +
		"\r\nContent-Length: 100000\r\n\r\n" + strings.Repeat("b", 100000)
	if _, err := c.Write([]byte(req)); err != nil {
		t.Fatal(err)
	}
	c.SetReadDeadline(time.Now().Add(30 * time.Second)) // a bound against hanging, not a measure
	br := bufio.NewReader(c)
	resp, err := http.ReadResponse(br, nil)
	if err != nil {
		t.Fatalf("no HTTP answer: %v", err)
	}
	io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 431 {
		t.Fatalf("status %d, want 431", resp.StatusCode)
	}
	if _, err := br.ReadByte(); err != io.EOF {
		t.Fatalf("after the 431 the connection ended with %v, want EOF (a FIN, not a reset)", err)
	}
}

// TestStalledHeadersAre408: a client that stops in the middle of its
// headers is timed out like one that stops in its body: 408
// request_timeout.
func TestStalledHeadersAre408(t *testing.T) {
	ts := startServer(t, serverOpts{server: "  read_timeout: 300ms\n"})
	r := rawExchange(t, ts, "POST /v1/chat/completions HTTP/1.1\r\nHost: gw\r\n")
	wantError(t, r, 408, "invalid_request_error", "request_timeout", "")
}

// TestConnectionErrorsAreLoggedWithoutTheirText: fasthttp's own messages
// about a connection can quote raw request headers, keys included: the
// gateway logs that one happened, at debug, and nothing of its text.
func TestConnectionErrorsAreLoggedWithoutTheirText(t *testing.T) {
	core, logs := observer.New(zap.DebugLevel)
	zapPrintf{zap.New(core)}.Printf("error when serving connection %q: %v", "Authorization: Bearer "+ciKey, io.ErrUnexpectedEOF)
	all := logs.All()
	if len(all) != 1 || all[0].Message != "connection error" || all[0].Level != zap.DebugLevel || len(all[0].Context) != 0 {
		t.Fatalf("logged %+v", all)
	}
	b, _ := json.Marshal(all[0].ContextMap())
	if strings.Contains(all[0].Message+string(b), ciKey) {
		t.Error("the key was logged")
	}
}
