package images

import (
	"bytes"
	"context"
	"errors"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"testing/synctest"
	"time"
)

// offload stores img through e's Offloader and returns its link and id.
func (e *fsEnv) offload(t testing.TB, img []byte) (link, id string) {
	t.Helper()
	link, err := e.off.Offload(context.Background(), "image/png", b64(img))
	if err != nil {
		t.Fatal(err)
	}
	u, err := url.Parse(link)
	if err != nil {
		t.Fatal(err)
	}
	return link, filepath.Base(u.Path)
}

func TestFSServesExactBytes(t *testing.T) {
	e := newFSEnv(t, nil)
	img := testImage(imageSize, 1)
	link, id := e.offload(t, img)
	if !strings.HasPrefix(link, e.base+"/images/") || !strings.HasSuffix(id, ".png") {
		t.Fatalf("link %s: want %s/images/<id>.png?exp=&sig=", link, e.base)
	}

	resp, body := get(t, link)
	if resp.StatusCode != 200 {
		t.Fatalf("status %d: %s", resp.StatusCode, body)
	}
	if sum(body) != sum(img) {
		t.Fatalf("served %d bytes whose sha256 differs from the %d-byte image", len(body), len(img))
	}
	want := map[string]string{
		"Content-Type":           "image/png",
		"Content-Length":         strconv.Itoa(len(img)),
		"Etag":                   `"` + id + `"`,
		"Cache-Control":          "private, max-age=3600",
		"X-Content-Type-Options": "nosniff",
	}
	for k, v := range want {
		if got := resp.Header.Get(k); got != v {
			t.Errorf("%s: %q, want %q", k, got, v)
		}
	}
	if s := e.off.Stats(); s.Offloaded != 1 || s.Bytes != imageSize || s.Served != 1 || s.Failed != 0 {
		t.Errorf("stats %+v", s)
	}
}

// Cache-Control gives the link's remaining validity, not the ttl, once time
// has passed.
func TestFSCacheControlIsTheRemainingValidity(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		e := newFSStore(t, nil)
		link, _ := e.offload(t, testImage(5000, 12))
		if got := string(e.serve("GET", link).Header.Peek("Cache-Control")); got != "private, max-age=3600" {
			t.Errorf("at once, Cache-Control %q, want private, max-age=3600", got)
		}
		advance(20 * time.Minute)
		resp := e.serve("GET", link)
		if got := string(resp.Header.Peek("Cache-Control")); resp.StatusCode() != 200 || got != "private, max-age=2400" {
			t.Errorf("20 minutes later: %d, Cache-Control %q, want 200 and private, max-age=2400", resp.StatusCode(), got)
		}
		if s := e.off.Stats(); s.Served != 2 {
			t.Errorf("Served %d, want 2", s.Served)
		}
	})
}

func TestFSHead(t *testing.T) {
	e := newFSEnv(t, nil)
	img := testImage(10_000, 2)
	link, _ := e.offload(t, img)
	req, _ := httpRequest("HEAD", link)
	resp, body := do(t, req)
	if resp.StatusCode != 200 || len(body) != 0 || resp.Header.Get("Content-Length") != "10000" ||
		resp.Header.Get("Content-Type") != "image/png" {
		t.Errorf("HEAD: %d, %d body bytes, headers %v", resp.StatusCode, len(body), resp.Header)
	}
	req, _ = httpRequest("POST", link)
	resp, body = do(t, req)
	if resp.StatusCode != 405 || envelope(t, body) != "method_not_allowed" {
		t.Errorf("POST: %d %.200q", resp.StatusCode, body)
	}
}

// Any change to a link (its signature, expiry or id, or a part missing) is
// refused with 403, as is a signature made with another key.
func TestFSAlteredLinkForbidden(t *testing.T) {
	e := newFSEnv(t, nil)
	link, id := e.offload(t, testImage(5000, 3))
	other, otherID := e.offload(t, testImage(5000, 4))
	u, _ := url.Parse(link)
	q := u.Query()
	exp, sig := q.Get("exp"), q.Get("sig")
	otherSig := mustQuery(t, other).Get("sig")
	exp1, _ := strconv.ParseInt(exp, 10, 64)

	foreign := newFSEnv(t, func(c *FSConfig) { c.SigningKey = strings.Repeat("z", MinSigningKey) })
	foreignLink, err := foreign.fs.Link(id, "image/png")
	if err != nil {
		t.Fatal(err)
	}

	flip := func(s string, i int) string {
		b := []byte(s)
		if b[i] == 'A' {
			b[i] = 'B'
		} else {
			b[i] = 'A'
		}
		return string(b)
	}
	base := e.base + "/images/"
	cases := map[string]string{
		"first sig byte":      base + id + "?exp=" + exp + "&sig=" + flip(sig, 0),
		"last sig byte":       base + id + "?exp=" + exp + "&sig=" + flip(sig, len(sig)-1),
		"later exp":           base + id + "?exp=" + strconv.FormatInt(exp1+3600, 10) + "&sig=" + sig,
		"exp with a sign":     base + id + "?exp=%2B" + exp + "&sig=" + sig,
		"another image's id":  base + otherID + "?exp=" + exp + "&sig=" + sig,
		"another image's sig": base + id + "?exp=" + exp + "&sig=" + otherSig,
		"no sig":              base + id + "?exp=" + exp,
		"no exp":              base + id + "?sig=" + sig,
		"no query":            base + id,
		"padded sig":          base + id + "?exp=" + exp + "&sig=" + sig + "=",
		"another key":         strings.Replace(foreignLink, foreign.base, e.base, 1),
	}
	for name, target := range cases {
		resp, body := get(t, target)
		if resp.StatusCode != 403 || envelope(t, body) != "invalid_signature" {
			t.Errorf("%s: %d %.200q", name, resp.StatusCode, body)
		}
		if _, _, ok, err := e.off.Resolve(context.Background(), target); ok || err != nil {
			t.Errorf("%s: Resolve = %v, %v; want false, nil", name, ok, err)
		}
	}
	// The genuine link still works.
	if resp, _ := get(t, link); resp.StatusCode != 200 {
		t.Errorf("the genuine link: %d", resp.StatusCode)
	}
	if s := e.off.Stats(); s.Denied != uint64(len(cases)) {
		t.Errorf("Denied %d, want %d", s.Denied, len(cases))
	}
}

func TestFSExpiredLinkForbidden(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		e := newFSStore(t, nil)
		link, _ := e.offload(t, testImage(5000, 5))
		advance(time.Hour - time.Second)
		if resp := e.serve("GET", link); resp.StatusCode() != 200 {
			t.Fatalf("a second before expiry: %d", resp.StatusCode())
		}
		advance(time.Second)
		resp := e.serve("GET", link)
		if resp.StatusCode() != 403 || envelope(t, resp.Body()) != "link_expired" {
			t.Errorf("at expiry: %d %.200q", resp.StatusCode(), resp.Body())
		}
		if _, _, ok, err := e.off.Resolve(context.Background(), link); ok || !errors.Is(err, ErrExpired) {
			t.Errorf("Resolve of the expired link: %v, %v; want false, ErrExpired", ok, err)
		}
	})
}

// Malformed ids are 404 before the signature and the disk are looked at,
// whatever their spelling on the wire, and nothing outside the directory is
// read, written or created.
func TestFSMalformedIDsNotFound(t *testing.T) {
	e := newFSEnv(t, nil)
	img := testImage(1000, 6)
	_, good := e.offload(t, img)
	secret := filepath.Join(e.parent, "secret.png")
	if err := os.WriteFile(secret, []byte("outside"), 0o600); err != nil {
		t.Fatal(err)
	}
	before := listTree(t, e.parent)

	hex := strings.TrimSuffix(good, ".png")
	targets := []string{
		"/images/../secret.png", "/images/..%2fsecret.png", "/images/%2e%2e/secret.png", "/images/%2e%2e%2fsecret.png",
		"/images/%2e%2e", "/images/..", "/images/.", "/images/", "/images//etc/passwd", "/images/%2fetc%2fpasswd",
		"/images/" + url.PathEscape(e.parent+"/secret.png"), "/images/" + good + "%00", "/images/" + hex + "%00.png",
		"/images/%00", "/images/" + good + "/..", "/images/" + good + "%2f..", "/images/" + strings.ToUpper(hex) + ".png",
		"/images/" + hex + "0.png", "/images/" + hex + hex + ".png", "/images/" + strings.Repeat("a", 300) + ".png",
		"/images/" + hex + ".PNG", "/images/" + hex + ".svg", "/images/" + hex + ".png.txt", "/images/.tmp-0123456789abcdef",
		"/images/" + hex[:31] + ".png",
	}
	addr := strings.TrimPrefix(e.base, "http://")
	lookups := e.fs.lookups.Load()
	for _, target := range targets {
		// A signature valid for the raw name, so that only the id check can
		// be what refuses it.
		name := target[len("/images/"):]
		exp := time.Now().Add(time.Hour).Unix()
		sig := string(e.fs.appendSig(nil, name, exp))
		if got := rawGet(t, addr, target+"?exp="+strconv.FormatInt(exp, 10)+"&sig="+sig); got != 404 {
			t.Errorf("GET %s: %d, want 404", target, got)
		}
	}
	if n := e.fs.lookups.Load() - lookups; n != 0 {
		t.Errorf("%d malformed ids reached the disk", n)
	}
	for _, id := range badIDs() {
		e.fs.Put(context.Background(), id, "image/png", bytes.NewReader([]byte("x")), 1)
	}
	if after := listTree(t, e.parent); !slices.Equal(before, after) {
		t.Errorf("files changed outside the store:\nbefore %v\nafter  %v", before, after)
	}
	if b, _ := os.ReadFile(secret); string(b) != "outside" {
		t.Errorf("the file outside the store changed: %q", b)
	}
}

func TestFSUnknownIDNotFound(t *testing.T) {
	e := newFSEnv(t, nil)
	link, err := e.fs.Link(newID("png"), "image/png") // signed, never stored
	if err != nil {
		t.Fatal(err)
	}
	resp, body := get(t, link)
	if resp.StatusCode != 404 || envelope(t, body) != "not_found" {
		t.Errorf("%d %.200q", resp.StatusCode, body)
	}
	if _, _, ok, err := e.off.Resolve(context.Background(), link); ok || !errors.Is(err, ErrNotFound) {
		t.Errorf("Resolve: %v, %v; want false, ErrNotFound", ok, err)
	}
}

func TestFSIfNoneMatch(t *testing.T) {
	e := newFSEnv(t, nil)
	link, id := e.offload(t, testImage(5000, 8))
	tag := `"` + id + `"`
	cases := []struct {
		inm  string
		want int
	}{
		{tag, 304},
		{"W/" + tag, 304},
		{`"other", ` + tag, 304},
		{"*", 304},
		{`"other"`, 200},
		{`"` + id, 200},
	}
	for _, c := range cases {
		resp, body := get(t, link, "If-None-Match", c.inm)
		if resp.StatusCode != c.want {
			t.Errorf("If-None-Match %s: %d, want %d", c.inm, resp.StatusCode, c.want)
		}
		if c.want == 304 && (len(body) != 0 || resp.Header.Get("Etag") != tag) {
			t.Errorf("304 with %d body bytes and ETag %q", len(body), resp.Header.Get("Etag"))
		}
	}
}

// Sweep deletes images older than the ttl and stale temporary files, and
// nothing else.
func TestFSSweepDeletesOldFiles(t *testing.T) {
	e := newFSEnv(t, nil)
	_, oldID := e.offload(t, testImage(100, 9))
	_, youngID := e.offload(t, testImage(100, 10))
	dir := e.fs.Dir()
	now := time.Now()
	write := func(name string, age time.Duration) {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte("x"), 0o600); err != nil {
			t.Fatal(err)
		}
		chtime(t, p, now.Add(-age))
	}
	chtime(t, filepath.Join(dir, oldID), now.Add(-time.Hour-time.Minute))
	chtime(t, filepath.Join(dir, youngID), now.Add(-time.Hour+time.Minute))
	write(".tmp-00000000000000aa", 2*time.Hour) // a write that never finished
	write(".tmp-00000000000000bb", time.Minute) // a write under way
	write("README.txt", 48*time.Hour)           // not ours
	if err := os.Mkdir(filepath.Join(dir, "0123456789abcdef0123456789abcdef.png"), 0o700); err != nil {
		t.Fatal(err)
	}
	chtime(t, filepath.Join(dir, "0123456789abcdef0123456789abcdef.png"), now.Add(-48*time.Hour))

	if n := e.fs.Sweep(); n != 2 {
		t.Errorf("Sweep deleted %d files, want 2", n)
	}
	want := []string{".tmp-00000000000000bb", "0123456789abcdef0123456789abcdef.png", "README.txt", youngID}
	slices.Sort(want)
	if got := listDir(t, dir); !slices.Equal(got, want) {
		t.Errorf("left %v, want %v", got, want)
	}
	if s := e.off.Stats(); s.Swept != 2 {
		t.Errorf("Swept %d", s.Swept)
	}
}

// The background sweeper runs by itself, every ttl/4: with a one-second ttl
// an image is gone at the first sweep past its ttl, and Close stops it (the
// bubble ends only once its goroutines have).
func TestFSBackgroundSweeper(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		e := newFSStore(t, func(c *FSConfig) {
			c.TTL = time.Second
			c.SweepInterval = 0 // min(ttl/4, 10m)
		})
		_, id := e.offload(t, testImage(100, 11))
		p := filepath.Join(e.fs.Dir(), id)
		// The file system stamps the file with the real time, years after
		// the bubble's: stamp it with the bubble's.
		chtime(t, p, time.Now())
		exists := func() bool {
			synctest.Wait() // the sweeper has swept, if it was due
			_, err := os.Stat(p)
			return !errors.Is(err, os.ErrNotExist)
		}
		advance(time.Second) // the sweep at 1s: exactly the ttl, not past it
		if !exists() {
			t.Fatal("the sweeper deleted an image at its ttl")
		}
		advance(time.Second / 4)
		if exists() {
			t.Fatal("the sweeper did not delete an image past its ttl")
		}
		if err := e.off.Close(); err != nil {
			t.Fatal(err)
		}
	})
}

func chtime(t *testing.T, path string, at time.Time) {
	t.Helper()
	if err := os.Chtimes(path, at, at); err != nil {
		t.Fatal(err)
	}
}

func listDir(t *testing.T, dir string) []string {
	t.Helper()
	entries, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, e := range entries {
		names = append(names, e.Name())
	}
	return names
}

// listTree lists every path under dir with its size and modification time.
func listTree(t *testing.T, dir string) []string {
	t.Helper()
	var out []string
	err := filepath.WalkDir(dir, func(p string, d os.DirEntry, err error) error {
		if err != nil {
			return err
		}
		info, err := d.Info()
		if err != nil {
			return err
		}
		out = append(out, p+" "+strconv.FormatInt(info.Size(), 10)+" "+info.ModTime().String())
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return out
}

func mustQuery(t testing.TB, link string) url.Values {
	t.Helper()
	u, err := url.Parse(link)
	if err != nil {
		t.Fatal(err)
	}
	return u.Query()
}
