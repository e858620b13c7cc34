package provider

import (
	"bytes"
	"crypto/sha256"
	"encoding/base64"
	"hash"
	"io"
)

// ImageStep says which part of a forwarded image an ImagePiece is.
type ImageStep uint8

// Steps of a forwarded image, in this order for each image: one begin, data
// windows (at least one), one end.
const (
	ImageBegin ImageStep = iota + 1
	ImageData
	ImageEnd
)

// ImagePiece is one step of an image forwarded in windows
// (ChatRequest.Forward) instead of whole in Event.Image.
type ImagePiece struct {
	Step ImageStep
	// MIME is the media type the image's bytes show (ImageBegin).
	MIME string
	// URL is set on ImageBegin for an image that is a link (a reseller's
	// hosted image): no data follows.
	URL string
	// Data is a window of the image's standard base64, checked against the
	// alphabet and unescaped (ImageData). It is valid until the next call to
	// Next.
	Data []byte
	// Signature is the image's thoughtSignature (ImageEnd), nil when none.
	Signature []byte
	// Digest is ImageDigest of the whole image (ImageEnd), when Digested:
	// ChatRequest.ForwardDigest asked for it.
	Digest   [32]byte
	Digested bool
}

// Head is what a forwarded answer knows of itself besides its events: the
// upstream's id ("" when it gave none before the answer was committed) and
// creation time (Unix seconds, 0 when unknown).
type Head interface {
	Head() (id string, created int64)
}

// Whole returns the answer behind a forwarded one that was read whole
// before it was handed over (every answer of the openai kind, a Gemini
// answer without images), so that it can be answered as a buffered one.
// The stream is then used up: the caller releases the Result instead of
// closing the stream. ok is false for an answer being forwarded.
func Whole(st Stream) (res *Result, ok bool) {
	switch s := st.(type) {
	case *resultStream:
		return s.res, true
	case *geminiForward:
		if s.whole != nil && s.err == nil {
			s.Close() // the Result points into the skeleton, not the connection
			return s.whole, true
		}
	}
	return nil, false
}

// resultStream hands a whole Result out as the events of a forwarded answer:
// the answers a kind cannot forward in windows (and the ones with no image,
// which are small) look the same to the gateway as those it can.
type resultStream struct {
	res    *Result
	evs    []Event
	pieces []ImagePiece
	usage  Usage
	i      int
}

// newResultStream lays res out as events: for each choice its text and
// images in the model's order, then its finish reason; the usage last.
// digest: each image with a signature gets its digest.
func newResultStream(res *Result, digest bool) *resultStream {
	s := &resultStream{res: res, usage: res.Usage}
	nev, npc := 1, 0
	for ci := range res.Choices {
		c := &res.Choices[ci]
		nev += 2 + len(c.Pieces) + 2*len(c.Images) + b2i(c.Pieces == nil)
		npc += 3 * len(c.Images)
	}
	s.evs, s.pieces = make([]Event, 0, nev), make([]ImagePiece, 0, npc)
	piece := func(p ImagePiece) *ImagePiece {
		s.pieces = append(s.pieces, p)
		return &s.pieces[len(s.pieces)-1]
	}
	for ci := range res.Choices {
		c := &res.Choices[ci]
		if len(c.Images) == 0 {
			s.evs = append(s.evs, Event{Choice: c.Index, Text: c.Text}, Event{Choice: c.Index, FinishReason: c.FinishReason})
			continue
		}
		if c.Pieces == nil && len(c.Text) > 0 {
			// Text first, then the images: what a markdown answer without
			// pieces shows.
			s.evs = append(s.evs, Event{Choice: c.Index, Text: c.Text})
		}
		for i, n := 0, max(len(c.Pieces), len(c.Images)); i < n; i++ {
			p := Piece{Image: i}
			if c.Pieces != nil {
				if i >= len(c.Pieces) {
					break
				}
				p = c.Pieces[i]
			}
			if p.Text != nil {
				s.evs = append(s.evs, Event{Choice: c.Index, Text: p.Text})
				continue
			}
			if p.Image < 0 || p.Image >= len(c.Images) {
				continue
			}
			img := &c.Images[p.Image]
			end := ImagePiece{Step: ImageEnd, Signature: img.Signature}
			if digest && len(img.Signature) > 0 {
				end.Digest, end.Digested = ImageDigest(img.B64)
			}
			s.evs = append(s.evs, Event{Choice: c.Index, Piece: piece(ImagePiece{Step: ImageBegin, MIME: img.MIME, URL: img.URL})})
			if img.URL == "" {
				s.evs = append(s.evs, Event{Choice: c.Index, Piece: piece(ImagePiece{Step: ImageData, Data: img.B64})})
			}
			s.evs = append(s.evs, Event{Choice: c.Index, Piece: piece(end)})
		}
		s.evs = append(s.evs, Event{Choice: c.Index, FinishReason: c.FinishReason})
	}
	s.evs = append(s.evs, Event{Usage: &s.usage})
	return s
}

// Next implements Stream.
func (s *resultStream) Next() (*Event, error) {
	if s.i >= len(s.evs) {
		return nil, io.EOF
	}
	s.i++
	return &s.evs[s.i-1], nil
}

// Close implements Stream.
func (s *resultStream) Close() { s.res.Release() }

// Head implements Head.
func (s *resultStream) Head() (string, int64) { return s.res.ID, s.res.Created }

// b64Digest hashes the bytes a base64 image decodes to, fed in windows of
// any length: ImageDigest of the whole image, without holding it. Decoding
// and hashing megabytes is most of the CPU a forwarded image costs, so a
// window is hashed on a goroutine of its own (feed) while it is written to
// the client; wait says when the window may be reused.
type b64Digest struct {
	h     hash.Hash
	carry [4]byte
	nc    int
	buf   []byte
	bad   bool
	work  chan []byte
	done  chan struct{}
	busy  bool
}

func newB64Digest() *b64Digest {
	d := &b64Digest{h: sha256.New(), buf: make([]byte, digestChunk), work: make(chan []byte), done: make(chan struct{})}
	go func() {
		for b := range d.work {
			d.write(b)
			d.done <- struct{}{}
		}
	}()
	return d
}

// feed hashes b on the digest's goroutine; b must stay as it is until wait.
func (d *b64Digest) feed(b []byte) {
	d.wait()
	d.work <- b
	d.busy = true
}

// wait returns once the window fed last is hashed.
func (d *b64Digest) wait() {
	if d.busy {
		<-d.done
		d.busy = false
	}
}

// stop ends the digest's goroutine.
func (d *b64Digest) stop() {
	d.wait()
	close(d.work)
}

// write feeds a window of base64.
func (d *b64Digest) write(b []byte) {
	if d.bad {
		return
	}
	for d.nc > 0 && len(b) > 0 {
		d.carry[d.nc] = b[0]
		d.nc, b = d.nc+1, b[1:]
		if d.nc == 4 {
			d.nc = 0
			d.decode(d.carry[:])
		}
	}
	if d.nc > 0 {
		return // b is used up
	}
	n := len(b) - len(b)%4
	for i := 0; i < n && !d.bad; i += digestChunk {
		d.decode(b[i:min(i+digestChunk, n)])
	}
	d.nc = copy(d.carry[:], b[n:])
}

func (d *b64Digest) decode(b []byte) {
	m, err := base64.StdEncoding.Decode(d.buf, b)
	if err != nil {
		d.bad = true
		return
	}
	d.h.Write(d.buf[:m])
}

// sum is the digest, and stops the digest; ok is false when what was fed
// is not whole base64.
func (d *b64Digest) sum() (s [32]byte, ok bool) {
	d.stop()
	if d.bad || d.nc != 0 {
		return s, false
	}
	d.h.Sum(s[:0])
	return s, true
}

// checkOutputImage judges the start of a generated image's base64 (b64,
// which may be cut short of the image's end unless whole): the media type
// its bytes show (label when they show none of the known kinds), or why it
// is refused: a PNG, JPEG or WebP header that declares dimensions past the
// decompression-bomb limits, or that is damaged. more is true when b64 is
// not whole and too short to tell.
func checkOutputImage(label string, b64 []byte, whole bool) (mime, why string, more bool) {
	if !whole && len(b64) < base64.StdEncoding.EncodedLen(sniffBytes) {
		return "", "", true
	}
	kind := sniffB64(b64)
	mime = outputMIME(label, b64)
	switch kind {
	case "image/png", "image/jpeg", "image/webp":
	default:
		return mime, "", false
	}
	n := len(b64) - len(b64)%4
	var r io.Reader
	if kind == "image/jpeg" {
		r = io.LimitReader(base64.NewDecoder(base64.StdEncoding, bytes.NewReader(b64[:n])), maxHeaderBytes)
	} else {
		// PNG and WebP sizes sit in their first 30 bytes: decoded on the
		// stack.
		var head [33]byte
		k := min(n, 44)
		m, _ := base64.StdEncoding.Decode(head[:], b64[:k])
		r = bytes.NewReader(head[:m])
	}
	w, h, err := imageSize(kind, r)
	switch {
	case err != nil && !whole && n < maxHeaderB64:
		return "", "", true
	case err != nil:
		return "", "upstream image header is damaged", false
	case w > MaxImageSide || h > MaxImageSide || int64(w)*int64(h) > MaxImagePixels:
		return "", "upstream image declares a size past the limits", false
	}
	return mime, "", false
}

// maxHeaderB64 is maxHeaderBytes in base64: the most of an image read
// ahead to find its dimensions.
var maxHeaderB64 = base64.StdEncoding.EncodedLen(maxHeaderBytes)
