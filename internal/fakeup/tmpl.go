package fakeup

import (
	"bytes"
	"io"
	"net/http"
	"strconv"
)

// An answer is built once per configuration and model as a template: the JSON is marshalled with markers where
// the per-request id, the timestamp and the base64 images go, then split at the markers. Serving a request writes
// the literal pieces and the cached base64 strings straight to the connection, so a multi-megabyte answer
// costs no per-request copy of the image.

const (
	markID    = "@@ID@@"
	markImage = "@@IMG" // followed by the image index and "@@"
	markSig   = "@@SIG" // followed by the image index and "@@": that image's thoughtSignature
	markEnd   = "@@"
	// createdMark stands in for the unix time in "created" fields, which must stay a JSON number.
	createdMark     int64 = 4242424242424
	createdMarkText       = "4242424242424"
)

type segKind uint8

const (
	segLit segKind = iota
	segID
	segCreated
	segImage
	segSig
)

type seg struct {
	kind segKind
	lit  []byte
	img  int
}

// tmpl is one body (or one SSE event) split at its markers.
type tmpl struct{ segs []seg }

// vals are the per-request values of a template's markers.
type vals struct {
	id, created []byte
	imgs        [][]byte
	sigs        [][]byte // thoughtSignature of each image, made per request
}

// plan is everything needed to answer one kind of request: the events of a stream (or the one body), where
// faults cut in, and the response headers.
type plan struct {
	events []*tmpl
	split  int  // the event at which StallMidStream pauses and DropMidBody cuts: the first image event
	stream bool // flush after each event, no Content-Length
	header http.Header
	imgs   [][]byte
	sigs   bool // the images carry thoughtSignatures (segSig)
}

func imageMark(i int) string { return markImage + strconv.Itoa(i) + markEnd }

func sigMark(i int) string { return markSig + strconv.Itoa(i) + markEnd }

func compile(b []byte) *tmpl {
	t := &tmpl{}
	for len(b) > 0 {
		at, n, sg := nextMark(b)
		if at < 0 {
			t.segs = append(t.segs, seg{lit: b})
			break
		}
		if at > 0 {
			t.segs = append(t.segs, seg{lit: b[:at]})
		}
		t.segs = append(t.segs, sg)
		b = b[at+n:]
	}
	return t
}

// nextMark finds the first marker in b: its offset (-1 if none), its length and the segment it stands for.
func nextMark(b []byte) (at, n int, sg seg) {
	at = -1
	if i := bytes.Index(b, []byte(markID)); i >= 0 {
		at, n, sg = i, len(markID), seg{kind: segID}
	}
	if i := bytes.Index(b, []byte(createdMarkText)); i >= 0 && (at < 0 || i < at) {
		at, n, sg = i, len(createdMarkText), seg{kind: segCreated}
	}
	for _, m := range []struct {
		mark string
		kind segKind
	}{{markImage, segImage}, {markSig, segSig}} {
		if i := bytes.Index(b, []byte(m.mark)); i >= 0 && (at < 0 || i < at) {
			rest := b[i+len(m.mark):]
			if j := bytes.Index(rest, []byte(markEnd)); j > 0 {
				if k, err := strconv.Atoi(string(rest[:j])); err == nil {
					at, n, sg = i, len(m.mark)+j+len(markEnd), seg{kind: m.kind, img: k}
				}
			}
		}
	}
	return at, n, sg
}

func (t *tmpl) size(v *vals) int {
	n := 0
	for _, sg := range t.segs {
		switch sg.kind {
		case segLit:
			n += len(sg.lit)
		case segID:
			n += len(v.id)
		case segCreated:
			n += len(v.created)
		case segImage:
			n += len(v.imgs[sg.img])
		case segSig:
			n += len(v.sigs[sg.img])
		}
	}
	return n
}

// write writes bytes [from, to) of the rendered template.
func (t *tmpl) write(w io.Writer, v *vals, from, to int) error {
	off := 0
	for _, sg := range t.segs {
		if off >= to {
			return nil
		}
		var lit []byte
		switch sg.kind {
		case segLit:
			lit = sg.lit
		case segID:
			lit = v.id
		case segCreated:
			lit = v.created
		case segImage:
			lit = v.imgs[sg.img]
		case segSig:
			lit = v.sigs[sg.img]
		}
		n := len(lit)
		a, b := max(from-off, 0), min(to-off, n)
		off += n
		if a >= b {
			continue
		}
		if _, err := w.Write(lit[a:b]); err != nil {
			return err
		}
	}
	return nil
}

// event frames one JSON object as an SSE event with the given line ending pair.
func event(json []byte, end string) *tmpl {
	b := make([]byte, 0, len(json)+len(end)+6)
	b = append(b, "data: "...)
	b = append(b, json...)
	b = append(b, end...)
	return compile(b)
}
