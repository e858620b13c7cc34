package images

import (
	"bytes"
	"context"
	"errors"
	"net"
	"net/url"
	"strings"
	"testing"
	"testing/synctest"
	"time"

	"nanogate/config"
	"nanogate/internal/poll"
)

func TestS3Store(t *testing.T) {
	v := startVersity(t)
	testStore(t, func(t *testing.T) Store { return v.store(t, time.Hour) })
}

// s3Offload stores img through an Offloader over s and returns the link.
func s3Offload(t *testing.T, off *Offloader, img []byte) string {
	t.Helper()
	link, err := off.Offload(context.Background(), "image/png", b64(img))
	if err != nil {
		t.Fatal(err)
	}
	return link
}

// A presigned link serves the exact bytes to a plain HTTP client, with the
// image's type, and Resolve reads the same image back through the API.
func TestS3LinkServesExactBytes(t *testing.T) {
	v := startVersity(t)
	off := NewOffloader(v.store(t, time.Hour), Options{})
	img := testImage(imageSize, 21)
	link := s3Offload(t, off, img)
	if !strings.HasPrefix(link, "http://"+v.Endpoint+"/"+vgwBucket+"/") || !strings.Contains(link, "X-Amz-Signature=") {
		t.Fatalf("link %s is not a presigned URL of the bucket", link)
	}
	resp, body := get(t, link)
	if resp.StatusCode != 200 || sum(body) != sum(img) {
		t.Fatalf("GET the link: %d, %d bytes (sha256 equal: %v)", resp.StatusCode, len(body), sum(body) == sum(img))
	}
	if ct := resp.Header.Get("Content-Type"); ct != "image/png" {
		t.Errorf("Content-Type %q", ct)
	}

	mime, got, ok, err := off.Resolve(context.Background(), link)
	if err != nil || !ok || mime != "image/png" || !bytes.Equal(got, b64(img)) {
		t.Errorf("Resolve = %s, %d bytes, %v, %v; want image/png and the image's base64", mime, len(got), ok, err)
	}
	if s := off.Stats(); s.Offloaded != 1 || s.Bytes != imageSize || s.Resolved != 1 {
		t.Errorf("stats %+v", s)
	}
}

// Altering a presigned link (a byte of its signature, its object key, its
// expiry) makes the server refuse it, and Resolve does not take it for one of
// ours; neither does a link signed with another secret or for another bucket.
func TestS3AlteredLinkRefused(t *testing.T) {
	v := startVersity(t)
	s := v.store(t, time.Hour)
	off := NewOffloader(s, Options{})
	link := s3Offload(t, off, testImage(10_000, 22))
	other := s3Offload(t, off, testImage(10_000, 23))
	if resp, _ := get(t, other); resp.StatusCode != 200 {
		t.Fatalf("the other image: %d", resp.StatusCode)
	}
	u, _ := url.Parse(link)
	id := u.Path[strings.LastIndexByte(u.Path, '/')+1:]
	otherURL, _ := url.Parse(other)
	otherID := otherURL.Path[strings.LastIndexByte(otherURL.Path, '/')+1:]

	sig := u.Query().Get("X-Amz-Signature")
	flipped := []byte(sig)
	flipped[10] = "01"[b2i(flipped[10] == '0')]

	wrongSecret := v.config()
	wrongSecret.SecretKey = "another-secret-0123456789abcdefghij"
	ws, err := NewS3(wrongSecret, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	forged, err := ws.Link(id, "image/png")
	if err != nil {
		t.Fatal(err)
	}

	cases := map[string]string{
		"signature byte":  strings.Replace(link, sig, string(flipped), 1),
		"object key":      strings.Replace(link, id, otherID, 1),
		"longer validity": strings.Replace(link, "X-Amz-Expires=3600", "X-Amz-Expires=7200", 1),
		"no signature":    strings.Replace(link, "&X-Amz-Signature="+sig, "", 1),
		"another secret":  forged,
	}
	for name, target := range cases {
		if target == link {
			t.Fatalf("%s: the link was not altered", name)
		}
		resp, body := get(t, target)
		want := 403
		if name == "no signature" {
			want = 400 // a malformed presigned request, not a wrong one
		}
		if resp.StatusCode != want {
			t.Errorf("%s: the server answered %d (%d bytes), want %d", name, resp.StatusCode, len(body), want)
		}
		if _, _, ok, err := off.Resolve(context.Background(), target); ok || err != nil {
			t.Errorf("%s: Resolve = %v, %v; want false, nil", name, ok, err)
		}
	}

	// Valid links of something else: another bucket, another server.
	otherBucket := v.config()
	otherBucket.Bucket = "another-bucket"
	ob, err := NewS3(otherBucket, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	foreign, err := ob.Link(id, "image/png")
	if err != nil {
		t.Fatal(err)
	}
	for _, target := range []string{foreign, "https://example.com/" + vgwBucket + "/" + id, "https://example.com/x.png"} {
		if _, _, ok, err := off.Resolve(context.Background(), target); ok || err != nil {
			t.Errorf("Resolve(%s) = %v, %v; want false, nil", target, ok, err)
		}
	}
	// Virtual-host style spelling of the same object (what minio-go makes for
	// AWS) is recognised when its signature holds; this one's does not.
	vh := strings.Replace(strings.Replace(link, "http://", "http://"+vgwBucket+".", 1), "/"+vgwBucket+"/", "/", 1)
	if _, _, ok, err := off.Resolve(context.Background(), vh); ok || err != nil {
		t.Errorf("a re-spelt link: %v, %v; want false, nil", ok, err)
	}
}

func b2i(b bool) int {
	if b {
		return 1
	}
	return 0
}

// A presigned link stops working at its expiry, at the server and for
// Resolve.
func TestS3ExpiredLinkRefused(t *testing.T) {
	v := startVersity(t)
	s := v.store(t, 3*time.Second) // presigned URLs count whole seconds
	off := NewOffloader(s, Options{})
	img := testImage(1000, 24)
	link := s3Offload(t, off, img)
	if resp, body := get(t, link); resp.StatusCode != 200 || !bytes.Equal(body, img) {
		t.Fatalf("before expiry: %d", resp.StatusCode)
	}
	poll.Until(t, 30*time.Second, "the server to refuse the expired link", func() bool {
		resp, _ := get(t, link)
		if resp.StatusCode != 200 && resp.StatusCode != 403 {
			t.Fatalf("the link answers %d", resp.StatusCode)
		}
		return resp.StatusCode == 403
	})
	if _, _, ok, err := off.Resolve(context.Background(), link); ok || !errors.Is(err, ErrExpired) {
		t.Errorf("Resolve of the expired link: %v, %v; want false, ErrExpired", ok, err)
	}
}

// ParseLink decides expiry by its own clock and the link's X-Amz-Date and
// X-Amz-Expires, without a request: the link is good until the last second
// of its ttl. (No server: presigning with a region set makes no request.)
func TestS3ParseLinkExpiresByItsOwnClock(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		cfg := config.S3{Endpoint: "127.0.0.1:1", Region: vgwRegion, Bucket: vgwBucket, AccessKey: vgwAccess, SecretKey: vgwSecret}
		s, err := NewS3(cfg, 3*time.Second)
		if err != nil {
			t.Fatal(err)
		}
		id := newID("png")
		link, err := s.Link(id, "image/png")
		if err != nil {
			t.Fatal(err)
		}
		advance(3*time.Second - time.Nanosecond)
		if got, err := s.ParseLink(context.Background(), link); got != id || err != nil {
			t.Errorf("just before expiry: %q, %v; want %s", got, err, id)
		}
		advance(time.Nanosecond)
		if _, err := s.ParseLink(context.Background(), link); !errors.Is(err, ErrExpired) {
			t.Errorf("at expiry: %v, want ErrExpired", err)
		}
	})
}

// When the server is gone, Offload fails at once with an error that says
// what failed and holds no secret, so the caller can send the image inline.
func TestS3ServerGoneFailsPut(t *testing.T) {
	v := startVersity(t)
	off := NewOffloader(v.store(t, time.Hour), Options{PutTimeout: 10 * time.Second})
	s3Offload(t, off, testImage(1000, 25))
	v.Kill()
	_, err := off.Offload(context.Background(), "image/png", b64(testImage(imageSize, 26)))
	if err == nil {
		t.Fatal("Offload succeeded with the server gone")
	}
	t.Logf("error: %v", err)
	msg := err.Error()
	if !strings.Contains(msg, "s3 put "+vgwBucket+"/") || strings.Contains(msg, vgwSecret) {
		t.Errorf("error %q: want the bucket and object named, and never the secret key", msg)
	}
	if errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("a refused connection waited for the deadline: %v", err)
	}
	if s := off.Stats(); s.Failed != 1 {
		t.Errorf("Failed %d", s.Failed)
	}
}

// A server that accepts connections and never answers holds a Put only
// until the Offloader's deadline.
func TestS3SilentServerBoundedByDeadline(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			defer c.Close() // held open, never read, never answered
		}
	}()
	s, err := NewS3(config.S3{Endpoint: ln.Addr().String(), Region: vgwRegion, Bucket: vgwBucket,
		AccessKey: vgwAccess, SecretKey: vgwSecret}, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	off := NewOffloader(s, Options{PutTimeout: 300 * time.Millisecond})
	_, err = off.Offload(context.Background(), "image/png", b64(testImage(imageSize, 27)))
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Offload to a silent server: %v, want the deadline exceeded", err)
	}
	if strings.Contains(err.Error(), vgwSecret) {
		t.Errorf("the error holds the secret key: %v", err)
	}
}

func TestNewS3Refuses(t *testing.T) {
	good := config.S3{Endpoint: "127.0.0.1:9000", Bucket: "b", AccessKey: "a", SecretKey: "s"}
	cases := map[string]struct {
		cfg config.S3
		ttl time.Duration
	}{
		"ttl over 7 days":    {good, 8 * 24 * time.Hour},
		"ttl under 1s":       {good, time.Millisecond},
		"no bucket":          {config.S3{Endpoint: "h", AccessKey: "a", SecretKey: "s"}, time.Hour},
		"no endpoint":        {config.S3{Bucket: "b", AccessKey: "a", SecretKey: "s"}, time.Hour},
		"secret alone":       {config.S3{Endpoint: "h", Bucket: "b", SecretKey: "the-secret"}, time.Hour},
		"endpoint with path": {config.S3{Endpoint: "https://h/x", Bucket: "b", AccessKey: "a", SecretKey: "the-secret"}, time.Hour},
	}
	for name, c := range cases {
		_, err := NewS3(c.cfg, c.ttl)
		if err == nil {
			t.Errorf("%s: accepted", name)
		} else if strings.Contains(err.Error(), "the-secret") {
			t.Errorf("%s: the error holds the secret: %v", name, err)
		}
	}
	// A scheme on the endpoint decides TLS.
	s, err := NewS3(config.S3{Endpoint: "https://s3.example.com", Bucket: "b", AccessKey: "a", SecretKey: "s"}, time.Hour)
	if err != nil || s.Client().EndpointURL().Scheme != "https" {
		t.Errorf("https:// endpoint: %v", err)
	}
}

// New builds the configured store.
func TestNew(t *testing.T) {
	v := startVersity(t)
	off, err := New(config.Offload{Store: "s3", TTL: time.Hour, S3: v.config()}, "", nil)
	if err != nil {
		t.Fatal(err)
	}
	defer off.Close()
	if off.Handler() != nil {
		t.Error("the S3 store has a handler")
	}
	link := s3Offload(t, off, testImage(100, 28))
	if resp, _ := get(t, link); resp.StatusCode != 200 {
		t.Errorf("GET %s: %d", link, resp.StatusCode)
	}

	dir := t.TempDir() + "/img"
	off, err = New(config.Offload{Store: "filesystem", Dir: dir, TTL: time.Hour, SigningKey: testKey}, "http://127.0.0.1:1", nil)
	if err != nil {
		t.Fatal(err)
	}
	defer off.Close()
	if off.Handler() == nil {
		t.Error("the filesystem store has no handler")
	}
	if _, err := New(config.Offload{Store: "filesystem", Dir: dir, TTL: time.Hour, SigningKey: "short-key"}, "http://h", nil); err == nil ||
		strings.Contains(err.Error(), "short-key") {
		t.Errorf("a short signing key: %v", err)
	}
}
