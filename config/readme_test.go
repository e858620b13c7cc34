package config

import (
	"os"
	"reflect"
	"strings"
	"testing"
	"time"
)

// yamlPaths lists the config keys of t as the README writes them:
// "server.listen", "providers[].price.per_image". A struct field that is
// a struct of its own (not a duration) is listed through its fields; a map
// or a list of scalars is one key.
func yamlPaths(t reflect.Type, prefix string) []string {
	for t.Kind() == reflect.Pointer {
		t = t.Elem()
	}
	var out []string
	for i := range t.NumField() {
		f := t.Field(i)
		tag, _, _ := strings.Cut(f.Tag.Get("yaml"), ",")
		if tag == "" || tag == "-" || !f.IsExported() {
			continue
		}
		path := prefix + tag
		ft := f.Type
		for ft.Kind() == reflect.Pointer {
			ft = ft.Elem()
		}
		switch {
		case ft.Kind() == reflect.Struct && ft != reflect.TypeFor[time.Duration]() && ft.PkgPath() == reflect.TypeFor[Config]().PkgPath():
			out = append(out, yamlPaths(ft, path+".")...)
		case ft.Kind() == reflect.Slice && ft.Elem().Kind() == reflect.Struct && ft.Elem().PkgPath() == reflect.TypeFor[Config]().PkgPath():
			out = append(out, yamlPaths(ft.Elem(), path+"[].")...)
		default:
			out = append(out, path)
		}
	}
	return out
}

// TestREADMEConfigReferenceCoversEveryKey: every key of the config structs
// is in the README's configuration table, written whole ("server.listen")
// or in a row that groups keys of one parent ("redis.dial/read/write_timeout,
// decision_timeout" covers redis.decision_timeout). A field added without
// its row fails here.
func TestREADMEConfigReferenceCoversEveryKey(t *testing.T) {
	b, err := os.ReadFile("../README.md")
	if err != nil {
		t.Fatal(err)
	}
	var keys []string // the key cells of the table
	in := false
	for _, line := range strings.Split(string(b), "\n") {
		switch {
		case strings.HasPrefix(line, "| key | default | meaning |"):
			in = true
		case in && !strings.HasPrefix(line, "|"):
			in = false
		case in && !strings.HasPrefix(line, "|---"):
			cell := strings.TrimSpace(strings.Split(line, "|")[1])
			keys = append(keys, strings.ReplaceAll(cell, "`", ""))
		}
	}
	if len(keys) < 10 {
		t.Fatalf("no configuration table in README.md (%d rows)", len(keys))
	}
	covered := func(path string) bool {
		parent, leaf := "", path
		if i := strings.LastIndex(path, "."); i >= 0 {
			parent, leaf = path[:i+1], path[i+1:]
		}
		for _, k := range keys {
			if strings.Contains(k, path) {
				return true
			}
			// A grouped row: the parent once, then leaves by name.
			if parent != "" && strings.HasPrefix(k, parent) && strings.Contains(k, leaf) {
				return true
			}
			// The whole sub-tree under one row: "catalog", "providers[].price".
			for p := path; ; {
				i := strings.LastIndex(p, ".")
				if i < 0 {
					break
				}
				p = p[:i]
				if k == p {
					return true
				}
			}
		}
		return false
	}
	var missing []string
	for _, p := range yamlPaths(reflect.TypeFor[Config](), "") {
		if !covered(p) {
			missing = append(missing, p)
		}
	}
	if len(missing) > 0 {
		t.Errorf("README.md's configuration table lacks:\n%s", strings.Join(missing, "\n"))
	}
}
