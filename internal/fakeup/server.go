// Package fakeup runs fake upstreams for the gateway's tests and benchmarks: an OpenAI-compatible reseller
// (chat completions with markdown or OpenRouter-style images) and Google's native Gemini API, both on real
// loopback sockets and speaking the recorded wire formats of fixtures/ (layouts, error bodies, SSE framing and
// their traps). Faults (statuses, latency, hangs, garbage, cut connections, stalled streams) and counters are
// the same on both.
//
// The package imports nothing of this module, so it can never agree with the gateway by sharing its bugs.
package fakeup

import (
	"bytes"
	"errors"
	"net"
	"net/http"
	"strconv"
	"sync"
	"sync/atomic"
	"time"
)

// Kind selects the wire format a Server speaks.
type Kind int

const (
	// OpenAI is an OpenAI-compatible reseller (laozhang.ai style): POST /v1/chat/completions, GET /v1/models.
	OpenAI Kind = iota + 1
	// Gemini is Google's native API: POST /v1beta/models/{model}:generateContent and :streamGenerateContent.
	Gemini
)

// Outcomes for SetOutcome. The reseller knows OutcomeImage and OutcomeTextOnly; Gemini knows all five, each
// an HTTP 200 as Google sends it.
const (
	OutcomeImage         = "image"          // text then the configured images
	OutcomeTextOnly      = "text_only"      // text, no image (gemini/response_text_only.json)
	OutcomeNoImage       = "no_image"       // finishReason NO_IMAGE, no content (gemini/response_no_image.json)
	OutcomeImageSafety   = "image_safety"   // finishReason IMAGE_SAFETY (gemini/response_image_safety.json)
	OutcomePromptBlocked = "prompt_blocked" // promptFeedback.blockReason (gemini/response_prompt_blocked.json)
)

// Reseller styles for SetResellerStyle: where the images go in a chat completion.
const (
	StyleMarkdown = "markdown" // ![image](data:...) in message.content, laozhang style (default)
	StyleImages   = "images"   // message.images[].image_url.url, OpenRouter style
)

// Defaults of a new Server.
const (
	DefaultGeminiModel = "gemini-2.5-flash-image" // the only model a Gemini server knows unless told otherwise
	ImageTokens        = 1290                     // output tokens per image, as gemini-2.5-flash-image reports
	// Text is the text both kinds send before the images (when the text token count is not 0).
	Text = "Here is your nano banana dish, served Gemini-style."
)

// Options configures Start. Zero fields take their defaults; everything but Kind, Addr and Key can also be
// changed later with the setters.
type Options struct {
	Kind      Kind
	Addr      string        // listen address, default "127.0.0.1:0"
	Key       string        // the key clients must send; "" accepts any key or none
	Models    []string      // Gemini: the model names that exist, default {DefaultGeminiModel}
	ImageSize int           // approximate bytes per image, default 0: fixtures/tiny.png (77 bytes)
	Images    int           // images per answer, default 1 (SetImages(0) for none)
	Latency   time.Duration // wait before every answer
	// ThoughtSignatures: Gemini image parts carry a thoughtSignature, as Google's 3.x image models send them,
	// unique to each answer and image (see ThoughtSignature and LastSignatures).
	ThoughtSignatures bool
}

// settings is the mutable configuration, copied per request so one request sees one consistent version.
type settings struct {
	version      uint64
	latency      time.Duration
	imageSize    int
	images       int
	signatures   bool // image parts carry a thoughtSignature (Gemini)
	textTokens   int
	promptTokens int
	outcome      string
	style        string
	models       map[string]bool // replaced, never modified
}

// Server is a running fake upstream. Its methods are safe for concurrent use.
type Server struct {
	kind Kind
	key  string
	ln   net.Listener
	srv  *http.Server
	addr string
	done chan struct{} // closed by Close: unblocks hangs, stalls and waits
	once sync.Once
	wg   sync.WaitGroup

	requests, canceled, inflight atomic.Int64
	seq                          atomic.Uint64
	closing                      atomic.Bool // set before connections close, so their end is not a cancellation

	mu        sync.Mutex
	closed    bool
	set       settings
	plans     map[planKey]*plan
	fault     Fault
	faultOn   bool
	faultLeft int
	lastAuth  string
	lastTrace string // the traceparent header of the last request
	lastPath  string
	lastBody  []byte
	lastSigs  []string
}

type planKey struct {
	model   string
	variant int
}

// StartOpenAI starts a reseller on 127.0.0.1:0 that expects key ("" accepts any).
func StartOpenAI(key string) (*Server, error) { return Start(Options{Kind: OpenAI, Key: key}) }

// StartGemini starts a Gemini API on 127.0.0.1:0 that expects key ("" accepts any).
func StartGemini(key string) (*Server, error) { return Start(Options{Kind: Gemini, Key: key}) }

// Start starts a server as o describes. It listens before returning, so URL is usable at once.
func Start(o Options) (*Server, error) {
	if o.Kind != OpenAI && o.Kind != Gemini {
		return nil, errors.New("fakeup: Options.Kind must be OpenAI or Gemini")
	}
	addr := o.Addr
	if addr == "" {
		addr = "127.0.0.1:0"
	}
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, err
	}
	s := &Server{kind: o.Kind, key: o.Key, ln: ln, done: make(chan struct{}), plans: map[planKey]*plan{}}
	s.addr = ln.Addr().String()
	if ta, ok := ln.Addr().(*net.TCPAddr); ok && ta.IP.IsUnspecified() {
		s.addr = net.JoinHostPort("127.0.0.1", strconv.Itoa(ta.Port)) // a URL clients can dial
	}
	s.set = settings{
		latency:      o.Latency,
		imageSize:    o.ImageSize,
		images:       1,
		outcome:      OutcomeImage,
		style:        StyleMarkdown,
		textTokens:   14, // gemini/response_image.json: 1304 = 1290 + 14
		promptTokens: 17,
		models:       map[string]bool{DefaultGeminiModel: true},
		signatures:   o.ThoughtSignatures,
	}
	if o.Kind == OpenAI {
		// openai/response_chat_markdown_image.json: 1298 = 1290 + 8, prompt 540.
		s.set.textTokens, s.set.promptTokens = 8, 540
	}
	if o.Images > 0 {
		s.set.images = o.Images
	}
	if len(o.Models) > 0 {
		s.set.models = modelSet(o.Models)
	}
	s.srv = &http.Server{Handler: http.HandlerFunc(s.serve)}
	go s.srv.Serve(ln) //nolint:errcheck // returns ErrServerClosed after Close
	return s, nil
}

// URL returns the base URL a gateway configuration uses: http://127.0.0.1:PORT/v1 for the reseller,
// http://127.0.0.1:PORT/v1beta for Gemini.
func (s *Server) URL() string {
	if s.kind == OpenAI {
		return "http://" + s.addr + "/v1"
	}
	return "http://" + s.addr + "/v1beta"
}

// Addr returns the host:port the server listens on.
func (s *Server) Addr() string { return s.addr }

// Kind returns the wire format the server speaks.
func (s *Server) Kind() Kind { return s.kind }

// Close closes the listener and every connection, unblocks hanging and stalled requests, and waits for their
// handlers to return. It is safe to call more than once.
func (s *Server) Close() {
	s.once.Do(func() {
		s.mu.Lock()
		s.closed = true
		s.mu.Unlock()
		s.closing.Store(true)
		// Connections close before the waits end, so a hang released here cannot answer an empty 200.
		s.srv.Close()
		close(s.done)
		s.wg.Wait()
	})
}

var bodyPool = sync.Pool{New: func() any { return new(bytes.Buffer) }}

func (s *Server) serve(w http.ResponseWriter, r *http.Request) {
	s.requests.Add(1)
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return
	}
	// Added under mu so Close, which sets closed under mu before waiting, never races an Add.
	s.wg.Add(1)
	s.mu.Unlock()
	defer s.wg.Done()
	s.inflight.Add(1)
	defer s.inflight.Add(-1)

	buf := bodyPool.Get().(*bytes.Buffer)
	buf.Reset()
	defer bodyPool.Put(buf)
	if r.ContentLength > 0 {
		buf.Grow(int(r.ContentLength) + 1)
	}
	_, rerr := buf.ReadFrom(r.Body)
	body := buf.Bytes()

	authHeader := "Authorization"
	if s.kind == Gemini {
		authHeader = "X-Goog-Api-Key"
	}
	p := r.URL.Path
	if r.URL.RawQuery != "" {
		p += "?" + r.URL.RawQuery
	}
	s.mu.Lock()
	s.lastAuth = r.Header.Get(authHeader)
	s.lastTrace = r.Header.Get("traceparent")
	s.lastPath = p
	s.lastBody = append(s.lastBody[:0], body...)
	set := s.set
	s.mu.Unlock()

	if rerr != nil {
		s.gone()
		return
	}
	if !s.wait(r, set.latency) {
		return
	}
	if s.kind == OpenAI {
		s.serveOpenAI(w, r, body, &set)
	} else {
		s.serveGemini(w, r, body, &set)
	}
}

// gone counts a request whose client left, unless the server itself is closing.
func (s *Server) gone() {
	if !s.closing.Load() {
		s.canceled.Add(1)
	}
}

// wait sleeps d and reports whether the request should go on: false if the client left (counted) or the
// server closed.
func (s *Server) wait(r *http.Request, d time.Duration) bool {
	if d <= 0 {
		return true
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-r.Context().Done():
		s.gone()
	case <-s.done:
	}
	return false
}

// reply writes a whole small body.
func (s *Server) reply(w http.ResponseWriter, r *http.Request, status int, ctype string, body []byte) {
	if r.Context().Err() != nil {
		s.gone()
		return
	}
	h := w.Header()
	h.Set("Content-Type", ctype)
	h.Set("Content-Length", strconv.Itoa(len(body)))
	w.WriteHeader(status)
	if _, err := w.Write(body); err != nil {
		s.gone()
	}
}

// deliver writes a plan with id as the request's id, applying the mid-body faults of f.
func (s *Server) deliver(w http.ResponseWriter, r *http.Request, p *plan, id []byte, f Fault) {
	var cb [20]byte
	v := vals{id: id, created: strconv.AppendInt(cb[:0], time.Now().Unix(), 10), imgs: p.imgs}
	if p.sigs {
		sigs := make([]string, len(p.imgs))
		v.sigs = make([][]byte, len(p.imgs))
		for i := range p.imgs {
			sigs[i] = ThoughtSignature(string(id), i)
			v.sigs[i] = []byte(sigs[i])
		}
		s.mu.Lock()
		s.lastSigs = sigs
		s.mu.Unlock()
	}
	if r.Context().Err() != nil {
		s.gone()
		return
	}
	h := w.Header()
	for k, vs := range p.header {
		h[k] = vs // shared read-only slices: net/http only reads them
	}
	if !p.stream {
		h["Content-Length"] = []string{strconv.Itoa(p.events[0].size(&v))}
	}
	w.WriteHeader(http.StatusOK)
	rc := http.NewResponseController(w)
	for i, ev := range p.events {
		n, from := ev.size(&v), 0
		if i == p.split && (f.DropMidBody || f.StallMidStream > 0) {
			mid := 0 // a stream stalls between events
			if f.DropMidBody || !p.stream {
				mid = n / 2 // a cut, or a stall of a plain body, happens inside it
			}
			if err := ev.write(w, &v, 0, mid); err != nil {
				s.gone()
				return
			}
			if err := rc.Flush(); err != nil {
				s.gone()
				return
			}
			if f.DropMidBody {
				// Hijacking after a partial write leaves the client short of Content-Length (or of the final
				// chunk): it reads io.ErrUnexpectedEOF, as when an upstream dies mid-answer.
				if conn, _, err := rc.Hijack(); err == nil {
					conn.Close()
				}
				return
			}
			if !s.wait(r, f.StallMidStream) {
				return
			}
			from = mid
		}
		if err := ev.write(w, &v, from, n); err != nil {
			s.gone()
			return
		}
		if p.stream {
			if err := rc.Flush(); err != nil {
				s.gone()
				return
			}
		}
	}
	if err := rc.Flush(); err != nil {
		s.gone()
	}
}

// planFor returns the cached plan for (model, variant) under the settings version of set, building it if needed.
func (s *Server) planFor(set *settings, model string, variant int, build func() *plan) *plan {
	k := planKey{model, variant}
	s.mu.Lock()
	if s.set.version == set.version {
		if p := s.plans[k]; p != nil {
			s.mu.Unlock()
			return p
		}
	}
	s.mu.Unlock()
	p := build()
	s.mu.Lock()
	if s.set.version == set.version {
		if len(s.plans) >= 64 { // model names come from clients: bound the cache
			clear(s.plans)
		}
		s.plans[k] = p
	}
	s.mu.Unlock()
	return p
}

// change applies a settings change and drops the plans built from older settings.
func (s *Server) change(f func(*settings)) {
	s.mu.Lock()
	defer s.mu.Unlock()
	f(&s.set)
	s.set.version++
	clear(s.plans)
}

func modelSet(names []string) map[string]bool {
	m := make(map[string]bool, len(names))
	for _, n := range names {
		m[n] = true
	}
	return m
}
