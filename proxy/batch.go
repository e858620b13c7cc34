package proxy

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"mime"
	"mime/multipart"
	"path"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/valyala/fasthttp"
	"go.uber.org/zap"

	"nanogate/auth"
	"nanogate/batch"
	"nanogate/internal/clip"
)

// The Files and Batches APIs (OpenAI's shapes): the handlers authenticate,
// read the request and call the batch Manager, which owns files, batches and
// their execution.

var (
	errNoBatches = &apiError{Status: fasthttp.StatusNotFound, Type: "invalid_request_error", Code: "not_found",
		Message: "Batches are not set up on this gateway."}
	errNoFile = &apiError{Status: fasthttp.StatusNotFound, Type: "invalid_request_error", Code: "not_found",
		Message: "No such file."}
	errNoBatch = &apiError{Status: fasthttp.StatusNotFound, Type: "invalid_request_error", Code: "not_found",
		Message: "No such batch."}
	errBatchStore = &apiError{Status: fasthttp.StatusServiceUnavailable, Type: "server_error", Code: "batch_unavailable",
		Message: "Batches and files cannot be read or written right now."}
)

// batchesOn answers 404 when the Files and Batches APIs are not set up.
func batchesOn(ctx *fasthttp.RequestCtx, st *State) bool {
	if st.Batches == nil {
		writeError(ctx, errNoBatches)
		return false
	}
	return true
}

// batchError answers an error of the batch Manager.
func (s *Server) batchError(ctx *fasthttp.RequestCtx, err error, notFound *apiError) {
	var pe *batch.ParamError
	var qe *batch.QuotaError
	switch {
	case errors.As(err, &qe):
		// 400, not 429: waiting does not make room, deleting files does.
		writeError(ctx, &apiError{Status: fasthttp.StatusBadRequest, Type: "invalid_request_error",
			Code: "files_quota_exceeded", Param: "file", Message: qe.Error()})
	case errors.As(err, &pe):
		code := "invalid_request"
		if pe.Status == fasthttp.StatusNotFound {
			code = "not_found"
		}
		writeError(ctx, &apiError{Status: pe.Status, Type: "invalid_request_error", Code: code, Param: clip.String(pe.Param),
			Message: clip.To(pe.Message, maxMessage)})
	case errors.Is(err, batch.ErrNotFound):
		writeError(ctx, notFound)
	case errors.Is(err, batch.ErrFileTooLarge):
		writeError(ctx, &apiError{Status: fasthttp.StatusRequestEntityTooLarge, Type: "invalid_request_error",
			Code: "request_too_large", Param: "file", Message: "The file is larger than this gateway accepts."})
	default:
		s.log.Error("batch store", zap.Error(err))
		writeError(ctx, errBatchStore)
	}
}

func writeJSON(ctx *fasthttp.RequestCtx, v any) {
	b, err := json.Marshal(v)
	if err != nil {
		writeError(ctx, &apiError{Status: 500, Type: "server_error", Code: "internal_error", Message: "Internal error."})
		return
	}
	ctx.SetContentType("application/json")
	ctx.SetBody(append(b, '\n'))
}

func storeCtx() (context.Context, context.CancelFunc) {
	return context.WithTimeout(context.Background(), 30*time.Second)
}

// listPage is OpenAI's cursor page.
type listPage[T any] struct {
	Object  string  `json:"object"`
	Data    []T     `json:"data"`
	FirstID *string `json:"first_id"`
	LastID  *string `json:"last_id"`
	HasMore bool    `json:"has_more"`
}

func page[T any](data []T, id func(T) string, more bool) listPage[T] {
	p := listPage[T]{Object: "list", Data: data, HasMore: more}
	if p.Data == nil {
		p.Data = []T{}
	}
	if len(data) > 0 {
		first, last := id(data[0]), id(data[len(data)-1])
		p.FirstID, p.LastID = &first, &last
	}
	return p
}

// queryLimit reads ?limit= within [1, most], def when absent.
func queryLimit(ctx *fasthttp.RequestCtx, def, most int) (int, *apiError) {
	v := ctx.QueryArgs().Peek("limit")
	if len(v) == 0 {
		return def, nil
	}
	n, err := strconv.Atoi(string(v))
	if err != nil || n < 1 || n > most {
		return 0, errInvalid("limit", "'limit' must be an integer from 1 to "+strconv.Itoa(most)+".")
	}
	return n, nil
}

// handleFiles serves /v1/files: POST uploads, GET lists.
func (s *Server) handleFiles(ctx *fasthttp.RequestCtx, st *State, caller *auth.Caller) {
	if !batchesOn(ctx, st) {
		return
	}
	if ctx.IsPost() {
		s.uploadFile(ctx, st, caller)
		return
	}
	s.listFiles(ctx, st, caller)
}

// uploadFile reads a multipart upload (file, purpose) part by part; the
// file part goes straight to the store, never held whole in memory again.
func (s *Server) uploadFile(ctx *fasthttp.RequestCtx, st *State, caller *auth.Caller) {
	mt, params, err := mime.ParseMediaType(string(ctx.Request.Header.ContentType()))
	if err != nil || mt != "multipart/form-data" || params["boundary"] == "" {
		writeError(ctx, &apiError{Status: fasthttp.StatusUnsupportedMediaType, Type: "invalid_request_error",
			Code: "invalid_request", Message: "The request body must be multipart/form-data with a boundary."})
		return
	}
	sctx, cancel := storeCtx()
	defer cancel()
	files := st.Batches.Files()
	maxBytes := min(int64(batch.MaxFileBytes), st.Config.Server.MaxBodyBytes)
	mr := multipart.NewReader(bytes.NewReader(ctx.PostBody()), params["boundary"])
	var w batch.FileWriter
	defer func() {
		if w != nil {
			w.Abort()
		}
	}()
	purpose := ""
	var anchor, seconds string
	var expiresAfter bool
	for {
		part, err := mr.NextPart()
		if err == io.EOF {
			break
		}
		if err != nil {
			writeError(ctx, errInvalid("", "The multipart body is malformed or truncated."))
			return
		}
		switch name := part.FormName(); name {
		case "file":
			if w != nil {
				writeError(ctx, errInvalid("file", "Send one file per upload."))
				return
			}
			now := time.Now()
			w, err = files.Create(sctx, batch.File{ID: batch.NewFileID(now), CreatedAt: now.Unix(),
				Filename: cleanFilename(part.FileName()), Owner: batch.OwnerOf(caller.Team, caller.Name)}, maxBytes,
				batch.QuotaFor(st.Config.Files))
			if err != nil {
				s.batchError(ctx, err, errNoFile)
				return
			}
			if _, err := io.Copy(w, part); err != nil {
				if errors.Is(err, batch.ErrFileTooLarge) || errors.Is(err, batch.ErrQuotaExceeded) {
					s.batchError(ctx, err, errNoFile)
				} else {
					writeError(ctx, errInvalid("file", "The multipart body is malformed or truncated."))
				}
				return
			}
		case "purpose", "expires_after[anchor]", "expires_after[seconds]":
			v, err := io.ReadAll(io.LimitReader(part, 256))
			if err != nil {
				writeError(ctx, errInvalid("", "The multipart body is malformed or truncated."))
				return
			}
			switch name {
			case "purpose":
				purpose = string(v)
			case "expires_after[anchor]":
				anchor, expiresAfter = string(v), true
			default:
				seconds, expiresAfter = string(v), true
			}
		default:
			name = clip.String(name)
			writeError(ctx, errInvalid(name, "Unrecognized request argument supplied: "+name))
			return
		}
	}
	switch {
	case w == nil:
		writeError(ctx, errInvalid("file", "'file' is required."))
		return
	case purpose == "":
		writeError(ctx, errInvalid("purpose", "'purpose' is required."))
		return
	case purpose != batch.PurposeBatch:
		writeError(ctx, errInvalid("purpose", "'purpose' must be batch: this gateway keeps files for batches only."))
		return
	}
	ttl := int64(st.Config.Files.DefaultTTL / time.Second)
	if expiresAfter {
		n, perr := batch.CheckExpiresAfter(anchor, seconds, "expires_after[anchor]", "expires_after[seconds]")
		if perr != nil {
			s.batchError(ctx, perr, errNoFile)
			return
		}
		ttl = n
	}
	m := w.Meta()
	m.Purpose, m.ExpiresAt = purpose, batch.UnixTime(m.CreatedAt+ttl)
	f, err := w.Commit()
	w = nil
	if err != nil {
		s.batchError(ctx, err, errNoFile)
		return
	}
	s.log.Info("file uploaded", zap.String("file", f.ID), zap.String("key", caller.Name), zap.String("team", caller.Team),
		zap.Int64("bytes", f.Bytes))
	writeJSON(ctx, f)
}

// cleanFilename keeps the base name of an uploaded file's name, valid
// UTF-8, at most 255 bytes.
func cleanFilename(name string) string {
	name = path.Base(strings.ReplaceAll(name, "\\", "/"))
	if name == "." || name == "/" || !utf8.ValidString(name) {
		name = "upload.jsonl"
	}
	for len(name) > 255 {
		_, size := utf8.DecodeLastRuneInString(name)
		name = name[:len(name)-size]
	}
	return name
}

func (s *Server) listFiles(ctx *fasthttp.RequestCtx, st *State, caller *auth.Caller) {
	limit, aerr := queryLimit(ctx, 10000, 10000)
	if aerr != nil {
		writeError(ctx, aerr)
		return
	}
	args := ctx.QueryArgs()
	after := string(args.Peek("after"))
	if after != "" && !batch.ValidFileID(after) {
		writeError(ctx, errInvalid("after", "'after' is not a file id."))
		return
	}
	asc := false
	switch string(args.Peek("order")) {
	case "", "desc":
	case "asc":
		asc = true
	default:
		writeError(ctx, errInvalid("order", "'order' must be asc or desc."))
		return
	}
	sctx, cancel := storeCtx()
	defer cancel()
	fs, more, err := st.Batches.Files().List(sctx, batch.OwnerOf(caller.Team, caller.Name), string(args.Peek("purpose")),
		after, limit, asc)
	if err != nil {
		s.batchError(ctx, err, errNoFile)
		return
	}
	writeJSON(ctx, page(fs, func(f *batch.File) string { return f.ID }, more))
}

// handleFile serves /v1/files/{id} (GET, DELETE) and, with content,
// /v1/files/{id}/content (GET). Another owner's file is answered 404, as one
// that does not exist.
func (s *Server) handleFile(ctx *fasthttp.RequestCtx, st *State, caller *auth.Caller, id string, content bool) {
	if !batchesOn(ctx, st) {
		return
	}
	if !batch.ValidFileID(id) {
		writeError(ctx, errNoFile)
		return
	}
	sctx, cancel := storeCtx()
	defer cancel()
	files := st.Batches.Files()
	f, err := files.Stat(sctx, id)
	if err == nil && f.Owner != batch.OwnerOf(caller.Team, caller.Name) {
		err = batch.ErrNotFound
	}
	if err != nil {
		s.batchError(ctx, err, errNoFile)
		return
	}
	switch {
	case content:
		rc, f, err := files.Open(sctx, id)
		if err != nil {
			s.batchError(ctx, err, errNoFile)
			return
		}
		ctx.SetContentType("application/octet-stream")
		ctx.Response.Header.Set("Content-Disposition", `attachment; filename="`+strings.ReplaceAll(f.Filename, `"`, "")+`"`)
		// fasthttp closes rc once the body is sent.
		setBody(ctx, st, rc, int(f.Bytes))
	case !ctx.IsDelete():
		writeJSON(ctx, f)
	default:
		if err := files.Delete(sctx, id); err != nil {
			s.batchError(ctx, err, errNoFile)
			return
		}
		s.log.Info("file deleted", zap.String("file", id), zap.String("key", caller.Name), zap.String("team", caller.Team))
		writeJSON(ctx, map[string]any{"id": id, "object": "file", "deleted": true})
	}
}

// createBatchBody is the body of POST /v1/batches.
type createBatchBody struct {
	InputFileID      string            `json:"input_file_id"`
	Endpoint         string            `json:"endpoint"`
	CompletionWindow string            `json:"completion_window"`
	Metadata         map[string]string `json:"metadata"`
	// OutputExpiresAfter is the expiry of the output and error files.
	OutputExpiresAfter *struct {
		Anchor  json.RawMessage `json:"anchor"`
		Seconds json.RawMessage `json:"seconds"`
	} `json:"output_expires_after"`
}

// outputExpiry checks output_expires_after: {"anchor":"created_at",
// "seconds":3600..2592000}; 0 when absent.
func (b *createBatchBody) outputExpiry() (int64, error) {
	e := b.OutputExpiresAfter
	if e == nil {
		return 0, nil
	}
	var anchor string
	if json.Unmarshal(e.Anchor, &anchor) != nil {
		anchor = "" // not a string: refused as a wrong anchor
	}
	// seconds is a JSON number: its text is what CheckExpiresAfter parses.
	n, perr := batch.CheckExpiresAfter(anchor, string(bytes.TrimSpace(e.Seconds)), "output_expires_after.anchor",
		"output_expires_after.seconds")
	if perr != nil {
		return 0, perr
	}
	return n, nil
}

// handleBatches serves /v1/batches: POST creates, GET lists.
func (s *Server) handleBatches(ctx *fasthttp.RequestCtx, st *State, caller *auth.Caller) {
	if !batchesOn(ctx, st) {
		return
	}
	sctx, cancel := storeCtx()
	defer cancel()
	switch {
	case ctx.IsPost():
		if !jsonContentType(ctx.Request.Header.ContentType()) {
			writeError(ctx, errContentType)
			return
		}
		var body createBatchBody
		dec := json.NewDecoder(bytes.NewReader(ctx.PostBody()))
		dec.DisallowUnknownFields()
		if err := dec.Decode(&body); err != nil {
			writeError(ctx, errInvalid("", "We could not parse the JSON body of your request: "+clip.String(err.Error())))
			return
		}
		if aerr := checkMetadata(body.Metadata); aerr != nil {
			writeError(ctx, aerr)
			return
		}
		if body.InputFileID == "" {
			writeError(ctx, errInvalid("input_file_id", "'input_file_id' is required."))
			return
		}
		outTTL, err := body.outputExpiry()
		if err != nil {
			s.batchError(ctx, err, errNoBatch)
			return
		}
		rt := st.BatchRuntime()
		b, err := st.Batches.Create(sctx, rt, caller, batch.CreateParams{InputFileID: body.InputFileID,
			Endpoint: body.Endpoint, CompletionWindow: body.CompletionWindow, Metadata: body.Metadata,
			OutputExpiresAfter: outTTL})
		if err != nil {
			s.batchError(ctx, err, errNoFile)
			return
		}
		writeJSON(ctx, b)
	default:
		limit, aerr := queryLimit(ctx, 20, 100)
		if aerr != nil {
			writeError(ctx, aerr)
			return
		}
		bs, more, err := st.Batches.List(sctx, caller, string(ctx.QueryArgs().Peek("after")), limit)
		if err != nil {
			s.batchError(ctx, err, errNoBatch)
			return
		}
		writeJSON(ctx, page(bs, func(b *batch.Batch) string { return b.ID }, more))
	}
}

// checkMetadata applies OpenAI's limits: 16 pairs, keys of 64 and values of
// 512 characters at most.
func checkMetadata(md map[string]string) *apiError {
	if len(md) > 16 {
		return errInvalid("metadata", "'metadata' holds at most 16 pairs.")
	}
	for k, v := range md {
		if utf8.RuneCountInString(k) > 64 || utf8.RuneCountInString(v) > 512 {
			return errInvalid("metadata", "'metadata' keys are at most 64 characters, values 512.")
		}
	}
	return nil
}

// handleBatch serves /v1/batches/{id} (GET) and, with cancel,
// /v1/batches/{id}/cancel (POST).
func (s *Server) handleBatch(ctx *fasthttp.RequestCtx, st *State, caller *auth.Caller, id string, cancelIt bool) {
	if !batchesOn(ctx, st) {
		return
	}
	sctx, cancel := storeCtx()
	defer cancel()
	if !cancelIt {
		b, err := st.Batches.Get(sctx, caller, id)
		if err != nil {
			s.batchError(ctx, err, errNoBatch)
			return
		}
		writeJSON(ctx, b)
		return
	}
	b, err := st.Batches.Cancel(sctx, caller, id)
	if errors.Is(err, batch.ErrNotCancellable) {
		// 400, not 409: the SDKs retry a 409, and this never changes.
		writeError(ctx, errInvalid("", "Cannot cancel a batch with status "+b.Status+"."))
		return
	}
	if err != nil {
		s.batchError(ctx, err, errNoBatch)
		return
	}
	writeJSON(ctx, b)
}

// handleAdminBatches lists every batch (admin bearer): team, key, status,
// counts and lines per second, newest first; ?limit= and ?after= page.
func (s *Server) handleAdminBatches(ctx *fasthttp.RequestCtx, st *State) {
	if st.Batches == nil {
		writeError(ctx, errNoBatches)
		return
	}
	limit, aerr := queryLimit(ctx, 100, 1000)
	if aerr != nil {
		writeError(ctx, aerr)
		return
	}
	after := string(ctx.QueryArgs().Peek("after"))
	if after != "" && !batch.ValidBatchID(after) {
		writeError(ctx, errInvalid("after", "'after' is not a batch id."))
		return
	}
	sctx, cancel := storeCtx()
	defer cancel()
	rows, more, err := st.Batches.Admin(sctx, after, limit)
	if err != nil {
		s.batchError(ctx, err, errNoBatch)
		return
	}
	var left int64
	for _, r := range rows {
		if !batch.Final(r.Status) {
			left += r.Left
		}
	}
	if rows == nil {
		rows = []batch.AdminRow{}
	}
	writeJSON(ctx, map[string]any{"batches": rows, "has_more": more, "queued_lines": left,
		"workers_per_replica": st.Config.Batch.Workers, "max_share": st.Config.Batch.MaxShare})
}

// BatchRuntime is the configuration batch lines run with, from this state.
func (st *State) BatchRuntime() batch.Runtime {
	return batch.Runtime{Gateway: st.Gateway, Config: st.Config, Format: st.Format, Accounting: st.Accounting,
		Key: st.keyNamed}
}

// keyNamed is the key named name in this state's table, nil when none.
func (st *State) keyNamed(name string) *auth.Caller {
	if st.Keys == nil {
		return nil
	}
	return st.Keys.ByName(name)
}
