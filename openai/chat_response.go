package openai

import (
	"strconv"
	"strings"
	"time"

	"nanogate/gateway"
	"nanogate/internal/jsonx"
	"nanogate/provider"
)

// Format is how images appear in a chat answer (README: Images in answers).
type Format uint8

// Image formats.
const (
	FormatMarkdown Format = iota
	FormatDataURL
	FormatImages
)

// ParseFormat reads a format name; ok is false for an unknown name.
func ParseFormat(s string) (Format, bool) {
	switch s {
	case "markdown", "":
		return FormatMarkdown, true
	case "data_url":
		return FormatDataURL, true
	case "images":
		return FormatImages, true
	}
	return 0, false
}

// segs is a body made of small rendered pieces and large image spans that are
// written straight from the upstream buffer, never copied.
type segs struct {
	small []byte
	parts []piece
	n     int
	inner [4]piece // parts' first backing array: an answer of one image needs no other
}

// init sets small's first capacity and parts on inner.
func (s *segs) init(small int) {
	s.small = make([]byte, 0, small)
	s.parts = s.inner[:0]
}

type piece struct {
	off, end int    // range of small, when ext is nil
	ext      []byte // an image span
}

func (s *segs) mark() int { return len(s.small) }

// cut closes the small piece that started at from.
func (s *segs) cut(from int) {
	if len(s.small) > from {
		s.parts = append(s.parts, piece{off: from, end: len(s.small)})
		s.n += len(s.small) - from
	}
}

func (s *segs) ext(b []byte) {
	s.parts = append(s.parts, piece{ext: b})
	s.n += len(b)
}

func (s *segs) bytes(p piece) []byte {
	if p.ext != nil {
		return p.ext
	}
	return s.small[p.off:p.end]
}

// image writes img inside a JSON string: its link, or its data URL with the
// base64 as an ext piece. It returns where the open small piece starts.
func (s *segs) image(from int, img *provider.Image) int {
	if img.URL != "" {
		s.small = appendEscaped(s.small, img.URL)
		return from
	}
	s.small = appendDataURLStart(s.small, img.MIME)
	s.cut(from)
	s.ext(img.B64)
	return s.mark()
}

// appendEscaped writes s JSON-escaped, without the quotes.
func appendEscaped(b []byte, s string) []byte {
	n := len(b)
	b = jsonx.AppendString(b, s)
	copy(b[n:], b[n+1:len(b)-1])
	return b[:len(b)-2]
}

// appendDataURLStart writes "data:<mime>;base64," and leaves the payload to ext.
func appendDataURLStart(b []byte, mime string) []byte {
	b = append(b, "data:"...)
	b = append(b, mime...)
	return append(b, ";base64,"...)
}

// ChatBody is a rendered chat.completion. It is an io.Reader for any copier
// and writes itself in pieces to fasthttp (BodyWriterTo), so image bytes go
// from the upstream buffer to the socket without a copy.
type ChatBody struct{ segBody }

// NewChatBody renders a as an OpenAI chat.completion for the public model.
// The id is the upstream's when it is an OpenAI one, else "chatcmpl-" and
// reqID: one id shape whatever the upstream (Google's responseId is not
// one); created is now when the upstream gave none.
func NewChatBody(a *gateway.Answer, reqID, model string, f Format) *ChatBody {
	if a.Result.Created == 0 {
		a.Result.Created = time.Now().Unix()
	}
	b := &ChatBody{}
	b.release = a.Result.Release
	from := 0
	s := &b.segs
	// The head, a choice's text and the usage: about 700 bytes.
	s.init(1024)
	s.small = appendChatHead(s.small, chatID(a.Result.ID, reqID), a.Result.Created, model)
	for i := range a.Result.Choices {
		if i > 0 {
			s.small = append(s.small, ',')
		}
		from = renderChoice(s, from, &a.Result.Choices[i], f)
	}
	s.small = appendChatTail(s.small, a.Usage, a.Result.Usage.PromptImageTokens)
	s.cut(from)
	return b
}

// chatID is the id of a chat answer: the upstream's when it is an OpenAI
// one, else "chatcmpl-" and reqID: one id shape whatever the upstream
// (Google's responseId is not one).
func chatID(upstream, reqID string) string {
	if strings.HasPrefix(upstream, "chatcmpl-") {
		return upstream
	}
	return "chatcmpl-" + reqID
}

// appendChatHead writes a chat.completion up to its first choice.
func appendChatHead(b []byte, id string, created int64, model string) []byte {
	b = append(b, `{"id":`...)
	b = jsonx.AppendString(b, id)
	b = append(b, `,"object":"chat.completion","created":`...)
	b = strconv.AppendInt(b, created, 10)
	b = append(b, `,"model":`...)
	b = jsonx.AppendString(b, model)
	return append(b, `,"choices":[`...)
}

// appendChatTail writes what follows the last choice.
func appendChatTail(b []byte, u gateway.Usage, promptImage int64) []byte {
	b = append(b, `],"usage":`...)
	b = appendUsage(b, u, promptImage)
	return append(b, "}\n"...)
}

// renderChoice writes one choice. It returns where the open small piece
// starts.
func renderChoice(s *segs, from int, c *provider.Choice, f Format) int {
	s.small = append(s.small, `{"index":`...)
	s.small = strconv.AppendInt(s.small, int64(c.Index), 10)
	s.small = append(s.small, `,"message":{"role":"assistant","content":`...)
	if refused(c) {
		// A safety block is a refusal in OpenAI's schema: the reason
		// in refusal, content null.
		s.small = append(s.small, `null,"refusal":"`...)
		s.small = append(s.small, refusalText(c.Text)...)
		s.small = append(s.small, '"')
	} else {
		from = renderMessage(s, from, c, f)
		s.small = append(s.small, `,"refusal":null`...)
	}
	return appendChoiceEnd(s, from, c.FinishReason)
}

// appendChoiceEnd closes a choice's message and writes its finish reason.
func appendChoiceEnd(s *segs, from int, finish string) int {
	s.small = append(s.small, `},"logprobs":null,"finish_reason":`...)
	s.small = jsonx.AppendString(s.small, finish)
	s.small = append(s.small, '}')
	return from
}

// refused reports whether a choice is a refusal: the content filter ended
// it and it holds no image.
func refused(c *provider.Choice) bool {
	return c.FinishReason == "content_filter" && len(c.Images) == 0
}

// refusalText is the JSON-escaped refusal of a choice: its text, or a
// plain reason when the upstream gave none.
func refusalText(text []byte) []byte {
	if len(text) == 0 {
		return []byte("The model returned no image (content_filter).")
	}
	return text
}

// renderMessage writes the content (and images) of one choice, starting right
// after `"content":`. It returns where the open small piece starts.
func renderMessage(s *segs, from int, c *provider.Choice, f Format) int {
	imgs := c.Images
	switch {
	case f == FormatDataURL && len(imgs) > 0:
		s.small = append(s.small, '"')
		from = s.image(from, &imgs[0])
		s.small = append(s.small, '"')
		imgs = imgs[1:]
		if len(imgs) == 0 {
			return from
		}
		s.small = append(s.small, `,"images":`...)
		return renderImageList(s, from, imgs)
	case f == FormatMarkdown && len(c.Pieces) > 0:
		s.small = append(s.small, '"')
		from = renderPieces(s, from, c)
		s.small = append(s.small, '"')
		return from
	case f == FormatMarkdown:
		s.small = append(s.small, '"')
		s.small = append(s.small, c.Text...)
		for i := range imgs {
			if i > 0 || len(c.Text) > 0 {
				s.small = append(s.small, `\n\n`...)
			}
			s.small = append(s.small, "![image]("...)
			from = s.image(from, &imgs[i])
			s.small = append(s.small, ')')
		}
		s.small = append(s.small, '"')
		return from
	}
	// FormatImages, or data_url without an image: text in content.
	s.small = append(s.small, '"')
	s.small = append(s.small, c.Text...)
	s.small = append(s.small, '"')
	if len(imgs) == 0 {
		return from
	}
	s.small = append(s.small, `,"images":`...)
	return renderImageList(s, from, imgs)
}

// renderPieces writes the content of a markdown answer in the model's
// order: text, image, text, image stay so, each image a paragraph of its
// own. Adjacent runs of text are one paragraph, as the model wrote them.
func renderPieces(s *segs, from int, c *provider.Choice) int {
	prevText := false
	for i, p := range c.Pieces {
		if p.Text != nil {
			if i > 0 && !prevText {
				s.small = append(s.small, `\n\n`...)
			}
			s.small = append(s.small, p.Text...)
			prevText = true
			continue
		}
		if p.Image < 0 || p.Image >= len(c.Images) {
			continue
		}
		if i > 0 {
			s.small = append(s.small, `\n\n`...)
		}
		s.small = append(s.small, "![image]("...)
		from = s.image(from, &c.Images[p.Image])
		s.small = append(s.small, ')')
		prevText = false
	}
	return from
}

func renderImageList(s *segs, from int, imgs []provider.Image) int {
	s.small = append(s.small, '[')
	for i := range imgs {
		if i > 0 {
			s.small = append(s.small, ',')
		}
		s.small = append(s.small, `{"type":"image_url","image_url":{"url":"`...)
		from = s.image(from, &imgs[i])
		s.small = append(s.small, `"}}`...)
	}
	s.small = append(s.small, ']')
	return from
}

// appendUsage writes OpenAI's usage object with image tokens counted, in
// the completion (generated images) and in the prompt (input images, as the
// upstream reported them: promptImage).
func appendUsage(b []byte, u gateway.Usage, promptImage int64) []byte {
	b = append(b, `{"prompt_tokens":`...)
	b = strconv.AppendInt(b, u.PromptTokens, 10)
	b = append(b, `,"completion_tokens":`...)
	b = strconv.AppendInt(b, u.CompletionTokens, 10)
	b = append(b, `,"total_tokens":`...)
	b = strconv.AppendInt(b, u.TotalTokens, 10)
	b = append(b, `,"prompt_tokens_details":{"cached_tokens":0,"image_tokens":`...)
	b = strconv.AppendInt(b, promptImageTokens(promptImage, u.PromptTokens), 10)
	b = append(b, `},"completion_tokens_details":{"reasoning_tokens":0,"image_tokens":`...)
	b = strconv.AppendInt(b, u.ImageTokens, 10)
	return append(b, `}}`...)
}

// promptImageTokens bounds the upstream's count of input image tokens by
// the prompt tokens billed: they are part of them, and an upstream's number
// is never trusted beyond what it could be.
func promptImageTokens(reported, prompt int64) int64 {
	return min(max(reported, 0), max(prompt, 0))
}
