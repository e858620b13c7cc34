package config

import (
	"reflect"
	"strings"
)

// restartOnly are the settings a running gateway takes only at start:
// listeners, the Redis clients, the logger, the image store and the batch
// workers are built once.
var restartOnly = []string{"server", "redis", "log", "images.offload", "batch.workers", "batch.reclaim_after"}

// Changes compares two configurations section by section (never by value:
// sections hold secrets) and returns the sections that differ, split into
// those a reload applies and those that wait for a restart.
func Changes(old, cur *Config) (applied, restart []string) {
	for _, path := range diffPaths(reflect.ValueOf(old).Elem(), reflect.ValueOf(cur).Elem(), "") {
		needs := false
		for _, r := range restartOnly {
			if path == r || strings.HasPrefix(path, r+".") {
				needs = true
				break
			}
		}
		if needs {
			restart = append(restart, path)
		} else {
			applied = append(applied, path)
		}
	}
	return applied, restart
}

// diffPaths lists the yaml paths where a and b differ: the top-level
// sections, and inside images and batch their members (one part of each
// takes a restart).
func diffPaths(a, b reflect.Value, prefix string) []string {
	var out []string
	t := a.Type()
	for i := range t.NumField() {
		f := t.Field(i)
		name, _, _ := strings.Cut(f.Tag.Get("yaml"), ",")
		if name == "" || name == "-" || !f.IsExported() {
			continue
		}
		path := prefix + name
		av, bv := a.Field(i), b.Field(i)
		if (path == "images" || path == "batch") && av.Kind() == reflect.Struct {
			out = append(out, diffPaths(av, bv, path+".")...)
			continue
		}
		if !reflect.DeepEqual(av.Interface(), bv.Interface()) {
			out = append(out, path)
		}
	}
	return out
}
