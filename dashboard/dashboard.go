// Package dashboard is the admin web page at /admin/: spend per day, savings
// from price routing, team budgets, provider health, and the keys and teams
// made at run time (created, rotated, revoked and edited from the page). The
// page, its script and its stylesheet are embedded in the binary; it loads
// nothing from anywhere else. It holds no data: its script signs in with the
// admin key (kept in sessionStorage) and calls the admin API (/admin/usage,
// /admin/providers, /admin/keys, /admin/teams...) with it as a bearer token,
// so serving the page needs no authentication.
package dashboard

import (
	"crypto/sha256"
	"embed"
	"encoding/hex"
	"io/fs"
	"path"

	"github.com/valyala/fasthttp"
)

// The paths the handler serves. proxy routes exactly these here; a file added
// to static/ needs its path here and there (the tests check that every
// embedded file has one).
const (
	Root       = "/admin"  // redirects to Page
	Page       = "/admin/" // static/index.html
	ScriptPath = "/admin/dashboard.js"
	StylePath  = "/admin/dashboard.css"
)

// CSP is the Content-Security-Policy of every answer: scripts, styles and
// fetches from this origin only, no inline script or style, no framing, no
// form posting anywhere, and Trusted Types with no policy, so that the
// browser itself refuses any assignment of a string to innerHTML (the script
// builds every node with textContent).
const CSP = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; " +
	"base-uri 'none'; form-action 'none'; frame-ancestors 'none'; " +
	"require-trusted-types-for 'script'; trusted-types 'none'"

//go:embed static
var static embed.FS

// contentTypes maps the extensions of the embedded files to their types; a
// fixed table rather than mime.TypeByExtension, which reads the host's
// /etc/mime.types and so may differ between machines.
var contentTypes = map[string]string{
	".html": "text/html; charset=utf-8",
	".css":  "text/css; charset=utf-8",
	".js":   "text/javascript; charset=utf-8",
	".svg":  "image/svg+xml",
	".png":  "image/png",
}

// asset is one embedded file, ready to write.
type asset struct {
	body        []byte
	contentType string
	etag        string
	// cache is the Cache-Control value: the page is never stored (it is the
	// sign-in screen, and a stale one could point at an old script); the
	// script and stylesheet are revalidated by ETag.
	cache string
}

var assets = load()

// files maps URL paths to the embedded files behind them.
var files = map[string]string{
	Page:       "static/index.html",
	ScriptPath: "static/dashboard.js",
	StylePath:  "static/dashboard.css",
}

func load() map[string]*asset {
	out := make(map[string]*asset, len(files))
	for url, name := range files {
		b, err := fs.ReadFile(static, name)
		if err != nil {
			panic("dashboard: " + name + " is not embedded: " + err.Error())
		}
		ct := contentTypes[path.Ext(name)]
		if ct == "" {
			panic("dashboard: no content type for " + name)
		}
		sum := sha256.Sum256(b)
		a := &asset{body: b, contentType: ct, etag: `"` + hex.EncodeToString(sum[:12]) + `"`, cache: "no-cache"}
		if url == Page {
			a.cache = "no-store"
		}
		out[url] = a
	}
	return out
}

// Serve answers GET and HEAD for Root, Page, ScriptPath and StylePath.
func Serve(ctx *fasthttp.RequestCtx) {
	h := &ctx.Response.Header
	h.Set("Content-Security-Policy", CSP)
	h.Set("X-Content-Type-Options", "nosniff")
	h.Set("Referrer-Policy", "no-referrer")
	h.Set("X-Frame-Options", "DENY")
	h.Set("Cross-Origin-Opener-Policy", "same-origin")
	h.Set("Cross-Origin-Resource-Policy", "same-origin")
	if !ctx.IsGet() && !ctx.IsHead() {
		h.Set("Allow", "GET, HEAD")
		plain(ctx, fasthttp.StatusMethodNotAllowed, "method not allowed\n")
		return
	}
	p := string(ctx.Path())
	if p == Root {
		// The page's URLs are absolute, but one address keeps bookmarks and
		// the browser's history tidy.
		h.Set("Location", Page)
		plain(ctx, fasthttp.StatusPermanentRedirect, "see "+Page+"\n")
		return
	}
	a := assets[p]
	if a == nil {
		plain(ctx, fasthttp.StatusNotFound, "not found\n")
		return
	}
	h.Set("Cache-Control", a.cache)
	h.Set("ETag", a.etag)
	ctx.SetContentType(a.contentType)
	if a.cache != "no-store" && string(ctx.Request.Header.Peek("If-None-Match")) == a.etag {
		ctx.SetStatusCode(fasthttp.StatusNotModified)
		return
	}
	ctx.SetBody(a.body)
}

func plain(ctx *fasthttp.RequestCtx, status int, msg string) {
	ctx.Response.Header.Set("Cache-Control", "no-store")
	ctx.SetStatusCode(status)
	ctx.SetContentType("text/plain; charset=utf-8")
	ctx.SetBodyString(msg)
}
