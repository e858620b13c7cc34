package gateway

import (
	"strconv"
	"strings"

	"nanogate/internal/safemath"
	"nanogate/provider"
)

// answerOverhead is what an answer holds besides its images: the text, the
// JSON around it, the buffers of the call.
const answerOverhead = 64 << 10

// bytesPerPixel is what one pixel of a generated image weighs in an answer:
// about 1.5 bytes of PNG, 2 once in base64.
const bytesPerPixel = 2

// forwardedAnswerBytes is what an answer forwarded as it arrives
// (ChatForward) holds, whatever the size of its images: its window, the
// part of the answer rendered before the status goes out, and the buffers
// of the upstream and client connections.
const forwardedAnswerBytes = 512 << 10

// offloadWriterBytes is what an answer whose images are stored as they
// arrive holds besides its window: the image writer's stage and the
// spool file's buffers, one image at a time.
const offloadWriterBytes = 64 << 10

// ForwardedBytes is what call's answer holds: a window when it is
// forwarded (Forwards: every kind of provider forwards its answers in
// windows), plus the image writer's buffers when its images are stored on
// the way; else AnswerBytes (n > 1 is read whole).
func (g *Gateway) ForwardedBytes(call *Call) int64 {
	if !g.Forwards(call) {
		return g.AnswerBytes(call.Req)
	}
	if g.Offloads(call) {
		return forwardedAnswerBytes + offloadWriterBytes
	}
	return forwardedAnswerBytes
}

// StreamBytes is what call's streamed answer holds: a window when its
// images stay inline (every kind of provider forwards its streams in
// windows, ChatRequest.ForwardStream), else AnswerBytes: n > 1 and images
// stored on the way are counted whole.
func (g *Gateway) StreamBytes(call *Call) int64 {
	if call.Req.N <= 1 && !g.Offloads(call) {
		return forwardedAnswerBytes
	}
	return g.AnswerBytes(call.Req)
}

// AnswerBytes is how much memory req's answer may hold while it is in
// flight: per image asked for, the base64 of a PNG of the size it is billed
// at (1K when the size says no edge), plus a fixed overhead: what an answer
// read whole holds. The in-flight bound (server.max_bytes_in_flight) admits
// requests by it, or by ForwardedBytes for answers forwarded.
func (g *Gateway) AnswerBytes(req *provider.ChatRequest) int64 {
	edge := sizeEdge(g.imageSize(req))
	perImage := safemath.Mul(edge*edge, bytesPerPixel)
	return safemath.Add(safemath.Mul(int64(max(req.N, 1)), perImage), answerOverhead)
}

// sizeEdge is the long edge in pixels of a catalogue size name ("512",
// "1K", "2K", "4K"), 1024 for a name that says none.
func sizeEdge(size string) int64 {
	if k, ok := strings.CutSuffix(strings.ToUpper(size), "K"); ok {
		if n, err := strconv.Atoi(k); err == nil && n > 0 && n <= 8 {
			return int64(n) * 1024
		}
	} else if n, err := strconv.Atoi(size); err == nil && n >= 64 && n <= 8192 {
		return int64(n)
	}
	return 1024
}
