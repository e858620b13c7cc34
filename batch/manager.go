package batch

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"go.uber.org/zap"

	"nanogate/auth"
	"nanogate/config"
	"nanogate/gateway"
	"nanogate/metrics"
	"nanogate/openai"
)

// Runtime is the configuration in force: the HTTP server's state, read again
// for every line so that a reload applies to running batches.
type Runtime struct {
	Gateway    *gateway.Gateway
	Config     *config.Config
	Format     openai.Format
	Accounting *gateway.Accounting
	// Key is the key named name as requests see it now, nil when unknown:
	// a key made at run time may have a budget of its own, which a line
	// reserves against as a request does (a spent one holds the batch back
	// as its team's does), and may expire or be revoked while its batch
	// runs, which fails the lines left as a request would be refused.
	// Nil: every key is the configuration's.
	Key func(name string) *auth.Caller
}

// Options tune a Manager; zero values take the defaults.
type Options struct {
	// Workers is batch.workers: lines run at once by this replica.
	Workers int
	// Share is batch.max_share.
	Share float64
	// ReclaimAfter is batch.reclaim_after. Held lines are touched every
	// third of it.
	ReclaimAfter time.Duration
	// Poll is how often an idle replica looks for work (250ms).
	Poll time.Duration
	// RetryBackoff are the waits before running a line again after a 5xx
	// the gateway's failover did not fix; its length is the number of
	// retries ({2s, 10s}).
	RetryBackoff []time.Duration
	// BudgetPause is how long a batch waits after its team's budget refused
	// a line before trying again (1m).
	BudgetPause time.Duration
	// LimiterPause is the wait after Redis could not decide (5s).
	LimiterPause time.Duration
	// MaxOverloadWait caps the wait of a line the upstreams were too
	// overloaded to take (router.Overloaded) before it runs again; 0: the
	// delay the upstreams or circuits gave, as is.
	MaxOverloadWait time.Duration
	// ValidatingTimeout fails a batch whose creation was cut short (10m).
	ValidatingTimeout time.Duration
	// SweepEvery is how often expired files and finished batches past
	// batch.retention are removed (1m).
	SweepEvery time.Duration
	// Consumer names this replica in the queue (host-pid-random).
	Consumer string
	Log      *zap.Logger
	Metrics  *metrics.Metrics
	Webhooks *Webhooks
}

func (o Options) withDefaults() Options {
	if o.Workers <= 0 {
		o.Workers = config.DefaultBatchWorkers
	}
	if o.ReclaimAfter <= 0 {
		o.ReclaimAfter = config.DefaultBatchReclaimAfter
	}
	if o.Poll <= 0 {
		o.Poll = 250 * time.Millisecond
	}
	if o.RetryBackoff == nil {
		o.RetryBackoff = []time.Duration{2 * time.Second, 10 * time.Second}
	}
	if o.BudgetPause <= 0 {
		o.BudgetPause = time.Minute
	}
	if o.LimiterPause <= 0 {
		o.LimiterPause = 5 * time.Second
	}
	if o.SweepEvery <= 0 {
		o.SweepEvery = time.Minute
	}
	if o.ValidatingTimeout <= 0 {
		o.ValidatingTimeout = 10 * time.Minute
	}
	if o.Consumer == "" {
		host, _ := os.Hostname()
		var r [4]byte
		rand.Read(r[:])
		o.Consumer = fmt.Sprintf("%s-%d-%s", host, os.Getpid(), hex.EncodeToString(r[:]))
	}
	if o.Log == nil {
		o.Log = zap.NewNop()
	}
	return o
}

// Manager creates batches and runs their lines on this replica.
type Manager struct {
	// The store by role: each part of the Manager uses the one it needs.
	ledger   Ledger
	queue    Queue
	outcomes Outcomes
	files    FileStore
	o        Options
	log      *zap.Logger
	rt       func() Runtime

	keys atomic.Pointer[keyIndex]

	// Lines run under runCtx; Stop cancels it only when its deadline
	// passes with lines still running.
	runCtx    context.Context
	cancelRun context.CancelFunc

	mu         sync.Mutex
	started    bool
	quit       chan struct{}
	dispatched chan struct{} // closed when the dispatcher returned
	kick       chan struct{}
	running    int
	held       map[taskKey]*Task    // lines this replica holds: running or waiting
	waiting    []*waitingTask       // held lines that wait for room or a retry
	paused     map[string]time.Time // batch -> no new lines before
	info       map[string]*Batch    // active batches as last read
	lastRec    map[string]time.Time // batch -> last Reclaim
	empty      map[string]time.Time // batch -> nothing new to take until
	finalizing map[string]bool      // batches this replica is finalizing now

	wg       sync.WaitGroup // the heartbeat
	lines    sync.WaitGroup // running lines
	finishes sync.WaitGroup // finalizations
}

type taskKey struct {
	batch string
	line  int
}

type waitingTask struct {
	t   *Task
	due time.Time
	why string // rate_limit, budget, limiter, retry
}

// New returns a Manager over store and files. Start it to run lines; its
// API (Create, Get, ...) works before.
func New(store Store, files FileStore, o Options) *Manager {
	o = o.withDefaults()
	ctx, cancel := context.WithCancel(context.Background())
	return &Manager{ledger: store, queue: store, outcomes: store, files: files, o: o, log: o.Log, runCtx: ctx, cancelRun: cancel,
		quit: make(chan struct{}), dispatched: make(chan struct{}), kick: make(chan struct{}, 1), held: map[taskKey]*Task{},
		paused: map[string]time.Time{}, info: map[string]*Batch{}, lastRec: map[string]time.Time{},
		empty: map[string]time.Time{}}
}

// Files is the store of input and output files.
func (m *Manager) Files() FileStore { return m.files }

// Consumer is this replica's name in the queue.
func (m *Manager) Consumer() string { return m.o.Consumer }

// Start runs the workers; rt returns the configuration in force.
func (m *Manager) Start(rt func() Runtime) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.started {
		return
	}
	m.started, m.rt = true, rt
	m.wg.Add(2)
	go m.dispatch()
	go m.heartbeat()
	go m.sweeper()
}

// Stop stops taking lines, waits for the running ones until ctx ends (then
// cancels them: they stay queued and run again), and for finalizations and
// webhooks in flight. Lines waiting for room stay queued: another replica
// takes them over after batch.reclaim_after, or this one after a restart.
func (m *Manager) Stop(ctx context.Context) {
	m.mu.Lock()
	if !m.started {
		m.mu.Unlock()
		return
	}
	select {
	case <-m.quit:
		m.mu.Unlock()
		return
	default:
	}
	close(m.quit)
	m.mu.Unlock()
	// The dispatcher starts lines and finalizations: once it is gone, the
	// wait groups only go down.
	select {
	case <-m.dispatched:
	case <-ctx.Done():
		m.cancelRun()
		<-m.dispatched
	}
	done := make(chan struct{})
	go func() {
		m.lines.Wait()
		m.finishes.Wait()
		close(done)
	}()
	select {
	case <-done:
	case <-ctx.Done():
		m.log.Warn("batch: shutdown timeout passed with lines running; they stay queued")
		m.cancelRun()
		<-done
	}
	m.cancelRun()
	m.wg.Wait()
	if m.o.Webhooks != nil {
		m.o.Webhooks.Close(ctx)
	}
}

func (m *Manager) signal() {
	select {
	case m.kick <- struct{}{}:
	default:
	}
}

// CreateParams are the fields of POST /v1/batches.
type CreateParams struct {
	InputFileID      string
	Endpoint         string
	CompletionWindow string
	Metadata         map[string]string
	// OutputExpiresAfter is output_expires_after.seconds, checked by
	// CheckExpiresAfter (0: files.default_ttl).
	OutputExpiresAfter int64
}

// ParamError is a request the client must fix (HTTP 400, or 404 for an
// unknown input file).
type ParamError struct {
	Status  int
	Param   string
	Message string
}

// Error returns the message, as the API answers it.
func (e *ParamError) Error() string { return e.Message }

// Create validates the input file and, if every line is valid, queues its
// lines. A file with invalid lines gives a batch in status failed whose
// errors name the lines (OpenAI's behaviour), not an HTTP error.
func (m *Manager) Create(ctx context.Context, rt Runtime, caller *auth.Caller, p CreateParams) (*Batch, error) {
	switch p.Endpoint {
	case EndpointChat, EndpointImages:
	case "":
		return nil, &ParamError{Status: 400, Param: "endpoint", Message: "'endpoint' is required."}
	default:
		return nil, &ParamError{Status: 400, Param: "endpoint",
			Message: "'endpoint' must be /v1/chat/completions or /v1/images/generations on this gateway."}
	}
	if p.CompletionWindow != "24h" {
		return nil, &ParamError{Status: 400, Param: "completion_window", Message: "'completion_window' must be 24h."}
	}
	owner := OwnerOf(caller.Team, caller.Name)
	if !ValidFileID(p.InputFileID) {
		return nil, &ParamError{Status: 400, Param: "input_file_id", Message: "'input_file_id' is not a file id."}
	}
	f, err := m.files.Stat(ctx, p.InputFileID)
	if errors.Is(err, ErrNotFound) || (err == nil && f.Owner != owner) {
		return nil, &ParamError{Status: 404, Param: "input_file_id", Message: "No such file: " + p.InputFileID}
	}
	if err != nil {
		return nil, err
	}
	if f.Purpose != PurposeBatch {
		return nil, &ParamError{Status: 400, Param: "input_file_id", Message: "The input file's purpose must be batch."}
	}
	rc, _, err := m.files.Open(ctx, p.InputFileID)
	if err != nil {
		return nil, err
	}
	v, err := validate(rc, p.Endpoint, int(rt.Config.Server.MaxBodyBytes), m.checker(rt, caller, p.Endpoint))
	rc.Close()
	if err != nil {
		return nil, fmt.Errorf("batch: reading %s: %w", p.InputFileID, err)
	}
	now := time.Now()
	b := &Batch{ID: NewBatchID(now), Owner: owner, Team: caller.Team, Key: caller.Name, Endpoint: p.Endpoint,
		InputFileID: p.InputFileID, CompletionWindow: p.CompletionWindow, Metadata: p.Metadata, Model: v.model,
		CreatedAt: now.Unix(), ExpiresAt: now.Add(24 * time.Hour).Unix(), OutputExpiresAfter: p.OutputExpiresAfter}
	if v.invalid > 0 {
		b.Status, b.FailedAt, b.Errors = StatusFailed, now.Unix(), v.errors
		if err := m.ledger.Create(ctx, b, nil); err != nil {
			return nil, err
		}
		m.log.Info("batch failed validation", zap.String("batch", b.ID), zap.String("key", b.Key),
			zap.String("team", b.Team), zap.Int("invalid_lines", v.invalid))
		b.Counts = Counts{}
		m.notify(rt, b)
		return b, nil
	}
	b.Status, b.InProgressAt = StatusInProgress, now.Unix()
	if err := m.ledger.Create(ctx, b, v.lines); err != nil {
		return nil, err
	}
	b.Counts = Counts{Total: int64(len(v.lines))}
	m.log.Info("batch created", zap.String("batch", b.ID), zap.String("key", b.Key), zap.String("team", b.Team),
		zap.String("endpoint", b.Endpoint), zap.Int("lines", len(v.lines)))
	m.signal()
	return b, nil
}

// Get returns the caller's batch id, or ErrNotFound.
func (m *Manager) Get(ctx context.Context, caller *auth.Caller, id string) (*Batch, error) {
	if !ValidBatchID(id) {
		return nil, ErrNotFound
	}
	b, err := m.ledger.Get(ctx, id)
	if err != nil {
		return nil, err
	}
	if b.Owner != OwnerOf(caller.Team, caller.Name) {
		return nil, ErrNotFound
	}
	return b, nil
}

// List returns the caller's batches, newest first.
func (m *Manager) List(ctx context.Context, caller *auth.Caller, after string, limit int) ([]*Batch, bool, error) {
	if after != "" && !ValidBatchID(after) {
		return nil, false, &ParamError{Status: 400, Param: "after", Message: "'after' is not a batch id."}
	}
	return m.ledger.List(ctx, OwnerOf(caller.Team, caller.Name), after, limit)
}

// Cancel stops the batch taking new lines; the running ones finish, then the
// batch is finalized with what is done (status cancelled).
func (m *Manager) Cancel(ctx context.Context, caller *auth.Caller, id string) (*Batch, error) {
	if _, err := m.Get(ctx, caller, id); err != nil {
		return nil, err
	}
	var final bool
	b, err := m.ledger.Update(ctx, id, func(b *Batch) bool {
		switch {
		case Final(b.Status):
			final = true
			return false
		case b.Status == StatusCancelling:
			return false
		}
		b.Status, b.CancellingAt, b.Ending = StatusCancelling, time.Now().Unix(), endCancel
		return true
	})
	if err != nil {
		return nil, err
	}
	if final && b.Status != StatusCancelled {
		return b, ErrNotCancellable
	}
	m.log.Info("batch cancelling", zap.String("batch", id), zap.String("key", b.Key), zap.String("team", b.Team))
	m.signal()
	return b, nil
}

// AdminRow is a batch as /admin/batches shows it.
type AdminRow struct {
	ID             string  `json:"id"`
	Team           string  `json:"team"`
	Key            string  `json:"key"`
	Endpoint       string  `json:"endpoint"`
	Model          string  `json:"model,omitempty"`
	Status         string  `json:"status"`
	Total          int64   `json:"total"`
	Completed      int64   `json:"completed"`
	Failed         int64   `json:"failed"`
	Skipped        int64   `json:"skipped,omitempty"`
	Left           int64   `json:"left"`
	LinesPerSecond float64 `json:"lines_per_second"`
	CreatedAt      int64   `json:"created_at"`
	ExpiresAt      int64   `json:"expires_at"`
	FinishedAt     int64   `json:"finished_at,omitempty"`
}

// Admin lists every batch, newest first (at most limit, after the id after).
func (m *Manager) Admin(ctx context.Context, after string, limit int) ([]AdminRow, bool, error) {
	bs, more, err := m.ledger.List(ctx, "", after, limit)
	if err != nil {
		return nil, false, err
	}
	now := time.Now().Unix()
	rows := make([]AdminRow, len(bs))
	for i, b := range bs {
		end := endedAt(b)
		r := AdminRow{ID: b.ID, Team: b.Team, Key: b.Key, Endpoint: b.Endpoint, Model: b.Model, Status: b.Status,
			Total: b.Counts.Total, Completed: b.Counts.Completed, Failed: b.Counts.Failed, Skipped: b.Counts.Skipped,
			Left: b.Counts.Left(), CreatedAt: b.CreatedAt, ExpiresAt: b.ExpiresAt, FinishedAt: end}
		if end == 0 {
			end = now
		}
		if b.InProgressAt > 0 {
			// Times are whole seconds: a batch done within one counts one.
			r.LinesPerSecond = float64(b.Counts.Completed+b.Counts.Failed) / float64(max(end-b.InProgressAt, 1))
		}
		rows[i] = r
	}
	return rows, more, nil
}

// keyIndex finds keys by name in one config.
type keyIndex struct {
	cfg  *config.Config
	keys map[string]keyInfo
}

type keyInfo struct {
	caller *auth.Caller
	// secret keys the webhook signature: the hex SHA-256 of the API key,
	// which the key's owner can compute and the gateway knows even for a
	// key configured as key_sha256.
	secret string
}

// key returns the key name of cfg, as the batch's lines run as it.
func (m *Manager) key(cfg *config.Config, name string) (keyInfo, bool) {
	idx := m.keys.Load()
	if idx == nil || idx.cfg != cfg {
		idx = &keyIndex{cfg: cfg, keys: map[string]keyInfo{}}
		for i := range cfg.Keys {
			k := &cfg.Keys[i]
			secret := strings.ToLower(strings.TrimSpace(k.KeySHA256))
			if k.Key != "" {
				sum := sha256.Sum256([]byte(k.Key))
				secret = hex.EncodeToString(sum[:])
			}
			c := &auth.Caller{Name: k.Name, Team: k.Team, RPM: k.RPM, TPM: k.TPM, OffloadImages: k.OffloadImages,
				WebhookURL: k.WebhookURL}
			if len(k.Models) > 0 {
				c.Models = make(map[string]bool, len(k.Models))
				for _, mdl := range k.Models {
					c.Models[mdl] = true
				}
			}
			idx.keys[k.Name] = keyInfo{caller: c, secret: secret}
		}
		m.keys.Store(idx)
	}
	k, ok := idx.keys[name]
	return k, ok
}
