package proxy

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"nanogate/internal/fakeup"
	"nanogate/internal/poll"
)

// With the bytes in flight at server.max_bytes_in_flight, a request is
// refused with 503 and a retry delay before it reaches the limiter or the
// upstream, and the room comes back when the request holding it ends.
func TestInFlightBoundRefusesWith503(t *testing.T) {
	// One 1K image answer read whole (the images format is not forwarded)
	// is counted at 2 MiB plus overhead: one fits in 3 MiB, two do not.
	ts := startServer(t, serverOpts{server: "  max_bytes_in_flight: 3MiB\n"})
	ts.up.SetFault(fakeup.Fault{Hang: true})

	// The first request hangs at the upstream, holding its bytes.
	cancel, done := hangRequest(t, ts, readWhole)
	defer cancel()
	poll.Until(t, 10*time.Second, "the first request to reach the upstream", func() bool { return ts.up.InFlight() == 1 })

	r := send(t, "POST", ts.url+"/v1/chat/completions", ciKey, "application/json", []byte(chatBody(testModel, "")),
		"x-nanogate-image-format", readWhole)
	if r.status != 503 || !strings.Contains(string(r.body), `"code":"server_overloaded"`) {
		t.Fatalf("second request: %d %s, want 503 server_overloaded", r.status, r.body)
	}
	if r.header.Get("retry-after") != "2" || r.header.Get("retry-after-ms") != "2000" {
		t.Errorf("retry headers: %q, %q", r.header.Get("retry-after"), r.header.Get("retry-after-ms"))
	}
	if r.header.Get("x-should-retry") == "false" {
		t.Error("a refusal that bought nothing says not to retry")
	}
	if n := ts.up.Requests(); n != 1 {
		t.Errorf("the upstream saw %d requests, want only the first", n)
	}
	// The Images API counts against the same bound (two images are held
	// until both are in; one would be forwarded and count a window).
	ir := send(t, "POST", ts.url+"/v1/images/generations", ciKey, "application/json",
		[]byte(`{"model":"`+testModel+`","prompt":"a banana","n":2}`))
	if ir.status != 503 {
		t.Fatalf("images request beside a full bound: %d %s", ir.status, ir.body)
	}

	m := send(t, "GET", ts.url+"/metrics", "", "", nil)
	for _, want := range []string{"nanogate_overloaded_total 2", "nanogate_bytes_in_flight_limit 3.145728e+06"} {
		if !strings.Contains(string(m.body), want) {
			t.Errorf("/metrics lacks %q", want)
		}
	}
	if !strings.Contains(string(m.body), "nanogate_bytes_in_flight 2.") {
		t.Errorf("/metrics does not show the first request's bytes in flight")
	}

	// The client of the first request leaves: its bytes come back.
	ts.up.ClearFault()
	cancel()
	<-done
	poll.Until(t, 10*time.Second, "the bound to have room again", func() bool {
		return send(t, "POST", ts.url+"/v1/chat/completions", ciKey, "application/json", []byte(chatBody(testModel, ""))).status == 200
	})
	poll.Until(t, 10*time.Second, "every answer's bytes to be released", func() bool {
		return strings.Contains(string(send(t, "GET", ts.url+"/metrics", "", "", nil).body), "nanogate_bytes_in_flight 0\n")
	})
}

// A streamed answer holds its bytes until the stream ends, and gives them
// back after.
func TestInFlightBoundHoldsUntilTheStreamEnds(t *testing.T) {
	ts := startServer(t, serverOpts{server: "  max_bytes_in_flight: 3MiB\n"})
	for range 3 {
		r := send(t, "POST", ts.url+"/v1/chat/completions", ciKey, "application/json", []byte(chatBody(testModel, `,"stream":true`)))
		if r.status != 200 || !strings.Contains(string(r.body), "[DONE]") {
			t.Fatalf("stream: %d %.300s", r.status, r.body)
		}
	}
	poll.Until(t, 10*time.Second, "the streams' bytes to be released", func() bool { return ts.s.inflight.InUse() == 0 })
}

// The bytes stay held after the handler returns, while the answer is still
// being written to a client that reads slowly, and are released once it is.
func TestInFlightBoundHoldsUntilTheAnswerIsWritten(t *testing.T) {
	ts := startServer(t, serverOpts{server: "  max_bytes_in_flight: 3MiB\n"})
	// Far more than the loopback socket buffers take: the write blocks
	// until the client reads.
	ts.up.SetImageSize(16 << 20)
	conn, err := net.Dial("tcp", strings.TrimPrefix(ts.url, "http://"))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	body := chatBody(testModel, "")
	// Read whole: the request of a forwarded answer logs once it is written.
	fmt.Fprintf(conn, "POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer %s\r\nX-Nanogate-Image-Format: %s\r\n"+
		"Content-Type: application/json\r\nContent-Length: %d\r\n\r\n%s", ciKey, readWhole, len(body), body)
	// The request's log line is written when the handler is done, before
	// the body goes out.
	poll.Until(t, 20*time.Second, "the request's log line", func() bool {
		return ts.logs.FilterMessage("request").Len() == 1
	})
	if ts.s.inflight.InUse() == 0 {
		t.Fatal("the bytes were released while the answer was still being written")
	}
	if _, err := io.Copy(io.Discard, io.LimitReader(conn, 1)); err != nil {
		t.Fatal(err)
	}
	go io.Copy(io.Discard, conn)
	poll.Until(t, 20*time.Second, "the bytes to be released once the answer is written", func() bool {
		return ts.s.inflight.InUse() == 0
	})
}

// readWhole is the image format whose answers are read whole, not
// forwarded.
const readWhole = "images"

// hangRequest sends a chat request in the background, in format (the
// gateway's default when none); cancel makes its client leave, and done
// says when it has.
func hangRequest(t *testing.T, ts *testServer, format ...string) (cancel func(), done <-chan int) {
	ctx, cancel := context.WithCancel(context.Background())
	ch := make(chan int, 1)
	go func() {
		req, _ := http.NewRequestWithContext(ctx, "POST", ts.url+"/v1/chat/completions", strings.NewReader(chatBody(testModel, "")))
		req.Header.Set("Authorization", "Bearer "+ciKey)
		for _, f := range format {
			req.Header.Set("x-nanogate-image-format", f)
		}
		resp, err := httpClient.Do(req)
		if err != nil {
			ch <- 0
			return
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		ch <- resp.StatusCode
	}()
	return cancel, ch
}

// A Gemini answer forwarded as it arrives holds a window, not its image:
// the bound admits several where it admits one answer read whole.
func TestInFlightBoundCountsAForwardedAnswerAsAWindow(t *testing.T) {
	ts := startServer(t, serverOpts{kind: fakeup.Gemini, server: "  max_bytes_in_flight: 3MiB\n"})
	ts.up.SetFault(fakeup.Fault{Hang: true})
	for range 4 {
		cancel, done := hangRequest(t, ts)
		defer func() { cancel(); <-done }()
	}
	poll.Until(t, 10*time.Second, "four forwarded requests to reach the upstream", func() bool { return ts.up.InFlight() == 4 })
	// Read whole (the images format is not forwarded), one is past the bound.
	r := send(t, "POST", ts.url+"/v1/chat/completions", ciKey, "application/json", []byte(chatBody(testModel, "")),
		"x-nanogate-image-format", "images")
	if r.status != 503 {
		t.Fatalf("an answer read whole beside four forwarded ones: %d %.200s", r.status, r.body)
	}
	ts.up.ClearFault()
}
