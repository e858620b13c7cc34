package batch

import (
	"bytes"
	"strconv"
	"time"

	"nanogate/gateway"
	"nanogate/internal/jsonx"
	"nanogate/openai"
)

// apiError is a line's failure as the HTTP API would have answered it.
type apiError = openai.Error

// transient reports whether running the line again later may succeed: the
// gateway's own failover already tried every provider, but an outage often
// passes.
func transient(e *apiError) bool {
	return e.Status == 502 || e.Status == 503 || e.Status == 504
}

// toAPIError maps an error of a line's journey to what the HTTP API answers
// for it, for the line's error file entry.
func toAPIError(err error, model string, call *gateway.Call) *apiError {
	return openai.ErrorFor(err, model, call)
}

// appendErrorBody writes OpenAI's error envelope.
func appendErrorBody(b []byte, e *apiError) []byte { return e.AppendBody(b) }

// appendResultLine writes one line of an output or error file:
// {"id":"batch_req_...","custom_id":...,"response":{"status_code":...,
// "request_id":...,"body":...},"error":null}. body must be compact JSON.
func appendResultLine(b []byte, batchID string, line int, customID []byte, status int, requestID string, body []byte) []byte {
	b = appendLineStart(b, batchID, line, customID)
	b = append(b, `,"response":{"status_code":`...)
	b = strconv.AppendInt(b, int64(status), 10)
	b = append(b, `,"request_id":`...)
	b = jsonx.AppendString(b, requestID)
	b = append(b, `,"body":`...)
	b = append(b, body...)
	return append(b, `},"error":null}`...)
}

// appendLineErrorLine writes an error file line for a line that got no HTTP
// answer at all (the batch expired before it ran): "response" is null and
// "error" says why.
func appendLineErrorLine(b []byte, batchID string, line int, customID []byte, code, message string) []byte {
	b = appendLineStart(b, batchID, line, customID)
	b = append(b, `,"response":null,"error":{"code":`...)
	b = jsonx.AppendString(b, code)
	b = append(b, `,"message":`...)
	b = jsonx.AppendString(b, message)
	return append(b, "}}"...)
}

func appendLineStart(b []byte, batchID string, line int, customID []byte) []byte {
	b = append(b, `{"id":"batch_req_`...)
	b = append(b, suffix(batchID)...)
	b = append(b, '_')
	b = strconv.AppendInt(b, int64(line), 10)
	b = append(b, `","custom_id":`...)
	if len(customID) == 0 {
		customID = []byte("null")
	}
	return append(b, customID...)
}

// compact makes sure a body holds no newline, which would split a JSONL
// line: the renderers write compact JSON, so this is a check, not a copy.
func compact(body []byte) []byte {
	body = bytes.TrimRight(body, "\r\n \t")
	if bytes.IndexByte(body, '\n') < 0 && bytes.IndexByte(body, '\r') < 0 {
		return body
	}
	// Outside strings they are whitespace; inside, JSON has them escaped.
	out := make([]byte, 0, len(body))
	for _, c := range body {
		if c != '\n' && c != '\r' {
			out = append(out, c)
		}
	}
	return out
}

// since is a duration for logs, in milliseconds.
func since(t time.Time) float64 { return float64(time.Since(t).Microseconds()) / 1000 }
