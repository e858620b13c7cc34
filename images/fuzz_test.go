package images

import (
	"context"
	"path/filepath"
	"strings"
	"testing"
)

// Whatever ValidID accepts is a plain local file name of the one form.
func FuzzValidID(f *testing.F) {
	for _, id := range badIDs() {
		f.Add(id)
	}
	f.Add(newID("png"))
	f.Add(newID("jpg"))
	f.Fuzz(func(t *testing.T, id string) {
		if !ValidID(id) {
			return
		}
		if !filepath.IsLocal(id) || filepath.Base(id) != id || strings.ContainsAny(id, "/\\\x00") ||
			strings.Contains(id, "..") || strings.HasPrefix(id, tmpPrefix) || len(id) > maxIDLen || mimeOfID(id) == "" {
			t.Fatalf("ValidID accepted %q", id)
		}
	})
}

// ParseLink never panics, and accepts only genuine links: any link it
// accepts names a valid id and is exactly what Link would have made for it
// at that expiry (checked by signing again).
func FuzzFSParseLink(f *testing.F) {
	e := newFSEnv(f, nil)
	good, err := e.fs.Link(newID("png"), "image/png")
	if err != nil {
		f.Fatal(err)
	}
	f.Add(good)
	f.Add(strings.Replace(good, "sig=", "sig=A", 1))
	f.Add(e.base + "/images/../x?exp=1&sig=x")
	f.Add("http://[::1]:80/images/%2e%2e")
	f.Fuzz(func(t *testing.T, link string) {
		id, err := e.fs.ParseLink(context.Background(), link)
		if err != nil {
			if id != "" {
				t.Fatalf("ParseLink(%q) failed (%v) with an id", link, err)
			}
			return
		}
		if !ValidID(id) {
			t.Fatalf("ParseLink(%q) accepted the id %q", link, id)
		}
		q := mustQuery(t, link)
		var exp int64
		for _, c := range q.Get("exp") {
			exp = exp*10 + int64(c-'0')
		}
		if want := string(e.fs.appendSig(nil, id, exp)); q.Get("sig") != want {
			t.Fatalf("ParseLink(%q) accepted the signature %q, want %q", link, q.Get("sig"), want)
		}
	})
}
