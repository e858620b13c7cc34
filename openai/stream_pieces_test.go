package openai

import (
	"bytes"
	"testing"

	"nanogate/provider"
)

// TestStreamImagePiecesRelayLikeWholeImages: an image handed on in windows
// (provider.ImagePiece) streams the same bytes as the whole image, in every
// format, for inline images and links, with text and a second image around.
func TestStreamImagePiecesRelayLikeWholeImages(t *testing.T) {
	b64 := bytes.Repeat([]byte("iVBORw0KGgo+/AB"), 4000)
	const link = "https://img.example/a.png"
	whole := []provider.Event{
		{Text: []byte("Here it is.")},
		{Image: &provider.Image{MIME: "image/png", B64: b64}},
		{Image: &provider.Image{URL: link}},
		{Text: []byte(`\nDone.`)},
		{FinishReason: "stop"},
		{Usage: &provider.Usage{Reported: true, PromptTokens: 3}},
	}
	pieces := []provider.Event{
		{Text: []byte("Here it is.")},
		{Piece: &provider.ImagePiece{Step: provider.ImageBegin, MIME: "image/png"}},
	}
	for rest := b64; len(rest) > 0; {
		n := min(len(rest), 7001)
		pieces = append(pieces, provider.Event{Piece: &provider.ImagePiece{Step: provider.ImageData, Data: rest[:n]}})
		rest = rest[n:]
	}
	pieces = append(pieces,
		provider.Event{Piece: &provider.ImagePiece{Step: provider.ImageEnd}},
		provider.Event{Piece: &provider.ImagePiece{Step: provider.ImageBegin, URL: link}},
		provider.Event{Piece: &provider.ImagePiece{Step: provider.ImageEnd}})
	pieces = append(pieces, whole[3:]...)

	render := func(f Format, evs []provider.Event) []byte {
		b := NewStreamBody(&eventStream{evs: evs}, StreamOptions{ID: "id1", Created: 7, Model: "m", Format: f, IncludeUsage: true})
		var w bytes.Buffer
		if _, err := b.WriteTo(&w); err != nil {
			t.Fatal(err)
		}
		return w.Bytes()
	}
	for _, f := range []Format{FormatMarkdown, FormatDataURL, FormatImages} {
		want, got := render(f, whole), render(f, pieces)
		if !bytes.Equal(got, want) {
			t.Errorf("format %v: the pieces relayed %d bytes, the whole image %d; they differ", f, len(got), len(want))
		}
		if !bytes.Contains(want, b64) || !bytes.Contains(want, []byte(link)) {
			t.Errorf("format %v: the image or the link is missing", f)
		}
		relay(t, f, pieces...) // every chunk is JSON
	}
}
