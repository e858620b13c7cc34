// Command nanogate is an OpenAI-compatible gateway for Google's image model
// Gemini 2.5 Flash Image. main is the only place that knows every package: it
// loads the config, builds the parts and wires them, and handles signals.
package main

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"flag"
	"fmt"
	"io/fs"
	"net"
	"net/http"
	"net/http/pprof"
	"net/netip"
	"os"
	"os/signal"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/redis/go-redis/v9"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"

	"nanogate/accounting"
	"nanogate/batch"
	"nanogate/config"
	"nanogate/gateway"
	"nanogate/images"
	"nanogate/images/signatures"
	"nanogate/internal/logsink"
	"nanogate/internal/memlimit"
	"nanogate/internal/webhook"
	"nanogate/keys"
	"nanogate/metrics"
	"nanogate/openai"
	"nanogate/provider"
	"nanogate/proxy"
	"nanogate/ratelimit"
	"nanogate/router"
	"nanogate/telemetry"
)

func main() {
	os.Exit(run(os.Args[1:]))
}

func run(args []string) int {
	fs := flag.NewFlagSet("nanogate", flag.ContinueOnError)
	path := fs.String("config", "config.yaml", "path of the YAML configuration")
	check := fs.Bool("check", false, "validate the configuration, print every problem and exit (0 valid, 1 invalid)")
	pprofAddr := fs.String("pprof", "", "serve net/http/pprof on this loopback address (e.g. 127.0.0.1:6060); off by default")
	watch := fs.Duration("watch-config", 0, "re-read the config file this often and reload when it changed, as SIGHUP does (0: off)")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	// The watched file's baseline is what was loaded: taken later, a change
	// made as the gateway starts would become the baseline and be missed.
	loaded := fileSum(*path)
	cfg, warnings, err := config.Load(*path)
	if *check {
		for _, w := range warnings {
			fmt.Fprintln(os.Stderr, "warning:", w)
		}
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			return 1
		}
		dataDir, _ := filepath.Abs(cfg.DataDir)
		fmt.Fprintf(os.Stderr, "%s: ok (data_dir %s)\n", *path, dataDir)
		return 0
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	log, logSink, err := newLogger(cfg.Log)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	// Last of all: the lines of the shutdown are written before the
	// process exits, and any logged later are written by their callers.
	defer logSink.Close()
	for _, w := range warnings {
		log.Warn("config", zap.String("warning", w))
	}

	// Before anything allocates much: the collector paces itself by it.
	limit, source := memlimit.Apply(int64(cfg.Server.MemoryLimit))
	log.Info("memory limit", zap.Int64("bytes", limit), zap.String("source", string(source)))

	if *pprofAddr != "" {
		if err := servePprof(*pprofAddr, log); err != nil {
			log.Error("pprof", zap.Error(err))
			return 1
		}
	}
	stopTracing, err := telemetry.Setup(context.Background())
	if err != nil {
		log.Error("tracing: OTLP exporter", zap.Error(err))
		return 1
	}
	defer func() {
		// Spans still batched go out before the process ends.
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		stopTracing(ctx)
	}()
	if telemetry.Enabled() {
		log.Info("tracing: exporting spans over OTLP/HTTP (OTEL_EXPORTER_OTLP_* settings)")
	}
	d, err := newDeps(cfg, log)
	if err != nil {
		log.Error("startup failed", zap.Error(err))
		return 1
	}
	defer d.close()
	built := d.keys.Version()
	st, closeState, skipped, err := buildState(cfg, nil, d)
	if err != nil {
		log.Error("startup failed", zap.Error(err))
		return 1
	}
	d.cfg, d.closeState = cfg, closeState
	if len(skipped) > 0 {
		log.Warn("providers of a kind this build does not speak are disabled", zap.Strings("providers", skipped))
	}
	srv := proxy.New(st, log, d.metrics)
	// Keys and teams changed at run time (here or on another replica)
	// take effect as a reload does: a new state from the configuration and
	// the directory's snapshot.
	d.keys.OnChange(func() { d.rebuild(srv) })
	if d.keys.Version() != built {
		// A change came in while the first state was being built.
		d.rebuild(srv)
	}
	d.watchAlerts()
	// Batch lines run with the configuration in force, reloads included.
	d.batches.Start(func() batch.Runtime { return srv.State().BatchRuntime() })
	ln, err := net.Listen("tcp", cfg.Server.Listen)
	if err != nil {
		log.Error("listen failed", zap.Error(err))
		return 1
	}
	log.Info("nanogate listening", zap.String("addr", ln.Addr().String()),
		zap.Strings("models", st.Gateway.Router().Models()), zap.Int("keys", st.Keys.Len()))

	serveErr := make(chan error, 2)
	go func() { serveErr <- srv.Serve(ln) }()
	if a := cfg.Server.AdminListen; a != "" {
		aln, err := net.Listen("tcp", a)
		if err != nil {
			log.Error("admin listen failed", zap.Error(err))
			return 1
		}
		log.Info("admin and metrics listening apart", zap.String("addr", aln.Addr().String()))
		go func() { serveErr <- srv.ServeAdmin(aln) }()
	}

	sigs := make(chan os.Signal, 2)
	signal.Notify(sigs, syscall.SIGTERM, syscall.SIGINT, syscall.SIGHUP)
	changed := make(chan struct{}, 1)
	if *watch > 0 {
		go watchFile(*path, *watch, loaded, changed)
	}
	for {
		select {
		case <-changed:
			log.Info("config file changed; reloading", zap.String("path", *path))
			reload(*path, srv, d)
		case err := <-serveErr:
			if err != nil {
				log.Error("server stopped", zap.Error(err))
				return 1
			}
			return 0
		case sig := <-sigs:
			if sig == syscall.SIGHUP {
				reload(*path, srv, d)
				continue
			}
			return drain(srv, d, cfg, sigs, log)
		}
	}
}

// drain stops accepting, waits for in-flight requests and batch lines up to
// the shutdown timeout, and exits 0. A second signal exits at once.
func drain(srv *proxy.Server, d *deps, cfg *config.Config, sigs chan os.Signal, log *zap.Logger) int {
	log.Info("draining", zap.Duration("timeout", cfg.Server.ShutdownTimeout))
	ctx, cancel := context.WithTimeout(context.Background(), cfg.Server.ShutdownTimeout)
	defer cancel()
	done := make(chan error, 1)
	go func() {
		// Batch workers stop taking lines at once and finish the running
		// ones, alongside the HTTP requests, before the accounting recorder
		// is closed (d.close).
		stopped := make(chan struct{})
		go func() {
			d.batches.Stop(ctx)
			close(stopped)
		}()
		err := srv.Shutdown(ctx)
		<-stopped
		done <- err
	}()
	for {
		select {
		case err := <-done:
			d.swapMu.Lock()
			d.closeState()
			d.swapMu.Unlock()
			if err != nil && !errors.Is(err, context.DeadlineExceeded) {
				log.Error("shutdown", zap.Error(err))
			}
			if errors.Is(err, context.DeadlineExceeded) {
				log.Warn("shutdown timeout passed with requests in flight")
			}
			log.Info("stopped")
			return 0
		case sig := <-sigs:
			if sig == syscall.SIGHUP {
				continue
			}
			log.Warn("second signal: exiting now")
			return 1
		}
	}
}

// reload builds a new state from the config file and swaps it in; an invalid
// config leaves the old one in force.
func reload(path string, srv *proxy.Server, d *deps) {
	log := d.log
	cfg, warnings, err := config.Load(path)
	if err != nil {
		// Counted before it is logged: whoever reads the line finds it counted.
		d.metrics.Reloads.WithLabelValues("refused").Inc()
		log.Error("reload refused: invalid config; the old one stays in force", zap.Error(err))
		return
	}
	d.swapMu.Lock()
	defer d.swapMu.Unlock()
	for _, w := range warnings {
		log.Warn("config", zap.String("warning", w))
	}
	st, closeNew, skipped, err := buildState(cfg, srv.State(), d)
	if len(skipped) > 0 {
		log.Warn("providers of a kind this build does not speak are disabled", zap.Strings("providers", skipped))
	}
	if err != nil {
		d.metrics.Reloads.WithLabelValues("refused").Inc()
		log.Error("reload refused", zap.Error(err))
		return
	}
	applied, restart := config.Changes(d.cfg, cfg)
	d.metrics.Reloads.WithLabelValues("applied").Inc()
	d.keys.SetSeed(cfg)
	srv.SetState(st)
	// In-flight requests finish on the old providers: closing only drops
	// their idle connections.
	d.closeState()
	d.cfg, d.closeState = cfg, closeNew
	log.Info("config reloaded", zap.Strings("changed", applied), zap.Strings("models", st.Gateway.Router().Models()),
		zap.Int("keys", st.Keys.Len()))
	if len(restart) > 0 {
		log.Warn("config reloaded, but these settings take effect only after a restart", zap.Strings("restart_needed", restart))
	}
}

// watchAlerts checks budgets against their alert thresholds: each alert
// is counted, logged, and posted (signed as batch webhooks are) to the
// team's or key's alert_webhook_url.
func (d *deps) watchAlerts() {
	alerts := prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "nanogate_budget_alerts_total", Help: "Budget alert thresholds reached, once per period, by scope (team, key) and threshold percent.",
	}, []string{"scope", "threshold"})
	d.metrics.Registry.MustRegister(alerts)
	hooks := webhook.New(webhook.Options{Log: d.log, AllowAddrs: testAddrs("NANOGATE_TEST_WEBHOOK_ADDRS")})
	d.alertHooks = hooks
	d.keys.WatchAlerts(keys.AlertInterval, d.store.Read, func(a keys.Alert) {
		alerts.WithLabelValues(a.Scope, strconv.Itoa(a.Threshold)).Inc()
		d.log.Warn("budget alert", zap.String("id", a.ID), zap.String("team", a.Team), zap.String("key", a.Key),
			zap.String("period", a.Period), zap.Int("threshold_percent", a.Threshold),
			zap.ByteString("spent_usd", a.SpentUSD), zap.ByteString("budget_usd", a.BudgetUSD))
		a.Post(hooks)
	})
}

// rebuild puts in force the state in force with the directory's keys and
// teams, after they changed.
func (d *deps) rebuild(srv *proxy.Server) {
	d.swapMu.Lock()
	defer d.swapMu.Unlock()
	cur := srv.State()
	st := keyedState(cur, cur.Gateway.Router(), d.cfg, d.fetches.Load(), d)
	srv.SetState(st)
	d.log.Info("keys and teams changed", zap.Int64("version", d.keys.Version()), zap.Int("keys", st.Keys.Len()))
}

// deps are the parts that live as long as the process, across reloads:
// logger, metrics and the stores holding state.
type deps struct {
	log      *zap.Logger
	metrics  *metrics.Metrics
	offload  *images.Offloader
	store    accounting.Store
	recorder *accounting.Recorder
	redis    []redis.UniversalClient
	limiter  ratelimit.Limiter
	batches  *batch.Manager
	bstore   batch.Store
	// sigs keeps thought signatures across reloads: answers given before a
	// reload are sent back after it.
	sigs signatures.Store
	// fetches is the image fetching of the state in force, for its gauge.
	fetches atomic.Pointer[provider.ImageFetches]
	// keys are the keys and teams made at run time, in kstore.
	keys   *keys.Directory
	kstore keys.Store
	// alertHooks posts budget alerts; nil until they are watched.
	alertHooks *webhook.Sender
	// swapMu orders the state swaps of reloads and of key changes; cfg is
	// the configuration file in force and closeState releases the state
	// in force.
	swapMu     sync.Mutex
	cfg        *config.Config
	closeState func()
}

// registerGauges exports what the process holds now: whether Redis answers
// (absent without Redis), the usage spool's backlog and the image bytes being
// fetched.
func (d *deps) registerGauges(cfg *config.Config) {
	reg := d.metrics.Registry
	if cfg.Redis != nil {
		reg.MustRegister(prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name: "nanogate_redis_up", Help: "1 while Redis answers the limiter, the budget checks and the usage records; 0 during an outage.",
		}, func() float64 {
			down := d.recorder.Stats().StoreDown
			if l, ok := d.limiter.(interface{ Degraded() bool }); ok && l.Degraded() {
				down = true
			}
			if g, ok := d.store.(*accounting.Guarded); ok && g.Down() {
				down = true
			}
			if down {
				return 0
			}
			return 1
		}))
	}
	reg.MustRegister(prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Name: "nanogate_usage_spool_backlog", Help: "Usage records waiting in the spool for Redis.",
	}, func() float64 { return float64(d.recorder.Stats().Backlog) }))
	reg.MustRegister(prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Name: "nanogate_image_fetch_bytes_in_flight", Help: "Bytes of image URLs being fetched now (images.fetch.max_bytes_in_flight bounds them).",
	}, func() float64 {
		if f := d.fetches.Load(); f != nil {
			return float64(f.InFlight())
		}
		return 0
	}))
}

func newDeps(cfg *config.Config, log *zap.Logger) (*deps, error) {
	d := &deps{log: log, metrics: metrics.New()}
	// go-redis would print every failed dial of an outage on its own.
	redis.SetLogger(ratelimit.RedisLogger(log))
	d.limiter = ratelimit.New(cfg, log)
	if cfg.Redis != nil {
		// TPM corrections go to Redis summed every 50 ms, not one script
		// call per request.
		d.limiter = ratelimit.NewCoalescing(d.limiter, 50*time.Millisecond)
	}
	if cfg.Redis != nil {
		// Accounting scripts are idempotent by record id, so this client may
		// retry (the limiter's must not); it keeps the configured timeouts,
		// and context deadlines bound its socket I/O.
		rc := cfg.Redis
		c := redis.NewUniversalClient(&redis.UniversalOptions{
			Addrs: rc.Addrs, Password: rc.Password, DB: rc.DB,
			DialTimeout: rc.DialTimeout, ReadTimeout: rc.ReadTimeout, WriteTimeout: rc.WriteTimeout,
			ContextTimeoutEnabled: true,
		})
		d.redis = append(d.redis, c)
		// A budget check never waits on a dead Redis: bounded, then left
		// alone for a while and answered locally (on_outage open) or
		// refused at once (closed).
		d.store = accounting.NewGuarded(accounting.NewRedis(c, cfg.Redis, accounting.Options{}), accounting.GuardOptions{
			Timeout: max(rc.ReadTimeout, 2*rc.DecisionTimeout),
			Local:   rc.OnOutage != "closed",
			OnLocal: d.metrics.BudgetLocal.Inc,
		})
		d.sigs = signatures.NewRedis(c, cfg.Redis.KeyPrefix)
		d.kstore = keys.NewRedis(c, cfg.Redis.KeyPrefix)
	} else {
		d.sigs = signatures.NewMemory(0)
		st, err := accounting.OpenMemory(filepath.Join(cfg.DataDir, "usage.jsonl"), accounting.Options{}, log)
		if err != nil {
			return nil, fmt.Errorf("usage records: %w", err)
		}
		d.store = st
		if d.kstore, err = keys.OpenFile(filepath.Join(cfg.DataDir, "keys.jsonl"), log); err != nil {
			return nil, fmt.Errorf("keys: %w", err)
		}
	}
	d.keys = keys.Open(d.kstore, cfg, keys.Options{Log: log})
	d.recorder = accounting.NewRecorder(d.store, accounting.RecorderOptions{Log: log,
		SpoolPath: filepath.Join(cfg.DataDir, "usage-spool.jsonl")})
	oc := cfg.Images.Offload
	if !wantsOffload(cfg) {
		// The Images API serves response_format url (and batches their
		// links) even with chat offload off: from the s3 store when one is
		// configured, else the filesystem store, which without a configured
		// signing key signs with one of its own, kept beside the images.
		oc = cfg.LinkStore()
		if oc.Store == "filesystem" && len(oc.SigningKey) < images.MinSigningKey {
			key, err := localSigningKey(oc.Dir)
			if err != nil {
				return nil, fmt.Errorf("images: %w", err)
			}
			oc.SigningKey = key
		}
	}
	off, err := images.New(oc, cfg.Server.PublicURL, log)
	if err != nil {
		return nil, fmt.Errorf("images.offload: %w", err)
	}
	d.offload = off
	d.registerGauges(cfg)
	if err := d.newBatches(cfg); err != nil {
		return nil, err
	}
	return d, nil
}

// newBatches builds the batch manager. With Redis, files and batches are
// kept there, so that every replica (each with its own data/) reads them;
// without, in "files" and "batches" directories beside the image store's.
func (d *deps) newBatches(cfg *config.Config) error {
	var files batch.FileStore
	if cfg.Redis != nil && len(d.redis) > 0 {
		files = batch.NewRedisFiles(d.redis[0], cfg.Redis.KeyPrefix)
		d.bstore = batch.NewRedis(d.redis[0], cfg.Redis.KeyPrefix)
	} else {
		root := cfg.DataDir
		fs, err := batch.NewFS(filepath.Join(root, "files"))
		if err != nil {
			return err
		}
		files = fs
		if d.bstore, err = batch.OpenLocal(filepath.Join(root, "batches"), d.log); err != nil {
			return err
		}
	}
	wo := batch.WebhookOptions{Log: d.log, AllowAddrs: testAddrs("NANOGATE_TEST_WEBHOOK_ADDRS")}
	d.batches = batch.New(d.bstore, files, batch.Options{
		Workers: cfg.Batch.Workers, Share: cfg.Batch.MaxShare, ReclaimAfter: cfg.Batch.ReclaimAfter,
		Log: d.log, Metrics: d.metrics, Webhooks: batch.NewWebhooks(wo),
	})
	return nil
}

// testAddrs reads the ip:port pairs of an environment variable, for tests
// only: their servers listen on loopback, which the gateway may not reach
// otherwise. Configurations never set it.
func testAddrs(env string) []netip.AddrPort {
	var out []netip.AddrPort
	for _, a := range strings.Split(os.Getenv(env), ",") {
		if ap, err := netip.ParseAddrPort(strings.TrimSpace(a)); err == nil {
			out = append(out, ap)
		}
	}
	return out
}

// signatureTTL is how long thought signatures are kept: as long as image
// links live when images become links, else a day.
func signatureTTL(cfg *config.Config) time.Duration {
	if wantsOffload(cfg) && cfg.Images.Offload.TTL > 0 {
		return cfg.Images.Offload.TTL
	}
	return 24 * time.Hour
}

// wantsOffload: the store is set up when offload is on globally or for a key,
// and its settings are usable.
func wantsOffload(cfg *config.Config) bool {
	if cfg.Images.Offload.Enabled {
		return true
	}
	for _, k := range cfg.Keys {
		if k.OffloadImages != nil && *k.OffloadImages {
			return cfg.Images.Offload.Store == "s3" || len(cfg.Images.Offload.SigningKey) >= images.MinSigningKey
		}
	}
	return false
}

// close flushes usage records (and the spool) and releases the stores.
// localSigningKey reads, or makes once, the random key that signs image links
// when none is configured, so that links survive a restart.
func localSigningKey(dir string) (string, error) {
	path := filepath.Join(dir, ".signing-key")
	if b, err := os.ReadFile(path); err == nil && len(b) >= images.MinSigningKey {
		return string(b), nil
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return "", err
	}
	var raw [32]byte
	if _, err := rand.Read(raw[:]); err != nil {
		return "", err
	}
	key := hex.EncodeToString(raw[:])
	// Replicas sharing the directory (a ReadWriteMany volume) may start at
	// once: the key is written aside and linked into place, which fails
	// for all but the first, and the others read the first one's key.
	tmp, err := os.CreateTemp(dir, ".signing-key-*")
	if err != nil {
		return "", err
	}
	defer os.Remove(tmp.Name())
	if _, err := tmp.WriteString(key); err != nil {
		tmp.Close()
		return "", err
	}
	if err := tmp.Close(); err != nil {
		return "", err
	}
	if err := os.Link(tmp.Name(), path); err != nil {
		if !errors.Is(err, fs.ErrExist) {
			return "", err
		}
		if b, err := os.ReadFile(path); err == nil && len(b) >= images.MinSigningKey {
			return string(b), nil
		}
		// A key too short to use (written by hand, or cut short): replaced.
		if err := os.Rename(tmp.Name(), path); err != nil {
			return "", err
		}
	}
	return key, nil
}

func (d *deps) close() {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	// Lines that finish record usage: the recorder closes after them.
	d.batches.Stop(ctx)
	d.bstore.Close()
	d.keys.Close()
	d.kstore.Close()
	if d.alertHooks != nil {
		d.alertHooks.Close(ctx)
	}
	if err := d.recorder.Close(ctx); err != nil {
		d.log.Error("flushing usage records", zap.Error(err))
	}
	d.store.Close()
	d.limiter.Close()
	for _, c := range d.redis {
		c.Close()
	}
	if d.offload != nil {
		d.offload.Close()
	}
}

// buildState makes providers, router, gateway and key table from cfg. Provider
// health carries over from prev (a reload).
func buildState(cfg *config.Config, prev *proxy.State, d *deps) (*proxy.State, func(), []string, error) {
	log, m := d.log, d.metrics
	var skipped []string
	// One for every provider, so that max_bytes_in_flight holds for the
	// process (until a reload, when requests in flight keep the old one).
	fetches := provider.NewImageFetches(provider.FetchOptions{
		Timeout: cfg.Images.Fetch.Timeout, MaxPerRequest: cfg.Images.Fetch.MaxPerRequest,
		MaxBytesInFlight: cfg.Images.Fetch.MaxBytesInFlight, RequestBytes: cfg.Server.MaxBodyBytes,
		AllowAddrs: testAddrs("NANOGATE_TEST_FETCH_ADDRS"),
	})
	d.fetches.Store(fetches)
	popts := provider.Options{TokensPerImage: int64(cfg.Billing.TokensPerImage), Images: fetches}
	var entries []router.Entry
	var provs []provider.Provider
	closeAll := func() {
		for _, p := range provs {
			p.Close()
		}
		fetches.Close()
	}
	for _, pc := range cfg.Providers {
		if pc.Disabled {
			continue
		}
		p, err := provider.New(pc, popts)
		if errors.Is(err, provider.ErrUnknownKind) {
			// Validation admits only known kinds; one this build cannot speak
			// yet is left out rather than failing the whole gateway.
			skipped = append(skipped, pc.Name)
			continue
		}
		if err != nil {
			closeAll()
			return nil, nil, nil, err
		}
		provs = append(provs, p)
		prices := make(map[string]config.Price, len(pc.Models))
		for public := range pc.Models {
			prices[public] = cfg.PriceOf(&pc, public)
		}
		entries = append(entries, router.Entry{Provider: p, Config: pc, Prices: prices})
	}
	format, _ := openai.ParseFormat(cfg.Images.Format)
	var prevRouter *router.Router
	if prev != nil {
		prevRouter = prev.Gateway.Router()
	}
	base := &proxy.State{
		Limiter:   d.limiter,
		Format:    format,
		Offload:   d.offload,
		Batches:   d.batches,
		Directory: d.keys,
	}
	rt := router.New(entries, cfg.Routing, prevRouter, log, m)
	return keyedState(base, rt, cfg, fetches, d), closeAll, skipped, nil
}

// keyedState is base with the keys and teams of the configuration file
// and of the directory: the key table, the teams' limits and budgets, and
// a gateway over rt. A change of keys or teams builds only this, so
// providers keep their connections and circuits.
func keyedState(base *proxy.State, rt *router.Router, file *config.Config, fetches *provider.ImageFetches, d *deps) *proxy.State {
	log, m := d.log, d.metrics
	// Teams made at run time join the configuration's, for limits, budgets
	// and usage reports.
	cfg := d.keys.Effective(file)
	acct := &gateway.Accounting{
		Store: d.store, Recorder: d.recorder, Pricer: accounting.NewPricer(cfg),
		Teams:    map[string]*config.Team{},
		FailOpen: cfg.Redis == nil || cfg.Redis.OnOutage != "closed",
	}
	for i := range cfg.Teams {
		acct.Teams[cfg.Teams[i].Name] = &cfg.Teams[i]
	}
	st := *base
	st.Config, st.Keys, st.Accounting = cfg, d.keys.Table(file), acct
	st.Gateway = gateway.New(rt, gateway.Options{
		TokensPerImage: cfg.Billing.TokensPerImage,
		Offload:        d.offload,
		OffloadDefault: cfg.Images.Offload.Enabled,
		Log:            log,
		Accounting:     acct,
		Limiter:        d.limiter,
		UsageClamped: func(provider, field string) {
			m.UsageClamped.WithLabelValues(provider, field).Inc()
		},
		ModelOf:      cfg.ModelOf,
		Catalog:      cfg.Models(),
		Fetches:      fetches,
		Signatures:   d.sigs,
		SignatureTTL: signatureTTL(cfg),
	})
	return &st
}

// newLogger builds the logger on a logsink.Sink around stderr, so that the
// request lines of concurrent requests share writes instead of costing a
// write(2) each. The caller closes the sink last: it writes what is pending
// and lets lines logged after it through at once.
func newLogger(lc config.Log) (*zap.Logger, *logsink.Sink, error) {
	var level zapcore.Level
	if err := level.UnmarshalText([]byte(lc.Level)); err != nil {
		return nil, nil, fmt.Errorf("log.level: %w", err)
	}
	zc := zap.NewProductionConfig()
	if lc.Format == "console" {
		zc = zap.NewDevelopmentConfig()
	}
	zc.EncoderConfig.TimeKey = "ts"
	zc.EncoderConfig.EncodeTime = zapcore.ISO8601TimeEncoder
	enc := zapcore.NewJSONEncoder(zc.EncoderConfig)
	if lc.Format == "console" {
		enc = zapcore.NewConsoleEncoder(zc.EncoderConfig)
	}
	sink := logsink.New(os.Stderr, 0)
	// Built from the core rather than zc.Build: no sampling, no stack
	// traces, and no caller (the caller of a request line is always the
	// same function: no runtime.Callers walk per line). zap's own errors go
	// to the same sink, in order with the lines.
	opts := []zap.Option{zap.ErrorOutput(sink)}
	if zc.Development {
		opts = append(opts, zap.Development())
	}
	return zap.New(zapcore.NewCore(enc, sink, level), opts...), sink, nil
}

// servePprof exposes the profiler on a loopback address only: profiles show
// request internals and must not be reachable from outside the host.
func servePprof(addr string, log *zap.Logger) error {
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		return err
	}
	if ip := net.ParseIP(host); host != "localhost" && (ip == nil || !ip.IsLoopback()) {
		return fmt.Errorf("-pprof %s: only loopback addresses are allowed", addr)
	}
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return err
	}
	mux := http.NewServeMux()
	mux.HandleFunc("/debug/pprof/", pprof.Index)
	mux.HandleFunc("/debug/pprof/profile", pprof.Profile)
	mux.HandleFunc("/debug/pprof/symbol", pprof.Symbol)
	mux.HandleFunc("/debug/pprof/trace", pprof.Trace)
	log.Info("pprof listening", zap.String("addr", ln.Addr().String()))
	go http.Serve(ln, mux)
	return nil
}

// watchFile signals changed whenever the content of the file at path
// differs from last (the sum of the content loaded, then of the last
// reload), checking every interval: a mounted ConfigMap
// is replaced behind the gateway's back, without a signal. It runs for the
// life of the process.
func watchFile(path string, interval time.Duration, last [32]byte, changed chan<- struct{}) {
	for range time.Tick(interval) {
		if cur := fileSum(path); cur != last && cur != ([32]byte{}) {
			last = cur
			select {
			case changed <- struct{}{}:
			default:
			}
		}
	}
}

// fileSum is the SHA-256 of the file at path, zero when it cannot be read.
func fileSum(path string) [32]byte {
	b, err := os.ReadFile(path)
	if err != nil {
		return [32]byte{}
	}
	return sha256.Sum256(b)
}
