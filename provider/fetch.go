package provider

import (
	"context"
	"errors"
	"net/netip"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/valyala/fasthttp"

	"nanogate/config"
	"nanogate/internal/safefetch"
)

// fetchWait is the longest a fetch waits for room under MaxBytesInFlight
// before the request is answered 503: long enough to ride out a burst,
// short enough that the client's retry is the better wait.
const fetchWait = 2 * time.Second

// ErrFetchBusy is the failure of a request whose images could not be
// fetched because the gateway holds MaxBytesInFlight of fetched images
// already: retryable, and no provider's fault.
var ErrFetchBusy = errors.New("the gateway is fetching too many images")

// FetchBusyRetryAfter is the retry delay answered with ErrFetchBusy.
const FetchBusyRetryAfter = time.Second

// FetchOptions bound the downloading of the images that requests name by
// http(s) URL (config's images.fetch); zero values take config's defaults.
type FetchOptions struct {
	// Fetcher downloads one image; nil selects a safefetch.Fetcher with
	// Timeout and AllowAddrs.
	Fetcher ImageFetcher
	// Timeout bounds the fetching of all the images of one request.
	Timeout time.Duration
	// MaxPerRequest is how many images of one request are fetched at once.
	MaxPerRequest int
	// MaxBytesInFlight caps the fetched image bytes the process holds for
	// all requests together, from the first byte read until the request's
	// upstream attempts are over.
	MaxBytesInFlight int64
	// RequestBytes is server.max_body_bytes: a request's body and the
	// images fetched for it, counted at their base64 size as if they had
	// been sent inline, must fit in it.
	RequestBytes int64
	// AllowAddrs is passed to the default safefetch.Fetcher (tests only).
	AllowAddrs []netip.AddrPort
}

// ImageFetches downloads the http(s) images of requests for the kinds that
// send image bytes upstream (gemini), within the bounds of FetchOptions.
// One ImageFetches is shared by every provider, so that MaxBytesInFlight
// holds for the process. It is safe for concurrent use.
//
// The fetching belongs to the client, not to a provider: it happens once
// per request, before its first attempt at such a provider (see Preparer),
// and its time and failures never count against a provider's health.
type ImageFetches struct {
	o     FetchOptions
	own   *safefetch.Fetcher // made here, closed by Close
	bytes *safefetch.Semaphore
}

// NewImageFetches returns an ImageFetches; zero options take the defaults.
func NewImageFetches(o FetchOptions) *ImageFetches {
	if o.Timeout <= 0 {
		o.Timeout = config.DefaultFetchTimeout
	}
	if o.MaxPerRequest <= 0 {
		o.MaxPerRequest = config.DefaultFetchMaxPerRequest
	}
	if o.MaxBytesInFlight <= 0 {
		o.MaxBytesInFlight = config.DefaultFetchMaxBytesInFlight
	}
	if o.RequestBytes <= 0 {
		o.RequestBytes = config.DefaultMaxBodyBytes
	}
	f := &ImageFetches{o: o, bytes: safefetch.NewSemaphore(o.MaxBytesInFlight)}
	if o.Fetcher == nil {
		f.own = safefetch.New(safefetch.Options{Timeout: o.Timeout, AllowAddrs: o.AllowAddrs})
		f.o.Fetcher = f.own
	}
	return f
}

// Close drops the idle connections of the default fetcher.
func (f *ImageFetches) Close() {
	if f.own != nil {
		f.own.Close()
	}
}

// InFlight returns the fetched bytes held now, for all requests.
func (f *ImageFetches) InFlight() int64 { return f.bytes.InUse() }

// fetchHold is what a request holds of the process-wide byte cap.
type fetchHold struct {
	f    *ImageFetches
	held atomic.Int64
	// left is what the request may still fetch, in image bytes.
	left atomic.Int64
}

// fetchName stands for the provider in errors of the fetching step, which
// belongs to no provider (it shows in logs only).
const fetchName = "image fetch"

var errRequestTooLarge = errors.New("the request with its fetched images is too large")

// Take implements safefetch.Budget: the request's own room first, then the
// process-wide cap, waiting a little for it.
func (h *fetchHold) Take(ctx context.Context, n int64) error {
	if h.left.Add(-n) < 0 {
		return errRequestTooLarge
	}
	wctx, cancel := context.WithTimeout(ctx, fetchWait)
	defer cancel()
	if err := h.f.bytes.Acquire(wctx, n); err != nil {
		if ctx.Err() != nil {
			return ctx.Err()
		}
		return ErrFetchBusy
	}
	h.held.Add(n)
	return nil
}

// ReleaseImages drops the images fetched for r and gives their bytes back
// to the process-wide cap. The router calls it when the request's attempts
// are over; it is safe to call when nothing was fetched, and twice.
func (r *ChatRequest) ReleaseImages() {
	h := r.fetched
	if h == nil {
		return
	}
	r.fetched = nil
	for i := range r.Messages {
		for _, pt := range r.Messages[i].Parts {
			if pt.Image != nil {
				pt.Image.Data = nil
			}
		}
	}
	h.f.bytes.Release(h.held.Swap(0))
}

// pending lists the http(s) images of req still to fetch, in the order of
// the request; system messages cannot hold images (planGemini refuses them).
func pending(req *ChatRequest) []fetchJob {
	var jobs []fetchJob
	for i := range req.Messages {
		if isSystemRole(req.Messages[i].Role) {
			continue
		}
		for j, pt := range req.Messages[i].Parts {
			if pt.Image != nil && pt.Image.B64 == nil && pt.Image.Data == nil {
				jobs = append(jobs, fetchJob{img: pt.Image, msg: i, part: j})
			}
		}
	}
	return jobs
}

type fetchJob struct {
	img       *ImageInput
	msg, part int
	got       *safefetch.Image
	err       error
}

func (j *fetchJob) param() string {
	return "messages[" + strconv.Itoa(j.msg) + "].content[" + strconv.Itoa(j.part) + "].image_url.url"
}

// Fetch downloads the http(s) images of req not fetched yet, at most
// MaxPerRequest at once, and keeps them on the request (ImageInput.Data)
// until ReleaseImages. On error nothing is kept. The error is the client's:
// a *Error of KindClient (400, or 413 request_too_large when the images
// pass server.max_body_bytes) naming the image at fault, or ErrFetchBusy;
// when ctx ends, KindCanceled or KindTimeout.
func (f *ImageFetches) Fetch(ctx context.Context, req *ChatRequest) error {
	jobs := pending(req)
	if len(jobs) == 0 {
		return nil
	}
	h := req.fetched
	if h == nil {
		h = &fetchHold{f: f}
		// Fetched images count at their base64 size, as if inlined.
		h.left.Store(max(f.o.RequestBytes-int64(len(req.Raw)), 0) / 4 * 3)
		req.fetched = h
	}
	fctx, cancel := context.WithTimeout(ctx, f.o.Timeout)
	defer cancel()

	var next atomic.Int64
	var wg sync.WaitGroup
	for range min(f.o.MaxPerRequest, len(jobs)) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				k := int(next.Add(1)) - 1
				if k >= len(jobs) || fctx.Err() != nil {
					return
				}
				j := &jobs[k]
				j.got, j.err = f.o.Fetcher.FetchImage(fctx, string(j.img.URL), h)
				if j.err == nil {
					if m, why := checkImageBytes(j.got.MIME, j.got.Data); why != "" {
						j.err = &safefetch.Error{Reason: "it is not a usable image: " + why}
					} else {
						j.got.MIME = m
					}
				}
				if j.err != nil {
					cancel() // the request fails: the other fetches are wasted
					return
				}
			}
		}()
	}
	wg.Wait()

	if err := f.verdict(ctx, fctx, jobs); err != nil {
		req.ReleaseImages()
		return err
	}
	for i := range jobs {
		jobs[i].img.MIME, jobs[i].img.Data = jobs[i].got.MIME, jobs[i].got.Data
	}
	return nil
}

// verdict is the outcome of a request's fetches: the failure of the first
// image, in request order, that failed on its own rather than because
// another one did.
func (f *ImageFetches) verdict(ctx, fctx context.Context, jobs []fetchJob) error {
	var stopped *fetchJob // first image cut short by the deadline or a cancel
	for i := range jobs {
		j := &jobs[i]
		switch {
		case j.err == nil && j.got != nil:
			continue
		case j.err == nil, errors.Is(j.err, context.Canceled), errors.Is(j.err, context.DeadlineExceeded):
			if stopped == nil {
				stopped = j
			}
			continue
		}
		p := j.param()
		var fe *safefetch.Error
		switch {
		case errors.Is(j.err, errRequestTooLarge):
			return &Error{Provider: fetchName, Kind: KindClient, Status: fasthttp.StatusRequestEntityTooLarge, Code: "request_too_large", Param: p,
				Message: "'" + p + "': the images fetched from the request's URLs, counted at their base64 size with the request body, " +
					"are larger than this gateway accepts (server.max_body_bytes: " + strconv.FormatInt(f.o.RequestBytes, 10) + " bytes)."}
		case errors.Is(j.err, ErrFetchBusy):
			return ErrFetchBusy
		case errors.As(j.err, &fe):
			return &Error{Provider: fetchName, Kind: KindClient, Status: fasthttp.StatusBadRequest, Param: p, Message: "'" + p + "': " + fe.Reason + "."}
		}
		return &Error{Provider: fetchName, Kind: KindClient, Status: fasthttp.StatusBadRequest, Param: p, Message: "'" + p + "': the image URL could not be fetched."}
	}
	if stopped == nil {
		return nil
	}
	if err := ctx.Err(); err != nil {
		return transportError(fetchName, err) // the caller's end, not the URL's fault
	}
	p := stopped.param()
	return &Error{Provider: fetchName, Kind: KindClient, Status: fasthttp.StatusBadRequest, Param: p,
		Message: "'" + p + "': fetching the request's images took longer than " + f.o.Timeout.String() + "."}
}

// Preparer is a provider that needs work done on a request before its
// first attempt, work that is the client's rather than the provider's: the
// gemini kind downloads the images named by URL. The router calls Prepare
// outside the attempt (its time and failures do not count against the
// provider's health or timeout); an error is the request's answer.
type Preparer interface {
	Prepare(ctx context.Context, req *ChatRequest, model string) error
}

// Copy downloads the one image at url, as Fetch does for a request's images:
// within the timeout, the process-wide cap on bytes in flight, at most
// what a request could send (server.max_body_bytes at base64 size), and the
// same checks of its content. The caller stores the bytes and calls
// release, which gives them back to the cap. The gateway copies a
// reseller's hosted image into its own store with it.
func (f *ImageFetches) Copy(ctx context.Context, url string) (mime string, data []byte, release func(), err error) {
	h := &fetchHold{f: f}
	h.left.Store(f.o.RequestBytes / 4 * 3)
	release = func() { f.bytes.Release(h.held.Swap(0)) }
	fctx, cancel := context.WithTimeout(ctx, f.o.Timeout)
	defer cancel()
	got, err := f.o.Fetcher.FetchImage(fctx, url, h)
	if err != nil {
		release()
		return "", nil, func() {}, err
	}
	m, why := checkImageBytes(got.MIME, got.Data)
	if why != "" {
		release()
		return "", nil, func() {}, &safefetch.Error{Reason: "it is not a usable image: " + why}
	}
	return m, got.Data, release, nil
}
