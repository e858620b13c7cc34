package gateway

import (
	"bytes"
	"context"
	"io"
	"net"
	"os"
	"testing"
	"time"

	"nanogate/config"
	"nanogate/images"
	"nanogate/images/signatures"
	"nanogate/internal/fakeup"
	"nanogate/provider"
)

// offloadTo makes j's gateway store every caller's images with off.
func offloadTo(j *journey, off *images.Offloader) {
	j.g.offload, j.g.offloadDefault = off, true
}

// fsOffloader is a filesystem store in a directory of its own, and an
// Offloader over it.
func fsOffloader(t *testing.T) (*images.Offloader, *images.FS) {
	t.Helper()
	fs, err := images.NewFS(images.FSConfig{Dir: t.TempDir(), PublicURL: "http://gw.test", SigningKey: string(make([]byte, 32)),
		TTL: time.Hour, SweepInterval: -1}, nil)
	if err != nil {
		t.Fatal(err)
	}
	off := images.NewOffloader(fs, images.Options{})
	t.Cleanup(func() { off.Close() })
	return off, fs
}

// dirNames lists a directory.
func dirNames(t *testing.T, dir string) []string {
	t.Helper()
	es, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, e := range es {
		names = append(names, e.Name())
	}
	return names
}

// forwardedImage is an image of a forwarded answer as the client's
// renderer sees it: its link, or its inline base64.
type forwardedImage struct {
	url  string
	mime string
	b64  []byte
}

// drainImages reads a forwarded answer to its end.
func drainImages(t *testing.T, a *ForwardAnswer) ([]forwardedImage, error) {
	t.Helper()
	var imgs []forwardedImage
	for {
		ev, err := a.Next()
		if err == io.EOF {
			return imgs, nil
		}
		if err != nil {
			return imgs, err
		}
		if ev.Piece == nil {
			continue
		}
		switch p := ev.Piece; p.Step {
		case provider.ImageBegin:
			imgs = append(imgs, forwardedImage{url: p.URL, mime: p.MIME})
		case provider.ImageData:
			imgs[len(imgs)-1].b64 = append(imgs[len(imgs)-1].b64, p.Data...)
		}
	}
}

// readLink reads the image behind a link of off's store.
func readLink(t *testing.T, off *images.Offloader, link string) []byte {
	t.Helper()
	id, err := off.Store().ParseLink(context.Background(), link)
	if err != nil {
		t.Fatalf("link %q: %v", link, err)
	}
	rc, _, _, err := off.Store().Get(context.Background(), id)
	if err != nil {
		t.Fatal(err)
	}
	defer rc.Close()
	b, err := io.ReadAll(rc)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// TestForwardStoresImagesAsTheyArrive: with offload, a Gemini answer is
// forwarded, each image handed on as its link once stored, its data never;
// the stored files are the decoded images, and nothing else is left in the
// store's directory. Each image's signature is kept under its digest and
// its link. The answer is billed for its images.
func TestForwardStoresImagesAsTheyArrive(t *testing.T) {
	const size = 1500 << 10
	up, err := fakeup.Start(fakeup.Options{Kind: fakeup.Gemini, ImageSize: size, ThoughtSignatures: true})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(up.Close)
	up.SetImages(2)
	j := geminiJourney(t, up)
	off, fs := fsOffloader(t)
	offloadTo(j, off)
	sigs := signatures.NewMemory(0)
	j.g.sigs = sigs
	call := j.call(t, chatOne)
	if !j.g.Forwards(call) {
		t.Fatal("an offloaded answer is not forwarded")
	}
	a, _, err := j.g.ChatForward(context.Background(), call)
	if err != nil {
		t.Fatal(err)
	}
	imgs, err := drainImages(t, a)
	a.Close()
	if err != nil || len(imgs) != 2 {
		t.Fatalf("%d images, %v", len(imgs), err)
	}
	for i, img := range imgs {
		if img.url == "" || img.b64 != nil || img.mime != "image/png" {
			t.Fatalf("image %d: link %q, %d bytes of data, type %q", i, img.url, len(img.b64), img.mime)
		}
		if got := readLink(t, off, img.url); !bytes.Equal(got, fakeup.NthPNG(size, i)) {
			t.Fatalf("image %d: stored %d bytes that are not the image", i, len(got))
		}
	}
	if names := dirNames(t, fs.Dir()); len(names) != 2 {
		t.Fatalf("store directory %v", names)
	}
	for i, img := range imgs {
		id, _ := off.Store().ParseLink(context.Background(), img.url)
		got, err := sigs.Get(context.Background(), []signatures.Key{signatures.LinkKey(id)})
		if err != nil || len(got) != 1 || got[0] == nil {
			t.Fatalf("image %d: no signature under its link: %v", i, err)
		}
	}
	if sigs.Len() != 4 {
		t.Fatalf("%d signatures kept, want a digest and a link for each of 2 images", sigs.Len())
	}
	call.Close()
	if r := j.records(t)["req1"]; r.Status != 200 || r.Images != 2 || r.CostMicros == 0 {
		t.Fatalf("record %+v", r)
	}
}

// TestForwardFailedStoreAnswersInline: a store that fails (an S3 endpoint
// that refuses connections) costs the client nothing: the image goes out
// inline, its base64 exactly the upstream's, read back from the spool,
// which is then removed. The image is billed.
func TestForwardFailedStoreAnswersInline(t *testing.T) {
	const size = 1500 << 10
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	refused := ln.Addr().String()
	ln.Close()
	s3, err := images.NewS3(config.S3{Endpoint: refused, Region: "us-east-1", Bucket: "images", AccessKey: "a",
		SecretKey: "s"}, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	spool := t.TempDir()
	off := images.NewOffloader(s3, images.Options{SpoolDir: spool})

	j := geminiJourney(t, startGemini(t, size))
	offloadTo(j, off)
	call := j.call(t, chatOne)
	a, _, err := j.g.ChatForward(context.Background(), call)
	if err != nil {
		t.Fatal(err)
	}
	imgs, err := drainImages(t, a)
	a.Close()
	if err != nil || len(imgs) != 1 {
		t.Fatalf("%d images, %v", len(imgs), err)
	}
	if imgs[0].url != "" || string(imgs[0].b64) != fakeup.PNGBase64(size) {
		t.Fatalf("link %q, %d bytes of base64 (want the upstream's %d)", imgs[0].url, len(imgs[0].b64), len(fakeup.PNGBase64(size)))
	}
	if names := dirNames(t, spool); len(names) != 0 {
		t.Fatalf("spool left behind: %v", names)
	}
	if s := off.Stats(); s.Failed != 1 || s.Offloaded != 0 {
		t.Fatalf("stats %+v", s)
	}
	call.Close()
	if r := j.records(t)["req1"]; r.Status != 200 || r.Images != 1 {
		t.Fatalf("record %+v", r)
	}
}

// TestForwardOffloadCutMidImage: an upstream that drops the connection in
// the middle of an image being stored ends the answer with an error, leaves
// neither an image nor a spool in the store, and bills nothing.
func TestForwardOffloadCutMidImage(t *testing.T) {
	up := startGemini(t, 1500<<10)
	up.SetFault(fakeup.Fault{DropMidBody: true})
	j := geminiJourney(t, up)
	off, fs := fsOffloader(t)
	offloadTo(j, off)
	call := j.call(t, chatOne)
	a, _, err := j.g.ChatForward(context.Background(), call)
	if err != nil {
		t.Fatalf("the cut came after the commit, yet ChatForward failed: %v", err)
	}
	imgs, err := drainImages(t, a)
	if err == nil || len(imgs) != 0 {
		t.Fatalf("%d images handed on, err %v", len(imgs), err)
	}
	if _, ok := provider.AsError(err); !ok {
		t.Errorf("err = %v, want a provider error", err)
	}
	a.Close()
	call.Close()
	if names := dirNames(t, fs.Dir()); len(names) != 0 {
		t.Fatalf("store directory %v", names)
	}
	if r := j.records(t)["req1"]; r.Status != 502 || r.CostMicros != 0 || r.Images != 0 {
		t.Fatalf("record %+v", r)
	}
	if used := j.settled(); used != 0 {
		t.Fatalf("TPM holds %d for an answer that made nothing", used)
	}
}

// TestForwardOffloadLeavesNothingWhenClosedEarly: an answer closed while
// its image is being stored (the client left) removes the spool.
func TestForwardOffloadLeavesNothingWhenClosedEarly(t *testing.T) {
	j := geminiJourney(t, startGemini(t, 1500<<10))
	off, fs := fsOffloader(t)
	offloadTo(j, off)
	call := j.call(t, chatOne)
	a, _, err := j.g.ChatForward(context.Background(), call)
	if err != nil {
		t.Fatal(err)
	}
	// Up to the image's first window, taken by the store.
	for data := false; !data; {
		ev, err := a.upstream()
		if err != nil {
			t.Fatalf("the answer ended before its image: %v", err)
		}
		if ev.Piece != nil {
			if _, err := a.store(ev); err != nil {
				t.Fatal(err)
			}
			data = ev.Piece.Step == provider.ImageData && a.img != nil
		}
	}
	if names := dirNames(t, fs.Dir()); len(names) != 1 {
		t.Fatalf("no spool while the image is stored: %v", names)
	}
	a.Close()
	call.Close()
	if names := dirNames(t, fs.Dir()); len(names) != 0 {
		t.Fatalf("store directory %v", names)
	}
}
