package fakeup

import (
	"encoding/json"
	"net/http"
	"strconv"
	"strings"
)

// Plan variants of the reseller.
const (
	oaJSON = iota
	oaStream
	oaStreamUsage // stream_options.include_usage: "usage": null on every chunk, then a usage chunk
)

var (
	oaJSONHeader = http.Header{"Content-Type": {"application/json"}}
	oaSSEHeader  = http.Header{"Content-Type": {"text/event-stream"}, "Cache-Control": {"no-cache"}}
	rawNull      = json.RawMessage("null")
	rawStop      = json.RawMessage(`"stop"`)
)

// chatRequest is the part of a chat completion request the reseller reads. Messages are only checked for
// presence: decoding megabytes of data URLs would cost the benchmarks for nothing.
type chatRequest struct {
	Model         string  `json:"model"`
	Messages      present `json:"messages"`
	Stream        bool    `json:"stream"`
	StreamOptions *struct {
		IncludeUsage bool `json:"include_usage"`
	} `json:"stream_options"`
}

// present records that a JSON value other than null was there, without keeping (or copying) it.
type present bool

func (p *present) UnmarshalJSON(b []byte) error {
	*p = string(b) != "null"
	return nil
}

// Wire shapes of a (new-api relayed) chat completion and its chunks; field order follows the fixtures.
type oaObject struct {
	ID      string          `json:"id"`
	Object  string          `json:"object"`
	Created int64           `json:"created"`
	Model   string          `json:"model"`
	Choices []oaChoice      `json:"choices"`
	Usage   json.RawMessage `json:"usage,omitempty"`
}

type oaChoice struct {
	Index        int             `json:"index"`
	Message      *oaMsg          `json:"message,omitempty"`
	Delta        *oaMsg          `json:"delta,omitempty"`
	Logprobs     json.RawMessage `json:"logprobs,omitempty"`
	FinishReason json.RawMessage `json:"finish_reason"` // nil marshals as null
}

type oaMsg struct {
	Role    string    `json:"role,omitempty"`
	Content *string   `json:"content,omitempty"`
	Images  []oaImage `json:"images,omitempty"`
}

type oaImage struct {
	Type     string `json:"type"`
	ImageURL struct {
		URL string `json:"url"`
	} `json:"image_url"`
}

type oaUsage struct {
	PromptTokens     int `json:"prompt_tokens"`
	CompletionTokens int `json:"completion_tokens"`
	TotalTokens      int `json:"total_tokens"`
}

// oaUsageDetailed adds the all-zero details new-api relays send on non-stream answers.
type oaUsageDetailed struct {
	oaUsage
	PromptTokensDetails struct {
		CachedTokens int `json:"cached_tokens"`
		TextTokens   int `json:"text_tokens"`
		AudioTokens  int `json:"audio_tokens"`
		ImageTokens  int `json:"image_tokens"`
	} `json:"prompt_tokens_details"`
	CompletionTokensDetails struct {
		TextTokens      int `json:"text_tokens"`
		AudioTokens     int `json:"audio_tokens"`
		ReasoningTokens int `json:"reasoning_tokens"`
	} `json:"completion_tokens_details"`
}

func (s *Server) serveOpenAI(w http.ResponseWriter, r *http.Request, body []byte, set *settings) {
	switch {
	case r.URL.Path == "/v1/chat/completions" && r.Method == http.MethodPost:
		s.chat(w, r, body, set)
	case r.URL.Path == "/v1/models" && r.Method == http.MethodGet:
		if !s.bearerOK(r) {
			s.reply(w, r, http.StatusUnauthorized, "application/json", fx.oaBadKey)
			return
		}
		s.reply(w, r, http.StatusOK, "application/json", fx.oaModels)
	default:
		msg := "Invalid URL (" + r.Method + " " + r.URL.Path + ")"
		s.reply(w, r, http.StatusNotFound, "application/json", openaiError(msg, "invalid_request_error", "", ""))
	}
}

func (s *Server) bearerOK(r *http.Request) bool {
	if s.key == "" {
		return true
	}
	k, ok := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer ")
	return ok && k == s.key
}

func (s *Server) chat(w http.ResponseWriter, r *http.Request, body []byte, set *settings) {
	f, faulty := s.takeFault()
	if faulty && s.applyFault(w, r, f, "") {
		return
	}
	if !s.bearerOK(r) {
		s.reply(w, r, http.StatusUnauthorized, "application/json", fx.oaBadKey)
		return
	}
	var req chatRequest
	if err := json.Unmarshal(body, &req); err != nil {
		s.reply(w, r, http.StatusBadRequest, "application/json", fx.oaBadJSON)
		return
	}
	if req.Model == "" {
		s.reply(w, r, http.StatusBadRequest, "application/json",
			openaiError("you must provide a model parameter", "invalid_request_error", "", ""))
		return
	}
	if !req.Messages {
		s.reply(w, r, http.StatusBadRequest, "application/json",
			openaiError("Missing required parameter: 'messages'.", "invalid_request_error", "messages", "missing_required_parameter"))
		return
	}
	variant := oaJSON
	if req.Stream {
		variant = oaStream
		if req.StreamOptions != nil && req.StreamOptions.IncludeUsage {
			variant = oaStreamUsage
		}
	}
	p := s.planFor(set, req.Model, variant, func() *plan { return openAIPlan(set, req.Model, variant) })
	var ib [32]byte
	id := strconv.AppendUint(append(ib[:0], "fakeup"...), s.seq.Add(1), 10)
	s.deliver(w, r, p, id, f)
}

// openAIPlan builds the reseller's answer for a configuration, a model and a variant.
func openAIPlan(set *settings, model string, variant int) *plan {
	n := set.images
	if set.outcome == OutcomeTextOnly {
		n = 0
	}
	text := ""
	if set.textTokens > 0 {
		text = Text
	}
	p := &plan{imgs: make([][]byte, n)}
	urls := make([]string, n)
	for i := range n {
		p.imgs[i] = pngFor(set.imageSize, i).b64
		urls[i] = "data:image/png;base64," + imageMark(i)
	}
	completion := set.textTokens + ImageTokens*n
	usage := oaUsage{set.promptTokens, completion, set.promptTokens + completion}
	markdown := func(i int) string {
		c := "![image](" + urls[i] + ")"
		if i > 0 || text != "" {
			c = "\n\n" + c
		}
		return c
	}
	images := func(urls ...string) []oaImage {
		out := make([]oaImage, len(urls))
		for i, u := range urls {
			out[i].Type = "image_url"
			out[i].ImageURL.URL = u
		}
		return out
	}

	if variant == oaJSON {
		msg := &oaMsg{Role: "assistant"}
		content := text
		if set.style == StyleImages {
			msg.Images = images(urls...)
		} else {
			for i := range urls {
				content += markdown(i)
			}
		}
		msg.Content = &content
		obj := oaObject{
			ID: "chatcmpl-" + markID, Object: "chat.completion", Created: createdMark, Model: model,
			Choices: []oaChoice{{Message: msg, FinishReason: rawStop}},
			Usage:   marshal(oaUsageDetailed{oaUsage: usage}),
		}
		p.events = []*tmpl{compile(marshal(obj))}
		p.header = oaJSONHeader
		return p
	}

	var chunkUsage json.RawMessage
	if variant == oaStreamUsage {
		chunkUsage = rawNull // OpenAI documents "usage": null on every chunk but the last when include_usage is set
	}
	chunk := func(delta *oaMsg, finish json.RawMessage) *tmpl {
		obj := oaObject{
			ID: "chatcmpl-" + markID, Object: "chat.completion.chunk", Created: createdMark, Model: model,
			Choices: []oaChoice{{Delta: delta, Logprobs: rawNull, FinishReason: finish}},
			Usage:   chunkUsage,
		}
		return event(marshal(obj), "\n\n")
	}
	empty := ""
	p.events = append(p.events, chunk(&oaMsg{Role: "assistant", Content: &empty}, nil))
	if text != "" {
		p.events = append(p.events, chunk(&oaMsg{Content: &text}, nil))
	}
	p.split = len(p.events)
	for i := range urls {
		if set.style == StyleImages {
			p.events = append(p.events, chunk(&oaMsg{Images: images(urls[i])}, nil))
		} else {
			c := markdown(i)
			p.events = append(p.events, chunk(&oaMsg{Content: &c}, nil))
		}
	}
	p.events = append(p.events, chunk(&oaMsg{}, rawStop))
	if variant == oaStreamUsage {
		obj := oaObject{
			ID: "chatcmpl-" + markID, Object: "chat.completion.chunk", Created: createdMark, Model: model,
			Choices: []oaChoice{}, Usage: marshal(usage),
		}
		p.events = append(p.events, event(marshal(obj), "\n\n"))
	}
	p.events = append(p.events, compile([]byte("data: [DONE]\n\n")))
	p.stream = true
	p.header = oaSSEHeader
	return p
}

// openaiError builds an OpenAI error body in the fixtures' layout (4-space indent); empty param and code are
// null.
func openaiError(msg, typ, param, code string) []byte {
	nullable := func(s string) json.RawMessage {
		if s == "" {
			return rawNull
		}
		return marshal(s)
	}
	type body struct {
		Message string          `json:"message"`
		Type    string          `json:"type"`
		Param   json.RawMessage `json:"param"`
		Code    json.RawMessage `json:"code"`
	}
	return indent(marshal(map[string]body{"error": {msg, typ, nullable(param), nullable(code)}}), "    ")
}
