package dashboard

import (
	"bytes"
	"io/fs"
	"path"
	"regexp"
	"strings"
	"testing"

	"github.com/valyala/fasthttp"
)

func get(method, p string, header ...string) *fasthttp.RequestCtx {
	var ctx fasthttp.RequestCtx
	ctx.Request.Header.SetMethod(method)
	ctx.Request.SetRequestURI(p)
	for i := 0; i+1 < len(header); i += 2 {
		ctx.Request.Header.Set(header[i], header[i+1])
	}
	Serve(&ctx)
	return &ctx
}

// securityHeaders are on every answer, the page's and its assets'.
var securityHeaders = map[string]string{
	"Content-Security-Policy": CSP,
	"X-Content-Type-Options":  "nosniff",
	"Referrer-Policy":         "no-referrer",
	"X-Frame-Options":         "DENY",
}

func checkSecurityHeaders(t *testing.T, name string, ctx *fasthttp.RequestCtx) {
	t.Helper()
	for h, want := range securityHeaders {
		if got := string(ctx.Response.Header.Peek(h)); got != want {
			t.Errorf("%s: %s = %q, want %q", name, h, got, want)
		}
	}
}

func TestCSPAllowsOnlySelf(t *testing.T) {
	for _, want := range []string{"default-src 'none'", "script-src 'self'", "style-src 'self'",
		"img-src 'self' data:", "connect-src 'self'", "frame-ancestors 'none'"} {
		if !strings.Contains(CSP, want) {
			t.Errorf("CSP lacks %q: %s", want, CSP)
		}
	}
	if strings.Contains(CSP, "unsafe-") || strings.Contains(CSP, "http") || strings.Contains(CSP, "*") {
		t.Errorf("CSP allows more than this origin: %s", CSP)
	}
}

func TestPageHeaders(t *testing.T) {
	ctx := get("GET", Page)
	if ctx.Response.StatusCode() != 200 {
		t.Fatalf("status %d", ctx.Response.StatusCode())
	}
	checkSecurityHeaders(t, Page, ctx)
	if got := string(ctx.Response.Header.ContentType()); got != "text/html; charset=utf-8" {
		t.Errorf("Content-Type = %q", got)
	}
	if got := string(ctx.Response.Header.Peek("Cache-Control")); got != "no-store" {
		t.Errorf("Cache-Control = %q, want no-store", got)
	}
	if !bytes.Contains(ctx.Response.Body(), []byte(`<script src="`+ScriptPath+`"`)) ||
		!bytes.Contains(ctx.Response.Body(), []byte(`href="`+StylePath+`"`)) {
		t.Error("the page does not load its script and stylesheet from their paths")
	}
}

// TestEveryEmbeddedFileIsServed: each file under static/ has a path the
// handler answers with the file's bytes and the right Content-Type (so a file
// added without a route, or with an unknown extension, fails here).
func TestEveryEmbeddedFileIsServed(t *testing.T) {
	want := map[string]string{
		".html": "text/html; charset=utf-8",
		".css":  "text/css; charset=utf-8",
		".js":   "text/javascript; charset=utf-8",
	}
	byFile := map[string]string{}
	for url, name := range files {
		byFile[name] = url
	}
	n := 0
	err := fs.WalkDir(static, "static", func(name string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		n++
		url, ok := byFile[name]
		if !ok {
			t.Errorf("%s is embedded but has no path", name)
			return nil
		}
		body, _ := fs.ReadFile(static, name)
		ctx := get("GET", url)
		if ctx.Response.StatusCode() != 200 || !bytes.Equal(ctx.Response.Body(), body) {
			t.Errorf("%s (%s): status %d, %d bytes, want the file's %d", url, name, ctx.Response.StatusCode(),
				len(ctx.Response.Body()), len(body))
		}
		ct, ok := want[path.Ext(name)]
		if !ok {
			t.Errorf("%s: no expected Content-Type for %s files in this test", name, path.Ext(name))
		}
		if got := string(ctx.Response.Header.ContentType()); got != ct {
			t.Errorf("%s: Content-Type = %q, want %q", url, got, ct)
		}
		checkSecurityHeaders(t, url, ctx)
		if cc := string(ctx.Response.Header.Peek("Cache-Control")); cc == "" {
			t.Errorf("%s: no Cache-Control", url)
		}
		head := get("HEAD", url)
		if head.Response.StatusCode() != 200 || string(head.Response.Header.ContentType()) != ct {
			t.Errorf("HEAD %s: %d %q", url, head.Response.StatusCode(), head.Response.Header.ContentType())
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if n != len(files) {
		t.Errorf("%d files embedded, %d routed", n, len(files))
	}
}

// TestNoInlineScriptOrStyle: the CSP forbids them, so the page must not
// need them (they would be silently blocked).
func TestNoInlineScriptOrStyle(t *testing.T) {
	page, _ := fs.ReadFile(static, "static/index.html")
	for _, re := range []string{`<script(?:\s[^>]*)?>\s*[^<\s]`, `<style`, `\sstyle=`, `\son[a-z]+=`, `javascript:`,
		`https?://`} {
		if m := regexp.MustCompile(`(?i)` + re).Find(page); m != nil {
			t.Errorf("index.html has %q, which the CSP blocks or which leaves this origin", m)
		}
	}
	script, _ := fs.ReadFile(static, "static/dashboard.js")
	for _, bad := range []string{"innerHTML", "outerHTML", "insertAdjacentHTML", "document.write", "eval(",
		"localStorage", "document.cookie", "http://", "https://"} {
		if bytes.Contains(script, []byte(bad)) && !(bad == "http://" && onlySVGNamespace(script)) {
			t.Errorf("dashboard.js uses %s", bad)
		}
	}
}

// onlySVGNamespace reports whether the script's only http:// is the SVG
// namespace name (an identifier, never fetched).
func onlySVGNamespace(script []byte) bool {
	return bytes.Count(script, []byte("http://")) == bytes.Count(script, []byte("'http://www.w3.org/2000/svg'"))
}

func TestRootRedirectsToPage(t *testing.T) {
	ctx := get("GET", Root)
	if ctx.Response.StatusCode() != fasthttp.StatusPermanentRedirect || string(ctx.Response.Header.Peek("Location")) != Page {
		t.Fatalf("GET %s: %d to %q", Root, ctx.Response.StatusCode(), ctx.Response.Header.Peek("Location"))
	}
}

func TestOnlyGetAndHead(t *testing.T) {
	ctx := get("POST", Page)
	if ctx.Response.StatusCode() != fasthttp.StatusMethodNotAllowed || string(ctx.Response.Header.Peek("Allow")) != "GET, HEAD" {
		t.Fatalf("POST: %d, Allow %q", ctx.Response.StatusCode(), ctx.Response.Header.Peek("Allow"))
	}
	checkSecurityHeaders(t, "POST", ctx)
}

func TestAssetRevalidatesByETag(t *testing.T) {
	first := get("GET", ScriptPath)
	etag := string(first.Response.Header.Peek("ETag"))
	if etag == "" || string(first.Response.Header.Peek("Cache-Control")) != "no-cache" {
		t.Fatalf("ETag %q, Cache-Control %q", etag, first.Response.Header.Peek("Cache-Control"))
	}
	again := get("GET", ScriptPath, "If-None-Match", etag)
	if again.Response.StatusCode() != fasthttp.StatusNotModified || len(again.Response.Body()) != 0 {
		t.Fatalf("revalidation: %d with %d bytes", again.Response.StatusCode(), len(again.Response.Body()))
	}
}

func TestUnknownPathIsNotFound(t *testing.T) {
	if ctx := get("GET", "/admin/nope.js"); ctx.Response.StatusCode() != 404 {
		t.Fatalf("status %d", ctx.Response.StatusCode())
	}
}
