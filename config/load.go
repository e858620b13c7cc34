package config

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"maps"
	"os"
	"reflect"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"time"

	"gopkg.in/yaml.v3"
)

// Load reads, expands (from the process environment), decodes and validates
// the config file at path. It returns warnings that do not stop the gateway
// (such as a provider disabled because its api_key is empty). A config that
// fails to decode or validate yields a *Problems error listing every problem
// with its file and line.
func Load(path string) (*Config, []string, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, nil, err
	}
	return Parse(data, path, os.LookupEnv)
}

// Parse is Load on data already read from file (used only in messages),
// looking variables up with getenv (os.LookupEnv in production, a map in
// tests).
//
// ${VAR} and ${VAR:-default} are expanded inside scalar values after the YAML
// is parsed, never in its text, so that a value cannot change the document's
// structure and line numbers stay those of the file. An expanded scalar
// without an explicit tag is typed by what it expanded to: `rpm: ${RPM:-600}`
// is an integer, `api_key: ${UNSET}` is empty. Quoting still works for
// numbers (`{ rpm: "${RPM}" }`, needed inside flow mappings) and a string
// field always gets the text as expanded.
//
// Decoding is strict: unknown keys, duplicate keys, values of the wrong type
// and invalid ${...} references are problems, all reported together with
// Validate's when the document's shape allows it. On error the Config is nil
// and the error is a *Problems; warnings are returned with validation
// errors.
func Parse(data []byte, file string, getenv func(string) (string, bool)) (*Config, []string, error) {
	p := &parser{file: file, getenv: getenv, lines: map[string]int{}}
	cfg, ok := p.parse(data)
	if !ok || p.misshapen {
		return nil, nil, p.problems.sorted()
	}
	cfg.Path = file
	cfg.lines = p.lines

	// use_ssl is true unless written: the zero value of a bool cannot say
	// whether it was.
	if _, written := p.lines["images.offload.s3.use_ssl"]; !written {
		cfg.Images.Offload.S3.UseSSL = true
	}
	cfg.Defaults()

	var warnings []string
	enabled := 0
	for i := range cfg.Providers {
		pr := &cfg.Providers[i]
		if pr.APIKey == "" {
			pr.Disabled = true
			warnings = append(warnings, cfg.at(fmt.Sprintf("providers[%d].api_key", i))+
				fmt.Sprintf("provider %s: api_key is empty; provider disabled", pr.Name))
			continue
		}
		enabled++
	}
	// Google answers 404 for a model it retired: a gemini provider sends
	// the successor instead, and the operator is told once, at load.
	for i := range cfg.Providers {
		pr := &cfg.Providers[i]
		if pr.Kind != KindGemini {
			continue
		}
		for _, public := range slices.Sorted(maps.Keys(pr.Models)) {
			up := pr.Models[public]
			m, on, ok := cfg.Models().Lookup(up)
			if !ok || on == "" {
				continue
			}
			pr.Models[public] = m.Name
			warnings = append(warnings, cfg.at(fmt.Sprintf("providers[%d].models.%s", i, public))+
				fmt.Sprintf("provider %s: Google retired %s on %s; sending its successor %s", pr.Name, up, on, m.Name))
		}
	}
	if cfg.Server.AdminListen == "" && cfg.AdminKey != "" && !cfg.listensOnLoopback() {
		warnings = append(warnings, cfg.at("server.listen")+"/admin/* and /metrics are served on the public listener "+
			cfg.Server.Listen+"; set server.admin_listen to serve them apart")
	}
	if cfg.Redis != nil && (cfg.Images.Offload.Store == "" || cfg.Images.Offload.Store == "filesystem") {
		warnings = append(warnings, cfg.at("images.offload.store")+"the filesystem image store is per replica while Redis "+
			"shares everything else: with several replicas, make images.offload.dir a volume every replica mounts (ReadWriteMany) "+
			"or use the s3 store, or a link one replica issued is not found on another")
	}
	if len(cfg.Providers) > 0 && enabled == 0 {
		warnings = append(warnings, cfg.at("providers")+"no provider is enabled (every api_key is empty): every model request will fail with 404 model_not_found")
	}
	// offload_images on a key turns offload on for it even when it is off
	// by default (as in the full example config). Offload then cannot work
	// without its store's settings, but the gateway can still serve base64:
	// a warning, not an error.
	if !cfg.Images.Offload.Enabled {
		for i := range cfg.Keys {
			if on := cfg.Keys[i].OffloadImages; on == nil || !*on {
				continue
			}
			at := fmt.Sprintf("keys[%d].offload_images", i)
			cfg.checkOffloadStore(func(path, msg string) {
				warnings = append(warnings, cfg.at(at)+fmt.Sprintf(
					"key %s: offload_images is true but %s %s; its images cannot be offloaded",
					cfg.Keys[i].Name, path, msg))
			})
		}
	}

	if err := cfg.Validate(); err != nil {
		var vp *Problems
		if errors.As(err, &vp) {
			p.addValidation(*vp)
		}
	}
	if len(p.problems) > 0 {
		return nil, warnings, p.problems.sorted()
	}
	return cfg, warnings, nil
}

// at is the "file:line: " prefix of path, or what of it is known.
func (c *Config) at(path string) string {
	s := Problem{File: c.Path, Line: c.line(path)}.String()
	if s == "" {
		return ""
	}
	return s + ": "
}

// parser holds the state of one Parse: the problems found so far and the
// line of every key path seen.
type parser struct {
	file     string
	getenv   func(string) (string, bool)
	lines    map[string]int
	problems Problems
	// reported holds the paths already reported by decoding, so that
	// Validate does not report the same path again as, say, "required"
	// after its value failed to decode.
	reported []string
	// misshapen is set when a node had the wrong kind or a duplicate key.
	// yaml.v3 then drops the element, which shifts the index of every later
	// element of its sequence: Validate's paths would point at the wrong
	// ones, so it is not run.
	misshapen bool
	// walked bounds the walk of aliases: a node is checked once per target
	// type, whatever the number of aliases to it (a "billion laughs"
	// document stays linear).
	walked map[walkKey]bool
}

type walkKey struct {
	n *yaml.Node
	t reflect.Type
}

func (p *parser) add(line int, path, msg string) {
	p.problems = append(p.problems, Problem{File: p.file, Line: line, Path: path, Msg: msg})
	if path != "" {
		p.reported = append(p.reported, path)
	}
}

// addValidation adds Validate's problems but those about a path (or a
// descendant of a path) that already failed to decode.
func (p *parser) addValidation(ps Problems) {
next:
	for _, pr := range ps {
		for _, r := range p.reported {
			if pr.Path == r || strings.HasPrefix(pr.Path, r+".") || strings.HasPrefix(pr.Path, r+"[") {
				continue next
			}
		}
		p.problems = append(p.problems, pr)
	}
}

// parse returns the decoded Config and whether decoding found no problem
// that stops parsing. Expansion, unknown-key and type problems do not stop
// it: the partial Config still goes through Validate, so that one run
// reports everything.
func (p *parser) parse(data []byte) (*Config, bool) {
	var doc yaml.Node
	dec := yaml.NewDecoder(bytes.NewReader(data))
	if err := dec.Decode(&doc); err != nil && err != io.EOF {
		p.yamlError(err)
		return nil, false
	}
	var extra yaml.Node
	if err := dec.Decode(&extra); err != io.EOF {
		if err != nil {
			p.yamlError(err)
		} else {
			p.add(extra.Line, "", "only one YAML document is allowed")
		}
		return nil, false
	}

	cfg := &Config{}
	if doc.Kind == 0 { // empty file: an empty config, which Validate rejects
		return cfg, true
	}
	p.expand(&doc, "", map[*yaml.Node]bool{})
	p.walked = map[walkKey]bool{}
	p.walk(&doc, reflect.TypeFor[Config](), "")

	before := len(p.problems)
	if err := doc.Decode(cfg); err != nil {
		var te *yaml.TypeError
		if !errors.As(err, &te) {
			p.yamlError(err)
			return nil, false
		}
		// The walk checks every typed leaf, so these are what it does not
		// see (none is known); keep those on a line not already reported.
		for _, msg := range te.Errors {
			line, msg := splitLine(msg)
			if !p.problems[:before].hasLine(line) {
				p.add(line, "", msg)
			}
		}
	}
	return cfg, true
}

var lineRE = regexp.MustCompile(`^(?:yaml: )?line (\d+): `)

// splitLine splits yaml.v3's "line N: msg" into N and msg.
func splitLine(msg string) (int, string) {
	msg = strings.TrimPrefix(msg, "yaml: ")
	m := lineRE.FindStringSubmatch(msg)
	if m == nil {
		return 0, msg
	}
	n, _ := strconv.Atoi(m[1])
	return n, msg[len(m[0]):]
}

func (p *parser) yamlError(err error) {
	line, msg := splitLine(err.Error())
	p.add(line, "", msg)
}

// expand replaces ${VAR} and ${VAR:-default} in every scalar value below n.
// Mapping keys are left alone, and aliases are not followed: the node they
// name is expanded where it is defined, and expanding it twice would expand
// references that came from the environment.
func (p *parser) expand(n *yaml.Node, path string, done map[*yaml.Node]bool) {
	if done[n] {
		return
	}
	done[n] = true
	switch n.Kind {
	case yaml.DocumentNode:
		for _, c := range n.Content {
			p.expand(c, path, done)
		}
	case yaml.SequenceNode:
		for i, c := range n.Content {
			p.expand(c, fmt.Sprintf("%s[%d]", path, i), done)
		}
	case yaml.MappingNode:
		for i := 0; i+1 < len(n.Content); i += 2 {
			p.expand(n.Content[i+1], join(path, n.Content[i].Value), done)
		}
	case yaml.ScalarNode:
		v, changed, err := expandString(n.Value, p.getenv)
		if err != nil {
			p.add(n.Line, path, err.Error())
			return
		}
		if !changed {
			return
		}
		n.Value = v
		if n.Style&yaml.TaggedStyle == 0 {
			// The scalar is typed by its new value, as if written so:
			// `rpm: ${RPM:-600}` is an integer, `api_key: ${UNSET}` null,
			// which decodes as "". Quoted scalars too: in a flow mapping
			// ({ rpm: "${RPM}" }) braces are syntax, so quoting is the only
			// way to write a reference there, and a string field takes the
			// text whatever its tag, so nothing that decoded before changes.
			// Null words stay strings: a password "null" is not absent.
			n.Tag, n.Style = "", 0
			switch v {
			case "~", "null", "Null", "NULL":
				n.Tag = "!!str"
			}
		}
	}
}

var varName = regexp.MustCompile(`^[A-Za-z_][A-Za-z0-9_]*$`)

// expandString expands s, reporting whether any reference was found. "$$"
// and a "$" not followed by "{" are kept as they are. Messages never quote
// s: it may be a secret with a typo.
func expandString(s string, getenv func(string) (string, bool)) (string, bool, error) {
	if !strings.Contains(s, "${") {
		return s, false, nil
	}
	var b strings.Builder
	changed := false
	for i := 0; i < len(s); {
		c := s[i]
		if c != '$' || i+1 == len(s) {
			b.WriteByte(c)
			i++
			continue
		}
		switch s[i+1] {
		case '$':
			b.WriteString("$$")
			i += 2
			continue
		case '{':
		default:
			b.WriteByte(c)
			i++
			continue
		}
		end := strings.IndexByte(s[i+2:], '}')
		if end < 0 {
			return "", false, errors.New("unterminated ${ in value")
		}
		ref := s[i+2 : i+2+end]
		name, def, hasDef := strings.Cut(ref, ":-")
		if !varName.MatchString(name) {
			return "", false, errors.New("bad ${...} in value: want ${NAME} or ${NAME:-default}, NAME of letters, digits and _")
		}
		if strings.Contains(def, "${") {
			return "", false, errors.New("nested ${...} in a default is not supported")
		}
		v, ok := getenv(name)
		if !ok && !hasDef {
			// A typo in a variable's name must not turn a limit off or
			// /admin off without a word: ${NAME:-} says empty is meant.
			return "", false, fmt.Errorf("${%s} is not set (write ${%s:-} to allow it unset, or ${%s:-default})", name, name, name)
		}
		if hasDef && (!ok || v == "") {
			v = def
		}
		b.WriteString(v)
		changed = true
		i += 2 + end + 1
	}
	return b.String(), changed, nil
}

var durationType = reflect.TypeFor[time.Duration]()

// walk checks node n against type t at path: unknown and duplicate keys,
// and leaves that do not decode into their field's type. yaml.v3 can refuse
// unknown fields only when decoding from bytes, and stops at the first; this
// walk reports every one, and records the line of every path on the way.
func (p *parser) walk(n *yaml.Node, t reflect.Type, path string) {
	if n.Kind == yaml.AliasNode {
		if n.Alias == nil {
			return
		}
		n = n.Alias
	}
	if n.Kind == yaml.DocumentNode {
		for _, c := range n.Content {
			p.walk(c, t, path)
		}
		return
	}
	k := walkKey{n, t}
	if p.walked[k] {
		return
	}
	p.walked[k] = true

	for t.Kind() == reflect.Pointer {
		t = t.Elem()
	}
	if isNull(n) {
		return // decodes to the zero value, whatever the type
	}
	switch {
	case t.Kind() == reflect.Struct && t != durationType:
		if !p.want(n, yaml.MappingNode, path, "a mapping") {
			return
		}
		fields := yamlFields(t)
		p.mapping(n, path, func(key *yaml.Node, val *yaml.Node, kp string) {
			if key.Value == "<<" { // merge key: its mappings are checked as ours
				p.merge(val, t, path)
				return
			}
			f, ok := fields[key.Value]
			if !ok {
				p.add(key.Line, kp, "unknown key")
				return
			}
			p.walk(val, f.Type, kp)
		})
	case t.Kind() == reflect.Map:
		if !p.want(n, yaml.MappingNode, path, "a mapping") {
			return
		}
		p.mapping(n, path, func(key *yaml.Node, val *yaml.Node, kp string) {
			p.walk(key, t.Key(), kp)
			p.walk(val, t.Elem(), kp)
		})
	case t.Kind() == reflect.Slice:
		if !p.want(n, yaml.SequenceNode, path, "a sequence") {
			return
		}
		for i, c := range n.Content {
			ip := fmt.Sprintf("%s[%d]", path, i)
			p.lines[ip] = c.Line
			p.walk(c, t.Elem(), ip)
		}
	default:
		if !p.want(n, yaml.ScalarNode, path, leafName(t)) {
			return
		}
		if err := n.Decode(reflect.New(t).Interface()); err != nil {
			line, msg := splitLine(firstError(err))
			if line == 0 {
				line = n.Line
			}
			if t == durationType {
				msg += ` (durations are written like "30s" or "24h")`
			}
			p.add(line, path, msg)
		}
	}
}

// mapping calls f on every key and value of the mapping n, recording the
// line of each key and reporting duplicate keys.
func (p *parser) mapping(n *yaml.Node, path string, f func(key, val *yaml.Node, keyPath string)) {
	first := map[string]int{}
	for i := 0; i+1 < len(n.Content); i += 2 {
		key, val := n.Content[i], n.Content[i+1]
		kp := join(path, key.Value)
		if key.Value != "<<" {
			if l, dup := first[key.Value]; dup {
				p.add(key.Line, kp, fmt.Sprintf("duplicate key (first at line %d)", l))
				p.misshapen = true // yaml.v3 drops the whole mapping
				continue
			}
			first[key.Value] = key.Line
			p.lines[kp] = key.Line
		}
		f(key, val, kp)
	}
}

// merge checks the value of a "<<" merge key: a mapping, an alias to one,
// or a sequence of those.
func (p *parser) merge(n *yaml.Node, t reflect.Type, path string) {
	if n.Kind == yaml.SequenceNode {
		for _, c := range n.Content {
			p.walk(c, t, path)
		}
		return
	}
	p.walk(n, t, path)
}

// want reports whether n is of kind k, reporting a problem if not.
func (p *parser) want(n *yaml.Node, k yaml.Kind, path, what string) bool {
	if n.Kind == k {
		return true
	}
	p.add(n.Line, path, fmt.Sprintf("want %s, got %s", what, kindName(n.Kind)))
	p.misshapen = true
	return false
}

func isNull(n *yaml.Node) bool {
	if n.Kind != yaml.ScalarNode {
		return false
	}
	if n.Tag == "!!null" {
		return true
	}
	if n.Tag != "" || n.Style != 0 {
		return false
	}
	switch n.Value {
	case "", "~", "null", "Null", "NULL":
		return true
	}
	return false
}

func kindName(k yaml.Kind) string {
	switch k {
	case yaml.MappingNode:
		return "a mapping"
	case yaml.SequenceNode:
		return "a sequence"
	case yaml.ScalarNode:
		return "a scalar"
	}
	return "something else"
}

func leafName(t reflect.Type) string {
	if t == durationType {
		return "a duration"
	}
	switch t.Kind() {
	case reflect.String:
		return "a string"
	case reflect.Bool:
		return "a boolean"
	case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64,
		reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64:
		return "an integer"
	case reflect.Float32, reflect.Float64:
		return "a number"
	}
	return "a scalar"
}

func firstError(err error) string {
	var te *yaml.TypeError
	if errors.As(err, &te) && len(te.Errors) > 0 {
		return te.Errors[0]
	}
	return err.Error()
}

// yamlFields maps the yaml names of t's fields to the fields.
func yamlFields(t reflect.Type) map[string]reflect.StructField {
	m := map[string]reflect.StructField{}
	for i := 0; i < t.NumField(); i++ {
		f := t.Field(i)
		if !f.IsExported() {
			continue
		}
		name, _, _ := strings.Cut(f.Tag.Get("yaml"), ",")
		if name == "-" {
			continue
		}
		if name == "" {
			name = strings.ToLower(f.Name)
		}
		m[name] = f
	}
	return m
}

func join(path, key string) string {
	if path == "" {
		return key
	}
	return path + "." + key
}
