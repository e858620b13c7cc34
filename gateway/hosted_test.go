package gateway

import (
	"context"
	"encoding/base64"
	"errors"
	"strings"
	"testing"
	"time"

	"go.uber.org/zap"

	"nanogate/images"
	"nanogate/internal/fakeup"
	"nanogate/internal/safefetch"
	"nanogate/provider"
)

// hostFetcher serves one image for one URL and fails every other.
type hostFetcher struct {
	url  string
	data []byte
}

func (h hostFetcher) FetchImage(ctx context.Context, url string, b safefetch.Budget) (*safefetch.Image, error) {
	if url != h.url {
		return nil, &safefetch.Error{Reason: "not found"}
	}
	if err := b.Take(ctx, int64(len(h.data))); err != nil {
		return nil, err
	}
	return &safefetch.Image{MIME: "image/png", Data: h.data}, nil
}

// TestHostedLinkIsCopiedIntoTheStore: with images as links, a reseller's
// hosted image is fetched (within the fetch bounds) and stored, and the
// client gets the gateway's link to the same bytes; one that cannot be
// fetched goes as it is.
func TestHostedLinkIsCopiedIntoTheStore(t *testing.T) {
	fs, err := images.NewFS(images.FSConfig{Dir: t.TempDir(), PublicURL: "http://gw.example", SigningKey: strings.Repeat("s", 32),
		TTL: time.Hour}, zap.NewNop())
	if err != nil {
		t.Fatal(err)
	}
	off := images.NewOffloader(fs, images.Options{})
	defer off.Close()
	png := fakeup.PNG(4096)
	const hosted = "https://cdn.reseller.example/a.png"
	fetches := provider.NewImageFetches(provider.FetchOptions{Fetcher: hostFetcher{hosted, png}, RequestBytes: 1 << 20})
	defer fetches.Close()
	g := New(nil, Options{Offload: off, Fetches: fetches})

	img := provider.Image{URL: hosted}
	g.offloadImage(context.Background(), &img)
	if !strings.HasPrefix(img.URL, "http://gw.example/images/") || img.MIME != "image/png" {
		t.Fatalf("image after the copy: %+v", img)
	}
	mime, b64, ok, err := off.Resolve(context.Background(), img.URL)
	if err != nil || !ok || mime != "image/png" || string(b64) != base64.StdEncoding.EncodeToString(png) {
		t.Fatalf("the store holds %s %d bytes (ok %v, err %v)", mime, len(b64), ok, err)
	}
	if n := fetches.InFlight(); n != 0 {
		t.Errorf("%d fetched bytes still held after the copy", n)
	}

	gone := provider.Image{URL: "https://cdn.reseller.example/gone.png"}
	g.offloadImage(context.Background(), &gone)
	if gone.URL != "https://cdn.reseller.example/gone.png" {
		t.Errorf("a link that could not be copied became %q", gone.URL)
	}
	if _, _, _, err := fetches.Copy(context.Background(), "https://cdn.reseller.example/gone.png"); !errors.As(err, new(*safefetch.Error)) {
		t.Errorf("Copy of a missing image: %v", err)
	}
}
