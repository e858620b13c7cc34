// Package safefetch downloads the images that clients name by http(s) URL
// (an image_url part of a chat request), without letting a client use the
// gateway to reach addresses it could not reach itself.
//
// The guard sits where it cannot be talked around: a net.Dialer Control hook
// checks every IP address the fetcher is about to connect to, after DNS
// resolution and for every redirect, so a host name that resolves to
// 127.0.0.1, a DNS answer that changes between two lookups (rebinding), a
// decimal or IPv4-mapped spelling of a private address and a public server
// that redirects to the metadata service are all refused the same way. Only
// public unicast addresses pass (see Public).
//
// On top of that a fetch is bounded in size, time and redirects, and the
// answer must be an image twice over: an image/* Content-Type and the magic
// bytes of a format the image model reads. A caller can charge the bytes to
// a Budget before they are held (a request's share, a Semaphore for the
// process), so that many large images cannot add up to the gateway's memory.
package safefetch

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"mime"
	"net"
	"net/http"
	"net/netip"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"
)

// Defaults of Options.
const (
	// DefaultMaxBytes is the largest image fetched. Google refuses requests
	// whose inline data passes 20 MB, so a bigger image could never be sent.
	DefaultMaxBytes = 20 << 20
	DefaultTimeout  = 15 * time.Second
	// DefaultMaxRedirects follows short CDN chains, not loops.
	DefaultMaxRedirects = 3
)

// Options tune a Fetcher. Zero values take the defaults.
type Options struct {
	// MaxBytes caps the image size (the decoded body, after any
	// Content-Encoding).
	MaxBytes int64
	// Timeout bounds a whole fetch: connect, redirects, headers and body.
	Timeout time.Duration
	// MaxRedirects is the number of redirects followed; more is an error.
	MaxRedirects int
	// UserAgent is sent with every fetch.
	UserAgent string
	// AllowAddrs lists ip:port pairs that may be dialled although they are
	// not public. It exists for tests, whose image servers listen on
	// loopback; configurations never set it. Only the exact pairs pass:
	// another port of the same host is still refused.
	AllowAddrs []netip.AddrPort
}

// Image is a fetched image.
type Image struct {
	// MIME is the type the magic bytes show (image/png, image/jpeg,
	// image/webp, image/gif, image/heic or image/heif).
	MIME string
	Data []byte
}

// Fetcher downloads images. It is safe for concurrent use.
type Fetcher struct {
	opts      Options
	transport *http.Transport
	client    *http.Client
}

// Error is a fetch that was refused or failed. Its message is meant for the
// client that sent the URL: it says what went wrong without internal details
// (no resolved addresses, no network errors).
type Error struct {
	// Reason is the client-facing explanation.
	Reason string
	// Err is the underlying cause, for logs and errors.Is.
	Err error
}

// Error returns why the fetch was refused.
func (e *Error) Error() string { return e.Reason }

// Unwrap returns the underlying failure, nil for a refusal of policy.
func (e *Error) Unwrap() error { return e.Err }

// ErrNotPublic is the cause of a fetch refused because an address it would
// connect to is not a public one.
var ErrNotPublic = errors.New("safefetch: address is not public")

// New returns a Fetcher.
func New(o Options) *Fetcher {
	if o.MaxBytes <= 0 {
		o.MaxBytes = DefaultMaxBytes
	}
	if o.Timeout <= 0 {
		o.Timeout = DefaultTimeout
	}
	if o.MaxRedirects <= 0 {
		o.MaxRedirects = DefaultMaxRedirects
	}
	if o.UserAgent == "" {
		o.UserAgent = "nanogate-image-fetch/1"
	}
	o.AllowAddrs = append([]netip.AddrPort(nil), o.AllowAddrs...)
	f := &Fetcher{opts: o}
	dialer := &net.Dialer{
		Timeout:   o.Timeout,
		KeepAlive: 30 * time.Second,
		Control:   f.control,
	}
	f.transport = &http.Transport{
		// No proxy: a proxy would make the connection on our behalf, to
		// addresses this package never sees.
		Proxy:                  nil,
		DialContext:            dialer.DialContext,
		ForceAttemptHTTP2:      true,
		TLSHandshakeTimeout:    o.Timeout,
		ResponseHeaderTimeout:  o.Timeout,
		MaxResponseHeaderBytes: 64 << 10,
		MaxIdleConns:           32,
		MaxIdleConnsPerHost:    4,
		IdleConnTimeout:        30 * time.Second,
	}
	f.client = &http.Client{
		Transport:     f.transport,
		Timeout:       o.Timeout,
		CheckRedirect: f.checkRedirect,
	}
	return f
}

// Close drops idle connections.
func (f *Fetcher) Close() { f.transport.CloseIdleConnections() }

// Budget is charged for the bytes of an image before they are held in
// memory, so that a caller can bound what one request, or every request
// together, makes the gateway read.
type Budget interface {
	// Take claims n more bytes. An error stops the fetch, and FetchImage
	// returns it as it is.
	Take(ctx context.Context, n int64) error
}

// chunk is how much of a body of unknown length is read before it is
// charged to the Budget: the most read beyond a Budget that refuses.
const chunk = 64 << 10

// FetchImage downloads the image at rawURL, charging its bytes to b (nil:
// no budget). A body whose length is announced is charged at once, before
// any of it is read; one of unknown length as it arrives. Every failure is
// an *Error, but for ctx ending, which returns ctx's error (the caller's
// deadline or cancellation, not the URL's fault), and for b's own errors.
func (f *Fetcher) FetchImage(ctx context.Context, rawURL string, b Budget) (*Image, error) {
	u, err := checkURL(rawURL)
	if err != nil {
		return nil, err
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u.String(), nil)
	if err != nil {
		return nil, &Error{Reason: "the image URL is not a valid URL", Err: err}
	}
	req.Header.Set("User-Agent", f.opts.UserAgent)
	req.Header.Set("Accept", "image/png,image/jpeg,image/webp,image/heic,image/heif,image/gif")
	resp, err := f.client.Do(req)
	if err != nil {
		return nil, f.failure(ctx, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, &Error{Reason: "fetching the image URL answered HTTP " + strconv.Itoa(resp.StatusCode)}
	}
	ct, _, _ := mime.ParseMediaType(resp.Header.Get("Content-Type"))
	if !strings.HasPrefix(ct, "image/") {
		if ct == "" {
			ct = "none"
		}
		return nil, &Error{Reason: "the image URL did not answer with an image (Content-Type " + ct + ")"}
	}
	if resp.ContentLength > f.opts.MaxBytes {
		return nil, f.tooLarge()
	}
	var data []byte
	if resp.ContentLength >= 0 {
		if b != nil {
			if err := b.Take(ctx, resp.ContentLength); err != nil {
				return nil, err
			}
		}
		data, err = readExact(resp.Body, resp.ContentLength)
	} else {
		if b == nil {
			b = unlimited{}
		}
		data, err = readCharged(ctx, resp.Body, f.opts.MaxBytes, b)
	}
	if err != nil {
		var be budgetError
		switch {
		case errors.As(err, &be):
			return nil, be.err
		case errors.Is(err, errTooLarge):
			return nil, f.tooLarge()
		}
		return nil, f.failure(ctx, err)
	}
	m := Sniff(data)
	if m == "" {
		return nil, &Error{Reason: "the image URL's content is not a PNG, JPEG, WebP, GIF, HEIC or HEIF image"}
	}
	return &Image{MIME: m, Data: data}, nil
}

func (f *Fetcher) tooLarge() *Error {
	return &Error{Reason: fmt.Sprintf("the image at the image URL is larger than %d bytes", f.opts.MaxBytes)}
}

var errTooLarge = errors.New("safefetch: body too large")

// readExact reads a body of announced length into a buffer of that size.
// net/http ends the body at its Content-Length and reports a shorter one
// as io.ErrUnexpectedEOF, so nothing past what was charged is read.
func readExact(r io.Reader, length int64) ([]byte, error) {
	data := make([]byte, length)
	if _, err := io.ReadFull(r, data); err != nil {
		return nil, err
	}
	return data, nil
}

// unlimited is the Budget of a fetch that has none.
type unlimited struct{}

func (unlimited) Take(context.Context, int64) error { return nil }

// budgetError carries a Budget's refusal out of readCharged, told apart
// from a failed read.
type budgetError struct{ err error }

func (e budgetError) Error() string { return e.err.Error() }

// chunks recycles the pieces readCharged reads into.
var chunks = sync.Pool{New: func() any { return new([chunk]byte) }}

// readCharged reads r to its end, failing once it passes max bytes, and
// charges b for each chunk before keeping it. The chunks are joined once at
// the end: growing one slice as the body arrives would leave several times
// its size in garbage, which is memory the budget does not see.
func readCharged(ctx context.Context, r io.Reader, max int64, b Budget) ([]byte, error) {
	var kept []*[chunk]byte
	var lens []int
	total := 0
	defer func() {
		for _, c := range kept {
			chunks.Put(c)
		}
	}()
	for {
		c := chunks.Get().(*[chunk]byte)
		n, err := io.ReadFull(r, c[:])
		if n == 0 {
			chunks.Put(c)
		} else {
			kept, lens = append(kept, c), append(lens, n)
			total += n
			if int64(total) > max {
				return nil, errTooLarge
			}
			if terr := b.Take(ctx, int64(n)); terr != nil {
				return nil, budgetError{terr}
			}
		}
		switch err {
		case nil:
		case io.EOF, io.ErrUnexpectedEOF:
			data := make([]byte, 0, total)
			for i, c := range kept {
				data = append(data, c[:lens[i]]...)
			}
			return data, nil
		default:
			return nil, err
		}
	}
}

// failure turns a transport error into an *Error, or ctx's own error when
// the caller gave up.
func (f *Fetcher) failure(ctx context.Context, err error) error {
	if cerr := ctx.Err(); cerr != nil {
		return cerr
	}
	var fe *Error
	if errors.As(err, &fe) {
		return fe // from checkRedirect
	}
	var dnsErr *net.DNSError
	var ne net.Error
	switch {
	case errors.Is(err, ErrNotPublic):
		return &Error{Reason: "the image URL leads to an address that is not public; only public http(s) URLs can be fetched", Err: err}
	case errors.As(err, &dnsErr):
		return &Error{Reason: "the image URL's host name could not be resolved", Err: err}
	case errors.As(err, &ne) && ne.Timeout():
		return &Error{Reason: "fetching the image URL timed out", Err: err}
	}
	return &Error{Reason: "the image URL could not be fetched", Err: err}
}

func (f *Fetcher) checkRedirect(req *http.Request, via []*http.Request) error {
	if len(via) > f.opts.MaxRedirects {
		return &Error{Reason: fmt.Sprintf("the image URL redirected more than %d times", f.opts.MaxRedirects)}
	}
	// The new address is checked when it is dialled; the URL's form is
	// checked here as for the first one.
	_, err := checkURL(req.URL.String())
	return err
}

// checkURL accepts absolute http(s) URLs with a host that is a DNS name or an
// IP address in its canonical form.
func checkURL(raw string) (*url.URL, error) {
	u, err := url.Parse(raw)
	if err != nil || u.Host == "" {
		return nil, &Error{Reason: "the image URL is not a valid absolute URL", Err: err}
	}
	if u.Scheme != "http" && u.Scheme != "https" {
		return nil, &Error{Reason: "the image URL must be http or https"}
	}
	host := u.Hostname()
	if host == "" {
		return nil, &Error{Reason: "the image URL has no host"}
	}
	if _, err := netip.ParseAddr(host); err == nil {
		return u, nil // checked when dialled
	}
	// A name whose last label is a number ("2130706433", "0x7f.1",
	// "127.1") is a legacy spelling of an IPv4 address that some resolvers
	// (glibc's inet_aton) turn into one. No top-level domain is numeric, so
	// it is never a real host name.
	last := host
	if i := strings.LastIndexByte(strings.TrimSuffix(host, "."), '.'); i >= 0 {
		last = host[i+1:]
	}
	last = strings.TrimSuffix(last, ".")
	if isNumericLabel(last) {
		return nil, &Error{Reason: "the image URL's host is a numeric address in a non-standard form"}
	}
	return u, nil
}

func isNumericLabel(s string) bool {
	if s == "" {
		return false
	}
	if len(s) > 2 && (s[:2] == "0x" || s[:2] == "0X") {
		s = s[2:]
		for i := 0; i < len(s); i++ {
			if !isHex(s[i]) {
				return false
			}
		}
		return true
	}
	for i := 0; i < len(s); i++ {
		if s[i] < '0' || s[i] > '9' {
			return false
		}
	}
	return true
}

func isHex(c byte) bool {
	return '0' <= c && c <= '9' || 'a' <= c && c <= 'f' || 'A' <= c && c <= 'F'
}

// control runs for every connection the fetcher dials, with the resolved
// address, before the connection is made.
func (f *Fetcher) control(network, address string, _ syscall.RawConn) error {
	if network != "tcp4" && network != "tcp6" && network != "tcp" {
		return fmt.Errorf("%w: network %s", ErrNotPublic, network)
	}
	ap, err := netip.ParseAddrPort(address)
	if err != nil {
		return fmt.Errorf("%w: unparsable address", ErrNotPublic)
	}
	for _, a := range f.opts.AllowAddrs {
		if a.Addr().Unmap() == ap.Addr().Unmap() && a.Port() == ap.Port() {
			return nil
		}
	}
	if !Public(ap.Addr()) {
		return fmt.Errorf("%w: %s", ErrNotPublic, ap.Addr())
	}
	return nil
}

// blocked are the ranges that are not public unicast, from the IANA special
// purpose registries, plus the cloud metadata addresses.
var blocked = func() []netip.Prefix {
	var out []netip.Prefix
	for _, s := range []string{
		// IPv4
		"0.0.0.0/8",       // "this network", unspecified
		"10.0.0.0/8",      // private
		"100.64.0.0/10",   // carrier-grade NAT (also Alibaba's metadata 100.100.100.200)
		"127.0.0.0/8",     // loopback
		"169.254.0.0/16",  // link-local, incl. the metadata service 169.254.169.254
		"172.16.0.0/12",   // private
		"192.0.0.0/24",    // IETF protocol assignments
		"192.0.2.0/24",    // documentation
		"192.88.99.0/24",  // 6to4 relay anycast
		"192.168.0.0/16",  // private
		"198.18.0.0/15",   // benchmarking
		"198.51.100.0/24", // documentation
		"203.0.113.0/24",  // documentation
		"224.0.0.0/4",     // multicast
		"240.0.0.0/4",     // reserved, broadcast
		// IPv6 (IPv4-mapped ::ffff:0:0/96 is unmapped and checked as IPv4)
		"::/96",          // unspecified, loopback, IPv4-compatible (deprecated)
		"64:ff9b:1::/48", // local-use NAT64
		"100::/64",       // discard
		"2001::/23",      // IETF protocol assignments, incl. Teredo 2001::/32
		"2001:db8::/32",  // documentation
		"3fff::/20",      // documentation
		"5f00::/16",      // segment routing SIDs
		"fc00::/7",       // unique local, incl. AWS's metadata fd00:ec2::254
		"fe80::/10",      // link-local
		"fec0::/10",      // site-local (deprecated)
		"ff00::/8",       // multicast
	} {
		out = append(out, netip.MustParsePrefix(s))
	}
	return out
}()

var (
	nat64  = netip.MustParsePrefix("64:ff9b::/96")
	sixTo4 = netip.MustParsePrefix("2002::/16")
)

// Public reports whether a is a public unicast address: not loopback,
// private, link-local, carrier-grade NAT, multicast, unspecified, reserved
// or documentation, in any IPv4 or IPv6 spelling. IPv6 forms that embed an
// IPv4 address (IPv4-mapped, NAT64, 6to4) are judged by that address.
func Public(a netip.Addr) bool {
	a = a.Unmap()
	if !a.IsValid() || a.Zone() != "" {
		return false
	}
	for _, p := range blocked {
		if p.Contains(a) {
			return false
		}
	}
	if a.Is6() {
		b := a.As16()
		switch {
		case nat64.Contains(a):
			return Public(netip.AddrFrom4([4]byte(b[12:16])))
		case sixTo4.Contains(a):
			return Public(netip.AddrFrom4([4]byte(b[2:6])))
		}
	}
	return true
}

// Sniff returns the media type the first bytes of data show among the
// image formats the image model reads, or "".
func Sniff(data []byte) string {
	switch {
	case bytes.HasPrefix(data, []byte("\x89PNG\r\n\x1a\n")):
		return "image/png"
	case bytes.HasPrefix(data, []byte("\xff\xd8\xff")):
		return "image/jpeg"
	case len(data) >= 12 && string(data[:4]) == "RIFF" && string(data[8:12]) == "WEBP":
		return "image/webp"
	case bytes.HasPrefix(data, []byte("GIF87a")), bytes.HasPrefix(data, []byte("GIF89a")):
		return "image/gif"
	case len(data) >= 12 && string(data[4:8]) == "ftyp":
		// ISO base media file: the major brand tells HEIC from HEIF (and
		// from AVIF or video, which are refused).
		switch string(data[8:12]) {
		case "heic", "heix", "heim", "heis", "hevc", "hevx", "hevm", "hevs":
			return "image/heic"
		case "mif1", "msf1":
			return "image/heif"
		}
	}
	return ""
}
