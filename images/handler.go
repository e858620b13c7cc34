package images

import (
	"bytes"
	"errors"
	"io/fs"
	"strconv"
	"time"

	"github.com/valyala/fasthttp"
	"go.uber.org/zap"
)

// Error bodies in OpenAI's envelope. They are constants: nothing from the
// request is echoed back.
var (
	bodyNotFound = []byte(`{"error":{"message":"No such image.","type":"invalid_request_error","param":null,"code":"not_found"}}`)
	bodyExpired  = []byte(`{"error":{"message":"The image link has expired.","type":"invalid_request_error","param":null,"code":"link_expired"}}`)
	bodyBadSig   = []byte(`{"error":{"message":"The image link is not valid: its signature does not match.","type":"invalid_request_error","param":null,"code":"invalid_signature"}}`)
	bodyMethod   = []byte(`{"error":{"message":"Method not allowed on this path.","type":"invalid_request_error","param":null,"code":"method_not_allowed"}}`)
	bodyInternal = []byte(`{"error":{"message":"The image could not be read.","type":"server_error","param":null,"code":"internal_error"}}`)
)

// Handler serves GET (and HEAD) /images/{id}?exp=&sig=. The id is the last
// path segment, so the gateway may mount it under any prefix that matches
// the public URL's path.
//
// In order: an id not of the exact generated form is 404 without touching
// the disk; a missing or wrong signature, or an expired link, is 403; an
// image that is not (or no longer) there is 404. Otherwise the file is
// streamed with its Content-Type and Content-Length, a strong ETag (the id:
// an image never changes) that If-None-Match turns into 304, and
// Cache-Control: private, max-age=<the link's remaining validity>.
func (f *FS) Handler() fasthttp.RequestHandler { return f.serve }

func (f *FS) serve(ctx *fasthttp.RequestCtx) {
	head := ctx.IsHead()
	if !head && !ctx.IsGet() {
		ctx.Response.Header.Set("Allow", "GET, HEAD")
		writeError(ctx, fasthttp.StatusMethodNotAllowed, bodyMethod)
		return
	}
	// fasthttp has decoded and normalised the path ("%2e%2e", "..", "//"
	// resolved); what remains is checked against the one form ids have.
	path := ctx.Path()
	id := path[bytes.LastIndexByte(path, '/')+1:]
	mime := mimeOfID(id)
	if mime == "" {
		writeError(ctx, fasthttp.StatusNotFound, bodyNotFound)
		return
	}
	args := ctx.QueryArgs()
	exp, err := verify(f, id, args.Peek("exp"), args.Peek("sig"))
	if err != nil {
		f.denied.Add(1)
		if errors.Is(err, ErrExpired) {
			writeError(ctx, fasthttp.StatusForbidden, bodyExpired)
		} else {
			writeError(ctx, fasthttp.StatusForbidden, bodyBadSig)
		}
		return
	}

	f.lookups.Add(1)
	file, err := f.root.Open(string(id))
	if err != nil {
		if !errors.Is(err, fs.ErrNotExist) {
			f.log.Error("image read", zap.String("dir", f.dir), zap.Error(err))
			writeError(ctx, fasthttp.StatusInternalServerError, bodyInternal)
			return
		}
		writeError(ctx, fasthttp.StatusNotFound, bodyNotFound)
		return
	}
	st, err := file.Stat()
	if err != nil || !st.Mode().IsRegular() {
		file.Close()
		f.log.Error("image read", zap.String("dir", f.dir), zap.Error(err))
		writeError(ctx, fasthttp.StatusInternalServerError, bodyInternal)
		return
	}

	h := &ctx.Response.Header
	var etag [maxIDLen + 2]byte
	tag := append(append(append(etag[:0], '"'), id...), '"')
	h.SetBytesV("ETag", tag)
	var cc [40]byte
	h.SetBytesV("Cache-Control", strconv.AppendInt(append(cc[:0], "private, max-age="...), exp-time.Now().Unix(), 10))
	if inm := ctx.Request.Header.Peek("If-None-Match"); len(inm) > 0 && etagMatch(inm, tag) {
		file.Close()
		f.notModified.Add(1)
		ctx.SetStatusCode(fasthttp.StatusNotModified)
		return
	}
	h.Set("X-Content-Type-Options", "nosniff")
	h.SetContentType(mime)
	f.served.Add(1)
	if head {
		file.Close()
		h.SetContentLength(int(st.Size()))
		return
	}
	// Streamed: fasthttp copies the file to the socket in small pieces and
	// closes it when done; the image is never read into memory whole.
	ctx.SetBodyStream(file, int(st.Size()))
}

// etagMatch reports whether an If-None-Match value lists tag or is "*".
// If-None-Match compares weakly, so W/"x" matches "x".
func etagMatch(inm, tag []byte) bool {
	for len(inm) > 0 {
		var one []byte
		if i := bytes.IndexByte(inm, ','); i >= 0 {
			one, inm = inm[:i], inm[i+1:]
		} else {
			one, inm = inm, nil
		}
		one = bytes.TrimSpace(one)
		one = bytes.TrimPrefix(one, []byte("W/"))
		if bytes.Equal(one, tag) || bytes.Equal(one, []byte("*")) {
			return true
		}
	}
	return false
}

func writeError(ctx *fasthttp.RequestCtx, status int, body []byte) {
	ctx.SetStatusCode(status)
	ctx.SetContentType("application/json")
	ctx.Response.Header.Set("Cache-Control", "no-store")
	ctx.SetBody(body)
}
