package fakeup

import (
	"bytes"
	"encoding/base64"
	"image/png"
	"testing"
)

func TestPNGHasExactSizeAndDecodes(t *testing.T) {
	for _, size := range []int{100, 1000, 65600, 200_000, 1_500_000, 4 << 20} {
		for n := range 2 {
			b := NthPNG(size, n)
			if len(b) != size {
				t.Errorf("NthPNG(%d, %d) has %d bytes", size, n, len(b))
			}
			img, err := png.Decode(bytes.NewReader(b)) // full decode: CRCs, Adler-32, block lengths
			if err != nil {
				t.Fatalf("NthPNG(%d, %d) does not decode: %v", size, n, err)
			}
			if r := img.Bounds(); r.Dx() < 1 || r.Dy() < 1 {
				t.Errorf("NthPNG(%d, %d) is %v", size, n, r)
			}
		}
	}
}

func TestPNGSmallSizesStayValid(t *testing.T) {
	for _, size := range []int{1, 50, 72, 78, 90} {
		b := PNG(size)
		if _, err := png.Decode(bytes.NewReader(b)); err != nil {
			t.Fatalf("PNG(%d) does not decode: %v", size, err)
		}
		if len(b) > 100 {
			t.Errorf("PNG(%d) has %d bytes", size, len(b))
		}
	}
}

func TestPNGDefaultIsTinyFixture(t *testing.T) {
	if !bytes.Equal(PNG(0), Fixture("tiny.png")) {
		t.Fatal("PNG(0) is not fixtures/tiny.png")
	}
	if bytes.Equal(NthPNG(0, 1), PNG(0)) {
		t.Fatal("second default image equals the first")
	}
	if _, err := png.Decode(bytes.NewReader(NthPNG(0, 1))); err != nil {
		t.Fatal(err)
	}
}

func TestPNGIsCachedAndImagesDiffer(t *testing.T) {
	a, b := PNG(300_000), PNG(300_000)
	if &a[0] != &b[0] {
		t.Error("PNG is rebuilt on every call")
	}
	if bytes.Equal(NthPNG(300_000, 0), NthPNG(300_000, 1)) {
		t.Error("images 0 and 1 are equal")
	}
	if PNGBase64(300_000) != base64.StdEncoding.EncodeToString(a) {
		t.Error("PNGBase64 is not the base64 of PNG")
	}
	if NthPNGBase64(300_000, 1) != base64.StdEncoding.EncodeToString(NthPNG(300_000, 1)) {
		t.Error("NthPNGBase64 is not the base64 of NthPNG")
	}
}

func BenchmarkPNGBuild1_5MB(b *testing.B) {
	b.ReportAllocs()
	for i := 0; b.Loop(); i++ {
		buildPNG(1_500_000, i)
	}
}
