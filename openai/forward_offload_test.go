package openai

import (
	"bytes"
	"context"
	"net"
	"regexp"
	"strings"
	"testing"
	"time"

	"nanogate/config"
	"nanogate/gateway"
	"nanogate/images"
	"nanogate/internal/fakeup"
	"nanogate/provider"
	"nanogate/router"
)

// offloadGateway is a gateway over a fake Gemini upstream whose callers'
// images become links of off.
func offloadGateway(t *testing.T, up *fakeup.Server, off *images.Offloader) *gateway.Gateway {
	t.Helper()
	pc := config.Provider{Name: "g", Kind: config.KindGemini, BaseURL: up.URL(), APIKey: "k",
		Models: map[string]string{"m": fakeup.DefaultGeminiModel}, Price: config.Price{PerImage: 0.039}, Timeout: time.Minute}
	p, err := provider.New(pc, provider.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(p.Close)
	r := router.New([]router.Entry{{Provider: p, Config: pc}}, config.Routing{MaxAttempts: 1,
		Health: config.Health{FailureThreshold: 100}}, nil, nil, nil)
	return gateway.New(r, gateway.Options{TokensPerImage: 1290, Offload: off, OffloadDefault: true})
}

// offloadCall is a one-answer chat call for model m.
func offloadCall(t *testing.T) *gateway.Call {
	t.Helper()
	req, err := ParseChatRequest([]byte(`{"model":"m","messages":[{"role":"user","content":"a cat"}]}`))
	if err != nil {
		t.Fatal(err)
	}
	return &gateway.Call{Req: req}
}

// links and created are what differ between two answers to the same
// request: the stored images' ids and signatures, and the second.
var (
	linkRE    = regexp.MustCompile(`http://gw\.test/images/[0-9a-f]{32}\.png\?exp=[0-9]+&sig=[A-Za-z0-9_-]{43}`)
	createdRE = regexp.MustCompile(`"created":[0-9]+`)
)

func normalized(b []byte) []byte {
	return createdRE.ReplaceAll(linkRE.ReplaceAll(b, []byte("LINK")), []byte(`"created":0`))
}

// bufferedAndForwarded answers one request read whole (Chat, NewChatBody)
// and one forwarded (ChatForward, NewForwardBody), both with offload.
func bufferedAndForwarded(t *testing.T, g *gateway.Gateway, f Format) (whole, fwd []byte) {
	t.Helper()
	ctx := context.Background()
	call := offloadCall(t)
	ans, _, err := g.Chat(ctx, call)
	if err != nil {
		t.Fatal(err)
	}
	cb := NewChatBody(ans, "rid", "m", f)
	var w bytes.Buffer
	if _, err := cb.WriteTo(&w); err != nil {
		t.Fatal(err)
	}
	cb.Close()
	call.Close()

	call = offloadCall(t)
	if !g.Forwards(call) {
		t.Fatal("an offloaded answer is not forwarded")
	}
	fa, _, err := g.ChatForward(ctx, call)
	if err != nil {
		t.Fatal(err)
	}
	if fa.Whole != nil {
		t.Fatal("the answer was read whole")
	}
	fb := NewForwardBody(fa, ForwardOptions{ReqID: "rid", Model: "m", Format: f})
	if _, err := fb.Prefetch(32 << 10); err != nil {
		t.Fatal(err)
	}
	var fw bytes.Buffer
	if _, err := fb.WriteTo(&fw); err != nil {
		t.Fatal(err)
	}
	call.Close()
	return w.Bytes(), fw.Bytes()
}

// TestForwardedOffloadIsTheBufferedAnswer: an answer whose images become
// links is the same, byte for byte, forwarded or read whole, links aside
// (each request stores its own), in every format, with text and one or
// two images; and so is the inline answer of a store that fails. The links
// serve the decoded images.
func TestForwardedOffloadIsTheBufferedAnswer(t *testing.T) {
	const size = 1500 << 10
	fs, err := images.NewFS(images.FSConfig{Dir: t.TempDir(), PublicURL: "http://gw.test",
		SigningKey: strings.Repeat("k", 32), TTL: time.Hour, SweepInterval: -1}, nil)
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	refused := ln.Addr().String()
	ln.Close()
	s3, err := images.NewS3(config.S3{Endpoint: refused, Region: "us-east-1", Bucket: "b", AccessKey: "a", SecretKey: "s"}, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	stores := map[string]*images.Offloader{
		"stored":       images.NewOffloader(fs, images.Options{}),
		"store failed": images.NewOffloader(s3, images.Options{SpoolDir: t.TempDir()}),
	}
	for name, off := range stores {
		for _, n := range []int{1, 2} {
			up, err := fakeup.Start(fakeup.Options{Kind: fakeup.Gemini, ImageSize: size})
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(up.Close)
			up.SetImages(n)
			up.SetTextTokens(12)
			g := offloadGateway(t, up, off)
			for _, f := range []Format{FormatMarkdown, FormatDataURL, FormatImages} {
				if !Forwards(f, true) {
					t.Fatalf("format %d is not forwarded", f)
				}
				whole, fwd := bufferedAndForwarded(t, g, f)
				links := linkRE.FindAll(fwd, -1)
				if stored := name == "stored"; (len(links) == n) != stored || bytes.Contains(fwd, []byte(";base64,")) == stored {
					t.Fatalf("%s, %d images, format %d: %d links in %.300s", name, n, f, len(links), fwd)
				}
				if !bytes.Equal(normalized(whole), normalized(fwd)) {
					t.Fatalf("%s, %d images, format %d:\nread whole: %.600s\nforwarded:  %.600s", name, n, f,
						normalized(whole), normalized(fwd))
				}
				for i, link := range links {
					id, err := fs.ParseLink(context.Background(), string(link))
					if err != nil {
						t.Fatal(err)
					}
					rc, _, _, err := fs.Get(context.Background(), id)
					if err != nil {
						t.Fatal(err)
					}
					var got bytes.Buffer
					got.ReadFrom(rc)
					rc.Close()
					if !bytes.Equal(got.Bytes(), fakeup.NthPNG(size, i)) {
						t.Fatalf("image %d: the link serves %d bytes that are not the image", i, got.Len())
					}
				}
			}
		}
	}
}
