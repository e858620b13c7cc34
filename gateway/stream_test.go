package gateway

import (
	"context"
	"io"
	"testing"

	"nanogate/config"
	"nanogate/provider"
	"nanogate/router"
)

// TestStreamAnswerCountsImagesHandedOnInWindows: an image that streams in
// pieces counts once, when it ends; one cut before its end does not count.
func TestStreamAnswerCountsImagesHandedOnInWindows(t *testing.T) {
	g := New(router.New(nil, config.Routing{}, nil, nil, nil), Options{TokensPerImage: 1290})
	piece := func(s provider.ImageStep) *provider.Event {
		return &provider.Event{Piece: &provider.ImagePiece{Step: s, Data: []byte("AAAA")}}
	}
	for _, tc := range []struct {
		name string
		evs  []*provider.Event
		want int64
	}{
		{"two images", []*provider.Event{piece(provider.ImageBegin), piece(provider.ImageData), piece(provider.ImageEnd),
			piece(provider.ImageBegin), piece(provider.ImageData), piece(provider.ImageData), piece(provider.ImageEnd)}, 2},
		{"cut mid-image", []*provider.Event{piece(provider.ImageBegin), piece(provider.ImageData), piece(provider.ImageEnd),
			piece(provider.ImageBegin), piece(provider.ImageData)}, 1},
	} {
		call := &Call{Req: &provider.ChatRequest{Model: "m"}}
		sa := g.newStreamAnswer(context.Background(), call, &listStream{evs: tc.evs[1:]}, tc.evs[0], router.Served{Provider: "p"})
		for {
			if _, err := sa.Next(); err == io.EOF {
				break
			} else if err != nil {
				t.Fatal(err)
			}
		}
		if u := sa.Usage(); u.Images != tc.want {
			t.Errorf("%s: %d images billed, want %d", tc.name, u.Images, tc.want)
		}
	}
}
