package batch

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"strconv"

	"nanogate/internal/jsonx"
)

// Limits of input files.
const (
	// MaxLines is the most requests a batch holds (OpenAI's limit).
	MaxLines = 50_000
	// MaxCustomID caps a custom_id.
	MaxCustomID = 512
	// maxReported is the most line errors a failed batch lists.
	maxReported = 100
)

// envelope is one input line: {"custom_id","method","url","body"}.
type envelope struct {
	// customID is the raw JSON string, written back verbatim.
	customID []byte
	id       string
	method   string
	url      string
	body     []byte
	hasBody  bool
}

// parseEnvelope reads an input line; the error names the problem and its
// parameter.
func parseEnvelope(line []byte) (envelope, *LineError) {
	var e envelope
	if jsonx.KindOf(line) != jsonx.Object || !jsonx.Valid(line) {
		return e, &LineError{Code: "invalid_json_line", Message: "The line is not a JSON object."}
	}
	var lerr *LineError
	str := func(k string, v []byte) (string, bool) {
		if jsonx.KindOf(v) != jsonx.String {
			lerr = &LineError{Code: "invalid_value", Param: k, Message: "'" + k + "' must be a string."}
			return "", false
		}
		s, err := jsonx.Unquote(v)
		if err != nil {
			lerr = &LineError{Code: "invalid_value", Param: k, Message: "'" + k + "' is not a valid JSON string."}
			return "", false
		}
		return s, true
	}
	// Unknown keys are ignored: tools add their own, and OpenAI accepts them.
	jsonx.ObjectEach(line, func(key, v []byte) error {
		var ok bool
		switch string(key) {
		case "custom_id":
			if e.id, ok = str("custom_id", v); ok {
				e.customID = v
			}
		case "method":
			e.method, ok = str("method", v)
		case "url":
			e.url, ok = str("url", v)
		case "body":
			if jsonx.KindOf(v) != jsonx.Object {
				lerr = &LineError{Code: "invalid_value", Param: "body", Message: "'body' must be a JSON object."}
				break
			}
			e.body, e.hasBody, ok = v, true, true
		default:
			ok = true
		}
		if !ok {
			return errStop
		}
		return nil
	})
	if lerr != nil {
		return e, lerr
	}
	switch {
	case e.customID == nil:
		return e, &LineError{Code: "missing_required_parameter", Param: "custom_id", Message: "'custom_id' is required."}
	case e.id == "":
		return e, &LineError{Code: "invalid_value", Param: "custom_id", Message: "'custom_id' must not be empty."}
	case len(e.id) > MaxCustomID:
		return e, &LineError{Code: "invalid_value", Param: "custom_id",
			Message: "'custom_id' is longer than " + strconv.Itoa(MaxCustomID) + " bytes."}
	case e.method == "":
		return e, &LineError{Code: "missing_required_parameter", Param: "method", Message: "'method' is required."}
	case e.method != "POST":
		return e, &LineError{Code: "invalid_value", Param: "method", Message: "'method' must be POST."}
	case e.url == "":
		return e, &LineError{Code: "missing_required_parameter", Param: "url", Message: "'url' is required."}
	case !e.hasBody:
		return e, &LineError{Code: "missing_required_parameter", Param: "body", Message: "'body' is required."}
	}
	return e, nil
}

var errStop = errors.New("stop")

// validation is the outcome of reading an input file.
type validation struct {
	lines  []Span
	model  string
	errors []LineError
	// invalid counts every line error, listed or not.
	invalid int
}

func (v *validation) fail(e LineError) {
	v.invalid++
	if len(v.errors) < maxReported {
		v.errors = append(v.errors, e)
	}
}

// validate reads an input file line by line (never whole: a line at a time,
// up to maxLine bytes) and checks every line: a JSON object with a unique
// custom_id, method POST, url equal to endpoint, and a body that check
// accepts (it returns the body's model). Blank lines are skipped. It fails
// only on a read error; problems of the file are in the validation's errors.
func validate(r io.Reader, endpoint string, maxLine int, check func(body []byte) (string, *LineError)) (*validation, error) {
	v := &validation{}
	br := bufio.NewReaderSize(r, 64<<10)
	seen := map[string]int{}
	var off int64
	for n := 1; ; n++ {
		line, size, tooLong, err := readLine(br, maxLine)
		if err != nil && err != io.EOF {
			return nil, err
		}
		start := off
		off += size
		if size == 0 && err == io.EOF {
			break
		}
		body := bytes.TrimSpace(line)
		switch {
		case tooLong:
			v.fail(LineError{Code: "line_too_large", Line: n,
				Message: fmt.Sprintf("Line %d is larger than %d bytes (server.max_body_bytes).", n, maxLine)})
		case len(body) == 0:
			// blank
		default:
			v.checkLine(n, start+int64(bytes.Index(line, body[:1])), body, endpoint, seen, check)
		}
		if err == io.EOF {
			break
		}
	}
	switch {
	case len(v.lines) > MaxLines:
		v.fail(LineError{Code: "too_many_requests",
			Message: fmt.Sprintf("The file holds %d requests; a batch holds at most %d.", len(v.lines), MaxLines)})
	case len(v.lines) == 0 && v.invalid == 0:
		v.fail(LineError{Code: "empty_file", Message: "The input file holds no request."})
	}
	return v, nil
}

func (v *validation) checkLine(n int, off int64, line []byte, endpoint string, seen map[string]int,
	check func([]byte) (string, *LineError)) {
	at := func(e *LineError) {
		e.Line = n
		e.Message = "Line " + strconv.Itoa(n) + ": " + e.Message
		v.fail(*e)
	}
	e, lerr := parseEnvelope(line)
	if lerr != nil {
		at(lerr)
		return
	}
	if first, dup := seen[e.id]; dup {
		at(&LineError{Code: "duplicate_custom_id", Param: "custom_id",
			Message: "the custom_id " + strconv.Quote(e.id) + " is also on line " + strconv.Itoa(first) + "."})
		return
	}
	seen[e.id] = n
	if e.url != endpoint {
		at(&LineError{Code: "invalid_value", Param: "url",
			Message: "'url' is " + strconv.Quote(e.url) + "; every line of this batch must have " + strconv.Quote(endpoint) + "."})
		return
	}
	model, lerr := check(e.body)
	if lerr != nil {
		at(lerr)
		return
	}
	if v.model == "" {
		v.model = model
	}
	v.lines = append(v.lines, Span{Off: off, Len: len(line)})
}

// readLine returns the next line without its newline, and how many bytes of
// the input it took. A line longer than max is skipped to its end and
// reported as tooLong, without being held in memory.
func readLine(br *bufio.Reader, max int) (line []byte, size int64, tooLong bool, err error) {
	for {
		chunk, e := br.ReadSlice('\n')
		size += int64(len(chunk))
		if !tooLong {
			if len(line)+len(chunk) > max+1 {
				tooLong, line = true, nil
			} else {
				line = append(line, chunk...)
			}
		}
		switch {
		case e == bufio.ErrBufferFull:
			continue
		case e != nil:
			return line, size, tooLong, e
		}
		return bytes.TrimSuffix(line, []byte("\n")), size, tooLong, nil
	}
}
