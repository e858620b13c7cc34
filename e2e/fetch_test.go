package e2e

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"nanogate/internal/fakeup"
	"nanogate/internal/gwtest"
)

// longAdminKey is an admin key of a length the gateway accepts for admin keys.
const longAdminKey = "admin-e2e-fetch-secret-0123456789"

// benchView is the part of /admin/providers these tests read.
type benchView struct {
	Providers []benchViewProvider `json:"providers"`
}

type benchViewProvider struct {
	Name              string
	State             string
	Requests          int64
	Failures          int64
	BenchedForSeconds float64 `json:"benched_for_seconds"`
}

// TestHugeRetryAfterBenchesForAMinuteAtMost: an upstream answering 429 with
// retry-after: 999999999 (31 years) is benched for routing.health.
// max_retry_after (60s by default), and the request is served by the other
// provider.
func TestHugeRetryAfterBenchesForAMinuteAtMost(t *testing.T) {
	e := startEnv(t, opts{adminKey: longAdminKey})
	e.cheap.SetFault(fakeup.Fault{Status: 429, Header: map[string]string{"retry-after": "999999999"}, Times: 1})
	resp := e.post(t, chatBody(""))
	readAll(t, resp)
	if resp.StatusCode != 200 || resp.Header.Get("x-nanogate-provider") != "dear" {
		t.Fatalf("status %d from %q", resp.StatusCode, resp.Header.Get("x-nanogate-provider"))
	}
	var v benchView
	if getJSON(t, e.gw.URL+"/admin/providers", longAdminKey, &v) != 200 {
		t.Fatal("admin/providers")
	}
	if p := v.Providers[0]; p.Name != "cheap" || p.BenchedForSeconds <= 0 || p.BenchedForSeconds > 60 {
		t.Fatalf("cheap = %+v, want benched for at most 60s", p)
	}
}

// fetchEnv is a gateway in front of two fake Googles (google, then google2
// by price) and a reseller, with an image host it may fetch from as if it
// were public.
type fetchEnv struct {
	*env
	google, google2, reseller *fakeup.Server
	host                      *fakeup.ImageHost
}

type fetchOpts struct {
	maxBody         int    // server.max_body_bytes (default 32 MiB)
	providerTimeout string // every provider's timeout (default 10s)
	fetch           string // the images.fetch block, flow style (default: none)
}

func startFetchEnv(t *testing.T, o fetchOpts) *fetchEnv {
	t.Helper()
	if o.maxBody == 0 {
		o.maxBody = 32 << 20
	}
	if o.providerTimeout == "" {
		o.providerTimeout = "10s"
	}
	fetch := ""
	if o.fetch != "" {
		fetch = ", fetch: " + o.fetch
	}
	start := func(kind fakeup.Kind, key string) *fakeup.Server {
		s := startFake(t, fakeup.Options{Kind: kind, Key: key})
		return s
	}
	e := &fetchEnv{google: start(fakeup.Gemini, googleKey), google2: start(fakeup.Gemini, googleKey),
		reseller: start(fakeup.OpenAI, resellerKey)}
	host, err := fakeup.StartImageHost()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(host.Close)
	e.host = host
	cfg := fmt.Sprintf(`
server:
  listen: "{{ADDR}}"
  max_body_bytes: %d
  shutdown_timeout: 10s
log: { level: info, format: json }
admin_key: "%s"
providers:
  - name: google
    kind: gemini
    base_url: %s
    api_key: ${GOOGLE_KEY}
    models: { %s: gemini-2.5-flash-image }
    prices: { %[4]s: { per_image: 0.030 } }
    timeout: %s
  - name: google2
    kind: gemini
    base_url: %s
    api_key: ${GOOGLE_KEY}
    models: { %s: gemini-2.5-flash-image }
    prices: { %[7]s: { per_image: 0.031 } }
    timeout: %s
  - name: reseller
    kind: openai
    base_url: %s
    api_key: ${RESELLER_KEY}
    models: { %s: upstream-model-b }
    price: { per_image: 0.039 }
    timeout: %s
routing:
  max_attempts: 3
  health: { failure_threshold: 1, cooldown: 30s }
images: { format: markdown%s }
teams:
  - name: design
keys:
  - name: ci
    team: design
    key: ${CLIENT_KEY}
`, o.maxBody, longAdminKey, e.google.URL(), model, o.providerTimeout, e.google2.URL(), model, o.providerTimeout,
		e.reseller.URL(), model, o.providerTimeout, fetch)
	gw := gwtest.Start(t, cfg, "GOOGLE_KEY="+googleKey, "RESELLER_KEY="+resellerKey, "CLIENT_KEY="+clientKey,
		"NANOGATE_TEST_FETCH_ADDRS="+host.Addr())
	e.env = &env{gw: gw}
	return e
}

// urlsBody is a chat request naming its images by URL.
func urlsBody(urls ...string) string {
	var b strings.Builder
	b.WriteString(`{"model":"` + model + `","messages":[{"role":"user","content":[{"type":"text","text":"edit"}`)
	for _, u := range urls {
		b.WriteString(`,{"type":"image_url","image_url":{"url":"` + u + `"}}`)
	}
	b.WriteString(`]}]}`)
	return b.String()
}

// providers reads /admin/providers by name.
func (e *fetchEnv) providers(t *testing.T) map[string]benchViewProvider {
	t.Helper()
	var v benchView
	if getJSON(t, e.gw.URL+"/admin/providers", longAdminKey, &v) != 200 {
		t.Fatal("admin/providers")
	}
	out := map[string]benchViewProvider{}
	for _, p := range v.Providers {
		out[p.Name] = p
	}
	return out
}

// TestURLImagesAreBoundedByMaxBodyBytes: a 1.4 KB request naming 16 images
// of 20 MiB is refused with 413 request_too_large naming an image, and the
// gateway read about its 32 MiB budget of them, not 320 MiB.
func TestURLImagesAreBoundedByMaxBodyBytes(t *testing.T) {
	e := startFetchEnv(t, fetchOpts{})
	for _, chunked := range []string{"", "&chunked=1"} {
		before := e.host.Sent()
		var urls []string
		for i := range 16 {
			urls = append(urls, fmt.Sprintf("%s/%d.png?size=%d%s", e.host.URL(), i, 20<<20, chunked))
		}
		body := urlsBody(urls...)
		env := expectError(t, e.post(t, body), 413, "request_too_large")
		if env.Error.Param == nil || !strings.HasPrefix(*env.Error.Param, "messages[0].content[") ||
			!strings.HasSuffix(*env.Error.Param, "].image_url.url") {
			t.Fatalf("param %v, message %q", env.Error.Param, env.Error.Message)
		}
		sent := e.host.Sent() - before
		t.Logf("chunked=%v: %d B request, the image host wrote %d MiB, gateway peak RSS %d MiB",
			chunked != "", len(body), sent>>20, e.gw.PeakRSS()>>20)
		// Beyond the 24 MiB of images the budget admits, what the host wrote
		// sits in loopback socket buffers of the fetches cut short.
		if sent > 100<<20 {
			t.Fatalf("the image host wrote %d MiB", sent>>20)
		}
	}
	if n := e.google.Requests() + e.google2.Requests() + e.reseller.Requests(); n != 0 {
		t.Fatalf("%d upstream calls for refused requests", n)
	}
}

// TestSlowImageURLIsNoProviderFailure: fetching is the client's time. An
// image slower than the provider's timeout (but within images.fetch.timeout)
// is served by Google; one slower than images.fetch.timeout is a 400 naming
// it. Neither counts against Google, whose circuit opens at one failure.
func TestSlowImageURLIsNoProviderFailure(t *testing.T) {
	e := startFetchEnv(t, fetchOpts{providerTimeout: "1s", fetch: "{ timeout: 4s }"})
	resp := e.post(t, urlsBody(e.host.URL()+"/slow.png?delay=1500ms"))
	body := readAll(t, resp)
	if resp.StatusCode != 200 || resp.Header.Get("x-nanogate-provider") != "google" {
		t.Fatalf("status %d from %q: %s", resp.StatusCode, resp.Header.Get("x-nanogate-provider"), body)
	}
	env := expectError(t, e.post(t, urlsBody(e.host.URL()+"/fine.png", e.host.URL()+"/stalled.png?stall=1")), 400, "invalid_request")
	if env.Error.Param == nil || *env.Error.Param != "messages[0].content[2].image_url.url" {
		t.Fatalf("param %v, message %q", env.Error.Param, env.Error.Message)
	}
	ps := e.providers(t)
	if g := ps["google"]; g.State != "healthy" || g.Failures != 0 || g.Requests != 1 {
		t.Fatalf("google = %+v, want healthy with one request and no failure", g)
	}
	if e.reseller.Requests() != 0 || e.google2.Requests() != 0 {
		t.Fatalf("failed over: google2 %d, reseller %d", e.google2.Requests(), e.reseller.Requests())
	}
}

// TestFailoverToSecondGoogleDoesNotFetchAgain: the image is fetched once,
// whichever gemini provider ends up sending it.
func TestFailoverToSecondGoogleDoesNotFetchAgain(t *testing.T) {
	e := startFetchEnv(t, fetchOpts{})
	e.google.SetFault(fakeup.Fault{Status: 500, Times: 1})
	resp := e.post(t, urlsBody(e.host.URL()+"/cat.png?size=50000"))
	body := readAll(t, resp)
	if resp.StatusCode != 200 || resp.Header.Get("x-nanogate-provider") != "google2" {
		t.Fatalf("status %d from %q: %s", resp.StatusCode, resp.Header.Get("x-nanogate-provider"), body)
	}
	if n := e.host.Requests(); n != 1 {
		t.Fatalf("the image was fetched %d times", n)
	}
	g, err := fakeup.ParseGeminiRequest(e.google2.LastBody())
	if err != nil {
		t.Fatal(err)
	}
	if parts := g.Contents[0].Parts; len(parts) != 2 || !bytes.Equal(parts[1].Data, fakeup.PNG(50000)) {
		t.Fatalf("google2 did not get the image: %d parts", len(parts))
	}

	// A stream, with google's circuit now open: google2 fails before its
	// first event, and the reseller gets the URL itself, not fetched again.
	e.google2.SetFault(fakeup.Fault{Status: 503, Times: 1})
	dog := e.host.URL() + "/dog.png?size=40000"
	resp = e.post(t, strings.TrimSuffix(urlsBody(dog), "}")+`,"stream":true}`)
	events := sseEvents(t, resp)
	if resp.StatusCode != 200 || resp.Header.Get("x-nanogate-provider") != "reseller" || events[len(events)-1] != "[DONE]" {
		t.Fatalf("stream: status %d from %q", resp.StatusCode, resp.Header.Get("x-nanogate-provider"))
	}
	if n := e.host.Requests(); n != 2 || e.google2.Requests() != 2 {
		t.Fatalf("images fetched %d times for two requests; google2 called %d times", n, e.google2.Requests())
	}
	if !strings.Contains(string(e.reseller.LastBody()), dog) {
		t.Fatalf("the reseller did not get the image URL")
	}
}

// TestURLImageBombIsRefused: an image URL whose PNG header declares
// 100000x100000 pixels is refused as a data URL would be.
func TestURLImageBombIsRefused(t *testing.T) {
	e := startFetchEnv(t, fetchOpts{})
	env := expectError(t, e.post(t, urlsBody(e.host.URL()+"/bomb.png?size=5000&bomb=1")), 400, "invalid_request")
	if env.Error.Param == nil || *env.Error.Param != "messages[0].content[1].image_url.url" ||
		!strings.Contains(env.Error.Message, "declared size is too large") {
		t.Fatalf("param %v, message %q", env.Error.Param, env.Error.Message)
	}
	if n := e.google.Requests() + e.google2.Requests() + e.reseller.Requests(); n != 0 {
		t.Fatalf("%d upstream calls for a refused request", n)
	}
}

// TestImageFetchCapAnswers503: with images.fetch.max_bytes_in_flight at its
// 20 MiB minimum, two requests whose images (20 MiB and 1 MiB, announced,
// their bodies held back) cannot both be held: one waits, then gets 503
// image_fetch_busy with retry-after; the other is served once its image
// arrives.
func TestImageFetchCapAnswers503(t *testing.T) {
	e := startFetchEnv(t, fetchOpts{fetch: "{ max_bytes_in_flight: 20971520, timeout: 60s }"})
	type answer struct {
		status int
		code   string
		retry  string
	}
	answers := make(chan answer, 2)
	for _, size := range []int{20 << 20, 1 << 20} {
		go func() {
			req, _ := http.NewRequest("POST", e.gw.URL+"/v1/chat/completions",
				strings.NewReader(urlsBody(fmt.Sprintf("%s/big.png?size=%d&stall=1", e.host.URL(), size))))
			req.Header.Set("Content-Type", "application/json")
			req.Header.Set("Authorization", "Bearer "+clientKey)
			resp, err := client.Do(req)
			if err != nil {
				answers <- answer{code: err.Error()}
				return
			}
			defer resp.Body.Close()
			var env envelope
			b, _ := io.ReadAll(resp.Body)
			json.Unmarshal(b, &env)
			a := answer{status: resp.StatusCode, retry: resp.Header.Get("retry-after")}
			if env.Error.Code != nil {
				a.code = *env.Error.Code
			}
			answers <- a
		}()
	}
	var first answer
	select {
	case first = <-answers:
	case <-time.After(30 * time.Second):
		t.Fatal("no answer while both images are held back: nothing caps the bytes in flight")
	}
	e.host.Unstall()
	second := <-answers
	if first.status != 503 || first.code != "image_fetch_busy" || first.retry == "" {
		t.Fatalf("first answer %+v, want 503 image_fetch_busy with retry-after", first)
	}
	if second.status != 200 {
		t.Fatalf("second answer %+v, want 200 once its image arrived", second)
	}
	if g := e.providers(t)["google"]; g.Failures != 0 {
		t.Fatalf("google = %+v", g)
	}
}
