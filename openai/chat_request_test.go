package openai

import (
	"encoding/base64"
	"encoding/binary"
	"os"
	"strings"
	"testing"

	"nanogate/provider"
)

func TestParseChatRequestFixture(t *testing.T) {
	body, err := os.ReadFile("../internal/fakeup/fixtures/openai/request_chat_multi_image.json")
	if err != nil {
		t.Fatal(err)
	}
	r, err := ParseChatRequest(body)
	if err != nil {
		t.Fatal(err)
	}
	if r.Model != "gemini-2.5-flash-image-preview" || len(r.Messages) != 2 || r.Stream {
		t.Fatalf("parsed %+v", r)
	}
	if r.Messages[0].Role != "system" || r.Messages[1].Role != "user" || len(r.Messages[1].Parts) != 3 {
		t.Fatalf("messages %+v", r.Messages)
	}
	p := r.Messages[1].Parts
	if p[1].Image == nil || p[1].Image.MIME != "image/png" || !strings.HasPrefix(string(p[1].Image.B64), "iVBOR") ||
		p[2].Image == nil || string(p[1].Image.B64) == string(p[2].Image.B64) {
		t.Fatalf("images not parsed in order: %+v %+v", p[1].Image, p[2].Image)
	}
	if r.ImageInputs != 2 {
		t.Fatalf("ImageInputs = %d", r.ImageInputs)
	}
}

func TestParseChatRequestOptions(t *testing.T) {
	r, err := ParseChatRequest([]byte(`{"model":"m","messages":[{"role":"user","content":"hi"}],"stream":true,
		"stream_options":{"include_usage":true},"n":2,"max_tokens":100,"temperature":0.5,"stop":["a","b"],
		"image_config":{"aspect_ratio":"16:9"},"user":"u1"}`))
	if err != nil {
		t.Fatal(err)
	}
	if !r.Stream || !r.IncludeUsage || r.N != 2 || r.MaxTokens != 100 || string(r.Temperature) != "0.5" ||
		len(r.Stop) != 2 || r.AspectRatio != "16:9" || len(r.Params) != 1 || r.Params[0] != "user" {
		t.Fatalf("parsed %+v", r)
	}
}

func TestParseChatRequestErrors(t *testing.T) {
	const okMsgs = `"messages":[{"role":"user","content":"hi"}]`
	tests := []struct {
		name, body, param string
	}{
		{"not json", `{"model":`, ""},
		{"not an object", `[1,2]`, ""},
		{"trailing garbage", `{"model":"m",` + okMsgs + `} x`, ""},
		{"model missing", `{` + okMsgs + `}`, "model"},
		{"model not string", `{"model":5,` + okMsgs + `}`, "model"},
		{"messages missing", `{"model":"m"}`, "messages"},
		{"messages not array", `{"model":"m","messages":{}}`, "messages"},
		{"messages empty", `{"model":"m","messages":[]}`, "messages"},
		{"message not object", `{"model":"m","messages":[1]}`, "messages[0]"},
		{"unknown role", `{"model":"m","messages":[{"role":"wizard","content":"x"}]}`, "messages[0].role"},
		{"role missing", `{"model":"m","messages":[{"content":"x"}]}`, "messages[0].role"},
		{"content number", `{"model":"m","messages":[{"role":"user","content":5}]}`, "messages[0].content"},
		{"content missing", `{"model":"m","messages":[{"role":"user"}]}`, "messages[0].content"},
		{"empty parts", `{"model":"m","messages":[{"role":"user","content":[]}]}`, "messages[0].content"},
		{"part type unknown", `{"model":"m","messages":[{"role":"user","content":[{"type":"audio"}]}]}`, "messages[0].content[0].type"},
		{"text part not string", `{"model":"m","messages":[{"role":"user","content":[{"type":"text","text":1}]}]}`, "messages[0].content[0].text"},
		{"image url scheme", `{"model":"m","messages":[{"role":"user","content":[{"type":"image_url","image_url":{"url":"file:///etc/passwd"}}]}]}`, "messages[0].content[0].image_url.url"},
		{"image mime", `{"model":"m","messages":[{"role":"user","content":[{"type":"image_url","image_url":{"url":"data:text/html;base64,QUJD"}}]}]}`, "messages[0].content[0].image_url.url"},
		{"image bad base64", `{"model":"m","messages":[{"role":"user","content":[{"type":"image_url","image_url":{"url":"data:image/png;base64,@@@"}}]}]}`, "messages[0].content[0].image_url.url"},
		{"image not base64 url", `{"model":"m","messages":[{"role":"user","content":[{"type":"image_url","image_url":{"url":"data:image/png,abc"}}]}]}`, "messages[0].content[0].image_url.url"},
		{"stream not bool", `{"model":"m",` + okMsgs + `,"stream":"yes"}`, "stream"},
		{"n zero", `{"model":"m",` + okMsgs + `,"n":0}`, "n"},
		{"n huge", `{"model":"m",` + okMsgs + `,"n":100000}`, "n"},
		{"n fraction", `{"model":"m",` + okMsgs + `,"n":1.5}`, "n"},
		{"max_tokens negative", `{"model":"m",` + okMsgs + `,"max_tokens":-1}`, "max_tokens"},
		{"model too long", `{"model":"` + strings.Repeat("m", 257) + `",` + okMsgs + `}`, "model"},
		{"max_tokens above the output limit", `{"model":"m",` + okMsgs + `,"max_tokens":32769}`, "max_tokens"},
		{"max_tokens that wraps an estimate", `{"model":"m",` + okMsgs + `,"n":2,"max_tokens":6917529027641080542}`, "max_tokens"},
		{"max_completion_tokens beyond int64", `{"model":"m",` + okMsgs + `,"max_completion_tokens":1e30}`, "max_completion_tokens"},
		{"temperature high", `{"model":"m",` + okMsgs + `,"temperature":3}`, "temperature"},
		{"stop number", `{"model":"m",` + okMsgs + `,"stop":5}`, "stop"},
		{"unknown param", `{"model":"m",` + okMsgs + `,"temprature":1}`, "temprature"},
		{"duplicate key", `{"model":"m","model":"n",` + okMsgs + `}`, "model"},
		{"aspect ratio", `{"model":"m",` + okMsgs + `,"image_config":{"aspect_ratio":"wide"}}`, "image_config.aspect_ratio"},
		{"aspect ratio of zero", `{"model":"m",` + okMsgs + `,"image_config":{"aspect_ratio":"0:1"}}`, "image_config.aspect_ratio"},
		{"image size", `{"model":"m",` + okMsgs + `,"image_config":{"image_size":"1024px"}}`, "image_config.image_size"},
		{"image size number", `{"model":"m",` + okMsgs + `,"image_config":{"image_size":1}}`, "image_config.image_size"},
		{"tool message", `{"model":"m","messages":[{"role":"tool","content":"x"}]}`, "messages[0].role"},
		{"tool calls", `{"model":"m","messages":[{"role":"assistant","content":"x","tool_calls":[]}]}`, "messages[0].tool_calls"},
		{"deep nesting", `{"model":"m",` + okMsgs + `,"metadata":` + strings.Repeat("[", 100000) + strings.Repeat("]", 100000) + `}`, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := ParseChatRequest([]byte(tt.body))
			re, ok := err.(*provider.RequestError)
			if !ok {
				t.Fatalf("err = %v (%T), want *provider.RequestError", err, err)
			}
			if re.Param != tt.param {
				t.Fatalf("param = %q, want %q (msg %q)", re.Param, tt.param, re.Msg)
			}
		})
	}
}

func TestParseChatRequestTooManyImages(t *testing.T) {
	part := `{"type":"image_url","image_url":{"url":"data:image/png;base64,` + tinyB64 + `"}}`
	parts := strings.TrimSuffix(strings.Repeat(part+",", provider.MaxImageInputs+1), ",")
	_, err := ParseChatRequest([]byte(`{"model":"m","messages":[{"role":"user","content":[` + parts + `]}]}`))
	if re, ok := err.(*provider.RequestError); !ok || !strings.Contains(re.Msg, "too many images") {
		t.Fatalf("err = %v", err)
	}
}

func FuzzParseChatRequest(f *testing.F) {
	f.Add([]byte(`{"model":"m","messages":[{"role":"user","content":[{"type":"text","text":"a"},{"type":"image_url","image_url":{"url":"data:image/png;base64,QUJD"}}]}]}`))
	f.Add([]byte(`{"model":"m","messages":[{"role":"assistant","content":null}],"stream":true}`))
	f.Add([]byte(`{"model":"m","n":2,"max_tokens":6917529027641080542,"messages":[{"role":"user","content":"x"}]}`))
	f.Add([]byte(`{"model":"m","max_completion_tokens":32768,"messages":[{"role":"user","content":"x"}]}`))
	f.Fuzz(func(t *testing.T, body []byte) {
		r, err := ParseChatRequest(body)
		if err == nil && (r.Model == "" || len(r.Messages) == 0) {
			t.Fatalf("accepted a request without model or messages")
		}
		// The numbers limits and money are computed from stay bounded.
		if err == nil && (r.MaxTokens < 0 || r.MaxTokens > provider.MaxOutputTokens || r.N < 1 || r.N > provider.MaxN ||
			r.ImageInputs < 0 || r.ImageInputs > provider.MaxImageInputs || len(r.Model) > provider.MaxModelBytes) {
			t.Fatalf("accepted out-of-bounds numbers: max_tokens %d, n %d, images %d, model %d bytes",
				r.MaxTokens, r.N, r.ImageInputs, len(r.Model))
		}
		if err != nil {
			if _, ok := err.(*provider.RequestError); !ok {
				t.Fatalf("error of type %T", err)
			}
		}
	})
}

// TestParseAnswerShapesSentBack: clients append the assistant message they
// got to the next request; every answer format of the gateway must parse,
// with its image as an image input.
func TestParseAnswerShapesSentBack(t *testing.T) {
	img := `data:image/png;base64,` + tinyB64
	tests := map[string]string{
		"images format":   `{"role":"assistant","content":"here","images":[{"type":"image_url","image_url":{"url":"` + img + `"}}]}`,
		"data_url format": `{"role":"assistant","content":"` + img + `"}`,
	}
	for name, msg := range tests {
		t.Run(name, func(t *testing.T) {
			r, err := ParseChatRequest([]byte(`{"model":"m","messages":[{"role":"user","content":"draw"},` + msg + `,{"role":"user","content":"bluer"}]}`))
			if err != nil {
				t.Fatal(err)
			}
			a := r.Messages[1]
			last := a.Parts[len(a.Parts)-1]
			if last.Image == nil || string(last.Image.B64) != tinyB64 || r.ImageInputs != 1 {
				t.Fatalf("assistant parts %+v", a.Parts)
			}
		})
	}
}

func TestImageInputsAreCheckedByContent(t *testing.T) {
	png := func(w, h uint32) string {
		b := []byte("\x89PNG\r\n\x1a\n\x00\x00\x00\x0dIHDR")
		b = binary.BigEndian.AppendUint32(b, w)
		b = binary.BigEndian.AppendUint32(b, h)
		b = append(b, 8, 2, 0, 0, 0, 0, 0, 0, 0)
		return base64.StdEncoding.EncodeToString(b)
	}
	jpeg := func(w, h uint16) string {
		b := []byte{0xff, 0xd8, 0xff, 0xe0, 0x00, 0x04, 'J', 'F', 0xff, 0xc0, 0x00, 0x11, 0x08}
		b = binary.BigEndian.AppendUint16(b, h)
		b = binary.BigEndian.AppendUint16(b, w)
		b = append(b, 3, 1, 0x22, 0, 2, 0x11, 1, 3, 0x11, 1)
		return base64.StdEncoding.EncodeToString(b)
	}
	gif := base64.StdEncoding.EncodeToString([]byte("GIF89a\x02\x00\x02\x00\x80\x00\x00\x00\x00\x00\xff\xff\xff!"))
	tests := []struct {
		name, mime, b64 string
		want            string // the type sent upstream; "" when refused
	}{
		{"fixture png", "image/png", tinyB64, "image/png"},
		{"png 1024", "image/png", png(1024, 1024), "image/png"},
		{"jpeg 800x600", "image/jpeg", jpeg(800, 600), "image/jpeg"},
		{"jpg label", "image/jpg", jpeg(800, 600), "image/jpeg"},
		{"upper-case label", "IMAGE/JPEG", jpeg(800, 600), "image/jpeg"},
		{"jpeg labelled png", "image/png", jpeg(16, 16), "image/jpeg"},
		{"png labelled jpeg", "image/jpeg", tinyB64, "image/png"},
		{"png labelled gif", "image/gif", tinyB64, "image/png"},
		{"gif", "image/gif", gif, ""},
		{"gif labelled png", "image/png", gif, ""},
		{"bmp label", "image/bmp", tinyB64, ""},
		{"decompression bomb", "image/png", png(100000, 100000), ""},
		{"too many pixels", "image/png", png(16000, 16000), ""},
		{"jpeg bomb", "image/jpeg", jpeg(65000, 65000), ""},
		{"jpeg bomb labelled png", "image/png", jpeg(65000, 65000), ""},
		{"garbage", "image/png", base64.StdEncoding.EncodeToString([]byte("not an image at all....")), ""},
		{"png header cut", "image/png", base64.StdEncoding.EncodeToString([]byte("\x89PNG\r\n\x1a\n")), ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r, err := ParseChatRequest([]byte(`{"model":"m","messages":[{"role":"user","content":[{"type":"text","text":"edit"},{"type":"image_url","image_url":{"url":"data:` + tt.mime + `;base64,` + tt.b64 + `"}}]}]}`))
			if tt.want == "" {
				re, ok := err.(*provider.RequestError)
				if !ok || re.Param != "messages[0].content[1].image_url.url" || !strings.Contains(re.Msg, re.Param) {
					t.Fatalf("err = %#v, want a 400 naming messages[0].content[1].image_url.url", err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			img := r.Messages[0].Parts[1].Image
			if img.MIME != tt.want {
				t.Errorf("MIME %q, want %q", img.MIME, tt.want)
			}
			// A corrected label must reach a reseller too: its body is
			// rebuilt from the parsed messages, not copied.
			if relabelled := tt.mime != tt.want; r.Resolved != relabelled {
				t.Errorf("Resolved = %v, want %v", r.Resolved, relabelled)
			}
		})
	}
}

func TestGIFRefusalNamesTheImage(t *testing.T) {
	gif := base64.StdEncoding.EncodeToString([]byte("GIF89a\x02\x00\x02\x00\x80\x00\x00"))
	_, err := ParseChatRequest([]byte(`{"model":"m","messages":[{"role":"user","content":"hi"},{"role":"user","content":[{"type":"image_url","image_url":{"url":"data:image/gif;base64,` + gif + `"}}]}]}`))
	re, ok := err.(*provider.RequestError)
	if !ok || re.Param != "messages[1].content[0].image_url.url" || !strings.Contains(re.Msg, "GIF") || !strings.Contains(re.Msg, "PNG, JPEG, WebP, HEIC or HEIF") {
		t.Fatalf("err = %#v", err)
	}
}

func TestInvalidUTF8IsRefused(t *testing.T) {
	_, err := ParseChatRequest([]byte("{\"model\":\"m\",\"messages\":[{\"role\":\"user\",\"content\":\"\xff\xfe\"}]}"))
	if _, ok := err.(*provider.RequestError); !ok {
		t.Fatalf("err = %v", err)
	}
}

const tinyB64 = "iVBORw0KGgoAAAANSUhEUgAAAAIAAAACCAIAAAD91JpzAAAAFElEQVR42mP4z8DAAMIM////ZwAAHu8E/HMcU8wAAAAASUVORK5CYII="
