package gateway

import (
	"bytes"
	"context"
	"time"

	"go.uber.org/zap"

	"nanogate/images/signatures"
	"nanogate/internal/jsonx"
	"nanogate/provider"
)

// Thought signatures: Google's 3.x image models put a thoughtSignature on
// the images they draw and expect it back with the image on the next turn,
// or they lose their context. Clients never see signatures; they only send
// back the content they got (a data URL, markdown, a link), so signatures
// are kept by image (the digest of its bytes, and its link id) and attached
// again when that image comes back in an assistant message. The store is a
// convenience: its failures never fail a request.

// sigStoreTimeout bounds one call to the signature store, so that an
// unreachable Redis costs a request at most this much.
const sigStoreTimeout = time.Second

// keepSignatures stores the signatures of res's images.
func (g *Gateway) keepSignatures(ctx context.Context, res *provider.Result) {
	for i := range res.Choices {
		for j := range res.Choices[i].Images {
			g.keepSignature(ctx, &res.Choices[i].Images[j])
		}
	}
}

// keepSignature stores img's signature, if it has one, under its digest
// and, when it became a link, the link's id. It runs after the image went
// (or goes) to the client, so it does not depend on the client staying.
func (g *Gateway) keepSignature(ctx context.Context, img *provider.Image) {
	if g.sigs == nil || len(img.Signature) == 0 {
		return
	}
	d, ok := provider.ImageDigest(img.B64)
	if !ok {
		return
	}
	g.putSignature(ctx, d, img.URL, img.Signature)
}

// putSignature stores sig under the image digest d and, when the image
// became a link, the link's id ("" for none).
func (g *Gateway) putSignature(ctx context.Context, d [32]byte, link string, sig []byte) {
	if g.sigs == nil || len(sig) == 0 {
		return
	}
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), sigStoreTimeout)
	defer cancel()
	keys := []signatures.Key{signatures.DigestKey(d)}
	if link != "" && g.offload != nil {
		if id, err := g.offload.Store().ParseLink(ctx, link); err == nil {
			keys = append(keys, signatures.LinkKey(id))
		}
	}
	if err := g.sigs.Put(ctx, keys, sig, g.sigTTL); err != nil {
		g.sigFailed("put", err)
	}
}

// recallSignatures finds the signatures of the images in req's assistant
// messages and hands them to the provider (req.ThoughtSignatures). Images
// the gateway offloaded come back as links: image parts were read from the
// store by resolveLinks, markdown ones are read here first.
func (g *Gateway) recallSignatures(ctx context.Context, req *provider.ChatRequest) {
	if g.sigs == nil {
		return
	}
	g.resolveMarkdownLinks(ctx, req)
	var digests [][32]byte
	var keys []signatures.Key
	provider.ModelImages(req, func(b64 []byte) {
		if d, ok := provider.ImageDigest(b64); ok {
			digests = append(digests, d)
			keys = append(keys, signatures.DigestKey(d))
		}
	})
	if len(keys) == 0 {
		return
	}
	ctx, cancel := context.WithTimeout(ctx, sigStoreTimeout)
	defer cancel()
	sigs, err := g.sigs.Get(ctx, keys)
	if err != nil {
		g.sigFailed("get", err)
		return
	}
	for i, s := range sigs {
		if s == nil {
			continue
		}
		if req.ThoughtSignatures == nil {
			req.ThoughtSignatures = make(map[[32]byte][]byte, len(sigs)-i)
		}
		req.ThoughtSignatures[digests[i]] = s
	}
}

// sigFailed counts a failed store call and logs the first one: an outage
// would otherwise log on every image. The error never holds a signature.
func (g *Gateway) sigFailed(op string, err error) {
	g.sigFailures.Add(1)
	if !g.sigWarned.Swap(true) {
		g.log.Warn("thought signature store failed; answering without it (logged once, counted after)",
			zap.String("op", op), zap.Error(err))
	}
}

// SignatureFailures counts the signature store calls that failed.
func (g *Gateway) SignatureFailures() uint64 { return g.sigFailures.Load() }

// resolveMarkdownLinks replaces, in assistant messages, each markdown image
// whose link this gateway issued (the markdown format with offload) by the
// image's data URL read from the store, so that the image, and with it its
// signature, goes back to the model as an image rather than as the text of
// a link. A link that cannot be read is left as it was. Such images count
// towards the request's image inputs, which bound what is read.
func (g *Gateway) resolveMarkdownLinks(ctx context.Context, req *provider.ChatRequest) {
	if g.offload == nil {
		return
	}
	for i := range req.Messages {
		m := &req.Messages[i]
		if m.Role != "assistant" {
			continue
		}
		for j := range m.Parts {
			pt := &m.Parts[j]
			if pt.Image != nil || req.ImageInputs >= provider.MaxImageInputs {
				continue
			}
			if bytes.HasPrefix(pt.Text, []byte("http")) && len(pt.Text) <= 8192 &&
				!bytes.ContainsAny(pt.Text, " ()[]") {
				// The data_url format with offload: the content is the link.
				link, err := unquoteLink(pt.Text)
				if err != nil {
					continue
				}
				mime, b64, ok, err := g.offload.Resolve(ctx, link)
				if err == nil && ok {
					pt.Image = &provider.ImageInput{URL: []byte(link), MIME: mime, B64: b64}
					pt.Text = nil
					req.ImageInputs++
					req.Resolved = true
				}
				continue
			}
			if !bytes.Contains(pt.Text, []byte("](http")) {
				continue
			}
			if t, ok := g.inlineLinks(ctx, req, pt.Text); ok {
				pt.Text = t
				req.Resolved = true
			}
		}
	}
}

// inlineLinks returns text (JSON-escaped content) with its markdown images
// of this gateway's links replaced by data URLs, and whether any was.
func (g *Gateway) inlineLinks(ctx context.Context, req *provider.ChatRequest, text []byte) ([]byte, bool) {
	var out []byte
	last := 0
	for i := 0; ; {
		k := bytes.Index(text[i:], []byte("](http"))
		if k < 0 || req.ImageInputs >= provider.MaxImageInputs {
			break
		}
		open := i + k
		start := open + 2
		end := bytes.IndexByte(text[start:], ')')
		if end < 0 {
			break
		}
		end += start
		i = end
		if !markdownImageBefore(text, open) || end-start > 8192 {
			continue
		}
		link, err := unquoteLink(text[start:end])
		if err != nil {
			continue
		}
		mime, b64, ok, err := g.offload.Resolve(ctx, link)
		if err != nil || !ok {
			continue
		}
		req.ImageInputs++
		if out == nil {
			out = make([]byte, 0, len(text)+len(b64)+64)
		}
		out = append(out, text[last:start]...)
		out = append(out, "data:"...)
		out = append(out, mime...)
		out = append(out, ";base64,"...)
		out = append(out, b64...)
		last = end
	}
	if out == nil {
		return text, false
	}
	return append(out, text[last:]...), true
}

// markdownImageBefore reports whether the "]" at text[close] ends the alt
// text of a markdown image: "![" before it on the same line, with no other
// bracket between.
func markdownImageBefore(text []byte, close int) bool {
	from := max(close-256, 0)
	bang := bytes.LastIndex(text[from:close], []byte("!["))
	if bang < 0 {
		return false
	}
	alt := text[from+bang+2 : close]
	return !bytes.ContainsAny(alt, "[]") && !bytes.Contains(alt, []byte(`\n`))
}

// unquoteLink turns a link in JSON-escaped content ("\u0026" for "&" as Go
// encoders write it) into the link.
func unquoteLink(esc []byte) (string, error) {
	return jsonx.Unquote(append(append([]byte{'"'}, esc...), '"'))
}
