package accounting

import (
	"encoding/json"
	"strconv"
	"time"

	"nanogate/internal/jsonx"
)

// appendRecordJSON appends r as json.Marshal encodes it (the same keys in
// the same order, Size omitted when empty, strings escaped alike, the time
// as Time.MarshalJSON writes it), without reflection: every applied record
// is encoded on the writer's path. The error is Time.MarshalJSON's, for a
// time RFC 3339 cannot hold; dst is returned unchanged with it. FuzzRecordJSON
// holds the two encodings equal.
func appendRecordJSON(dst []byte, r *Record) ([]byte, error) {
	n0 := len(dst)
	dst = append(dst, `{"id":`...)
	dst = appendString(dst, r.ID)
	dst = append(dst, `,"time":"`...)
	dst, ok := appendJSONTime(dst, r.Time)
	if !ok {
		_, err := r.Time.MarshalJSON()
		return dst[:n0], err
	}
	dst = append(dst, `","key":`...)
	dst = appendString(dst, r.Key)
	dst = append(dst, `,"team":`...)
	dst = appendString(dst, r.Team)
	dst = append(dst, `,"model":`...)
	dst = appendString(dst, r.Model)
	if r.Size != "" {
		dst = append(dst, `,"size":`...)
		dst = appendString(dst, r.Size)
	}
	dst = append(dst, `,"provider":`...)
	dst = appendString(dst, r.Provider)
	dst = append(dst, `,"attempts":`...)
	dst = strconv.AppendInt(dst, int64(r.Attempts), 10)
	dst = append(dst, `,"images":`...)
	dst = strconv.AppendInt(dst, r.Images, 10)
	dst = append(dst, `,"prompt_tokens":`...)
	dst = strconv.AppendInt(dst, r.PromptTokens, 10)
	dst = append(dst, `,"text_tokens":`...)
	dst = strconv.AppendInt(dst, r.TextTokens, 10)
	dst = append(dst, `,"image_tokens":`...)
	dst = strconv.AppendInt(dst, r.ImageTokens, 10)
	dst = append(dst, `,"cost_micros":`...)
	dst = strconv.AppendInt(dst, r.CostMicros, 10)
	dst = append(dst, `,"list_cost_micros":`...)
	dst = strconv.AppendInt(dst, r.ListCostMicros, 10)
	dst = append(dst, `,"status":`...)
	dst = strconv.AppendInt(dst, int64(r.Status), 10)
	dst = append(dst, `,"stream":`...)
	dst = strconv.AppendBool(dst, r.Stream)
	return append(dst, '}'), nil
}

// appendJSONTime appends t as Time.MarshalJSON does, unquoted; false for a
// time it refuses (a year outside [0,9999], a zone offset of 24 hours or
// more, or one with seconds).
func appendJSONTime(dst []byte, t time.Time) ([]byte, bool) {
	n0 := len(dst)
	dst = t.AppendFormat(dst, time.RFC3339Nano)
	b := dst[n0:]
	if b[len("9999")] != '-' {
		return dst, false
	}
	if b[len(b)-1] != 'Z' {
		c := b[len(b)-len("Z07:00")]
		h := b[len(b)-len("07:00"):]
		if '0' <= c && c <= '9' || 10*(h[0]-'0')+(h[1]-'0') >= 24 {
			return dst, false
		}
	}
	return dst, true
}

// appendString appends s quoted as json.Marshal does: as jsonx writes it
// (U+2028/U+2029 escaped, invalid UTF-8 replaced by U+FFFD), and with the
// HTML characters escaped, which only json.Marshal does and names seldom
// hold.
func appendString(dst []byte, s string) []byte {
	for i := 0; i < len(s); i++ {
		if c := s[i]; c == '<' || c == '>' || c == '&' {
			q, _ := json.Marshal(s) // a string always encodes
			return append(dst, q...)
		}
	}
	return jsonx.AppendString(dst, s)
}
