package fakeup

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"nanogate/internal/poll"
)

// kindCase runs a test against both kinds with a request that generates.
type kindCase struct {
	name             string
	kind             Kind
	url, streamURL   func(*Server) string
	body, streamBody string
}

var kinds = []kindCase{
	{"openai", OpenAI, chatURL, chatURL, chatBody, chatStreamUsageBody},
	{"gemini", Gemini, genURL, streamURL, genBody, genBody},
}

func TestFaultStatusUsesFixtureBodies(t *testing.T) {
	type sc struct {
		status int
		prepay bool
		file   string // "" = generated envelope
	}
	table := map[Kind][]sc{
		OpenAI: {
			{400, false, "openai/error_400_invalid_request.json"},
			{401, false, "openai/error_401_invalid_api_key.json"},
			{403, false, "openai/error_403_reseller_quota.json"},
			{429, false, "openai/error_429_rate_limit.json"},
			{429, true, "openai/error_429_insufficient_quota.json"},
			{0, true, "openai/error_429_insufficient_quota.json"},
			{500, false, "openai/error_500.json"},
			{502, false, ""},
		},
		Gemini: {
			{400, false, "gemini/error_400_invalid_argument.json"},
			{403, false, "gemini/error_403_permission_denied.json"},
			{429, false, "gemini/error_429_resource_exhausted.json"},
			{429, true, "gemini/error_429_prepay_depleted.json"},
			{500, false, "gemini/error_500_internal.json"},
			{503, false, "gemini/error_503_unavailable.json"},
			{504, false, ""},
		},
	}
	for _, k := range kinds {
		s := startT(t, Options{Kind: k.kind, Key: testKey})
		for _, c := range table[k.kind] {
			s.SetFault(Fault{Status: c.status, Prepay: c.prepay, Times: 1})
			a := do(t, "POST", k.url(s), k.body, nil) // no key: the fault comes first
			want := c.status
			if want == 0 {
				want = 429
			}
			if a.status != want {
				t.Errorf("%s %d: status %d", k.name, c.status, a.status)
			}
			if c.file != "" && !bytes.Equal(a.body, Fixture(c.file)) {
				t.Errorf("%s %d: body %s", k.name, c.status, a.body)
			}
			if c.file == "" && (!json.Valid(a.body) || !strings.Contains(string(a.body), `"error"`)) {
				t.Errorf("%s %d: generated body %s", k.name, c.status, a.body)
			}
		}
	}

	g := startT(t, Options{Kind: Gemini})
	g.SetFault(Fault{Status: 404})
	a := do(t, "POST", genURL(g), genBody, nil)
	want := bytes.Replace(Fixture("gemini/error_404_model_not_found.json"), []byte("gemini-2.5-flash-image-preview"), []byte("gemini-2.5-flash-image"), 1)
	if a.status != 404 || !bytes.Equal(a.body, want) {
		t.Errorf("gemini 404 fault: %d %s", a.status, a.body)
	}
	g.SetFault(Fault{Status: 429})
	if a := do(t, "POST", genURL(g), genBody, nil); !strings.Contains(string(a.body), `"retryDelay": "13s"`) {
		t.Errorf("429 lacks RetryInfo: %s", a.body)
	}
}

func TestFaultBodyAndHeaders(t *testing.T) {
	for _, k := range kinds {
		s := startT(t, Options{Kind: k.kind})
		s.SetFault(Fault{Body: []byte(`{"odd":true}`), Header: map[string]string{"Retry-After": "7", "X-Should-Retry": "false"}})
		a := do(t, "POST", k.url(s), k.body, nil)
		if a.status != 200 || string(a.body) != `{"odd":true}` || a.header.Get("Retry-After") != "7" || a.header.Get("X-Should-Retry") != "false" {
			t.Errorf("%s: body alone: %d %s %v", k.name, a.status, a.body, a.header)
		}
		s.SetFault(Fault{Status: 502, Body: []byte("bad gateway")})
		if a := do(t, "POST", k.url(s), k.body, nil); a.status != 502 || string(a.body) != "bad gateway" {
			t.Errorf("%s: status and body: %d %s", k.name, a.status, a.body)
		}
		s.SetFault(Fault{Header: map[string]string{"X-Extra": "1"}})
		if a := do(t, "POST", k.url(s), k.body, nil); a.status != 200 || a.header.Get("X-Extra") != "1" || !json.Valid(a.body) {
			t.Errorf("%s: header on a normal answer: %d %v", k.name, a.status, a.header)
		}
	}
}

func TestFaultTimesCountsDown(t *testing.T) {
	for _, k := range kinds {
		s := startT(t, Options{Kind: k.kind})
		s.SetFault(Fault{Status: 503, Times: 2})
		var got []int
		for range 4 {
			got = append(got, do(t, "POST", k.url(s), k.body, nil).status)
		}
		if want := []int{503, 503, 200, 200}; !slices.Equal(got, want) {
			t.Errorf("%s Times 2: %v", k.name, got)
		}
		s.SetFault(Fault{Status: 500})
		got = got[:0]
		for range 3 {
			got = append(got, do(t, "POST", k.url(s), k.body, nil).status)
		}
		s.ClearFault()
		got = append(got, do(t, "POST", k.url(s), k.body, nil).status)
		if want := []int{500, 500, 500, 200}; !slices.Equal(got, want) {
			t.Errorf("%s Times 0 then ClearFault: %v", k.name, got)
		}
	}
}

func TestFaultSparesModelList(t *testing.T) {
	s := startT(t, Options{Kind: OpenAI})
	s.SetFault(Fault{Status: 503, Times: 1})
	if a := do(t, "GET", s.URL()+"/models", "", nil); a.status != 200 {
		t.Fatalf("models answered %d", a.status)
	}
	if a := do(t, "POST", chatURL(s), chatBody, nil); a.status != 503 {
		t.Fatalf("the fault was used up by /v1/models: %d", a.status)
	}
}

func TestLatency(t *testing.T) {
	for _, k := range kinds {
		s := startT(t, Options{Kind: k.kind})
		s.SetFault(Fault{Latency: 150 * time.Millisecond, Times: 1})
		start := time.Now()
		if a := do(t, "POST", k.url(s), k.body, nil); a.status != 200 || time.Since(start) < 150*time.Millisecond {
			t.Errorf("%s fault latency: %d after %v", k.name, a.status, time.Since(start))
		}
		s.SetLatency(100 * time.Millisecond)
		start = time.Now()
		if a := do(t, "GET", s.URL()+"/nowhere", "", nil); time.Since(start) < 100*time.Millisecond || a.status != 404 {
			t.Errorf("%s base latency on any path: %d after %v", k.name, a.status, time.Since(start))
		}

		// A client that gives up during the wait is counted, and the wait ends at once.
		s.SetLatency(0)
		s.SetFault(Fault{Latency: 5 * time.Second})
		ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
		req, _ := http.NewRequestWithContext(ctx, "POST", k.url(s), strings.NewReader(k.body))
		if _, err := http.DefaultClient.Do(req); err == nil {
			t.Errorf("%s: request survived its deadline", k.name)
		}
		cancel()
		eventually(t, "Canceled 1 after latency", func() bool { return s.Canceled() == 1 && s.InFlight() == 0 })
	}
}

func TestHangEndsWhenClientLeaves(t *testing.T) {
	for _, k := range kinds {
		s := startT(t, Options{Kind: k.kind})
		s.SetFault(Fault{Hang: true})
		ctx, cancel := context.WithCancel(context.Background())
		errc := make(chan error, 1)
		go func() {
			req, _ := http.NewRequestWithContext(ctx, "POST", k.url(s), strings.NewReader(k.body))
			resp, err := http.DefaultClient.Do(req)
			if err == nil {
				resp.Body.Close()
			}
			errc <- err
		}()
		eventually(t, "the request to hang", func() bool { return s.InFlight() == 1 })
		time.Sleep(50 * time.Millisecond)
		select {
		case err := <-errc:
			t.Fatalf("%s: hang answered: %v", k.name, err)
		default:
		}
		if string(s.LastBody()) != k.body {
			t.Errorf("%s: hang did not read the request", k.name)
		}
		cancel()
		if err := <-errc; !errors.Is(err, context.Canceled) {
			t.Errorf("%s: client error %v", k.name, err)
		}
		eventually(t, "Canceled 1 after hang", func() bool { return s.Canceled() == 1 && s.InFlight() == 0 })
	}
}

func TestCloseUnblocksHang(t *testing.T) {
	s, err := StartGemini("")
	if err != nil {
		t.Fatal(err)
	}
	s.SetFault(Fault{Hang: true})
	errc := make(chan error, 1)
	go func() {
		resp, err := http.Post(genURL(s), "application/json", strings.NewReader(genBody))
		if err == nil {
			resp.Body.Close()
		}
		errc <- err
	}()
	eventually(t, "the request to hang", func() bool { return s.InFlight() == 1 })
	closed := make(chan struct{})
	go func() { s.Close(); close(closed) }()
	select {
	case <-closed:
	case <-time.After(2 * time.Second):
		t.Fatal("Close blocked on a hanging request")
	}
	if err := <-errc; err == nil {
		t.Error("the hanging client got an answer")
	}
	if s.InFlight() != 0 || s.Canceled() != 0 {
		t.Errorf("after Close: InFlight %d Canceled %d", s.InFlight(), s.Canceled())
	}
	s.Close() // twice is fine
}

func TestGarbage(t *testing.T) {
	for _, k := range kinds {
		s := startT(t, Options{Kind: k.kind})
		s.SetFault(Fault{Garbage: true, Times: 1})
		a := do(t, "POST", k.url(s), k.body, nil)
		if a.status != 200 || a.header.Get("Content-Type") != "application/json" || json.Valid(a.body) || len(a.body) == 0 {
			t.Errorf("%s: %d %q %q", k.name, a.status, a.header.Get("Content-Type"), a.body)
		}
	}
}

func TestDropMidBody(t *testing.T) {
	for _, k := range kinds {
		for _, stream := range []bool{false, true} {
			s := startT(t, Options{Kind: k.kind})
			s.SetImageSize(200_000)
			s.SetFault(Fault{DropMidBody: true, Times: 1})
			url, body := k.url(s), k.body
			if stream {
				url, body = k.streamURL(s), k.streamBody
			}
			a := do(t, "POST", url, body, nil)
			if a.status != 200 || !errors.Is(a.err, io.ErrUnexpectedEOF) {
				t.Errorf("%s stream=%v: status %d, read error %v", k.name, stream, a.status, a.err)
			}
			if len(a.body) == 0 || len(a.body) > 200_000 {
				t.Errorf("%s stream=%v: %d bytes before the cut", k.name, stream, len(a.body))
			}
			if stream && !strings.Contains(string(a.body), "Here is") {
				t.Errorf("%s: the events before the image were not sent", k.name)
			}
			if a := do(t, "POST", url, body, nil); a.err != nil || a.status != 200 {
				t.Errorf("%s stream=%v: after the cut: %d %v", k.name, stream, a.status, a.err)
			}
			if s.Canceled() != 0 {
				t.Errorf("%s: a cut by the server counted as a cancellation", k.name)
			}
		}
	}
}

func TestStallMidStream(t *testing.T) {
	const stall = 300 * time.Millisecond
	for _, k := range kinds {
		s := startT(t, Options{Kind: k.kind})
		s.SetFault(Fault{StallMidStream: stall})
		start := time.Now()
		resp, err := http.Post(k.streamURL(s), "application/json", strings.NewReader(k.streamBody))
		if err != nil {
			t.Fatal(err)
		}
		br := bufio.NewReader(resp.Body)
		first, err := br.ReadString('\n')
		firstAt := time.Since(start)
		rest, rerr := io.ReadAll(br)
		resp.Body.Close()
		if err != nil || rerr != nil || !strings.HasPrefix(first, "data: ") {
			t.Fatalf("%s: %v %v %q", k.name, err, rerr, first)
		}
		if firstAt > stall/2 || time.Since(start) < stall {
			t.Errorf("%s: first event after %v, end after %v", k.name, firstAt, time.Since(start))
		}
		if !strings.Contains(string(rest), "iVBORw0KGgo") {
			t.Errorf("%s: the image never came", k.name)
		}

		// A plain answer stalls after half its body, then completes.
		start = time.Now()
		if a := do(t, "POST", k.url(s), k.body, nil); a.err != nil || !json.Valid(a.body) || time.Since(start) < stall {
			t.Errorf("%s non-stream stall: %v after %v", k.name, a.err, time.Since(start))
		}

		// A client leaving during the stall is counted.
		s.SetFault(Fault{StallMidStream: 5 * time.Second})
		resp, err = http.Post(k.streamURL(s), "application/json", strings.NewReader(k.streamBody))
		if err != nil {
			t.Fatal(err)
		}
		if _, err := bufio.NewReader(resp.Body).ReadString('\n'); err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		eventually(t, "Canceled 1 after stall", func() bool { return s.Canceled() == 1 && s.InFlight() == 0 })
	}
}

func TestStatsAndReset(t *testing.T) {
	s := startT(t, Options{Kind: Gemini, Key: testKey})
	do(t, "POST", genURL(s), genBody, googKey(testKey))
	do(t, "POST", streamURL(s), `{"contents": [{"parts": [{"text": "x"}]}]}`, googKey("other"))
	if s.Requests() != 2 || s.LastAuth() != "other" || s.LastPath() != "/v1beta/models/gemini-2.5-flash-image:streamGenerateContent?alt=sse" ||
		string(s.LastBody()) != `{"contents": [{"parts": [{"text": "x"}]}]}` {
		t.Fatalf("stats %d %q %q %q", s.Requests(), s.LastAuth(), s.LastPath(), s.LastBody())
	}
	b := s.LastBody()
	b[0] = 'X'
	if s.LastBody()[0] != '{' {
		t.Error("LastBody is not a copy")
	}
	s.SetFault(Fault{Status: 500})
	s.Reset()
	if s.Requests() != 0 || s.Canceled() != 0 || s.LastAuth() != "" || s.LastPath() != "" || s.LastBody() != nil {
		t.Error("Reset left stats")
	}
	if a := do(t, "POST", genURL(s), genBody, googKey(testKey)); a.status != 200 {
		t.Errorf("Reset left the fault: %d", a.status)
	}
}

// TestConcurrentUse runs requests of both kinds while the configuration changes, for the race detector.
func TestConcurrentUse(t *testing.T) {
	for _, k := range kinds {
		s := startT(t, Options{Kind: k.kind})
		var wg sync.WaitGroup
		for i := range 16 {
			wg.Go(func() {
				url, body := k.url(s), k.body
				if i%2 == 1 {
					url, body = k.streamURL(s), k.streamBody
				}
				for range 5 {
					resp, err := http.Post(url, "application/json", strings.NewReader(body))
					if err != nil {
						t.Error(err)
						return
					}
					io.Copy(io.Discard, resp.Body)
					resp.Body.Close()
				}
			})
		}
		// A change every 4 requests, while they run.
		for i := range 20 {
			poll.Until(t, 10*time.Second, fmt.Sprintf("%d requests", 4*i), func() bool { return s.Requests() >= int64(4*i) })
			s.SetImageSize(1000 * (i % 3))
			s.SetImages(1 + i%2)
			s.SetFault(Fault{Status: 503, Times: 1})
			_ = s.LastBody()
		}
		wg.Wait()
		// A client can have the whole answer a moment before the handler
		// has returned and counted itself out.
		poll.Within(5*time.Second, func() bool { return s.InFlight() == 0 })
		if s.Requests() != 80 || s.InFlight() != 0 {
			t.Errorf("%s: Requests %d InFlight %d", k.name, s.Requests(), s.InFlight())
		}
	}
}
