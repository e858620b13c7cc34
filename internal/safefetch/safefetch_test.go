package safefetch

import (
	"context"
	"errors"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"
)

// tinyPNG is a 2x2 PNG (the fixtures' tiny.png).
var tinyPNG = []byte("\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR\x00\x00\x00\x02\x00\x00\x00\x02\x08\x02\x00\x00\x00\xfd\xd4\x9as\x00\x00\x00\x14IDATx\xdac\xf8\xcf\xc0\xc0\x00\x03\x08\xcf\xef\xff\xff\x06\x00\x1e\xef\x04\xfcs\x1cS\xcc\x00\x00\x00\x00IEND\xaeB`\x82")

// server is an image server on loopback that counts its requests.
type server struct {
	*httptest.Server
	hits atomic.Int64
	addr netip.AddrPort
}

func newServer(t *testing.T, h http.HandlerFunc) *server {
	t.Helper()
	s := &server{}
	s.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		s.hits.Add(1)
		h(w, r)
	}))
	t.Cleanup(s.Close)
	s.addr = netip.MustParseAddrPort(s.Listener.Addr().String())
	return s
}

func pngHandler(w http.ResponseWriter, r *http.Request) {
	w.Header().Set("Content-Type", "image/png")
	w.Write(tinyPNG)
}

// allowing returns a fetcher that may reach the given test servers only.
func allowing(o Options, ss ...*server) *Fetcher {
	for _, s := range ss {
		o.AllowAddrs = append(o.AllowAddrs, s.addr)
	}
	return New(o)
}

func TestFetchImageFromAllowedServer(t *testing.T) {
	s := newServer(t, pngHandler)
	f := allowing(Options{}, s)
	defer f.Close()
	img, err := f.FetchImage(context.Background(), s.URL+"/cat.png", nil)
	if err != nil {
		t.Fatal(err)
	}
	if img.MIME != "image/png" || string(img.Data) != string(tinyPNG) {
		t.Fatalf("got %s %d bytes", img.MIME, len(img.Data))
	}
}

// TestRefusesNonPublicAddressesByDefault proves the guard on every spelling of
// a non-public address, with a live server behind the loopback ones: the
// refusal must happen before any connection, so the server sees nothing.
func TestRefusesNonPublicAddressesByDefault(t *testing.T) {
	s := newServer(t, pngHandler)
	port := s.addr.Port()
	p := ":" + strconv.Itoa(int(port))
	f := New(Options{Timeout: 3 * time.Second})
	defer f.Close()
	tests := []struct {
		name, url string
		numeric   bool // refused for its form, before any lookup
	}{
		{"loopback IPv4", "http://127.0.0.1" + p + "/a.png", false},
		{"loopback elsewhere in 127/8", "http://127.1.2.3" + p + "/a.png", false},
		{"DNS name resolving to loopback", "http://localhost" + p + "/a.png", false},
		{"loopback IPv6", "http://[::1]" + p + "/a.png", false},
		{"unspecified", "http://0.0.0.0" + p + "/a.png", false},
		{"IPv4-mapped IPv6 loopback", "http://[::ffff:127.0.0.1]" + p + "/a.png", false},
		{"IPv4-mapped IPv6 loopback, hex", "http://[::ffff:7f00:1]" + p + "/a.png", false},
		{"IPv4-mapped metadata", "http://[::ffff:169.254.169.254]/latest/meta-data/", false},
		{"NAT64 loopback", "http://[64:ff9b::7f00:1]" + p + "/a.png", false},
		{"6to4 loopback", "http://[2002:7f00:1::1]" + p + "/a.png", false},
		{"decimal IPv4", "http://2130706433" + p + "/a.png", true},
		{"hex IPv4", "http://0x7f000001" + p + "/a.png", true},
		{"octal IPv4", "http://017700000001" + p + "/a.png", true},
		{"short IPv4", "http://127.1" + p + "/a.png", true},
		{"private 10/8", "http://10.1.2.3/a.png", false},
		{"private 172.16/12", "http://172.20.0.1/a.png", false},
		{"private 192.168/16", "http://192.168.1.1/a.png", false},
		{"CGNAT", "http://100.64.0.1/a.png", false},
		{"link-local", "http://169.254.1.1/a.png", false},
		{"metadata", "http://169.254.169.254/latest/meta-data/", false},
		{"AWS IPv6 metadata", "http://[fd00:ec2::254]/latest/meta-data/", false},
		{"IPv6 link-local", "http://[fe80::1]/a.png", false},
		{"multicast", "http://224.0.0.1/a.png", false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := f.FetchImage(context.Background(), tt.url, nil)
			var fe *Error
			if !errors.As(err, &fe) {
				t.Fatalf("err = %v, want *Error", err)
			}
			if !tt.numeric && !errors.Is(err, ErrNotPublic) {
				t.Fatalf("err = %v (%v), want a refusal of the address", err, fe.Err)
			}
			if tt.numeric && !strings.Contains(fe.Reason, "numeric") {
				t.Fatalf("err = %v, want the numeric host refused", err)
			}
		})
	}
	if n := s.hits.Load(); n != 0 {
		t.Fatalf("the loopback server got %d requests", n)
	}
}

func TestRedirectToNonPublicAddressIsRefused(t *testing.T) {
	inner := newServer(t, pngHandler)
	for _, target := range []string{inner.URL + "/secret.png", "http://169.254.169.254/latest/meta-data/", "http://localhost:" + strconv.Itoa(int(inner.addr.Port())) + "/x"} {
		outer := newServer(t, func(w http.ResponseWriter, r *http.Request) {
			http.Redirect(w, r, target, http.StatusFound)
		})
		// The first hop is allowed, as a public server would be; the
		// redirect's target is not.
		f := allowing(Options{}, outer)
		_, err := f.FetchImage(context.Background(), outer.URL+"/a.png", nil)
		if !errors.Is(err, ErrNotPublic) {
			t.Fatalf("redirect to %s: err = %v, want a refusal", target, err)
		}
		if outer.hits.Load() != 1 {
			t.Fatalf("outer hits = %d", outer.hits.Load())
		}
		f.Close()
	}
	if inner.hits.Load() != 0 {
		t.Fatalf("the redirect target was reached %d times", inner.hits.Load())
	}
}

func TestRedirectsAreFollowedAndBounded(t *testing.T) {
	img := newServer(t, pngHandler)
	var hops *server
	hops = newServer(t, func(w http.ResponseWriter, r *http.Request) {
		n := len(r.URL.Path) - len(strings.TrimLeft(r.URL.Path, "/"))
		if n >= 5 {
			http.Redirect(w, r, img.URL+"/a.png", http.StatusFound)
			return
		}
		http.Redirect(w, r, hops.URL+strings.Repeat("/", n+1), http.StatusFound)
	})
	f := allowing(Options{MaxRedirects: 10}, img, hops)
	defer f.Close()
	if _, err := f.FetchImage(context.Background(), hops.URL+"/", nil); err != nil {
		t.Fatalf("a chain of 5 redirects: %v", err)
	}
	g := allowing(Options{MaxRedirects: 2}, img, hops)
	defer g.Close()
	_, err := g.FetchImage(context.Background(), hops.URL+"/", nil)
	if err == nil || !strings.Contains(err.Error(), "redirected more than 2 times") {
		t.Fatalf("err = %v, want too many redirects", err)
	}
}

func TestFetchRefusals(t *testing.T) {
	big := append(append([]byte(nil), tinyPNG...), make([]byte, 5000)...)
	tests := []struct {
		name    string
		h       http.HandlerFunc
		want    string
		timeout time.Duration
	}{
		{"not found", func(w http.ResponseWriter, r *http.Request) { http.NotFound(w, r) }, "HTTP 404", 0},
		{"html", func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("Content-Type", "text/html")
			w.Write([]byte("<html>hi</html>"))
		}, "Content-Type text/html", 0},
		{"image type, html bytes", func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("Content-Type", "image/png")
			w.Write([]byte("<html>hi</html>"))
		}, "not a PNG", 0},
		{"svg", func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("Content-Type", "image/svg+xml")
			w.Write([]byte("<svg xmlns='http://www.w3.org/2000/svg'/>"))
		}, "not a PNG", 0},
		{"too large, announced", func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("Content-Type", "image/png")
			w.Write(big)
		}, "larger than 1000 bytes", 0},
		{"too large, chunked", func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("Content-Type", "image/png")
			for i := 0; i < len(big); i += 100 {
				w.Write(big[i:min(i+100, len(big))])
				w.(http.Flusher).Flush()
			}
		}, "larger than 1000 bytes", 0},
		{"slow", func(w http.ResponseWriter, r *http.Request) {
			select {
			case <-time.After(5 * time.Second):
			case <-r.Context().Done():
			}
		}, "timed out", 300 * time.Millisecond},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := newServer(t, tt.h)
			f := allowing(Options{MaxBytes: 1000, Timeout: tt.timeout}, s)
			defer f.Close()
			_, err := f.FetchImage(context.Background(), s.URL+"/a.png", nil)
			var fe *Error
			if !errors.As(err, &fe) || !strings.Contains(fe.Reason, tt.want) {
				t.Fatalf("err = %v, want *Error containing %q", err, tt.want)
			}
		})
	}
}

func TestFetchRefusesOtherSchemes(t *testing.T) {
	f := New(Options{})
	for _, u := range []string{"file:///etc/passwd", "ftp://example.com/a.png", "gopher://example.com/", "//example.com/a.png", "data:image/png;base64,AAAA", "http:///a.png"} {
		_, err := f.FetchImage(context.Background(), u, nil)
		var fe *Error
		if !errors.As(err, &fe) {
			t.Errorf("%s: err = %v, want *Error", u, err)
		}
	}
}

func TestFetchReturnsContextErrors(t *testing.T) {
	s := newServer(t, func(w http.ResponseWriter, r *http.Request) { <-r.Context().Done() })
	f := allowing(Options{}, s)
	defer f.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel()
	_, err := f.FetchImage(ctx, s.URL+"/a.png", nil)
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("err = %v, want the context's deadline", err)
	}
}

func TestAllowAddrsIsExact(t *testing.T) {
	s := newServer(t, pngHandler)
	other := newServer(t, pngHandler)
	f := allowing(Options{}, s)
	defer f.Close()
	if _, err := f.FetchImage(context.Background(), other.URL+"/a.png", nil); !errors.Is(err, ErrNotPublic) {
		t.Fatalf("another port of an allowed host: err = %v, want a refusal", err)
	}
}

func TestPublic(t *testing.T) {
	public := []string{"8.8.8.8", "1.1.1.1", "142.250.74.110", "2a00:1450:4007:80f::200e", "2606:4700::1111",
		"::ffff:8.8.8.8", "64:ff9b::808:808", "2002:808:808::1", "100.63.255.255", "100.128.0.0", "172.32.0.1"}
	private := []string{"127.0.0.1", "10.0.0.1", "172.16.0.1", "172.31.255.255", "192.168.0.1", "100.64.0.1",
		"100.100.100.200", "169.254.169.254", "0.0.0.0", "0.1.2.3", "255.255.255.255", "224.0.0.251", "198.18.0.1",
		"192.0.0.192", "::", "::1", "::127.0.0.1", "::ffff:127.0.0.1", "::ffff:10.0.0.1", "fd00:ec2::254",
		"fc00::1", "fe80::1", "fe80::1%eth0", "ff02::1", "2001:db8::1", "2001::1", "64:ff9b::a00:1",
		"64:ff9b:1::1", "2002:a00:1::1", "2002:7f00:1::"}
	for _, s := range public {
		if !Public(netip.MustParseAddr(s)) {
			t.Errorf("%s: not public, want public", s)
		}
	}
	for _, s := range private {
		if Public(netip.MustParseAddr(s)) {
			t.Errorf("%s: public, want refused", s)
		}
	}
	if Public(netip.Addr{}) {
		t.Error("the zero Addr is public")
	}
}

func TestSniff(t *testing.T) {
	tests := map[string]string{
		string(tinyPNG):                    "image/png",
		"\xff\xd8\xff\xe0\x00\x10JFIF":     "image/jpeg",
		"RIFF\x10\x00\x00\x00WEBPVP8 ":     "image/webp",
		"GIF89a\x01\x00":                   "image/gif",
		"\x00\x00\x00\x18ftypheic\x00\x00": "image/heic",
		"\x00\x00\x00\x18ftypmif1\x00\x00": "image/heif",
		"\x00\x00\x00\x18ftypavif\x00\x00": "",
		"\x00\x00\x00\x18ftypisom\x00\x00": "",
		"<svg/>":                           "",
		"":                                 "",
		"\x89PNG":                          "",
	}
	for in, want := range tests {
		if got := Sniff([]byte(in)); got != want {
			t.Errorf("Sniff(%q) = %q, want %q", in, got, want)
		}
	}
}

func TestControlRefusesOtherNetworks(t *testing.T) {
	f := New(Options{})
	if err := f.control("udp4", "8.8.8.8:53", nil); !errors.Is(err, ErrNotPublic) {
		t.Fatalf("udp: %v", err)
	}
	if err := f.control("tcp4", "8.8.8.8:443", nil); err != nil {
		t.Fatalf("public tcp: %v", err)
	}
}

// capBudget refuses past max bytes and records what it was asked for.
type capBudget struct {
	max, taken int64
	calls      []int64
}

var errOverBudget = errors.New("over budget")

func (b *capBudget) Take(_ context.Context, n int64) error {
	b.calls = append(b.calls, n)
	if b.taken+n > b.max {
		return errOverBudget
	}
	b.taken += n
	return nil
}

// TestBudgetRefusesAnnouncedBodyBeforeReadingIt: a Content-Length over the
// budget is refused from the headers; the server's body is still held back
// when the refusal comes back.
func TestBudgetRefusesAnnouncedBodyBeforeReadingIt(t *testing.T) {
	release := make(chan struct{})
	s := newServer(t, func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "image/png")
		w.Header().Set("Content-Length", "500000")
		w.WriteHeader(200)
		w.(http.Flusher).Flush()
		select {
		case <-release:
		case <-r.Context().Done():
		}
	})
	f := allowing(Options{}, s)
	defer f.Close()
	b := &capBudget{max: 100000}
	_, err := f.FetchImage(context.Background(), s.URL+"/a.png", b)
	close(release)
	if !errors.Is(err, errOverBudget) || len(b.calls) != 1 || b.calls[0] != 500000 {
		t.Fatalf("err = %v, budget asked %v; want the budget's refusal of the whole announced length", err, b.calls)
	}

	// Within the budget, the announced length is charged once.
	ok := newServer(t, pngHandler)
	g := allowing(Options{}, ok)
	defer g.Close()
	b = &capBudget{max: 100000}
	if _, err := g.FetchImage(context.Background(), ok.URL+"/a.png", b); err != nil || b.taken != int64(len(tinyPNG)) {
		t.Fatalf("err %v, charged %d of %d bytes", err, b.taken, len(tinyPNG))
	}
}

// TestBudgetChargesUnannouncedBodyAsItArrives: without Content-Length the
// body is charged chunk by chunk, and reading stops at the first chunk the
// budget refuses.
func TestBudgetChargesUnannouncedBodyAsItArrives(t *testing.T) {
	var sent atomic.Int64
	big := append(append([]byte(nil), tinyPNG...), make([]byte, 4<<20)...)
	s := newServer(t, func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "image/png")
		for i := 0; i < len(big); i += 8 << 10 {
			n, err := w.Write(big[i:min(i+8<<10, len(big))])
			sent.Add(int64(n))
			if err != nil {
				return
			}
			w.(http.Flusher).Flush()
		}
	})
	f := allowing(Options{}, s)
	defer f.Close()
	b := &capBudget{max: 200 << 10}
	_, err := f.FetchImage(context.Background(), s.URL+"/a.png", b)
	if !errors.Is(err, errOverBudget) {
		t.Fatalf("err = %v, want the budget's refusal", err)
	}
	if b.taken > b.max {
		t.Fatalf("charged %d past a budget of %d", b.taken, b.max)
	}
	for _, n := range b.calls {
		if n > chunk {
			t.Fatalf("charged %d bytes at once; chunks are %d", n, chunk)
		}
	}

	// Within the budget, exactly the body is charged.
	b = &capBudget{max: 8 << 20}
	img, err := f.FetchImage(context.Background(), s.URL+"/b.png", b)
	if err != nil || b.taken != int64(len(big)) || len(img.Data) != len(big) {
		t.Fatalf("err %v, charged %d for %d bytes", err, b.taken, len(big))
	}
}

func TestSemaphoreWaitsForRoomAndGivesUp(t *testing.T) {
	s := NewSemaphore(100)
	if err := s.Acquire(context.Background(), 60); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if err := s.Acquire(ctx, 50); !errors.Is(err, context.Canceled) || s.InUse() != 60 {
		t.Fatalf("full: err %v, in use %d", err, s.InUse())
	}
	got := make(chan error, 1)
	go func() { got <- s.Acquire(context.Background(), 50) }()
	s.Release(60)
	if err := <-got; err != nil || s.InUse() != 50 {
		t.Fatalf("after a release: err %v, in use %d", err, s.InUse())
	}
	ctx, cancel = context.WithCancel(context.Background())
	go func() { got <- s.Acquire(ctx, 101) }()
	cancel()
	if err := <-got; !errors.Is(err, context.Canceled) || s.InUse() != 50 {
		t.Fatalf("larger than the size: err %v, in use %d", err, s.InUse())
	}
}
