package provider

import (
	"bytes"
	"context"
	"errors"
	"net/netip"
	"strconv"
	"strings"
	"testing"
	"time"

	"nanogate/config"
	"nanogate/internal/fakeup"
)

// startImageHost starts fakeup's image server.
func startImageHost(t *testing.T) *fakeup.ImageHost {
	t.Helper()
	h, err := fakeup.StartImageHost()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(h.Close)
	return h
}

// fetchesFor returns an ImageFetches whose fetcher may reach host, as it
// would a public server.
func fetchesFor(t *testing.T, host *fakeup.ImageHost, o FetchOptions) *ImageFetches {
	t.Helper()
	o.AllowAddrs = []netip.AddrPort{netip.MustParseAddrPort(host.Addr())}
	f := NewImageFetches(o)
	t.Cleanup(f.Close)
	return f
}

// urlsRequest is a chat request with one image part per URL.
func urlsRequest(t *testing.T, urls ...string) *ChatRequest {
	t.Helper()
	var b strings.Builder
	b.WriteString(`{"model":"m","messages":[{"role":"user","content":[{"type":"text","text":"edit"}`)
	for _, u := range urls {
		b.WriteString(`,{"type":"image_url","image_url":{"url":"` + u + `"}}`)
	}
	b.WriteString(`]}]}`)
	req, err := ParseChatRequest([]byte(b.String()))
	if err != nil {
		t.Fatal(err)
	}
	return req
}

// TestFetchedImagesCountAgainstMaxBodyBytes: 16 URLs of 20 MiB each in a
// request of a gateway that accepts 32 MiB bodies are refused with a 413
// naming an image, after reading no more than the budget; with and without
// Content-Length.
func TestFetchedImagesCountAgainstMaxBodyBytes(t *testing.T) {
	for _, chunked := range []bool{false, true} {
		t.Run("chunked="+strconv.FormatBool(chunked), func(t *testing.T) {
			host := startImageHost(t)
			f := fetchesFor(t, host, FetchOptions{RequestBytes: 32 << 20, MaxBytesInFlight: 1 << 30})
			var urls []string
			for i := range 16 {
				u := host.URL() + "/" + strconv.Itoa(i) + ".png?size=" + strconv.Itoa(20<<20)
				if chunked {
					u += "&chunked=1"
				}
				urls = append(urls, u)
			}
			req := urlsRequest(t, urls...)
			err := f.Fetch(context.Background(), req)
			pe, ok := AsError(err)
			if !ok || pe.Kind != KindClient || pe.Status != 413 || pe.Code != "request_too_large" ||
				!strings.HasPrefix(pe.Param, "messages[0].content[") || !strings.Contains(pe.Message, "max_body_bytes") {
				t.Fatalf("err = %v, want a 413 request_too_large naming an image", err)
			}
			// What the host wrote includes what loopback socket buffers took
			// in for fetches that were cut short: a few MiB per connection,
			// against 320 MiB offered.
			t.Logf("the image host wrote %d KiB", host.Sent()>>10)
			if sent := host.Sent(); sent > 100<<20 {
				t.Fatalf("the image host wrote %d MiB for a request worth 24 MiB of images", sent>>20)
			}
			if f.InFlight() != 0 || req.fetched != nil {
				t.Fatalf("a refused request holds %d bytes", f.InFlight())
			}
		})
	}
}

// TestFetchInParallelKeepsRequestOrder: MaxPerRequest images are fetched at
// once (the host answers none until that many are asking), and each lands
// in its own part.
func TestFetchInParallelKeepsRequestOrder(t *testing.T) {
	host := startImageHost(t)
	host.HoldUntilInFlight(3)
	f := fetchesFor(t, host, FetchOptions{MaxPerRequest: 3, Timeout: 20 * time.Second})
	var urls []string
	for i := range 7 {
		urls = append(urls, host.URL()+"/x.png?size=3000&n="+strconv.Itoa(i))
	}
	req := urlsRequest(t, urls...)
	if err := f.Fetch(context.Background(), req); err != nil {
		t.Fatal(err)
	}
	if m := host.MaxInFlight(); m != 3 {
		t.Fatalf("at most %d fetches at once, want 3", m)
	}
	for i, pt := range req.Messages[0].Parts[1:] {
		if !bytes.Equal(pt.Image.Data, fakeup.NthPNG(3000, i)) || pt.Image.MIME != "image/png" {
			t.Fatalf("image %d is not the one its URL names", i)
		}
	}
	if f.InFlight() != 3000*7 {
		t.Fatalf("in flight %d, want the images held", f.InFlight())
	}
	req.ReleaseImages()
	if f.InFlight() != 0 || req.Messages[0].Parts[1].Image.Data != nil {
		t.Fatalf("after release: %d bytes in flight", f.InFlight())
	}
	req.ReleaseImages() // twice is harmless
}

// TestFetchedImagesGetTheDataURLChecks: a fetched image whose header
// declares a decompression bomb is refused like a data URL would be.
func TestFetchedImagesGetTheDataURLChecks(t *testing.T) {
	host := startImageHost(t)
	f := fetchesFor(t, host, FetchOptions{})
	req := urlsRequest(t, host.URL()+"/ok.png", host.URL()+"/bomb.png?size=5000&bomb=1")
	err := f.Fetch(context.Background(), req)
	pe, ok := AsError(err)
	if !ok || pe.Kind != KindClient || pe.Status != 400 || pe.Param != "messages[0].content[2].image_url.url" ||
		!strings.Contains(pe.Message, "declared size is too large") {
		t.Fatalf("err = %v, want a 400 refusing the declared size", err)
	}
}

// TestFetchWaitsThenRefusesWhenTheProcessCapIsFull: while one request holds
// MaxBytesInFlight of images, another gets ErrFetchBusy (503), and gets its
// images once the first lets go.
func TestFetchWaitsThenRefusesWhenTheProcessCapIsFull(t *testing.T) {
	host := startImageHost(t)
	f := fetchesFor(t, host, FetchOptions{MaxBytesInFlight: 100_000})
	first := urlsRequest(t, host.URL()+"/a.png?size=60000", host.URL()+"/b.png?size=30000")
	if err := f.Fetch(context.Background(), first); err != nil {
		t.Fatal(err)
	}
	second := urlsRequest(t, host.URL()+"/c.png?size=20000")
	if err := f.Fetch(context.Background(), second); !errors.Is(err, ErrFetchBusy) {
		t.Fatalf("err = %v, want ErrFetchBusy", err)
	}
	if f.InFlight() != 90_000 {
		t.Fatalf("in flight %d after a refusal, want the first request's 90000", f.InFlight())
	}
	first.ReleaseImages()
	if err := f.Fetch(context.Background(), second); err != nil {
		t.Fatalf("after the first request let go: %v", err)
	}
	second.ReleaseImages()
}

// TestSlowImageIsTheClientsTimeout: an image URL slower than the fetch
// timeout is a 400 naming it.
func TestSlowImageIsTheClientsTimeout(t *testing.T) {
	host := startImageHost(t)
	f := fetchesFor(t, host, FetchOptions{Timeout: 100 * time.Millisecond})
	req := urlsRequest(t, host.URL()+"/a.png", host.URL()+"/slow.png?stall=1")
	err := f.Fetch(context.Background(), req)
	pe, ok := AsError(err)
	if !ok || pe.Kind != KindClient || pe.Status != 400 || pe.Param != "messages[0].content[2].image_url.url" {
		t.Fatalf("err = %v, want a 400 on the slow image", err)
	}
}

// TestGeminiPrepareFetchesOnce: a request prepared once is sent to two
// gemini providers (a failover) with one fetch of its image.
func TestGeminiPrepareFetchesOnce(t *testing.T) {
	host := startImageHost(t)
	images := fetchesFor(t, host, FetchOptions{})
	var provs []*Gemini
	for _, name := range []string{"g1", "g2"} {
		s, err := fakeup.Start(fakeup.Options{Kind: fakeup.Gemini, Key: fakeKey})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(s.Close)
		p, err := NewGemini(config.Provider{Name: name, Kind: "gemini", BaseURL: s.URL(), APIKey: fakeKey}, Options{Images: images})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(p.Close)
		provs = append(provs, p)
	}
	req := urlsRequest(t, host.URL()+"/cat.png")
	if err := provs[0].Prepare(context.Background(), req, testModel); err != nil {
		t.Fatal(err)
	}
	for _, p := range provs {
		res, err := p.Chat(context.Background(), req, testModel)
		if err != nil {
			t.Fatal(err)
		}
		res.Release()
	}
	if n := host.Requests(); n != 1 {
		t.Fatalf("the image was fetched %d times", n)
	}
	req.ReleaseImages()
}
