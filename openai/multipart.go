package openai

import (
	"bytes"
	"encoding/base64"
	"io"
	"mime"
	"mime/multipart"

	"nanogate/internal/clip"
	"nanogate/provider"
)

// editKind returns the media type of an image to edit from its first
// bytes: PNG, JPEG or WebP, the types OpenAI's edits endpoint takes; ""
// for anything else.
func editKind(b []byte) string {
	switch k := provider.ImageKind(b); k {
	case "image/png", "image/jpeg", "image/webp":
		return k
	}
	return ""
}

// ParseImagesEdit reads the multipart body of /v1/images/edits, of content
// type ct, part by part: each file is base64-encoded as it is read (the one
// copy it takes), checked by its magic bytes, and capped in size.
func ParseImagesEdit(ct string, body []byte) (*ImagesRequest, *Error) {
	mt, params, err := mime.ParseMediaType(ct)
	if err != nil || mt != "multipart/form-data" || params["boundary"] == "" {
		return nil, &Error{Status: 415, Type: "invalid_request_error", Code: "invalid_request",
			Message: "The request body must be multipart/form-data with a boundary."}
	}
	mr := multipart.NewReader(bytes.NewReader(body), params["boundary"])
	r := &ImagesRequest{}
	for {
		part, err := mr.NextPart()
		if err == io.EOF {
			break
		}
		if err != nil {
			return nil, Invalid("", "The multipart body is malformed or truncated.")
		}
		name := part.FormName()
		switch {
		case name == "image" || name == "image[]":
			if len(r.Inputs) >= 16 {
				return nil, Invalid("image", "Too many images (at most 16).")
			}
			img, aerr := readEditImage(part)
			if aerr != nil {
				return nil, aerr
			}
			r.Inputs = append(r.Inputs, img)
		case name == "":
			return nil, Invalid("", "A multipart part has no name.")
		case part.FileName() != "" && name != "mask":
			name = clip.String(name)
			return nil, Invalid(name, "Unexpected file field: "+name)
		default:
			v, err := io.ReadAll(io.LimitReader(part, MaxPromptBytes+1))
			if err != nil {
				return nil, Invalid("", "The multipart body is malformed or truncated.")
			}
			if e := r.Param(name, string(v)); e != nil {
				return nil, ErrorFor(e, "", nil)
			}
		}
	}
	if len(r.Inputs) == 0 {
		return nil, Invalid("image", "'image' is required: send one or more image files (png, jpeg or webp).")
	}
	return r, nil
}

func readEditImage(part *multipart.Part) (InputImage, *Error) {
	var head [16]byte
	n, _ := io.ReadFull(part, head[:])
	mt := editKind(head[:n])
	if mt == "" {
		return InputImage{}, Invalid("image", "Each 'image' must be a PNG, JPEG or WebP file (checked by its content).")
	}
	var buf bytes.Buffer
	enc := base64.NewEncoder(base64.StdEncoding, &buf)
	enc.Write(head[:n])
	copied, err := io.Copy(enc, io.LimitReader(part, MaxEditFile))
	if err != nil {
		return InputImage{}, Invalid("image", "The multipart body is malformed or truncated.")
	}
	if copied+int64(n) >= MaxEditFile {
		return InputImage{}, &Error{Status: 413, Type: "invalid_request_error",
			Code: "request_too_large", Param: "image", Message: "An image file is larger than 20 MiB."}
	}
	enc.Close()
	return InputImage{MIME: mt, B64: buf.Bytes()}, nil
}
