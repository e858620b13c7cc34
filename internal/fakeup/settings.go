package fakeup

import (
	"bytes"
	"encoding/base64"
	"slices"
	"strconv"
	"time"
)

// SetLatency sets the wait before every answer (any path), added to a fault's Latency. A client that leaves
// during it is counted in Canceled.
func (s *Server) SetLatency(d time.Duration) { s.change(func(c *settings) { c.latency = d }) }

// SetImageSize sets the size in bytes of each image; 0 selects fixtures/tiny.png. The images are PNG(bytes)
// and the following NthPNG(bytes, n), exact to the byte from about 100 bytes up.
func (s *Server) SetImageSize(bytes int) { s.change(func(c *settings) { c.imageSize = max(bytes, 0) }) }

// SetImages sets how many images an image answer carries (default 1).
func (s *Server) SetImages(n int) { s.change(func(c *settings) { c.images = max(n, 0) }) }

// SetTextTokens sets the text tokens reported beside the images (completion or candidates tokens are
// textTokens + ImageTokens*images). 0 also drops the text from the answer.
func (s *Server) SetTextTokens(n int) { s.change(func(c *settings) { c.textTokens = max(n, 0) }) }

// SetPromptTokens sets the prompt tokens reported in usage (default 17 for Gemini, 540 for the reseller, as in
// the fixtures). Any value goes, negative or absurd: a hostile upstream's report.
func (s *Server) SetPromptTokens(n int) { s.change(func(c *settings) { c.promptTokens = n }) }

// SetOutcome selects what a successful answer holds: OutcomeImage (default) or OutcomeTextOnly on both kinds;
// OutcomeNoImage, OutcomeImageSafety and OutcomePromptBlocked on Gemini. It panics on a mode the kind does not
// have, which is a bug in the test.
func (s *Server) SetOutcome(mode string) {
	switch mode {
	case OutcomeImage, OutcomeTextOnly:
	case OutcomeNoImage, OutcomeImageSafety, OutcomePromptBlocked:
		if s.kind != Gemini {
			panic("fakeup: outcome " + mode + " exists only on Gemini")
		}
	default:
		panic("fakeup: unknown outcome " + mode)
	}
	s.change(func(c *settings) { c.outcome = mode })
}

// SetResellerStyle selects where the reseller puts images: StyleMarkdown (default) or StyleImages. It panics
// on another value.
func (s *Server) SetResellerStyle(style string) {
	if style != StyleMarkdown && style != StyleImages {
		panic("fakeup: unknown reseller style " + style)
	}
	s.change(func(c *settings) { c.style = style })
}

// SetModels sets the model names a Gemini server knows; others get Google's 404.
func (s *Server) SetModels(names ...string) {
	m := modelSet(names)
	s.change(func(c *settings) { c.models = m })
}

// SetThoughtSignatures makes Gemini image parts carry a thoughtSignature (on) or none (off, the default).
func (s *Server) SetThoughtSignatures(on bool) { s.change(func(c *settings) { c.signatures = on }) }

// ThoughtSignature is the signature a Gemini server puts on image i of the answer with response id: standard
// base64 of a text naming both, so that each answer's signatures are its own.
func ThoughtSignature(id string, i int) string {
	return base64.StdEncoding.EncodeToString([]byte("fakeup thought signature of " + id + " image " + strconv.Itoa(i)))
}

// LastSignatures returns the thoughtSignatures of the last answer that carried some, one per image.
func (s *Server) LastSignatures() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return slices.Clone(s.lastSigs)
}

// Requests returns the number of requests received on any path.
func (s *Server) Requests() int64 { return s.requests.Load() }

// Canceled returns the number of requests whose client went away before the answer was complete: seen as the
// request context ending during a wait, hang or stall, or as a failed write.
func (s *Server) Canceled() int64 { return s.canceled.Load() }

// InFlight returns the number of requests being handled now.
func (s *Server) InFlight() int64 { return s.inflight.Load() }

// LastAuth returns the last request's Authorization header (reseller) or x-goog-api-key header (Gemini).
func (s *Server) LastAuth() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.lastAuth
}

// LastBody returns a copy of the last request's body.
func (s *Server) LastBody() []byte {
	s.mu.Lock()
	defer s.mu.Unlock()
	return bytes.Clone(s.lastBody)
}

// LastPath returns the last request's path, with "?" and the raw query when there is one.
func (s *Server) LastPath() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.lastPath
}

// Reset clears the fault and the statistics (requests, cancellations, last auth, path and body). The
// configuration (sizes, outcome, latency...) stays.
func (s *Server) Reset() {
	s.ClearFault()
	s.requests.Store(0)
	s.canceled.Store(0)
	s.mu.Lock()
	s.lastAuth, s.lastPath, s.lastBody, s.lastSigs, s.lastTrace = "", "", nil, nil, ""
	s.mu.Unlock()
}

// LastTraceparent returns the W3C traceparent header of the last request ("" when it had none).
func (s *Server) LastTraceparent() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.lastTrace
}
