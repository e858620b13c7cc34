package fakeup

import (
	"encoding/base64"
	"encoding/binary"
	"hash/adler32"
	"hash/crc32"
	"math"
	"sync"
)

// Images are valid PNGs whose pixel data sits in stored (uncompressed) deflate blocks: the file size is then
// a function of the dimensions alone, so any size can be hit to the byte (a private ancillary chunk takes up
// the remainder), and building a few megabytes costs a fill loop and two checksums, not a compressor.

type pngKey struct{ size, n int }

type pngEntry struct {
	once sync.Once
	raw  []byte
	b64  []byte // what the servers write: a large []byte goes to the socket in one piece, a string in 2 KB copies
	b64s string
}

// pngCache maps pngKey to *pngEntry; entries live for the process, as tests and benchmarks reuse few sizes.
var pngCache sync.Map

func pngFor(size, n int) *pngEntry {
	if size < 0 {
		size = 0
	}
	if n < 0 {
		n = 0
	}
	k := pngKey{size, n}
	v, ok := pngCache.Load(k)
	if !ok {
		v, _ = pngCache.LoadOrStore(k, new(pngEntry))
	}
	e := v.(*pngEntry)
	e.once.Do(func() {
		switch {
		case size == 0 && n == 0:
			e.raw = fx.tiny
		case size == 0:
			e.raw = buildPNG(len(fx.tiny), n)
		default:
			e.raw = buildPNG(size, n)
		}
		e.b64 = base64.StdEncoding.AppendEncode(nil, e.raw)
		e.b64s = string(e.b64)
	})
	return e
}

// PNG returns the first image the servers send when configured with SetImageSize(size): a valid PNG of
// exactly size bytes when size is at least about 100, the 77-byte fixtures/tiny.png when size is 0. The slice is
// shared and cached: do not modify it.
func PNG(size int) []byte { return pngFor(size, 0).raw }

// PNGBase64 returns PNG(size) in standard base64, the string the servers embed.
func PNGBase64(size int) string { return pngFor(size, 0).b64s }

// NthPNG returns image n (from 0) of a multi-image answer configured with SetImageSize(size). Each n has
// different pixels, so a test can tell the images of one answer apart and check their order. Shared: do not
// modify.
func NthPNG(size, n int) []byte { return pngFor(size, n).raw }

// NthPNGBase64 returns NthPNG(size, n) in standard base64.
func NthPNGBase64(size, n int) string { return pngFor(size, n).b64s }

const (
	pngFixed  = 8 + 25 + 12 + 12 // signature, IHDR chunk, IDAT chunk framing, IEND chunk
	zlibFixed = 2 + 4            // zlib header and Adler-32 trailer
	padFixed  = 12               // framing of the padding chunk
	maxStored = 65535            // the largest stored deflate block
)

// storedLen is the size of n bytes of data in stored deflate blocks.
func storedLen(n int) int {
	blocks := (n + maxStored - 1) / maxStored
	if blocks == 0 {
		blocks = 1
	}
	return n + 5*blocks
}

// buildPNG makes an RGB PNG of exactly size bytes (or the smallest possible, 1x1 plus padding, when size is
// below that). n varies the pixels.
func buildPNG(size, n int) []byte {
	avail := size - pngFixed - zlibFixed - padFixed
	w := int(math.Sqrt(float64(max(avail, 3)) / 3))
	w = max(w, 1)
	row := 1 + 3*w
	h := max(avail/row, 1)
	for h > 1 && storedLen(h*row) > avail {
		h--
	}
	rawLen := h * row
	pad := max(avail-storedLen(rawLen), 0)

	out := make([]byte, 0, pngFixed+zlibFixed+storedLen(rawLen)+padFixed+pad)
	out = append(out, "\x89PNG\r\n\x1a\n"...)

	var ihdr [13]byte
	binary.BigEndian.PutUint32(ihdr[0:], uint32(w))
	binary.BigEndian.PutUint32(ihdr[4:], uint32(h))
	ihdr[8] = 8 // bit depth
	ihdr[9] = 2 // colour type RGB; compression, filter and interlace stay 0
	out = appendChunk(out, "IHDR", func(b []byte) []byte { return append(b, ihdr[:]...) })

	// "fkUp": ancillary, private, safe to copy; decoders skip it.
	out = appendChunk(out, "fkUp", func(b []byte) []byte { return append(b, make([]byte, pad)...) })

	raw := make([]byte, rawLen)
	for y := range h {
		line := raw[y*row : (y+1)*row]
		line[0] = 0 // filter: none
		px := line[1:]
		for x := range w {
			px[3*x] = byte(x + 53*n)
			px[3*x+1] = byte(y + 29*n)
			px[3*x+2] = byte(x ^ y ^ 97*n)
		}
	}
	out = appendChunk(out, "IDAT", func(b []byte) []byte {
		b = append(b, 0x78, 0x01)
		for off := 0; off < rawLen; { // rawLen is at least 4: one row of one pixel
			blk := min(maxStored, rawLen-off)
			final := byte(0)
			if off+blk == rawLen {
				final = 1
			}
			b = append(b, final, byte(blk), byte(blk>>8), ^byte(blk), ^byte(blk>>8))
			b = append(b, raw[off:off+blk]...)
			off += blk
		}
		return binary.BigEndian.AppendUint32(b, adler32.Checksum(raw))
	})
	return appendChunk(out, "IEND", func(b []byte) []byte { return b })
}

// appendChunk appends a PNG chunk whose data fill appends.
func appendChunk(out []byte, typ string, fill func([]byte) []byte) []byte {
	start := len(out)
	out = append(out, 0, 0, 0, 0)
	out = append(out, typ...)
	out = fill(out)
	binary.BigEndian.PutUint32(out[start:], uint32(len(out)-start-8))
	return binary.BigEndian.AppendUint32(out, crc32.ChecksumIEEE(out[start+4:]))
}
