package fakeup

import (
	"bytes"
	"maps"
	"net/http"
	"time"
)

// Fault describes how the server misbehaves on the next generation requests (chat completions,
// generateContent, streamGenerateContent; not /v1/models). The fault is applied before the key is checked: it
// stands for the upstream's state, whatever the request.
//
// Latency, then Hang, Garbage, Status/Body are tried in that order; DropMidBody and StallMidStream act on the
// normal answer.
type Fault struct {
	Status int               // answer this HTTP status with the kind's fixture error body (or Body if set)
	Body   []byte            // body override: with Status, or alone for a 200 with this body
	Header map[string]string // extra response headers (e.g. retry-after), on whatever the answer is
	// Prepay selects the out-of-credit variant of a 429 (Status may be left 0): Gemini's
	// error_429_prepay_depleted.json, the reseller's error_429_insufficient_quota.json.
	Prepay  bool
	Latency time.Duration // wait before answering, abandoned (and counted in Canceled) if the client leaves
	Hang    bool          // read the request, never answer until the client leaves or the server closes
	Garbage bool          // 200, Content-Type application/json, a body that is not JSON
	// DropMidBody sends the headers and part of the body (streams: the events before the first image and half of
	// that one), then closes the TCP connection: the client reads io.ErrUnexpectedEOF.
	DropMidBody bool
	// StallMidStream sends the events before the first image, flushes, waits this long, then goes on. A
	// non-stream answer stalls the same way after half its body.
	StallMidStream time.Duration
	Times          int // apply to the next Times generation requests, then clear; 0 = until cleared
}

// garbage is what a proxy's error page looks like to a JSON parser.
var garbage = []byte("<html><head><title>502 Bad Gateway</title></head><body>upstream hiccup</body></html>\n")

// SetFault replaces the current fault with f.
func (s *Server) SetFault(f Fault) {
	f.Body = bytes.Clone(f.Body) // the caller may reuse its buffers
	f.Header = maps.Clone(f.Header)
	s.mu.Lock()
	defer s.mu.Unlock()
	s.fault, s.faultOn, s.faultLeft = f, true, f.Times
}

// ClearFault removes the current fault.
func (s *Server) ClearFault() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.fault, s.faultOn, s.faultLeft = Fault{}, false, 0
}

// takeFault returns the fault for this request, counting it down.
func (s *Server) takeFault() (Fault, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if !s.faultOn {
		return Fault{}, false
	}
	f := s.fault
	if s.faultLeft > 0 {
		s.faultLeft--
		if s.faultLeft == 0 {
			s.fault, s.faultOn = Fault{}, false
		}
	}
	return f, true
}

// applyFault answers the request as f says and reports whether it did (true: the handler is done). model is
// the requested model, for Gemini's 404 body.
func (s *Server) applyFault(w http.ResponseWriter, r *http.Request, f Fault, model string) bool {
	h := w.Header()
	for k, v := range f.Header {
		h.Set(k, v)
	}
	if !s.wait(r, f.Latency) {
		return true
	}
	ctype := "application/json"
	if s.kind == Gemini {
		ctype = geminiJSON
	}
	switch {
	case f.Hang:
		select {
		case <-r.Context().Done():
			s.gone()
		case <-s.done:
		}
	case f.Garbage:
		s.reply(w, r, http.StatusOK, "application/json", garbage)
	case f.Status != 0 || f.Body != nil || f.Prepay:
		status, body := f.Status, f.Body
		if status == 0 {
			status = http.StatusOK
			if f.Prepay {
				status = http.StatusTooManyRequests
			}
		}
		if body == nil {
			body = s.errorBody(status, f.Prepay, model)
		}
		s.reply(w, r, status, ctype, body)
	default:
		return false
	}
	return true
}

// errorBody returns the kind's body for an error status: the fixture where one exists, else the kind's
// envelope with the status text.
func (s *Server) errorBody(status int, prepay bool, model string) []byte {
	if s.kind == OpenAI {
		switch status {
		case 400:
			return fx.oaBadJSON
		case 401:
			return fx.oaBadKey
		case 403:
			return fx.oaQuota403
		case 429:
			if prepay {
				return fx.oaNoCredit429
			}
			return fx.oaRate429
		case 500:
			return fx.oa500
		}
		return openaiError(http.StatusText(status), "upstream_error", "", "")
	}
	switch status {
	case 400:
		return fx.gBadArg
	case 403:
		return fx.gNoKey
	case 404:
		return geminiNotFound(model)
	case 429:
		if prepay {
			return fx.gPrepay429
		}
		return fx.gQuota429
	case 500:
		return fx.g500
	case 503:
		return fx.g503
	}
	return googleError(status, http.StatusText(status), "")
}
