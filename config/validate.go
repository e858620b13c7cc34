package config

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"maps"
	"net"
	"net/netip"
	"net/url"
	"slices"
	"sort"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	"nanogate/catalog"
)

// Problem is one thing wrong with a config. Path names the key, as in
// "providers[1].base_url"; File and Line are zero when unknown. Msg never
// holds a secret.
type Problem struct {
	File string
	Line int
	Path string
	Msg  string
}

// String formats p as "file:line: path: msg", leaving out what is unknown.
func (p Problem) String() string {
	var b strings.Builder
	switch {
	case p.File != "" && p.Line > 0:
		fmt.Fprintf(&b, "%s:%d", p.File, p.Line)
	case p.File != "":
		b.WriteString(p.File)
	case p.Line > 0:
		fmt.Fprintf(&b, "line %d", p.Line)
	}
	for _, s := range []string{p.Path, p.Msg} {
		if s == "" {
			continue
		}
		if b.Len() > 0 {
			b.WriteString(": ")
		}
		b.WriteString(s)
	}
	return b.String()
}

// Problems is every problem found in a config; Load, Parse and Validate
// return it as a *Problems error.
type Problems []Problem

// Error lists the problems one per line.
func (ps Problems) Error() string {
	lines := make([]string, len(ps))
	for i, p := range ps {
		lines[i] = p.String()
	}
	return strings.Join(lines, "\n")
}

// As lets errors.As fill a Problems target as well as a *Problems one, so
// that callers need not know which of the two the error is.
func (ps *Problems) As(target any) bool {
	if t, ok := target.(*Problems); ok {
		*t = *ps
		return true
	}
	return false
}

// sorted orders ps by line, unknown lines last, and returns it as an error.
func (ps Problems) sorted() error {
	sort.SliceStable(ps, func(i, j int) bool {
		li, lj := ps[i].Line, ps[j].Line
		if li == 0 || lj == 0 {
			return lj == 0 && li != 0
		}
		return li < lj
	})
	return &ps
}

func (ps Problems) hasLine(line int) bool {
	for _, p := range ps {
		if p.Line == line {
			return true
		}
	}
	return false
}

// line is the line of path in the file c was parsed from, or of its nearest
// ancestor there (a missing key is reported where its parent is), or 0.
func (c *Config) line(path string) int {
	for path != "" {
		if l, ok := c.lines[path]; ok {
			return l
		}
		i := strings.LastIndexAny(path, ".[")
		if i < 0 {
			break
		}
		path = path[:i]
	}
	return 0
}

// checker collects Validate's problems.
type checker struct {
	c  *Config
	ps Problems
}

func (k *checker) add(path, format string, args ...any) {
	k.ps = append(k.ps, Problem{File: k.c.Path, Line: k.c.line(path), Path: path, Msg: fmt.Sprintf(format, args...)})
}

func (k *checker) oneOf(path, v string, set ...string) {
	if !slices.Contains(set, v) {
		k.add(path, "%s is not one of %s", quote(v), strings.Join(set, ", "))
	}
}

func (k *checker) positive(path string, d time.Duration) {
	if d <= 0 {
		k.add(path, "must be a positive duration")
	}
}

func (k *checker) nonNegative(path string, v int64) {
	if v < 0 {
		k.add(path, "must not be negative")
	}
}

func (k *checker) atLeast(path string, v, min int64) {
	if v < min {
		k.add(path, "must be at least %d", min)
	}
}

// MaxPriceUSD and MaxBudgetUSD bound money in the configuration, so that
// every price and budget is exact in int64 micro-dollars with room to spare.
const (
	MaxPriceUSD  = 1e6
	MaxBudgetUSD = 1e9
	// MaxTokensPerImage bounds billing.tokens_per_image.
	MaxTokensPerImage = 1 << 20
)

// priceBlock checks a Price; m, when the catalogue knows the model it
// prices, names the sizes per_image_by_size may hold.
func (k *checker) priceBlock(path string, p Price, m *catalog.Model) {
	k.price(path+".per_image", p.PerImage)
	k.price(path+".input_per_mtok", p.InputPerMTok)
	k.price(path+".output_per_mtok", p.OutputPerMTok)
	for _, size := range slices.Sorted(maps.Keys(p.PerImageBySize)) {
		sp := path + ".per_image_by_size." + size
		if m != nil {
			if _, ok := m.Sizes[size]; !ok {
				k.add(sp, "%s is not a size of %s (%s)", quote(size), m.Name, strings.Join(m.SizeNames(), ", "))
				continue
			}
		}
		k.price(sp, p.PerImageBySize[size])
	}
}

func (k *checker) price(path string, v float64) {
	if !(v >= 0) || v > MaxPriceUSD {
		k.add(path, "must be a number from 0 to %g", float64(MaxPriceUSD))
	}
}

// httpURL checks that v is an absolute http(s) URL. The value is never
// printed: URLs may carry credentials in their user info or query.
func (k *checker) httpURL(path, v string) {
	u, err := url.Parse(v)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		k.add(path, "want an absolute http:// or https:// URL")
	}
}

// hostPort checks a "host:port" address; needHost rejects ":port", which a
// server may listen on but a client cannot dial.
func (k *checker) hostPort(path, v string, needHost bool) {
	if v == "" {
		k.add(path, "required")
		return
	}
	host, port, err := net.SplitHostPort(v)
	if err == nil && needHost && host == "" {
		err = fmt.Errorf("no host")
	}
	if err == nil {
		if n, perr := strconv.Atoi(port); perr != nil || n < 0 || n > 65535 {
			err = fmt.Errorf("bad port")
		}
	}
	if err != nil {
		k.add(path, "want host:port, got %s", quote(v))
	}
}

// quote quotes a value for a message, shortened: enumerations and addresses
// are short, and a long value is more likely something pasted by mistake.
func quote(v string) string {
	if len(v) > 40 {
		v = v[:37] + "..."
	}
	return strconv.Quote(v)
}

// Validate checks c, as filled by Defaults, and returns every problem at
// once as a *Problems, or nil. When c came from Load or Parse, problems carry
// the file and line of the key they name.
func (c *Config) Validate() error {
	k := &checker{c: c}
	if cat, err := catalog.New(c.Catalog); err != nil {
		k.add("catalog", "%s", strings.TrimPrefix(err.Error(), "catalog: "))
	} else {
		c.models = cat
	}
	c.validateServer(k)
	c.validateRedis(k)
	c.validateProviders(k)
	c.validateRouting(k)
	c.validateImages(k)
	c.validateTeams(k)
	c.validateKeys(k)
	c.validateSecretLengths(k)
	if len(k.ps) == 0 {
		return nil
	}
	return &k.ps
}

func (c *Config) validateServer(k *checker) {
	s := c.Server
	k.hostPort("server.listen", s.Listen, false)
	for i, tp := range s.TrustedProxies {
		if _, err := netip.ParsePrefix(tp); err != nil {
			if _, err := netip.ParseAddr(tp); err != nil {
				k.add(fmt.Sprintf("server.trusted_proxies[%d]", i), "%s is neither an IP address nor a CIDR prefix", quote(tp))
			}
		}
	}
	if s.AdminListen != "" {
		k.hostPort("server.admin_listen", s.AdminListen, false)
		if s.AdminListen == s.Listen {
			k.add("server.admin_listen", "must differ from server.listen")
		}
	}
	// An empty public_url is left by Defaults only when listen is invalid,
	// which is reported above.
	if s.PublicURL != "" {
		k.httpURL("server.public_url", s.PublicURL)
	}
	k.atLeast("server.max_body_bytes", s.MaxBodyBytes, 1)
	k.nonNegative("server.shutdown_timeout", int64(s.ShutdownTimeout))
	k.nonNegative("server.read_timeout", int64(s.ReadTimeout))
	k.nonNegative("server.write_timeout", int64(s.WriteTimeout))
	k.nonNegative("server.idle_timeout", int64(s.IdleTimeout))
	k.nonNegative("server.max_header_bytes", int64(s.MaxHeaderBytes))
	k.nonNegative("server.concurrency", int64(s.Concurrency))
	if s.MemoryLimit != 0 {
		k.atLeast("server.memory_limit", int64(s.MemoryLimit), MinMemoryLimit)
	}
	k.nonNegative("server.max_bytes_in_flight", int64(s.MaxBytesInFlight))

	k.oneOf("log.level", c.Log.Level, "debug", "info", "warn", "error")
	k.oneOf("log.format", c.Log.Format, "json", "console")
}

func (c *Config) validateRedis(k *checker) {
	r := c.Redis
	if r == nil {
		return
	}
	if len(r.Addrs) == 0 {
		k.add("redis.addrs", "at least one address is required")
	}
	for i, a := range r.Addrs {
		k.hostPort(fmt.Sprintf("redis.addrs[%d]", i), a, true)
	}
	k.nonNegative("redis.db", int64(r.DB))
	k.oneOf("redis.on_outage", r.OnOutage, "open", "closed")
	k.positive("redis.dial_timeout", r.DialTimeout)
	k.positive("redis.read_timeout", r.ReadTimeout)
	k.positive("redis.write_timeout", r.WriteTimeout)
	k.positive("redis.decision_timeout", r.DecisionTimeout)
}

func (c *Config) validateProviders(k *checker) {
	if len(c.Providers) == 0 {
		k.add("providers", "at least one provider is required")
	}
	enabled := 0
	for i := range c.Providers {
		if !c.Providers[i].Disabled {
			enabled++
		}
	}
	// On loopback a gateway without a provider is a try-out (a warning
	// says so); reachable from other machines it is a misconfiguration.
	if len(c.Providers) > 0 && enabled == 0 && !c.listensOnLoopback() {
		k.add("providers", "no provider is enabled (every api_key is empty) on a listener other machines reach (%s): "+
			"set a provider's api_key", quote(c.Server.Listen))
	}
	seen := map[string]int{}
	for i := range c.Providers {
		p := &c.Providers[i]
		at := fmt.Sprintf("providers[%d]", i)
		if p.Name == "" {
			k.add(at+".name", "required")
		} else if j, dup := seen[p.Name]; dup {
			k.add(at+".name", "duplicate provider name %s (also providers[%d])", quote(p.Name), j)
		} else {
			seen[p.Name] = i
		}
		k.oneOf(at+".kind", string(p.Kind), string(KindOpenAI), string(KindGemini))
		k.httpURL(at+".base_url", p.BaseURL)
		if len(p.Models) == 0 {
			k.add(at+".models", "at least one model mapping (public name: provider's name) is required")
		}
		public := make([]string, 0, len(p.Models))
		for name := range p.Models {
			public = append(public, name)
		}
		slices.Sort(public)
		for _, name := range public {
			if name == "" {
				k.add(at+".models", "empty public model name")
			} else if p.Models[name] == "" {
				k.add(at+".models."+name, "empty provider model name")
			}
		}
		k.priceBlock(at+".price", p.Price, nil)
		if p.Kind == KindOpenAI && p.Price.PerImage == 0 {
			// No catalogue price stands in for a reseller's: an image at
			// $0 makes budgets never bind and cheapest routing prefer it.
			for _, model := range slices.Sorted(maps.Keys(p.Models)) {
				if pr, ok := p.Prices[model]; !ok || pr.PerImage == 0 && len(pr.PerImageBySize) == 0 {
					k.add(at+".price.per_image", "provider %s bills %s at $0 an image: set price.per_image (or prices.%s)",
						quote(p.Name), quote(model), model)
					break
				}
			}
		}
		for _, model := range slices.Sorted(maps.Keys(p.Prices)) {
			pat := at + ".prices." + model
			if _, ok := p.Models[model]; !ok {
				k.add(pat, "%s is not a model this provider maps (models)", quote(model))
				continue
			}
			k.priceBlock(pat, p.Prices[model], c.ModelOf(model))
		}
		k.positive(at+".timeout", p.Timeout)
		k.atLeast(at+".max_conns", int64(p.MaxConns), 1)
	}
}

func (c *Config) validateRouting(k *checker) {
	r := c.Routing
	k.oneOf("routing.strategy", r.Strategy, "cheapest", "latency")
	k.atLeast("routing.max_attempts", int64(r.MaxAttempts), 1)
	k.atLeast("routing.health.failure_threshold", int64(r.Health.FailureThreshold), 1)
	k.positive("routing.health.cooldown", r.Health.Cooldown)
	k.positive("routing.health.max_retry_after", r.Health.MaxRetryAfter)
	if t := c.Billing.TokensPerImage; t < 1 || t > MaxTokensPerImage {
		k.add("billing.tokens_per_image", "must be an integer from 1 to %d", MaxTokensPerImage)
	}

	b := c.Batch
	k.atLeast("batch.workers", int64(b.Workers), 1)
	if !(b.MaxShare > 0 && b.MaxShare <= 1) {
		k.add("batch.max_share", "must be greater than 0 and at most 1")
	}
	k.positive("batch.reclaim_after", b.ReclaimAfter)
	k.positive("batch.retention", b.Retention)
	k.atLeast("files.max_bytes_per_team", c.Files.MaxBytesPerTeam, 1)
	k.atLeast("files.max_files_per_team", c.Files.MaxFilesPerTeam, 1)
	k.positive("files.default_ttl", c.Files.DefaultTTL)
}

// minSigningKey is the shortest signing_key accepted: 256 bits, what
// HMAC-SHA256 needs to be as strong as its output.
const minSigningKey = 32

func (c *Config) validateImages(k *checker) {
	k.oneOf("images.format", c.Images.Format, "markdown", "data_url", "images")
	o := c.Images.Offload
	k.oneOf("images.offload.store", o.Store, "filesystem", "s3")
	k.positive("images.offload.ttl", o.TTL)
	f := c.Images.Fetch
	k.positive("images.fetch.timeout", f.Timeout)
	if f.MaxPerRequest < 1 || f.MaxPerRequest > 16 {
		k.add("images.fetch.max_per_request", "must be from 1 to 16 (a request holds at most 16 images)")
	}
	k.atLeast("images.fetch.max_bytes_in_flight", f.MaxBytesInFlight, MinFetchBytesInFlight)

	if o.Enabled {
		c.checkOffloadStore(func(path, msg string) {
			k.add(path, "%s when images.offload.enabled is true", msg)
		})
	}
}

// checkOffloadStore calls bad for each setting the configured offload store
// lacks to work.
func (c *Config) checkOffloadStore(bad func(path, msg string)) {
	o := c.Images.Offload
	switch o.Store {
	case "filesystem":
		if o.Dir == "" {
			bad("images.offload.dir", "is required")
		}
		if len(o.SigningKey) < minSigningKey {
			bad("images.offload.signing_key", fmt.Sprintf("must be at least %d bytes", minSigningKey))
		}
	case "s3":
		if o.S3.Endpoint == "" {
			bad("images.offload.s3.endpoint", "is required")
		}
		if o.S3.Bucket == "" {
			bad("images.offload.s3.bucket", "is required")
		}
	}
}

func (c *Config) validateTeams(k *checker) {
	seen := map[string]int{}
	for i := range c.Teams {
		t := &c.Teams[i]
		at := fmt.Sprintf("teams[%d]", i)
		if t.Name == "" {
			k.add(at+".name", "required")
		} else if j, dup := seen[t.Name]; dup {
			k.add(at+".name", "duplicate team name %s (also teams[%d])", quote(t.Name), j)
		} else {
			seen[t.Name] = i
		}
		k.nonNegative(at+".rpm", t.RPM)
		k.nonNegative(at+".tpm", t.TPM)
		if b := t.Budget; b != nil {
			if !(b.USD > 0) || b.USD > MaxBudgetUSD {
				k.add(at+".budget.usd", "must be a positive number up to %g", float64(MaxBudgetUSD))
			}
			k.oneOf(at+".budget.period", b.Period, "daily", "monthly", "total")
		}
	}
}

// DemoKey is the client key the README and the example config show: it
// answers only on a loopback listener, where only this machine can use it.
const DemoKey = "sk-nanogate-demo"

// listensOnLoopback reports whether server.listen accepts only this
// machine's connections.
func (c *Config) listensOnLoopback() bool {
	host, _, err := net.SplitHostPort(c.Server.Listen)
	if err != nil {
		return false
	}
	if host == "localhost" {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}

func (c *Config) validateKeys(k *checker) {
	if len(c.Keys) == 0 {
		k.add("keys", "at least one client key is required: without one every request is refused with 401")
	}
	if !c.listensOnLoopback() {
		for i := range c.Keys {
			if c.Keys[i].Key == DemoKey {
				k.add(fmt.Sprintf("keys[%d].key", i), "the README's demo key answers only on a loopback listener "+
					"(server.listen %s is reachable from other machines): give the key a secret of your own, "+
					"e.g. DESIGN_CI_KEY=$(openssl rand -hex 24) for the example config, or use key_sha256", quote(c.Server.Listen))
			}
		}
	}
	teams := map[string]bool{}
	for _, t := range c.Teams {
		teams[t.Name] = true
	}
	models := map[string]bool{}
	for _, p := range c.Providers {
		for name := range p.Models {
			models[name] = true
		}
	}
	names := map[string]int{}
	secrets := map[string]int{} // hex SHA-256 of the secret -> index of its first key
	for i := range c.Keys {
		key := &c.Keys[i]
		at := fmt.Sprintf("keys[%d]", i)
		if key.Name == "" {
			k.add(at+".name", "required")
		} else if j, dup := names[key.Name]; dup {
			k.add(at+".name", "duplicate key name %s (also keys[%d])", quote(key.Name), j)
		} else {
			names[key.Name] = i
		}

		var secret string
		_, keyWritten := c.lines[at+".key"]
		switch {
		case key.Key != "" && key.KeySHA256 != "":
			k.add(at, "set only one of key and key_sha256")
		case key.Key != "":
			sum := sha256.Sum256([]byte(key.Key))
			secret = hex.EncodeToString(sum[:])
		case key.KeySHA256 != "":
			if len(key.KeySHA256) != 64 || !isHex(key.KeySHA256) {
				k.add(at+".key_sha256", "want 64 hex digits (the SHA-256 of the key)")
			} else {
				secret = strings.ToLower(key.KeySHA256)
			}
		case keyWritten:
			// Most likely ${VAR} of an unset variable: say which key.
			k.add(at+".key", "key %s is empty (is its environment variable set?)", quote(key.Name))
		default:
			k.add(at, "one of key or key_sha256 is required")
		}
		if secret != "" {
			if j, dup := secrets[secret]; dup {
				k.add(at, "key %s has the same secret as keys[%d] (%s)", quote(key.Name), j, quote(c.Keys[j].Name))
			} else {
				secrets[secret] = i
			}
		}

		if key.Team != "" && !teams[key.Team] {
			k.add(at+".team", "no team named %s", quote(key.Team))
		}
		k.nonNegative(at+".rpm", key.RPM)
		k.nonNegative(at+".tpm", key.TPM)
		for j, m := range key.Models {
			if !models[m] {
				k.add(fmt.Sprintf("%s.models[%d]", at, j), "no provider maps model %s", quote(m))
			}
		}
		if key.WebhookURL != "" {
			k.httpURL(at+".webhook_url", key.WebhookURL)
		}
	}
}

func isHex(s string) bool {
	_, err := hex.DecodeString(s)
	return err == nil
}

// validateSecretLengths refuses secrets short enough to guess: the failed-auth
// guard slows guessing, it cannot make a one-byte key safe. Keys given as
// key_sha256 cannot be measured.
func (c *Config) validateSecretLengths(k *checker) {
	if n := utf8.RuneCountInString(c.AdminKey); n > 0 && n < MinAdminKeyLen {
		k.add("admin_key", "must be at least %d characters (it has %d)", MinAdminKeyLen, n)
	}
	for i := range c.Keys {
		key := &c.Keys[i]
		if n := utf8.RuneCountInString(key.Key); n > 0 && n < MinClientKeyLen {
			k.add(fmt.Sprintf("keys[%d].key", i), "key %s must be at least %d characters (it has %d)",
				quote(key.Name), MinClientKeyLen, n)
		}
	}
}
