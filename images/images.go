// Package images offloads generated images: instead of megabytes of base64
// inside a JSON answer, the client gets a link, and the bytes behind the link
// are exactly the decoded image.
//
// An Offloader decodes an image's base64 straight from the upstream buffer
// into a Store (no second copy of the image in memory) and returns the link;
// Resolve turns a link this gateway issued, sent back as an input image, into
// base64 again by reading the store, never by fetching the URL.
//
// Two stores implement the Store interface: FS keeps images in a directory
// and its Handler serves them at GET /images/{id}?exp=&sig= (HMAC-signed,
// expiring links; a sweeper deletes files older than the ttl); S3 keeps them
// in an S3-compatible bucket and links are presigned GET URLs, which the
// bucket serves itself.
package images

import (
	"bytes"
	"context"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/valyala/fasthttp"
	"go.uber.org/zap"

	"nanogate/config"
)

// Store keeps offloaded images.
type Store interface {
	// Put stores size bytes read from r (already decoded) under id with its
	// content type. It reads r to its end and fails when r does not hold
	// exactly size bytes; nothing is left behind by a failed Put.
	Put(ctx context.Context, id, mime string, r io.Reader, size int64) error
	// Link returns the URL a client fetches the image from, valid for the
	// store's ttl.
	Link(id, mime string) (string, error)
	// Get opens a stored image (for links sent back as input). It fails with
	// ErrNotFound when there is no image under id.
	Get(ctx context.Context, id string) (io.ReadCloser, string, int64, error)
	// ParseLink returns the id of the image a link points to when the link
	// is one this store issued and is still valid. It fails with ErrNotLink
	// when it is not (another URL, or one of ours altered in any way) and
	// with ErrExpired when it is genuine but its validity has passed.
	ParseLink(ctx context.Context, link string) (id string, err error)
}

// Errors callers branch on. Errors of the stores wrap them where they apply.
var (
	// ErrNotFound: no image is stored under the id.
	ErrNotFound = errors.New("images: image not found")
	// ErrBadID: an id that this package cannot have generated.
	ErrBadID = errors.New("images: malformed image id")
	// ErrNotLink: a URL that is not a valid link of this gateway's store.
	ErrNotLink = errors.New("images: not an image link of this gateway")
	// ErrExpired: a genuine link whose validity has passed.
	ErrExpired = errors.New("images: the image link has expired")
	// ErrUnsupportedType: an image type that is not offloaded (see types in
	// id.go); the caller keeps it inline.
	ErrUnsupportedType = errors.New("images: image type not offloaded")
	// ErrBadBase64: the base64 of an image is empty, malformed or of an
	// impossible length.
	ErrBadBase64 = errors.New("images: malformed base64 image")
	// ErrTooLarge: a stored image larger than Options.MaxResolveBytes.
	ErrTooLarge = errors.New("images: stored image too large")
)

// Defaults of Options.
const (
	// DefaultPutTimeout bounds one Put. A 2 MB image reaches a store on the
	// same network in well under a second; past this the store is taken as
	// down and the caller sends the image inline instead, so an outage costs
	// each answer at most this much. A store that refuses connections fails
	// at once.
	DefaultPutTimeout = 5 * time.Second
	// DefaultMaxResolveBytes caps an image read back by Resolve (decoded).
	// Google refuses inline images over 20 MB, so nothing larger is useful.
	DefaultMaxResolveBytes = 20 << 20
)

// Options tune an Offloader. Zero values take the defaults.
type Options struct {
	// PutTimeout bounds each Put, whatever the caller's deadline.
	PutTimeout time.Duration
	// MaxResolveBytes is the largest decoded image Resolve reads.
	MaxResolveBytes int64
	// MaxImageBytes is the largest decoded image Begin puts
	// (DefaultMaxImageBytes).
	MaxImageBytes int64
	// SpoolDir holds the images Begin decodes for a store other than the
	// filesystem one (which spools in its own directory); os.TempDir()
	// when empty.
	SpoolDir string
}

// Offloader replaces base64 images by links to a Store and reads its links
// back. It is safe for concurrent use.
type Offloader struct {
	store      Store
	spooler    spooler
	putTimeout time.Duration
	maxResolve int64
	maxImage   int64

	offloaded, failed, bytes, resolved atomic.Uint64
	closeOnce                          sync.Once
}

// NewOffloader returns an Offloader over store.
func NewOffloader(store Store, opts Options) *Offloader {
	if opts.PutTimeout <= 0 {
		opts.PutTimeout = DefaultPutTimeout
	}
	if opts.MaxResolveBytes <= 0 {
		opts.MaxResolveBytes = DefaultMaxResolveBytes
	}
	if opts.MaxImageBytes <= 0 {
		opts.MaxImageBytes = DefaultMaxImageBytes
	}
	if opts.SpoolDir == "" {
		opts.SpoolDir = os.TempDir()
	}
	sp, ok := store.(spooler)
	if !ok {
		sp = putSpool{store: store, dir: opts.SpoolDir}
	}
	return &Offloader{store: store, spooler: sp, putTimeout: opts.PutTimeout, maxResolve: opts.MaxResolveBytes,
		maxImage: opts.MaxImageBytes}
}

// New builds the store cfg configures (cfg.Store: "filesystem" or "s3") and
// an Offloader over it with default Options. publicURL is
// config.Server.PublicURL, the base of the filesystem store's links. The
// filesystem store creates cfg.Dir and starts its sweeper: Close the
// Offloader to stop it. The S3 store spools the images it is given as they
// arrive (Begin) in cfg.Dir, on disk rather than in a temporary directory
// that may be memory.
func New(cfg config.Offload, publicURL string, logger *zap.Logger) (*Offloader, error) {
	var store Store
	var err error
	opts := Options{}
	switch cfg.Store {
	case "filesystem", "":
		store, err = NewFS(FSConfig{Dir: cfg.Dir, PublicURL: publicURL, SigningKey: cfg.SigningKey, TTL: cfg.TTL}, logger)
	case "s3":
		if store, err = NewS3(cfg.S3, cfg.TTL); err == nil && cfg.Dir != "" {
			if err = os.MkdirAll(cfg.Dir, 0o750); err != nil {
				err = fmt.Errorf("images: s3 store: spool directory: %w", err)
			}
			opts.SpoolDir = cfg.Dir
			removeStaleSpools(cfg.Dir)
		}
	default:
		err = fmt.Errorf("images: unknown offload store %q (filesystem or s3)", cfg.Store)
	}
	if err != nil {
		return nil, err
	}
	return NewOffloader(store, opts), nil
}

// Offload decodes b64 (standard base64, padded or not, pointing into an
// upstream buffer that is only read) into the store and returns the image's
// link. The decoding streams from b64 into the store: the image is never held
// decoded in memory. Any error means nothing was stored; the caller then
// sends the image inline. Errors never carry a secret.
func (o *Offloader) Offload(ctx context.Context, mime string, b64 []byte) (link string, err error) {
	defer func() {
		if err != nil {
			o.failed.Add(1)
		}
	}()
	ext := extOf(mime)
	if ext == "" {
		if len(mime) > 64 {
			mime = mime[:64]
		}
		return "", fmt.Errorf("%w: %q", ErrUnsupportedType, mime)
	}
	size, enc, err := decodedLen(b64)
	if err != nil {
		return "", err
	}
	return o.put(ctx, ext, base64.NewDecoder(enc, bytes.NewReader(b64)), size)
}

// OffloadBytes is Offload for an image already decoded (one the gateway
// fetched).
func (o *Offloader) OffloadBytes(ctx context.Context, mime string, data []byte) (link string, err error) {
	defer func() {
		if err != nil {
			o.failed.Add(1)
		}
	}()
	ext := extOf(mime)
	if ext == "" || len(data) == 0 {
		return "", fmt.Errorf("%w: %.64q (%d bytes)", ErrUnsupportedType, mime, len(data))
	}
	return o.put(ctx, ext, bytes.NewReader(data), int64(len(data)))
}

// put stores size bytes from r as a new image of extension ext.
func (o *Offloader) put(ctx context.Context, ext string, r io.Reader, size int64) (link string, err error) {
	id := newID(ext)
	mime := mimeOfExt(ext)
	ctx, cancel := context.WithTimeout(ctx, o.putTimeout)
	defer cancel()
	if err := o.store.Put(ctx, id, mime, r, size); err != nil {
		return "", err
	}
	return o.linked(id, mime, size)
}

// linked returns the link of an image just stored, and counts it.
func (o *Offloader) linked(id, mime string, size int64) (string, error) {
	link, err := o.store.Link(id, mime)
	if err != nil {
		return "", err
	}
	o.offloaded.Add(1)
	o.bytes.Add(uint64(size))
	return link, nil
}

// decodedLen returns the length of the bytes b64 encodes, known from its
// length and padding alone, and the encoding that decodes it: StdEncoding
// when b64 is padded (a multiple of 4 long), RawStdEncoding when not.
func decodedLen(b64 []byte) (int64, *base64.Encoding, error) {
	n := len(b64)
	switch {
	case n == 0:
		return 0, nil, fmt.Errorf("%w: empty", ErrBadBase64)
	case n%4 == 0:
		pad := 0
		if b64[n-1] == '=' {
			pad++
			if b64[n-2] == '=' {
				pad++
				if b64[n-3] == '=' {
					return 0, nil, fmt.Errorf("%w: too much padding", ErrBadBase64)
				}
			}
		}
		if n/4*3-pad == 0 {
			return 0, nil, fmt.Errorf("%w: empty", ErrBadBase64)
		}
		return int64(n/4*3 - pad), base64.StdEncoding, nil
	case n%4 == 1 || b64[n-1] == '=':
		return 0, nil, fmt.Errorf("%w: impossible length %d", ErrBadBase64, n)
	}
	// Unpadded: 2 or 3 trailing characters carry 1 or 2 bytes.
	return int64(n/4*3 + n%4 - 1), base64.RawStdEncoding, nil
}

// Resolve reads back an image this gateway offloaded when link is one of its
// links (the filesystem store's public_url + "/images/<id>?exp=&sig=" with a
// valid signature, or a presigned URL of the S3 store), from the store and
// never over HTTP. It returns the image's MIME type and standard base64, and
// ok true.
//
// ok is false with a nil error when link is anything else (another URL, a
// data: URL, or one of ours that was altered): the caller treats it as any
// other URL. A non-nil error means link is genuinely ours but unusable
// (ErrExpired, ErrNotFound once swept, ErrTooLarge, or the store failing):
// the caller should refuse the input with the error's message rather than
// fetch the link, which could not work either.
func (o *Offloader) Resolve(ctx context.Context, link string) (mime string, b64 []byte, ok bool, err error) {
	// Cheap refusal of data: URLs (megabytes) and anything not http(s)
	// before parsing.
	if len(link) > 8192 || !(hasPrefixFold(link, "https://") || hasPrefixFold(link, "http://")) {
		return "", nil, false, nil
	}
	id, err := o.store.ParseLink(ctx, link)
	if errors.Is(err, ErrNotLink) {
		return "", nil, false, nil
	}
	if err != nil {
		return "", nil, false, err
	}
	rc, mime, size, err := o.store.Get(ctx, id)
	if err != nil {
		return "", nil, false, err
	}
	defer rc.Close()
	if size > o.maxResolve {
		return "", nil, false, fmt.Errorf("%w: %d bytes (at most %d)", ErrTooLarge, size, o.maxResolve)
	}
	b64, err = encodeAll(rc, size)
	if err != nil {
		return "", nil, false, fmt.Errorf("images: reading image %s: %w", id, err)
	}
	if mime == "" {
		mime = mimeOfID(id)
	}
	o.resolved.Add(1)
	return mime, b64, true, nil
}

// encodeChunk is the raw bytes encoded per step: a multiple of 3, so that
// only the last chunk can need padding.
const encodeChunk = 3 << 14

var encodeBufs = sync.Pool{New: func() any { b := make([]byte, encodeChunk); return &b }}

// encodeAll reads exactly size bytes from r and returns their standard
// base64, allocating only the result.
func encodeAll(r io.Reader, size int64) ([]byte, error) {
	bp := encodeBufs.Get().(*[]byte)
	defer encodeBufs.Put(bp)
	buf := *bp
	out := make([]byte, base64.StdEncoding.EncodedLen(int(size)))
	var done int64
	w := 0
	for done < size {
		n := int(min(int64(len(buf)), size-done))
		if _, err := io.ReadFull(r, buf[:n]); err != nil {
			return nil, fmt.Errorf("short image: %d of %d bytes: %w", done, size, err)
		}
		base64.StdEncoding.Encode(out[w:], buf[:n])
		w += base64.StdEncoding.EncodedLen(n)
		done += int64(n)
	}
	return out, nil
}

func hasPrefixFold(s, prefix string) bool {
	return len(s) >= len(prefix) && strings.EqualFold(s[:len(prefix)], prefix)
}

// Handler serves the filesystem store's links (GET /images/{id}); it is nil
// when the store serves its own links (S3), and the gateway then has no
// /images/ route.
func (o *Offloader) Handler() fasthttp.RequestHandler {
	if fs, ok := o.store.(*FS); ok {
		return fs.Handler()
	}
	return nil
}

// Store returns the Offloader's store.
func (o *Offloader) Store() Store { return o.store }

// Close stops the store's background work (the filesystem sweeper). Safe to
// call twice.
func (o *Offloader) Close() error {
	var err error
	o.closeOnce.Do(func() {
		if c, ok := o.store.(io.Closer); ok {
			err = c.Close()
		}
	})
	return err
}

// Stats are counters since start, for /metrics.
type Stats struct {
	// Offloaded images replaced by a link.
	Offloaded uint64
	// Failed Offload calls (the caller sent those images inline).
	Failed uint64
	// Bytes of decoded images stored.
	Bytes uint64
	// Resolved links sent back as input and read from the store.
	Resolved uint64
	// Served GET /images/{id} answers with the image (filesystem store), and
	// NotModified ones (304).
	Served, NotModified uint64
	// Denied GET /images/{id}: expired or altered links (403).
	Denied uint64
	// Swept files deleted by the sweeper.
	Swept uint64
}

// Stats returns the counters.
func (o *Offloader) Stats() Stats {
	s := Stats{
		Offloaded: o.offloaded.Load(),
		Failed:    o.failed.Load(),
		Bytes:     o.bytes.Load(),
		Resolved:  o.resolved.Load(),
	}
	if fs, ok := o.store.(*FS); ok {
		s.Served = fs.served.Load()
		s.NotModified = fs.notModified.Load()
		s.Denied = fs.denied.Load()
		s.Swept = fs.swept.Load()
	}
	return s
}
