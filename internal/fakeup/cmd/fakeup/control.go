package main

import (
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"strconv"
	"time"

	"nanogate/internal/fakeup"
)

// faultJSON is a fakeup.Fault on the wire: snake_case names, durations as Go duration strings ("1.5s"), the
// body as text. Unknown fields are refused so that a test's typo is not silently a no-op.
type faultJSON struct {
	Status         int               `json:"status"`
	Body           *string           `json:"body"`
	Header         map[string]string `json:"header"`
	Prepay         bool              `json:"prepay"`
	Latency        string            `json:"latency"`
	Hang           bool              `json:"hang"`
	Garbage        bool              `json:"garbage"`
	DropMidBody    bool              `json:"drop_mid_body"`
	StallMidStream string            `json:"stall_mid_stream"`
	Times          int               `json:"times"`
}

func (j faultJSON) fault() (fakeup.Fault, error) {
	f := fakeup.Fault{
		Status: j.Status, Header: j.Header, Prepay: j.Prepay, Hang: j.Hang, Garbage: j.Garbage,
		DropMidBody: j.DropMidBody, Times: j.Times,
	}
	if j.Body != nil {
		f.Body = []byte(*j.Body)
	}
	var err error
	if f.Latency, err = duration(j.Latency); err != nil {
		return f, fmt.Errorf("latency: %w", err)
	}
	if f.StallMidStream, err = duration(j.StallMidStream); err != nil {
		return f, fmt.Errorf("stall_mid_stream: %w", err)
	}
	return f, nil
}

func duration(s string) (time.Duration, error) {
	if s == "" {
		return 0, nil
	}
	return time.ParseDuration(s)
}

// stats is one server's counters as GET /stats reports them.
type stats struct {
	Requests int64 `json:"requests"`
	Canceled int64 `json:"canceled"`
	Inflight int64 `json:"inflight"`
}

// control serves the control API over the running fakes. latency, images and imageSize are the command
// line's values, which POST /reset restores.
type control struct {
	servers   map[string]*fakeup.Server // "openai", "gemini"
	latency   time.Duration
	images    int
	imageSize int
}

// listenControl checks that addr is a loopback address (the API can make the fakes hang or fail) and listens.
func listenControl(addr string) (net.Listener, error) {
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		return nil, err
	}
	if ip := net.ParseIP(host); host != "localhost" && (ip == nil || !ip.IsLoopback()) {
		return nil, errors.New("the control address must be a loopback address")
	}
	return net.Listen("tcp", addr)
}

func (c *control) handler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("POST /fault", func(w http.ResponseWriter, r *http.Request) {
		targets, ok := c.targets(w, r, true)
		if !ok {
			return
		}
		var j faultJSON
		dec := json.NewDecoder(r.Body)
		dec.DisallowUnknownFields()
		if err := dec.Decode(&j); err != nil {
			http.Error(w, "fault: "+err.Error(), http.StatusBadRequest)
			return
		}
		f, err := j.fault()
		if err != nil {
			http.Error(w, "fault: "+err.Error(), http.StatusBadRequest)
			return
		}
		for _, s := range targets {
			s.SetFault(f)
		}
		w.WriteHeader(http.StatusNoContent)
	})
	mux.HandleFunc("POST /reset", func(w http.ResponseWriter, r *http.Request) {
		targets, ok := c.targets(w, r, true)
		if !ok {
			return
		}
		for _, s := range targets {
			s.Reset()
			s.SetLatency(c.latency)
			s.SetImages(c.images)
			s.SetImageSize(c.imageSize)
			s.SetThoughtSignatures(false)
		}
		w.WriteHeader(http.StatusNoContent)
	})
	mux.HandleFunc("GET /stats", func(w http.ResponseWriter, r *http.Request) {
		out := map[string]stats{}
		for name, s := range c.servers {
			out[name] = stats{Requests: s.Requests(), Canceled: s.Canceled(), Inflight: s.InFlight()}
		}
		w.Header().Set("Content-Type", "application/json")
		json.NewEncoder(w).Encode(out) //nolint:errcheck // the client went away
	})
	mux.HandleFunc("POST /latency", func(w http.ResponseWriter, r *http.Request) {
		targets, ok := c.targets(w, r, true)
		if !ok {
			return
		}
		d, err := time.ParseDuration(r.URL.Query().Get("d"))
		if err != nil || d < 0 {
			http.Error(w, "latency: d must be a duration such as 2s", http.StatusBadRequest)
			return
		}
		for _, s := range targets {
			s.SetLatency(d)
		}
		w.WriteHeader(http.StatusNoContent)
	})
	mux.HandleFunc("POST /images", func(w http.ResponseWriter, r *http.Request) {
		targets, ok := c.targets(w, r, true)
		if !ok {
			return
		}
		n, err := strconv.Atoi(r.URL.Query().Get("n"))
		if err != nil || n < 0 {
			http.Error(w, "images: n must be a count", http.StatusBadRequest)
			return
		}
		for _, s := range targets {
			s.SetImages(n)
		}
		w.WriteHeader(http.StatusNoContent)
	})
	mux.HandleFunc("POST /image-size", func(w http.ResponseWriter, r *http.Request) {
		targets, ok := c.targets(w, r, true)
		if !ok {
			return
		}
		n, err := strconv.Atoi(r.URL.Query().Get("bytes"))
		if err != nil || n < 0 || n > 64<<20 {
			http.Error(w, "image-size: bytes must be a size up to 64 MiB", http.StatusBadRequest)
			return
		}
		fakeup.PNG(n) // build it now, not inside the next request's latency
		for _, s := range targets {
			s.SetImageSize(n)
		}
		w.WriteHeader(http.StatusNoContent)
	})
	mux.HandleFunc("POST /thought-signatures", func(w http.ResponseWriter, r *http.Request) {
		targets, ok := c.targets(w, r, true)
		if !ok {
			return
		}
		on, err := strconv.ParseBool(r.URL.Query().Get("on"))
		if err != nil {
			http.Error(w, "thought-signatures: on must be true or false", http.StatusBadRequest)
			return
		}
		for _, s := range targets {
			s.SetThoughtSignatures(on)
		}
		w.WriteHeader(http.StatusNoContent)
	})
	mux.HandleFunc("GET /signatures", func(w http.ResponseWriter, r *http.Request) {
		targets, ok := c.targets(w, r, false)
		if !ok {
			return
		}
		sigs := targets[0].LastSignatures()
		if sigs == nil {
			sigs = []string{}
		}
		w.Header().Set("Content-Type", "application/json")
		json.NewEncoder(w).Encode(map[string][]string{"signatures": sigs}) //nolint:errcheck // the client went away
	})
	mux.HandleFunc("GET /last", func(w http.ResponseWriter, r *http.Request) {
		targets, ok := c.targets(w, r, false)
		if !ok {
			return
		}
		s := targets[0]
		w.Header().Set("Content-Type", "application/json")
		w.Header().Set("X-Fakeup-Path", s.LastPath())
		w.Write(s.LastBody()) //nolint:errcheck // the client went away
	})
	return mux
}

// targets returns the servers named by ?server= (every running one when absent and all is true). It answers
// 400 itself when the name is unknown or missing.
func (c *control) targets(w http.ResponseWriter, r *http.Request, all bool) ([]*fakeup.Server, bool) {
	name := r.URL.Query().Get("server")
	if name == "" && all {
		out := make([]*fakeup.Server, 0, len(c.servers))
		for _, s := range c.servers {
			out = append(out, s)
		}
		return out, true
	}
	s := c.servers[name]
	if s == nil {
		http.Error(w, "server must be one of the running fakes: openai or gemini", http.StatusBadRequest)
		return nil, false
	}
	return []*fakeup.Server{s}, true
}
