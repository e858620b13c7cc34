package images

import (
	"context"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// Offloading a 1.5 MB image: decoding its base64 into the store and
// making the link. The filesystem store's time is mostly the fsync.
func BenchmarkOffloadFS(b *testing.B) {
	e := newFSEnv(b, nil)
	benchOffload(b, e.off)
}

// The same into an S3 server on loopback (versitygw over a temporary
// directory): one streamed PUT with chunk signatures, then presigning.
func BenchmarkOffloadS3(b *testing.B) {
	v := startVersity(b)
	benchOffload(b, NewOffloader(v.store(b, time.Hour), Options{}))
}

func benchOffload(b *testing.B, off *Offloader) {
	src := b64(testImage(imageSize, 31))
	ctx := context.Background()
	b.SetBytes(imageSize)
	b.ReportAllocs()
	for b.Loop() {
		if _, err := off.Offload(ctx, "image/png", src); err != nil {
			b.Fatal(err)
		}
	}
}

// Reading a 1.5 MB image back as base64 from a link sent as input: the only
// large allocation is the base64 itself (2 MB).
func BenchmarkResolveFS(b *testing.B) {
	e := newFSEnv(b, nil)
	link, err := e.off.Offload(context.Background(), "image/png", b64(testImage(imageSize, 32)))
	if err != nil {
		b.Fatal(err)
	}
	benchResolve(b, e.off, link)
}

func BenchmarkResolveS3(b *testing.B) {
	v := startVersity(b)
	off := NewOffloader(v.store(b, time.Hour), Options{})
	link, err := off.Offload(context.Background(), "image/png", b64(testImage(imageSize, 33)))
	if err != nil {
		b.Fatal(err)
	}
	benchResolve(b, off, link)
}

func benchResolve(b *testing.B, off *Offloader, link string) {
	ctx := context.Background()
	b.SetBytes(imageSize)
	b.ReportAllocs()
	for b.Loop() {
		if _, _, ok, err := off.Resolve(ctx, link); !ok || err != nil {
			b.Fatal(ok, err)
		}
	}
}

// Checking a link: what every GET /images/{id} and Resolve pays first.
func BenchmarkVerifyLink(b *testing.B) {
	e := newFSEnv(b, nil)
	link, err := e.fs.Link(newID("png"), "image/png")
	if err != nil {
		b.Fatal(err)
	}
	q := mustQuery(b, link)
	id := []byte(filepath.Base(link[:strings.IndexByte(link, '?')]))
	exp, sig := []byte(q.Get("exp")), []byte(q.Get("sig"))
	b.ReportAllocs()
	for b.Loop() {
		if _, err := verify(e.fs, id, exp, sig); err != nil {
			b.Fatal(err)
		}
	}
}
