// Package config is nanogate's configuration: the YAML schema, its defaults,
// ${VAR} expansion from the environment and validation. It has no behaviour
// beyond that: components take the part of the Config they need in their
// constructors.
//
// The usual sequence is Load (or Parse), which expands, decodes strictly,
// applies Defaults, disables providers whose api_key is empty and runs
// Validate, returning every problem at once with its file and line.
package config

import (
	"fmt"
	"maps"
	"math"
	"net"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"nanogate/catalog"
)

// Config is the whole of config.yaml (README: Configuration).
type Config struct {
	Server    Server     `yaml:"server"`
	AdminKey  string     `yaml:"admin_key"` // bearer token for /admin/*; empty disables /admin
	Log       Log        `yaml:"log"`
	Redis     *Redis     `yaml:"redis"` // nil: embedded in-memory state, for one replica
	Providers []Provider `yaml:"providers"`
	Routing   Routing    `yaml:"routing"`
	Billing   Billing    `yaml:"billing"`
	Images    Images     `yaml:"images"`
	Batch     Batch      `yaml:"batch"`
	Files     Files      `yaml:"files"`
	Teams     []Team     `yaml:"teams"`
	Keys      []Key      `yaml:"keys"`
	// DataDir holds every file the gateway keeps on its own disk: usage
	// records (embedded), the usage spool, files and batches (embedded),
	// the filesystem image store (images.offload.dir defaults under it).
	// Relative to the working directory; a gateway started elsewhere with
	// the same config would start new books, so deployments set it.
	DataDir string `yaml:"data_dir"`
	// Catalog adds models to the embedded model catalogue, or overrides
	// fields of one of the same name (package catalog).
	Catalog []catalog.Model `yaml:"catalog"`

	// models is the catalogue resolved from Catalog by Defaults; nil until
	// then (Models builds it).
	models *catalog.Catalog
	// byPublic caches ModelOf for the public models of the providers,
	// filled by Defaults: requests look it up several times each.
	byPublic map[string]*catalog.Model

	// Path is the file the Config was loaded from ("" when built in Go).
	Path string `yaml:"-"`

	// lines maps a key path such as "providers[1].base_url" to its line in
	// Path, so that Validate can point at the line of a problem even when it
	// is called again later (for instance on a SIGHUP reload).
	lines map[string]int
}

// Server is the listening HTTP server.
type Server struct {
	// Listen is the host:port to listen on.
	Listen string `yaml:"listen"`
	// PublicURL is the base of image links served by the gateway, without a
	// trailing slash (Defaults trims one).
	PublicURL string `yaml:"public_url"`
	// MaxBodyBytes is the largest request body accepted; larger ones get 413.
	MaxBodyBytes int64 `yaml:"max_body_bytes"`
	// ShutdownTimeout bounds how long in-flight requests may take to finish
	// after SIGTERM/SIGINT.
	ShutdownTimeout time.Duration `yaml:"shutdown_timeout"`
	// ReadTimeout is the time allowed to read a whole request.
	ReadTimeout time.Duration `yaml:"read_timeout"`
	// WriteTimeout bounds each write of a response to the client: a write
	// that makes no progress for this long ends the response and closes the
	// connection. It is an idle bound, renewed as bytes go out, so a long
	// stream or a large image to a slow but reading client is not cut; a
	// client that stops reading is.
	WriteTimeout time.Duration `yaml:"write_timeout"`
	// IdleTimeout is how long a keep-alive connection may wait for its next
	// request.
	IdleTimeout time.Duration `yaml:"idle_timeout"`
	// MaxHeaderBytes is the largest request header accepted.
	MaxHeaderBytes int `yaml:"max_header_bytes"`
	// Concurrency is the most connections served at once; 0 keeps fasthttp's
	// default.
	Concurrency int `yaml:"concurrency"`
	// TrustedProxies are the addresses (IPs or CIDR prefixes) of the
	// reverse proxies in front of the gateway: a request from one of them
	// is the client's at the address X-Forwarded-For names (the last one
	// not trusted), for the failed-auth guard and the access log.
	TrustedProxies []string `yaml:"trusted_proxies"`
	// AdminListen, when set, is a second listener that alone serves
	// /admin/* and /metrics (they are then absent from Listen), so that they
	// can stay on a private network.
	AdminListen string `yaml:"admin_listen"`
	// MemoryLimit is the Go runtime's soft memory limit (GOMEMLIMIT): the
	// collector works harder as the heap nears it. 0: GOMEMLIMIT when set,
	// else 90% of the container's cgroup limit when there is one, else
	// none. Read at start.
	MemoryLimit ByteSize `yaml:"memory_limit"`
	// MaxBytesInFlight bounds the bytes the requests in flight may hold
	// (their bodies and the images they asked for); a request over it is
	// refused with 503 and a retry delay. 0: half the memory limit in
	// force, or no bound when there is no limit. Read at start.
	MaxBytesInFlight ByteSize `yaml:"max_bytes_in_flight"`
}

// Log configures the zap logger.
type Log struct {
	Level  string `yaml:"level"`  // debug | info | warn | error
	Format string `yaml:"format"` // json | console
}

// Redis is the shared state of several replicas. Its absence (a nil
// Config.Redis) selects embedded in-memory state for a single replica.
type Redis struct {
	// Addrs holds one address for a single node, several for Redis Cluster.
	Addrs    []string `yaml:"addrs"`
	Password string   `yaml:"password"`
	DB       int      `yaml:"db"`
	// KeyPrefix starts every Redis key nanogate writes.
	KeyPrefix string `yaml:"key_prefix"`
	// OnOutage is "open" (admit under a per-replica local limiter) or
	// "closed" (answer 503) while Redis is unreachable.
	OnOutage     string        `yaml:"on_outage"`
	DialTimeout  time.Duration `yaml:"dial_timeout"`
	ReadTimeout  time.Duration `yaml:"read_timeout"`
	WriteTimeout time.Duration `yaml:"write_timeout"`
	// DecisionTimeout bounds one admission decision (the limiter's round
	// trip); past it the request is treated as during an outage, so a slow
	// Redis costs latency boundedly rather than stalling every request.
	DecisionTimeout time.Duration `yaml:"decision_timeout"`
}

// ProviderKind is the wire format a provider speaks.
type ProviderKind string

// Provider kinds.
const (
	// KindOpenAI is an OpenAI-compatible chat completions API (a reseller).
	KindOpenAI ProviderKind = "openai"
	// KindGemini is Google's native Gemini API.
	KindGemini ProviderKind = "gemini"
)

// Provider is one upstream serving the image model.
type Provider struct {
	Name string `yaml:"name"`
	// Kind is the provider's wire format.
	Kind ProviderKind `yaml:"kind"`
	// BaseURL is the upstream's API base, without a trailing slash (Defaults
	// trims one).
	BaseURL string `yaml:"base_url"`
	APIKey  string `yaml:"api_key"`
	// Models maps a public model name (what clients ask for) to the
	// provider's own name for it.
	Models map[string]string `yaml:"models"`
	Price  Price             `yaml:"price"`
	// Prices are the prices of single public models, where they differ
	// from Price (and, on the gemini kind, from the catalogue's list
	// prices).
	Prices map[string]Price `yaml:"prices"`
	// Timeout bounds one upstream call.
	Timeout time.Duration `yaml:"timeout"`
	// MaxConns bounds the connections kept to this upstream.
	MaxConns int `yaml:"max_conns"`
	// Disabled is set by Load and Parse when APIKey expanded to empty: the
	// provider stays in the config (so keys may still name its models) but
	// must not be routed to.
	Disabled bool `yaml:"-"`
}

// Price is what a provider charges, in USD.
type Price struct {
	PerImage float64 `yaml:"per_image"`
	// PerImageBySize prices images of some sizes (image_config.image_size:
	// 512, 1K, 2K, 4K) apart from PerImage.
	PerImageBySize map[string]float64 `yaml:"per_image_by_size"`
	InputPerMTok   float64            `yaml:"input_per_mtok"`
	OutputPerMTok  float64            `yaml:"output_per_mtok"`
}

// PerImageMicros is PerImage in integer micro-dollars, the unit accounting
// keeps money in so that sums are exact.
func (p Price) PerImageMicros() int64 { return micros(p.PerImage) }

// PerImageAt is the price of one image of the named size: its own, else
// PerImage.
func (p Price) PerImageAt(size string) float64 {
	if v, ok := p.PerImageBySize[size]; ok && size != "" {
		return v
	}
	return p.PerImage
}

// PerImageMicrosAt is PerImageAt in integer micro-dollars.
func (p Price) PerImageMicrosAt(size string) int64 { return micros(p.PerImageAt(size)) }

// InputPerMTokMicros is InputPerMTok in integer micro-dollars.
func (p Price) InputPerMTokMicros() int64 { return micros(p.InputPerMTok) }

// OutputPerMTokMicros is OutputPerMTok in integer micro-dollars.
func (p Price) OutputPerMTokMicros() int64 { return micros(p.OutputPerMTok) }

func micros(usd float64) int64 { return int64(math.Round(usd * 1e6)) }

// Routing chooses and retries providers.
type Routing struct {
	Strategy string `yaml:"strategy"` // cheapest | latency
	// MaxAttempts is the number of providers tried per request, the first
	// included.
	MaxAttempts int    `yaml:"max_attempts"`
	Health      Health `yaml:"health"`
}

// Health configures each provider's circuit breaker.
type Health struct {
	// FailureThreshold consecutive failures open a provider's circuit.
	FailureThreshold int `yaml:"failure_threshold"`
	// Cooldown is how long an open circuit waits before admitting one trial
	// request.
	Cooldown time.Duration `yaml:"cooldown"`
	// MaxRetryAfter is the longest an upstream's retry delay (retry-after,
	// retry-after-ms, Google's RetryInfo) benches a provider: the upstream
	// is not trusted to take a provider out of service for longer.
	MaxRetryAfter time.Duration `yaml:"max_retry_after"`
}

// Billing holds accounting constants.
type Billing struct {
	// TokensPerImage is the output tokens charged per generated image,
	// whatever the upstream reported.
	TokensPerImage int `yaml:"tokens_per_image"`
}

// Images configures how generated images reach the client.
type Images struct {
	Format  string  `yaml:"format"` // markdown | data_url | images
	Offload Offload `yaml:"offload"`
	// Fetch bounds the downloading of input images named by URL.
	Fetch ImageFetch `yaml:"fetch"`
}

// ImageFetch bounds the downloading of the input images that chat requests
// name by http(s) URL, which the gateway fetches for gemini-kind providers
// (Google takes image bytes, not URLs). The fetched images of a request
// also count against server.max_body_bytes, at their base64 size.
type ImageFetch struct {
	// Timeout bounds the fetching of all the images of one request; it is
	// the client's time, never counted against a provider.
	Timeout time.Duration `yaml:"timeout"`
	// MaxPerRequest is how many images of one request are fetched at once.
	MaxPerRequest int `yaml:"max_per_request"`
	// MaxBytesInFlight caps the fetched image bytes held by the process
	// for all requests together; a request that finds no room in time is
	// answered 503 with retry-after.
	MaxBytesInFlight int64 `yaml:"max_bytes_in_flight"`
}

// Offload replaces base64 images in responses by links.
type Offload struct {
	// Enabled is the default for keys that do not set offload_images.
	Enabled bool   `yaml:"enabled"`
	Store   string `yaml:"store"` // filesystem | s3
	// Dir is where the filesystem store keeps images.
	Dir string `yaml:"dir"`
	// TTL is how long a link stays valid.
	TTL time.Duration `yaml:"ttl"`
	// SigningKey signs the links of the filesystem store.
	SigningKey string `yaml:"signing_key"`
	S3         S3     `yaml:"s3"`
}

// S3 is an S3-compatible bucket for offloaded images.
type S3 struct {
	Endpoint  string `yaml:"endpoint"`
	Region    string `yaml:"region"`
	Bucket    string `yaml:"bucket"`
	AccessKey string `yaml:"access_key"`
	SecretKey string `yaml:"secret_key"`
	// UseSSL is true when use_ssl is absent from the YAML (Parse sets it; a
	// bool's zero value cannot tell "absent" from "false", so a Config built
	// in Go must set it itself).
	UseSSL bool `yaml:"use_ssl"`
}

// Batch configures the batch workers.
type Batch struct {
	// Workers is the number of batch lines processed at once per replica.
	Workers int `yaml:"workers"`
	// MaxShare is the largest share of each key and team limit batches may
	// use, so that interactive traffic always keeps some room.
	MaxShare float64 `yaml:"max_share"`
	// ReclaimAfter is how long lines held by a replica that stopped
	// heartbeating wait before another replica takes them over.
	ReclaimAfter time.Duration `yaml:"reclaim_after"`
	// Retention is how long a finished batch stays readable before it is
	// removed (its files expire on their own).
	Retention time.Duration `yaml:"retention"`
}

// Files bounds the Files API: what one team (or a key without a team) may
// keep, and for how long, so that uploads cannot fill the shared Redis.
type Files struct {
	// MaxBytesPerTeam caps the bytes of a team's files, batch output and
	// error files included.
	MaxBytesPerTeam int64 `yaml:"max_bytes_per_team"`
	// MaxFilesPerTeam caps the number of a team's files.
	MaxFilesPerTeam int64 `yaml:"max_files_per_team"`
	// DefaultTTL is the expiry of batch input and output files whose client
	// set none (expires_after, output_expires_after).
	DefaultTTL time.Duration `yaml:"default_ttl"`
}

// Team groups keys under shared limits and a budget.
type Team struct {
	Name string `yaml:"name"`
	RPM  int64  `yaml:"rpm"` // 0: no limit
	TPM  int64  `yaml:"tpm"` // 0: no limit
	// Budget is nil for a team without a spending cap.
	Budget *Budget `yaml:"budget"`
}

// Budget caps a team's spending per period.
type Budget struct {
	USD    float64 `yaml:"usd"`
	Period string  `yaml:"period"` // daily | monthly | total
}

// Key is one client API key.
type Key struct {
	Name string `yaml:"name"`
	// Team is the name of the key's team, or "" for none.
	Team string `yaml:"team"`
	// Key is the secret itself; exactly one of Key and KeySHA256 is set.
	Key string `yaml:"key"`
	// KeySHA256 is the lower-case hex SHA-256 of the secret (Defaults
	// lower-cases it), for configs that should not hold the secret.
	KeySHA256 string `yaml:"key_sha256"`
	RPM       int64  `yaml:"rpm"` // 0: no limit
	TPM       int64  `yaml:"tpm"` // 0: no limit
	// Models lists the public model names this key may use; empty: every
	// model.
	Models []string `yaml:"models"`
	// OffloadImages overrides Images.Offload.Enabled for this key; nil
	// keeps it.
	OffloadImages *bool `yaml:"offload_images"`
	// WebhookURL is called, HMAC-signed, when a batch of this key ends.
	WebhookURL string `yaml:"webhook_url"`
}

// Allows reports whether the key may use the public model name model.
func (k *Key) Allows(model string) bool {
	return len(k.Models) == 0 || slices.Contains(k.Models, model)
}

// PublicModels returns the public model names mapped by enabled providers,
// sorted and without duplicates.
func (c *Config) PublicModels() []string {
	var names []string
	for i := range c.Providers {
		if c.Providers[i].Disabled {
			continue
		}
		for name := range c.Providers[i].Models {
			names = append(names, name)
		}
	}
	slices.Sort(names)
	return slices.Compact(names)
}

// ModelsInOrder returns the public model names in the order the file
// writes them (providers in order, each provider's models by line; by name
// for a Config built in Go), each once.
func (c *Config) ModelsInOrder() []string {
	if c == nil {
		return nil
	}
	var out []string
	seen := map[string]bool{}
	for i := range c.Providers {
		names := slices.Sorted(maps.Keys(c.Providers[i].Models))
		slices.SortStableFunc(names, func(a, b string) int {
			return c.lines[fmt.Sprintf("providers[%d].models.%s", i, a)] - c.lines[fmt.Sprintf("providers[%d].models.%s", i, b)]
		})
		for _, n := range names {
			if !seen[n] {
				seen[n] = true
				out = append(out, n)
			}
		}
	}
	return out
}

// Models returns the model catalogue: the embedded one with Catalog
// applied. An invalid Catalog (Validate reports it) leaves the embedded one.
func (c *Config) Models() *catalog.Catalog {
	if c.models == nil {
		m, err := catalog.New(c.Catalog)
		if err != nil {
			m = catalog.Default()
		}
		c.models = m
	}
	return c.models
}

// ModelOf returns the catalogue's model for a public model name: the name
// itself when the catalogue knows it, else the model the gemini providers
// map it to, else the one any provider maps it to; nil for a model the
// catalogue does not know (it is billed with billing.tokens_per_image and
// the provider's price, and its image sizes pass unchecked).
func (c *Config) ModelOf(public string) *catalog.Model {
	if m, ok := c.byPublic[public]; ok {
		return m
	}
	return c.modelOf(public)
}

func (c *Config) modelOf(public string) *catalog.Model {
	cat := c.Models()
	if m, _, ok := cat.Lookup(public); ok {
		return m
	}
	for _, gemini := range []bool{true, false} {
		for i := range c.Providers {
			p := &c.Providers[i]
			if (p.Kind == KindGemini) != gemini {
				continue
			}
			if up, ok := p.Models[public]; ok {
				if m, _, ok := cat.Lookup(up); ok {
					return m
				}
			}
		}
	}
	return nil
}

// PriceOf is what provider p charges for the public model: its Prices entry
// for the model, else on the gemini kind the catalogue's list prices of the
// model (per size), else its Price.
func (c *Config) PriceOf(p *Provider, public string) Price {
	if pr, ok := p.Prices[public]; ok {
		return pr
	}
	if p.Kind == KindGemini {
		if m := c.ModelOf(public); m != nil {
			return ListPrice(m)
		}
	}
	return p.Price
}

// ListPrice is Google's list price of m as a Price: per image by size (the
// default size's as PerImage), and per million tokens of input and text.
func ListPrice(m *catalog.Model) Price {
	pr := Price{InputPerMTok: m.Price.Input, OutputPerMTok: m.Price.TextOutput,
		PerImageBySize: make(map[string]float64, len(m.Sizes))}
	for name := range m.Sizes {
		pr.PerImageBySize[name], _ = m.ListUSD(name)
	}
	pr.PerImage, _ = m.ListUSD("")
	return pr
}

// Default values, exported so that documentation and tests can name them.
const (
	DefaultListen          = "127.0.0.1:8080"
	DefaultMaxBodyBytes    = 32 << 20
	DefaultShutdownTimeout = 30 * time.Second
	DefaultReadTimeout     = 60 * time.Second
	DefaultIdleTimeout     = 120 * time.Second
	DefaultWriteTimeout    = 60 * time.Second
	DefaultMaxHeaderBytes  = 16384
	// MinMemoryLimit is the smallest server.memory_limit accepted: below
	// it the collector would run without pause.
	MinMemoryLimit = 64 << 20

	DefaultRedisKeyPrefix       = "nanogate:"
	DefaultRedisDialTimeout     = 200 * time.Millisecond
	DefaultRedisReadTimeout     = 100 * time.Millisecond
	DefaultRedisWriteTimeout    = 100 * time.Millisecond
	DefaultRedisDecisionTimeout = 50 * time.Millisecond

	DefaultProviderTimeout  = 120 * time.Second
	DefaultProviderMaxConns = 512

	DefaultMaxAttempts      = 3
	DefaultFailureThreshold = 3
	DefaultCooldown         = 30 * time.Second
	DefaultMaxRetryAfter    = 60 * time.Second

	DefaultTokensPerImage = 1290

	DefaultDataDir    = "./data"
	DefaultOffloadDir = "./data/images"
	DefaultOffloadTTL = 24 * time.Hour

	DefaultFetchTimeout          = 15 * time.Second
	DefaultFetchMaxPerRequest    = 4
	DefaultFetchMaxBytesInFlight = 128 << 20
	// MinFetchBytesInFlight is the largest image fetched (Google refuses
	// inline data past 20 MB): a smaller cap could never admit it.
	MinFetchBytesInFlight = 20 << 20

	DefaultBatchWorkers      = 8
	DefaultBatchMaxShare     = 0.5
	DefaultBatchReclaimAfter = 60 * time.Second
	DefaultBatchRetention    = 720 * time.Hour

	DefaultFilesMaxBytesPerTeam = 1 << 30
	DefaultFilesMaxFilesPerTeam = 10000
	DefaultFilesTTL             = 720 * time.Hour

	// MinAdminKeyLen and MinClientKeyLen are the shortest admin key and
	// client key (characters) Validate accepts.
	MinAdminKeyLen  = 24
	MinClientKeyLen = 16
)

// Defaults fills zero values with their defaults. It is idempotent, and it
// also normalises a few values (trailing slashes of URLs, the case of
// key_sha256) so that consumers need not.
func (c *Config) Defaults() {
	// The catalogue is resolved once here, before the Config is shared.
	c.models = nil
	c.Models()
	c.byPublic = map[string]*catalog.Model{}
	for i := range c.Providers {
		for public := range c.Providers[i].Models {
			c.byPublic[public] = c.modelOf(public)
		}
	}
	s := &c.Server
	setDefault(&s.Listen, DefaultListen)
	if s.PublicURL == "" {
		s.PublicURL = defaultPublicURL(s.Listen)
	}
	s.PublicURL = strings.TrimRight(s.PublicURL, "/")
	setDefault(&s.MaxBodyBytes, DefaultMaxBodyBytes)
	setDefault(&s.ShutdownTimeout, DefaultShutdownTimeout)
	setDefault(&s.ReadTimeout, DefaultReadTimeout)
	setDefault(&s.IdleTimeout, DefaultIdleTimeout)
	setDefault(&s.WriteTimeout, DefaultWriteTimeout)
	setDefault(&s.MaxHeaderBytes, DefaultMaxHeaderBytes)

	setDefault(&c.Log.Level, "info")
	setDefault(&c.Log.Format, "json")

	if r := c.Redis; r != nil {
		setDefault(&r.KeyPrefix, DefaultRedisKeyPrefix)
		setDefault(&r.OnOutage, "open")
		setDefault(&r.DialTimeout, DefaultRedisDialTimeout)
		setDefault(&r.ReadTimeout, DefaultRedisReadTimeout)
		setDefault(&r.WriteTimeout, DefaultRedisWriteTimeout)
		setDefault(&r.DecisionTimeout, DefaultRedisDecisionTimeout)
	}

	for i := range c.Providers {
		p := &c.Providers[i]
		p.BaseURL = strings.TrimRight(p.BaseURL, "/")
		setDefault(&p.Timeout, DefaultProviderTimeout)
		setDefault(&p.MaxConns, DefaultProviderMaxConns)
	}

	setDefault(&c.Routing.Strategy, "cheapest")
	setDefault(&c.Routing.MaxAttempts, DefaultMaxAttempts)
	setDefault(&c.Routing.Health.FailureThreshold, DefaultFailureThreshold)
	setDefault(&c.Routing.Health.Cooldown, DefaultCooldown)
	setDefault(&c.Routing.Health.MaxRetryAfter, DefaultMaxRetryAfter)

	setDefault(&c.Billing.TokensPerImage, DefaultTokensPerImage)

	setDefault(&c.Images.Format, "markdown")
	o := &c.Images.Offload
	setDefault(&o.Store, "filesystem")
	setDefault(&c.DataDir, DefaultDataDir)
	setDefault(&o.Dir, filepath.Join(c.DataDir, "images"))
	setDefault(&o.TTL, DefaultOffloadTTL)
	f := &c.Images.Fetch
	setDefault(&f.Timeout, DefaultFetchTimeout)
	setDefault(&f.MaxPerRequest, DefaultFetchMaxPerRequest)
	setDefault(&f.MaxBytesInFlight, DefaultFetchMaxBytesInFlight)

	setDefault(&c.Batch.Workers, DefaultBatchWorkers)
	setDefault(&c.Batch.MaxShare, DefaultBatchMaxShare)
	setDefault(&c.Batch.ReclaimAfter, DefaultBatchReclaimAfter)
	setDefault(&c.Batch.Retention, DefaultBatchRetention)
	setDefault(&c.Files.MaxBytesPerTeam, DefaultFilesMaxBytesPerTeam)
	setDefault(&c.Files.MaxFilesPerTeam, DefaultFilesMaxFilesPerTeam)
	setDefault(&c.Files.DefaultTTL, DefaultFilesTTL)

	for i := range c.Teams {
		if b := c.Teams[i].Budget; b != nil {
			setDefault(&b.Period, "monthly")
		}
	}
	for i := range c.Keys {
		c.Keys[i].KeySHA256 = strings.ToLower(c.Keys[i].KeySHA256)
	}
}

// defaultPublicURL derives the public URL from the listen address. A
// wildcard host (":8080", "0.0.0.0:8080") is no address a client can use, so
// it becomes localhost; an unparsable listen address yields "" and is
// reported by Validate under server.listen alone.
func defaultPublicURL(listen string) string {
	host, port, err := net.SplitHostPort(listen)
	if err != nil {
		return ""
	}
	if ip := net.ParseIP(host); host == "" || (ip != nil && ip.IsUnspecified()) {
		host = "localhost"
	}
	return "http://" + net.JoinHostPort(host, port)
}

func setDefault[T comparable](v *T, def T) {
	var zero T
	if *v == zero {
		*v = def
	}
}

// LinkStore is the image store that links are issued from when chat
// offload is off: the Images API's response_format url and batch output
// links still need one. The configured s3 store when its endpoint and bucket
// are set, so that a link works whichever replica answers; else the
// filesystem store under images.offload.dir (the caller provides a signing
// key when none is configured).
func (c *Config) LinkStore() Offload {
	o := c.Images.Offload
	if o.Store == "s3" && o.S3.Endpoint != "" && o.S3.Bucket != "" {
		return o
	}
	o.Store = "filesystem"
	return o
}
