// Package catalog is the data about Google's image models that billing,
// limits and validation need: output tokens and list price per image for
// each image size, the sizes and aspect ratios a model takes, its output
// limit, and the names Google retired in its favour. It is kept as data
// (models.yaml, embedded; a config adds to it or overrides it) because
// Google changes models and prices more often than nanogate's code.
package catalog

import (
	_ "embed"
	"fmt"
	"math"
	"regexp"
	"slices"
	"sort"
	"strings"

	"gopkg.in/yaml.v3"
)

//go:embed models.yaml
var embedded []byte

// Model is one Google image model.
type Model struct {
	Name    string    `yaml:"name"`
	Aliases []string  `yaml:"aliases,omitempty"`
	Retired []Retired `yaml:"retired,omitempty"`
	// MaxOutputTokens is the model's output limit.
	MaxOutputTokens int64 `yaml:"max_output_tokens"`
	// InputTokensPerImage is what one input image counts in the prompt.
	InputTokensPerImage int64 `yaml:"input_tokens_per_image"`
	Price               Price `yaml:"price"`
	// Sizes are the image sizes (Gemini's imageConfig.imageSize) the model
	// makes, by name.
	Sizes        map[string]Size `yaml:"sizes"`
	DefaultSize  string          `yaml:"default_size"`
	AspectRatios []string        `yaml:"aspect_ratios"`
	// ImageSignatures says whether the model puts a thoughtSignature on the
	// images it draws (Google's 3.x models do, 2.5 Flash Image does not);
	// nil: not known, taken as yes. An image forwarded as it arrives is
	// digested as it passes only when its model may sign it, because the
	// signature comes after the image's data.
	ImageSignatures *bool `yaml:"image_signatures,omitempty"`
}

// SignsImages reports whether the model may put a thoughtSignature on its
// images: true unless the catalogue says it does not.
func (m *Model) SignsImages() bool { return m.ImageSignatures == nil || *m.ImageSignatures }

// Retired is a model id Google retired; requests for it are served by the
// model that lists it.
type Retired struct {
	Name string `yaml:"name"`
	On   string `yaml:"on"` // YYYY-MM-DD
}

// Price is a model's list price per million tokens, in USD.
type Price struct {
	Input       float64 `yaml:"input"`
	TextOutput  float64 `yaml:"text_output"`
	ImageOutput float64 `yaml:"image_output"`
}

// Size is one image size of a model.
type Size struct {
	// Tokens are the output tokens one image of this size bills.
	Tokens int64 `yaml:"tokens"`
	// USD is the list price of one image; 0: Tokens × Price.ImageOutput.
	USD float64 `yaml:"usd,omitempty"`
}

// Bounds of the data: a catalogue is refused beyond them, so that the sums
// billing and limits make of it stay exact.
const (
	maxTokensPerImage = 1 << 20
	maxPriceUSD       = 1e6
	maxOutputTokens   = 1 << 24
)

// Catalog is a set of models with their names resolved. It is read-only and
// safe for concurrent use.
type Catalog struct {
	models []*Model
	byName map[string]*Model // names and aliases
	// retired maps a retired id to its successor and the day it retired.
	retired map[string]retiredAs
}

type retiredAs struct {
	successor *Model
	on        string
}

type file struct {
	Models []Model `yaml:"models"`
}

// Default returns the embedded catalogue.
func Default() *Catalog {
	c, err := New(nil)
	if err != nil {
		panic("catalog: the embedded models.yaml is invalid: " + err.Error())
	}
	return c
}

// Embedded returns the models of the embedded catalogue (copies).
func Embedded() []Model {
	var f file
	if err := yaml.Unmarshal(embedded, &f); err != nil {
		panic("catalog: the embedded models.yaml does not parse: " + err.Error())
	}
	return f.Models
}

// New returns the embedded catalogue with overrides applied: a model of an
// existing name replaces its fields that are set (sizes and aspect ratios
// whole), a new name is added.
func New(overrides []Model) (*Catalog, error) {
	models := Embedded()
	for _, o := range overrides {
		i := slices.IndexFunc(models, func(m Model) bool { return m.Name == o.Name })
		if i < 0 {
			models = append(models, o)
			continue
		}
		merge(&models[i], o)
	}
	c := &Catalog{byName: map[string]*Model{}, retired: map[string]retiredAs{}}
	for i := range models {
		m := &models[i]
		if err := m.check(); err != nil {
			return nil, err
		}
		c.models = append(c.models, m)
	}
	for _, m := range c.models {
		for _, n := range append([]string{m.Name}, m.Aliases...) {
			if _, dup := c.byName[n]; dup {
				return nil, fmt.Errorf("catalog: model name %q is listed twice", n)
			}
			c.byName[n] = m
		}
	}
	for _, m := range c.models {
		for _, r := range m.Retired {
			if _, dup := c.byName[r.Name]; dup {
				return nil, fmt.Errorf("catalog: %q is both a model and a retired id", r.Name)
			}
			if _, dup := c.retired[r.Name]; dup {
				return nil, fmt.Errorf("catalog: retired id %q is listed twice", r.Name)
			}
			c.retired[r.Name] = retiredAs{m, r.On}
		}
	}
	return c, nil
}

func merge(m *Model, o Model) {
	if o.Aliases != nil {
		m.Aliases = o.Aliases
	}
	if o.Retired != nil {
		m.Retired = o.Retired
	}
	if o.MaxOutputTokens != 0 {
		m.MaxOutputTokens = o.MaxOutputTokens
	}
	if o.InputTokensPerImage != 0 {
		m.InputTokensPerImage = o.InputTokensPerImage
	}
	if o.Price != (Price{}) {
		m.Price = o.Price
	}
	if o.Sizes != nil {
		m.Sizes = o.Sizes
	}
	if o.DefaultSize != "" {
		m.DefaultSize = o.DefaultSize
	}
	if o.AspectRatios != nil {
		m.AspectRatios = o.AspectRatios
	}
	if o.ImageSignatures != nil {
		m.ImageSignatures = o.ImageSignatures
	}
}

var (
	ratioRE = regexp.MustCompile(`^[1-9][0-9]?:[1-9][0-9]?$`)
	dayRE   = regexp.MustCompile(`^\d{4}-\d{2}-\d{2}$`)
)

func (m *Model) check() error {
	bad := func(format string, args ...any) error {
		return fmt.Errorf("catalog: model %q: "+format, append([]any{m.Name}, args...)...)
	}
	switch {
	case strings.TrimSpace(m.Name) == "" || m.Name != strings.TrimSpace(m.Name):
		return fmt.Errorf("catalog: a model has no name (or spaces around it)")
	case m.MaxOutputTokens < 1 || m.MaxOutputTokens > maxOutputTokens:
		return bad("max_output_tokens must be 1 to %d", maxOutputTokens)
	case m.InputTokensPerImage < 0 || m.InputTokensPerImage > maxTokensPerImage:
		return bad("input_tokens_per_image must be 0 to %d", maxTokensPerImage)
	case len(m.Sizes) == 0:
		return bad("no sizes")
	case m.DefaultSize == "":
		return bad("no default_size")
	case len(m.AspectRatios) == 0:
		return bad("no aspect_ratios")
	}
	if _, ok := m.Sizes[m.DefaultSize]; !ok {
		return bad("default_size %q is not one of its sizes", m.DefaultSize)
	}
	for _, p := range []float64{m.Price.Input, m.Price.TextOutput, m.Price.ImageOutput} {
		if !(p >= 0) || p > maxPriceUSD {
			return bad("prices must be 0 to %g", float64(maxPriceUSD))
		}
	}
	for name, s := range m.Sizes {
		if name == "" || s.Tokens < 1 || s.Tokens > maxTokensPerImage || !(s.USD >= 0) || s.USD > maxPriceUSD {
			return bad("size %q needs tokens 1 to %d and usd 0 to %g", name, maxTokensPerImage, float64(maxPriceUSD))
		}
	}
	for _, r := range m.AspectRatios {
		if !ratioRE.MatchString(r) {
			return bad("aspect ratio %q is not W:H", r)
		}
	}
	for _, r := range m.Retired {
		if r.Name == "" || !dayRE.MatchString(r.On) {
			return bad("a retired id needs a name and a day (YYYY-MM-DD)")
		}
	}
	return nil
}

// Lookup returns the model an id names: its name, an alias, or a retired id
// (then retiredOn is the day it retired, and the model its successor).
func (c *Catalog) Lookup(id string) (m *Model, retiredOn string, ok bool) {
	if m := c.byName[id]; m != nil {
		return m, "", true
	}
	if r, ok := c.retired[id]; ok {
		return r.successor, r.on, true
	}
	return nil, "", false
}

// Models returns the models, in catalogue order.
func (c *Catalog) Models() []*Model { return c.models }

// Size returns the named size, the default one for "".
func (m *Model) Size(name string) (Size, bool) {
	if name == "" {
		name = m.DefaultSize
	}
	s, ok := m.Sizes[name]
	return s, ok
}

// SizeNames returns the sizes by ascending tokens (then name).
func (m *Model) SizeNames() []string {
	names := make([]string, 0, len(m.Sizes))
	for n := range m.Sizes {
		names = append(names, n)
	}
	sort.Slice(names, func(i, j int) bool {
		a, b := m.Sizes[names[i]], m.Sizes[names[j]]
		if a.Tokens != b.Tokens {
			return a.Tokens < b.Tokens
		}
		return sizeOrder(names[i]) < sizeOrder(names[j])
	})
	return names
}

// sizeOrder sorts "512" before "1K" before "2K" before "4K".
func sizeOrder(name string) float64 {
	var v float64
	if n, err := fmt.Sscanf(strings.TrimSuffix(name, "K"), "%g", &v); n == 1 && err == nil {
		if strings.HasSuffix(name, "K") {
			v *= 1024
		}
		return v
	}
	return math.MaxFloat64
}

// AllowsAspect reports whether the model takes aspect ratio r.
func (m *Model) AllowsAspect(r string) bool { return slices.Contains(m.AspectRatios, r) }

// ImageTokens are the output tokens of one image of the named size (the
// default for ""), and false for a size the model does not make.
func (m *Model) ImageTokens(size string) (int64, bool) {
	s, ok := m.Size(size)
	return s.Tokens, ok
}

// ListUSD is Google's list price of one image of the named size (the
// default for ""): its usd, else its tokens at the image output price.
func (m *Model) ListUSD(size string) (float64, bool) {
	s, ok := m.Size(size)
	if !ok {
		return 0, false
	}
	if s.USD > 0 {
		return s.USD, true
	}
	return float64(s.Tokens) * m.Price.ImageOutput / 1e6, true
}

// MarkdownTable is the README's table of the catalogue's models: names,
// sizes with their output tokens and list price per image, input tokens per
// image, prices per million tokens and the output limit.
func (c *Catalog) MarkdownTable() string {
	var b strings.Builder
	b.WriteString("| model | also answers to | size: tokens, list price per image | input image | per 1M tokens: input, text, image | max output |\n")
	b.WriteString("|---|---|---|---|---|---|\n")
	for _, m := range c.models {
		var also []string
		also = append(also, m.Aliases...)
		for _, r := range m.Retired {
			also = append(also, r.Name+" (retired "+r.On+")")
		}
		var sizes []string
		for _, n := range m.SizeNames() {
			usd, _ := m.ListUSD(n)
			s := fmt.Sprintf("%s: %d, $%s", n, m.Sizes[n].Tokens, trimFloat(usd))
			if n == m.DefaultSize {
				s += " (default)"
			}
			sizes = append(sizes, s)
		}
		fmt.Fprintf(&b, "| `%s` | %s | %s | %d tokens | $%s, $%s, $%s | %d |\n", m.Name, strings.Join(also, ", "),
			strings.Join(sizes, "; "), m.InputTokensPerImage, trimFloat(m.Price.Input), trimFloat(m.Price.TextOutput),
			trimFloat(m.Price.ImageOutput), m.MaxOutputTokens)
	}
	return b.String()
}

func trimFloat(v float64) string {
	return strings.TrimSuffix(strings.TrimRight(fmt.Sprintf("%.4f", v), "0"), ".")
}

// Markers of the generated table in the README.
const (
	TableBegin = "<!-- models:begin -->"
	TableEnd   = "<!-- models:end -->"
)

// ReplaceTable returns doc with the text between TableBegin and TableEnd
// replaced by table.
func ReplaceTable(doc, table string) (string, error) {
	i := strings.Index(doc, TableBegin)
	j := strings.Index(doc, TableEnd)
	if i < 0 || j < i {
		return "", fmt.Errorf("no %s ... %s block", TableBegin, TableEnd)
	}
	return doc[:i+len(TableBegin)] + "\n" + table + doc[j:], nil
}
