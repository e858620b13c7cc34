package images

import (
	"bufio"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/valyala/fasthttp"
	"go.uber.org/zap/zaptest"
)

// imageSize is the size of the large test image: what the model returns.
const imageSize = 1_500_000

var testKey = strings.Repeat("k", MinSigningKey) // a valid signing key

// testImage returns size pseudo-random bytes starting with the PNG
// signature (the store never looks inside), the same for the same seed.
func testImage(size int, seed uint64) []byte {
	img := make([]byte, size)
	r := rand.New(rand.NewPCG(seed, seed^0x9e3779b97f4a7c15))
	for i := 0; i < size; i += 8 {
		v := r.Uint64()
		for j := 0; j < 8 && i+j < size; j++ {
			img[i+j] = byte(v >> (8 * j))
		}
	}
	copy(img, "\x89PNG\r\n\x1a\n")
	return img
}

func b64(img []byte) []byte {
	out := make([]byte, base64.StdEncoding.EncodedLen(len(img)))
	base64.StdEncoding.Encode(out, img)
	return out
}

func sum(b []byte) string {
	s := sha256.Sum256(b)
	return fmt.Sprintf("%x", s)
}

// advance moves the fake clock of the synctest bubble the test runs in:
// sleeping returns at once, nothing else in the bubble running.
func advance(d time.Duration) { time.Sleep(d) }

// fsEnv is a filesystem store with an Offloader over it, served by its
// Handler on a real loopback socket when base is set, with the store's
// directory inside a parent directory the test can watch for stray files.
type fsEnv struct {
	fs     *FS
	off    *Offloader
	base   string // http://127.0.0.1:port, or the links' base without a server
	parent string // the directory holding the store's directory
}

// newFSStore makes a filesystem store and an Offloader over it, without a
// server: what a synctest bubble can hold (no socket). serve answers its
// links in-process. adjust may change the config.
func newFSStore(t testing.TB, adjust func(*FSConfig)) *fsEnv {
	t.Helper()
	return newFSAt(t, "http://gw.test", adjust)
}

// newFSEnv starts a filesystem store, an Offloader over it and a fasthttp
// server whose only handler is the store's. adjust may change the config.
func newFSEnv(t testing.TB, adjust func(*FSConfig)) *fsEnv {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	e := newFSAt(t, "http://"+ln.Addr().String(), adjust)
	srv := &fasthttp.Server{Handler: e.fs.Handler()}
	go srv.Serve(ln)
	t.Cleanup(func() { srv.Shutdown() })
	return e
}

func newFSAt(t testing.TB, base string, adjust func(*FSConfig)) *fsEnv {
	t.Helper()
	e := &fsEnv{parent: t.TempDir(), base: base}
	cfg := FSConfig{
		Dir:           filepath.Join(e.parent, "images"),
		PublicURL:     e.base,
		SigningKey:    testKey,
		TTL:           time.Hour,
		SweepInterval: -1,
	}
	if adjust != nil {
		adjust(&cfg)
	}
	var err error
	e.fs, err = NewFS(cfg, zaptest.NewLogger(t))
	if err != nil {
		t.Fatal(err)
	}
	e.off = NewOffloader(e.fs, Options{})
	t.Cleanup(func() { e.off.Close() })
	return e
}

// serve answers a request for link with the store's handler, in-process.
func (e *fsEnv) serve(method, link string) *fasthttp.Response {
	var req fasthttp.Request
	req.Header.SetMethod(method)
	req.SetRequestURI(link)
	var ctx fasthttp.RequestCtx
	ctx.Init(&req, nil, nil)
	e.fs.Handler()(&ctx)
	return &ctx.Response
}

// get fetches url with net/http (no client of the package's own making),
// with header name/value pairs.
func get(t testing.TB, url string, header ...string) (*http.Response, []byte) {
	t.Helper()
	req, err := httpRequest(http.MethodGet, url)
	if err != nil {
		t.Fatal(err)
	}
	for i := 0; i+1 < len(header); i += 2 {
		req.Header.Set(header[i], header[i+1])
	}
	return do(t, req)
}

func httpRequest(method, url string) (*http.Request, error) {
	return http.NewRequest(method, url, nil)
}

// do sends req and reads the whole answer.
func do(t testing.TB, req *http.Request) (*http.Response, []byte) {
	t.Helper()
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return resp, body
}

// rawGet sends target as the request line's target byte for byte (a client
// library would clean "..", escape or refuse some of these) and returns the
// status.
func rawGet(t testing.TB, addr, target string) int {
	t.Helper()
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(10 * time.Second))
	fmt.Fprintf(c, "GET %s HTTP/1.1\r\nHost: %s\r\nConnection: close\r\n\r\n", target, addr)
	resp, err := http.ReadResponse(bufio.NewReader(c), nil)
	if err != nil {
		t.Fatalf("GET %q: %v", target, err)
	}
	resp.Body.Close()
	return resp.StatusCode
}

// envelope decodes OpenAI's error envelope, failing when body is not one.
func envelope(t testing.TB, body []byte) (code string) {
	t.Helper()
	var e struct {
		Error *struct {
			Message *string `json:"message"`
			Type    *string `json:"type"`
			Param   any     `json:"param"`
			Code    *string `json:"code"`
		} `json:"error"`
	}
	if err := json.Unmarshal(body, &e); err != nil || e.Error == nil || e.Error.Message == nil ||
		e.Error.Type == nil || e.Error.Code == nil || e.Error.Param != nil {
		t.Fatalf("not an OpenAI error envelope: %s", body)
	}
	return *e.Error.Code
}

func freePort(t testing.TB) int {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port
}
