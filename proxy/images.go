package proxy

import (
	"bytes"
	"context"
	"encoding/base64"
	"io"
	"mime"
	"mime/multipart"
	"time"

	"github.com/valyala/fasthttp"

	"nanogate/auth"
	"nanogate/gateway"
	"nanogate/internal/clip"
	"nanogate/internal/reqid"
)

// imageMagic returns the media type of an image from its first bytes.
func imageMagic(b []byte) string {
	switch {
	case bytes.HasPrefix(b, []byte("\x89PNG\r\n\x1a\n")):
		return "image/png"
	case bytes.HasPrefix(b, []byte("\xff\xd8\xff")):
		return "image/jpeg"
	case len(b) >= 12 && string(b[:4]) == "RIFF" && string(b[8:12]) == "WEBP":
		return "image/webp"
	}
	return ""
}

// parseEdits reads the multipart body of /v1/images/edits part by part:
// each file is base64-encoded as it is read (the one copy it takes), checked
// by its magic bytes, and capped in size.
func parseEdits(ctx *fasthttp.RequestCtx) (*gateway.ImagesRequest, *apiError) {
	ct := string(ctx.Request.Header.ContentType())
	mt, params, err := mime.ParseMediaType(ct)
	if err != nil || mt != "multipart/form-data" || params["boundary"] == "" {
		return nil, &apiError{Status: fasthttp.StatusUnsupportedMediaType, Type: "invalid_request_error", Code: "invalid_request",
			Message: "The request body must be multipart/form-data with a boundary."}
	}
	mr := multipart.NewReader(bytes.NewReader(ctx.PostBody()), params["boundary"])
	r := &gateway.ImagesRequest{}
	for {
		part, err := mr.NextPart()
		if err == io.EOF {
			break
		}
		if err != nil {
			return nil, errInvalid("", "The multipart body is malformed or truncated.")
		}
		name := part.FormName()
		switch {
		case name == "image" || name == "image[]":
			if len(r.Inputs) >= 16 {
				return nil, errInvalid("image", "Too many images (at most 16).")
			}
			img, aerr := readEditImage(part)
			if aerr != nil {
				return nil, aerr
			}
			r.Inputs = append(r.Inputs, img)
		case name == "":
			return nil, errInvalid("", "A multipart part has no name.")
		case part.FileName() != "" && name != "mask":
			name = clip.String(name)
			return nil, errInvalid(name, "Unexpected file field: "+name)
		default:
			v, err := io.ReadAll(io.LimitReader(part, gateway.MaxPromptBytes+1))
			if err != nil {
				return nil, errInvalid("", "The multipart body is malformed or truncated.")
			}
			if e := r.Param(name, string(v)); e != nil {
				return nil, toAPIError(e, "")
			}
		}
	}
	if len(r.Inputs) == 0 {
		return nil, errInvalid("image", "'image' is required: send one or more image files (png, jpeg or webp).")
	}
	return r, nil
}

func readEditImage(part *multipart.Part) (gateway.InputImage, *apiError) {
	var head [16]byte
	n, _ := io.ReadFull(part, head[:])
	mt := imageMagic(head[:n])
	if mt == "" {
		return gateway.InputImage{}, errInvalid("image", "Each 'image' must be a PNG, JPEG or WebP file (checked by its content).")
	}
	var buf bytes.Buffer
	enc := base64.NewEncoder(base64.StdEncoding, &buf)
	enc.Write(head[:n])
	copied, err := io.Copy(enc, io.LimitReader(part, gateway.MaxEditFile))
	if err != nil {
		return gateway.InputImage{}, errInvalid("image", "The multipart body is malformed or truncated.")
	}
	if copied+int64(n) >= gateway.MaxEditFile {
		return gateway.InputImage{}, &apiError{Status: fasthttp.StatusRequestEntityTooLarge, Type: "invalid_request_error",
			Code: "request_too_large", Param: "image", Message: "An image file is larger than 20 MiB."}
	}
	enc.Close()
	return gateway.InputImage{MIME: mt, B64: buf.Bytes()}, nil
}

// handleImages serves /v1/images/generations and /v1/images/edits through
// the same limits, routing and accounting as chat.
func (s *Server) handleImages(ctx *fasthttp.RequestCtx, st *State, rid string, caller *auth.Caller, edits bool) {
	l := &reqLog{start: time.Now(), id: rid, known: st.Gateway.Router().Knows, gw: st.Gateway, route: "images", caller: caller,
		ip: s.clientAddr(ctx)}
	var ir *gateway.ImagesRequest
	var aerr *apiError
	if edits {
		l.route = "images_edits"
		ir, aerr = parseEdits(ctx)
	} else if !jsonContentType(ctx.Request.Header.ContentType()) {
		aerr = errContentType
	} else {
		var err error
		if ir, err = gateway.ParseImagesGeneration(ctx.PostBody()); err != nil {
			aerr = toAPIError(err, "")
		}
	}
	if aerr == nil {
		if err := ir.Finish(st.Gateway.DefaultImageModel(st.Config.ModelsInOrder())); err != nil {
			aerr = toAPIError(err, "")
		}
	}
	if aerr != nil {
		s.fail(ctx, l, aerr)
		return
	}
	l.model = ir.Model
	req, err := st.Gateway.ImagesChatRequest(ir)
	if err != nil {
		s.fail(ctx, l, toAPIError(err, ir.Model))
		return
	}
	call := &gateway.Call{ID: s.ids.next(), Caller: caller, Req: req}
	l.call = call
	rctx, cancel := context.WithCancel(reqid.With(context.Background(), rid))
	rctx = s.startSpan(ctx, rctx, l, "images")
	stopWatch := watchClient(ctx.Conn(), func() { l.gone = true; cancel() })
	ans, err := st.Gateway.Images(rctx, call, ir.N, ir.Links)
	stopWatch()
	cancel()
	setCallHeaders(ctx, call)
	if err != nil {
		l.err = err
		s.fail(ctx, l, s.journeyError(err, call))
		return
	}
	defer ans.Release()
	if len(ans.Served) > 0 {
		l.served = ans.Served[0]
		l.served.Attempts = 0
		for _, sv := range ans.Served {
			l.served.Attempts += sv.Attempts
		}
	}
	ctx.Response.Header.Set("x-nanogate-provider", ans.Provider())
	ctx.SetContentType("application/json")
	// The body is a buffer of this request's own: no copy into fasthttp's.
	b := ans.AppendResponse(nil)
	setBody(ctx, st, bytes.NewReader(b), len(b))
	// Records were written per upstream call by the gateway.
	l.call = nil
	l.status, l.usage = fasthttp.StatusOK, ans.Usage
	s.logRequest(l)
}
