package batch

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"go.uber.org/zap"

	"nanogate/accounting"
	"nanogate/auth"
	"nanogate/config"
	"nanogate/gateway"
	"nanogate/images"
	"nanogate/internal/fakeup"
	"nanogate/internal/poll"
	"nanogate/internal/redistest"
	"nanogate/metrics"
	"nanogate/provider"
	"nanogate/ratelimit"
	"nanogate/router"
)

const testModel = "gemini-2.5-flash-image-preview"

// harness is a Manager in front of a real gateway (router, limiter,
// accounting, image store) and a fake reseller.
type harness struct {
	m     *Manager
	up    *fakeup.Server
	rt    Runtime
	store Store
	acct  *accounting.Memory
	mt    *metrics.Metrics
}

type harnessOpts struct {
	keyYAML  string // lines added to key ci
	teamYAML string // lines added to team design
	topYAML  string // top-level lines (a files block)
	store    Store
	opts     Options
	// key is Runtime.Key: a key as requests see it now.
	key func(name string) *auth.Caller
}

func newHarness(t *testing.T, ho harnessOpts) *harness {
	t.Helper()
	up, err := fakeup.Start(fakeup.Options{Kind: fakeup.OpenAI})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(up.Close)
	yaml := fmt.Sprintf(`
providers:
  - name: cheap
    kind: openai
    base_url: %s
    api_key: test
    models: { %s: upstream-a }
    price: { per_image: 0.035 }
    timeout: 5s
routing: { max_attempts: 1, health: { failure_threshold: 1000 } }
batch: { max_share: 0.5 }
%s
teams:
  - name: design
%s
  - name: ops
keys:
  - name: ci
    team: design
    key: sk-test-ci-0123456789
%s
  - name: ops
    team: ops
    key: sk-test-ops-0123456789
`, up.URL(), testModel, ho.topYAML, ho.teamYAML, ho.keyYAML)
	cfg, _, err := config.Parse([]byte(yaml), "test.yaml", func(string) (string, bool) { return "", false })
	if err != nil {
		t.Fatal(err)
	}
	p, err := provider.NewOpenAI(cfg.Providers[0], provider.Options{TokensPerImage: 1290})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(p.Close)
	mt := metrics.New()
	r := router.New([]router.Entry{{Provider: p, Config: cfg.Providers[0]}}, cfg.Routing, nil, zap.NewNop(), mt)
	st, _ := accounting.OpenMemory("", accounting.Options{}, nil)
	rec := accounting.NewRecorder(st, accounting.RecorderOptions{SpoolPath: t.TempDir() + "/spool.jsonl"})
	t.Cleanup(func() { rec.Close(context.Background()) })
	acct := &gateway.Accounting{Store: st, Recorder: rec, Pricer: accounting.NewPricer(cfg),
		Teams: map[string]*config.Team{"design": &cfg.Teams[0], "ops": &cfg.Teams[1]}, FailOpen: true}
	off, err := images.New(config.Offload{Store: "filesystem", Dir: t.TempDir(), TTL: time.Hour,
		SigningKey: strings.Repeat("k", 32)}, "http://127.0.0.1:1", nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { off.Close() })
	gw := gateway.New(r, gateway.Options{TokensPerImage: 1290, Offload: off, Accounting: acct, Limiter: ratelimit.NewMemory()})
	rt := Runtime{Gateway: gw, Config: cfg, Accounting: acct, Key: ho.key}
	store := ho.store
	if store == nil {
		if store, err = OpenLocal(t.TempDir(), nil); err != nil {
			t.Fatal(err)
		}
	}
	files, err := NewFS(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	o := ho.opts
	o.Metrics = mt
	if o.Poll == 0 {
		o.Poll = 20 * time.Millisecond
	}
	if o.MaxOverloadWait == 0 {
		o.MaxOverloadWait = 20 * time.Millisecond
	}
	if o.RetryBackoff == nil {
		o.RetryBackoff = []time.Duration{20 * time.Millisecond, 20 * time.Millisecond}
	}
	m := New(store, files, o)
	m.Start(func() Runtime { return rt })
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		m.Stop(ctx)
	})
	return &harness{m: m, up: up, rt: rt, store: store, acct: st, mt: mt}
}

func (h *harness) caller() *auth.Caller { return h.callerOf("ci") }

func (h *harness) callerOf(name string) *auth.Caller {
	k, _ := h.m.key(h.rt.Config, name)
	return k.caller
}

// create uploads content and creates a batch on it, as key ci.
func (h *harness) create(t *testing.T, endpoint string, content []byte) *Batch {
	return h.createAs(t, h.caller(), endpoint, content)
}

func (h *harness) createAs(t *testing.T, c *auth.Caller, endpoint string, content []byte) *Batch {
	t.Helper()
	ctx := context.Background()
	w, err := h.m.files.Create(ctx, File{ID: NewFileID(time.Now()), Owner: OwnerOf(c.Team, c.Name), Purpose: PurposeBatch,
		Filename: "in.jsonl"}, MaxFileBytes, Quota{})
	if err != nil {
		t.Fatal(err)
	}
	w.Write(content)
	f, err := w.Commit()
	if err != nil {
		t.Fatal(err)
	}
	b, err := h.m.Create(ctx, h.rt, c, CreateParams{InputFileID: f.ID, Endpoint: endpoint, CompletionWindow: "24h"})
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func (h *harness) wait(t *testing.T, id, status string, d time.Duration) *Batch {
	t.Helper()
	return h.waitAs(t, h.caller(), id, "status "+status, d, func(b *Batch) bool { return b.Status == status })
}

// waitAs polls batch id as c until cond holds, and returns it.
func (h *harness) waitAs(t *testing.T, c *auth.Caller, id, what string, d time.Duration, cond func(*Batch) bool) *Batch {
	t.Helper()
	var b *Batch
	ok := poll.Within(d, func() bool {
		var err error
		if b, err = h.m.Get(context.Background(), c, id); err != nil {
			t.Fatal(err)
		}
		return cond(b)
	})
	if !ok {
		t.Fatalf("batch is %s %+v after %v, want %s", b.Status, b.Counts, d, what)
	}
	return b
}

// waits returns how many times lines were held back for reason why, as
// nanogate_batch_waits_total counts them.
func (h *harness) waits(t *testing.T, why string) float64 {
	t.Helper()
	fams, err := h.mt.Registry.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range fams {
		if f.GetName() != "nanogate_batch_waits_total" {
			continue
		}
		for _, m := range f.GetMetric() {
			for _, l := range m.GetLabel() {
				if l.GetName() == "reason" && l.GetValue() == why {
					return m.GetCounter().GetValue()
				}
			}
		}
	}
	return 0
}

func (h *harness) lines(t *testing.T, fileID string) []string {
	t.Helper()
	if fileID == "" {
		return nil
	}
	rc, _, err := h.m.files.Open(context.Background(), fileID)
	if err != nil {
		t.Fatal(err)
	}
	defer rc.Close()
	b, _ := io.ReadAll(rc)
	return strings.Split(strings.TrimSuffix(string(b), "\n"), "\n")
}

func chatInput(n int) []byte {
	var b bytes.Buffer
	for i := range n {
		fmt.Fprintf(&b, `{"custom_id":"r%d","method":"POST","url":"/v1/chat/completions","body":{"model":%q,"messages":[{"role":"user","content":"hi %d"}]}}`+"\n", i, testModel, i)
	}
	return b.Bytes()
}

func TestServerErrorsAreRetriedThenFinal(t *testing.T) {
	h := newHarness(t, harnessOpts{})
	// Two answers that may have made an image (200s that are not JSON),
	// then success: the line is retried twice and completes.
	h.up.SetFault(fakeup.Fault{Garbage: true, Times: 2})
	b := h.create(t, EndpointChat, chatInput(1))
	b = h.wait(t, b.ID, StatusCompleted, 5*time.Second)
	if b.Counts.Completed != 1 || h.up.Requests() != 3 {
		t.Fatalf("counts %+v after %d upstream requests, want 1 completed after 3", b.Counts, h.up.Requests())
	}
	// Always so: final after the retries, in the error file with the 502
	// the HTTP API would have answered.
	h.up.Reset()
	h.up.SetFault(fakeup.Fault{Garbage: true})
	b = h.create(t, EndpointChat, chatInput(1))
	b = h.wait(t, b.ID, StatusCompleted, 5*time.Second)
	if b.Counts.Failed != 1 || b.OutputFileID != "" || h.up.Requests() != 3 {
		t.Fatalf("%+v after %d upstream requests", b, h.up.Requests())
	}
	errs := h.lines(t, b.ErrorFileID)
	if len(errs) != 1 || !strings.Contains(errs[0], `"status_code":502`) || !strings.Contains(errs[0], `"code":"upstream_error"`) ||
		!strings.Contains(errs[0], `"custom_id":"r0"`) {
		t.Fatalf("error file %q", errs)
	}
}

// TestOverloadedLinesWaitUntilTheUpstreamRecovers: answers that cannot have
// made an image (503 overloaded, 429 with a retry delay) never fail a line:
// it waits and runs again, however many times, and completes once the
// upstream recovers.
func TestOverloadedLinesWaitUntilTheUpstreamRecovers(t *testing.T) {
	for _, status := range []int{503, 429} {
		t.Run(strconv.Itoa(status), func(t *testing.T) {
			h := newHarness(t, harnessOpts{})
			h.up.SetFault(fakeup.Fault{Status: status, Header: map[string]string{"retry-after-ms": "10"}})
			b := h.create(t, EndpointChat, chatInput(2))
			poll.Until(t, 5*time.Second, "the lines to try 6 times in all", func() bool { return h.up.Requests() >= 6 })
			got, err := h.m.Get(context.Background(), h.caller(), b.ID)
			if err != nil {
				t.Fatal(err)
			}
			if got.Counts.Failed != 0 || Final(got.Status) {
				t.Fatalf("an overloaded line failed: %+v", got)
			}
			h.up.ClearFault()
			b = h.wait(t, b.ID, StatusCompleted, 5*time.Second)
			if b.Counts.Completed != 2 || b.Counts.Failed != 0 {
				t.Fatalf("counts %+v", b.Counts)
			}
		})
	}
}

func TestClientErrorsAreFinalAtOnce(t *testing.T) {
	h := newHarness(t, harnessOpts{})
	h.up.SetFault(fakeup.Fault{Status: 400})
	b := h.create(t, EndpointChat, chatInput(2))
	b = h.wait(t, b.ID, StatusCompleted, 5*time.Second)
	if b.Counts.Failed != 2 || h.up.Requests() != 2 {
		t.Fatalf("counts %+v after %d upstream requests, want 2 failed at once", b.Counts, h.up.Requests())
	}
	for _, l := range h.lines(t, b.ErrorFileID) {
		if !strings.Contains(l, `"status_code":400`) {
			t.Errorf("error line %s", l)
		}
	}
}

// TestLineAboveTheBatchShareFails: a line that can never fit the batch's
// share of a TPM limit fails with rate_limit_exceeded instead of waiting
// forever.
func TestLineAboveTheBatchShareFails(t *testing.T) {
	h := newHarness(t, harnessOpts{keyYAML: "    tpm: 3000\n"}) // batch share 1500 < one image's 1546
	b := h.create(t, EndpointChat, chatInput(1))
	b = h.wait(t, b.ID, StatusCompleted, 5*time.Second)
	errs := h.lines(t, b.ErrorFileID)
	if b.Counts.Failed != 1 || len(errs) != 1 || !strings.Contains(errs[0], `"status_code":429`) ||
		!strings.Contains(errs[0], "batch share") || h.up.Requests() != 0 {
		t.Fatalf("%+v: %q", b.Counts, errs)
	}
}

// TestBudgetPausesThenExpiry: a spent budget holds the batch's lines (they
// wait, they do not fail); at expiry they fail with insufficient_quota.
func TestBudgetPausesThenExpiry(t *testing.T) {
	h := newHarness(t, harnessOpts{teamYAML: "    budget: { usd: 0.000001, period: total }\n",
		opts: Options{BudgetPause: 30 * time.Millisecond}})
	b := h.create(t, EndpointChat, chatInput(3))
	poll.Until(t, 5*time.Second, "lines held back by the budget three times", func() bool { return h.waits(t, "budget") >= 3 })
	got, _ := h.m.Get(context.Background(), h.caller(), b.ID)
	if got.Status != StatusInProgress || got.Counts.Left() != 3 || h.up.Requests() != 0 {
		t.Fatalf("with the budget spent: %+v", got)
	}
	// Its window passes.
	h.store.Update(context.Background(), b.ID, func(x *Batch) bool { x.ExpiresAt = time.Now().Unix() - 1; return true })
	got = h.wait(t, b.ID, StatusExpired, 5*time.Second)
	errs := h.lines(t, got.ErrorFileID)
	if got.Counts.Failed != 3 || got.ExpiredAt == 0 || len(errs) != 3 {
		t.Fatalf("expired: %+v %q", got, errs)
	}
	quota := 0
	for _, l := range errs {
		if !strings.Contains(l, `"response":null`) {
			t.Errorf("line %s", l)
		}
		if strings.Contains(l, `"code":"insufficient_quota"`) {
			quota++
		}
	}
	if quota == 0 {
		t.Errorf("no line says the budget held it back: %q", errs)
	}
}

// TestKeyBudgetPausesLines: a line reserves against its key's own budget as
// a request does: spent, it holds the batch back like a team's, and
// nothing reaches the upstream.
func TestKeyBudgetPausesLines(t *testing.T) {
	var asked atomic.Int64
	h := newHarness(t, harnessOpts{opts: Options{BudgetPause: 30 * time.Millisecond},
		key: func(name string) *auth.Caller {
			if name != "ci" {
				t.Errorf("the key %q was asked", name)
			}
			asked.Add(1)
			return &auth.Caller{Name: name, Budget: &config.Budget{USD: 0.000001, Period: "total"}}
		}})
	b := h.create(t, EndpointChat, chatInput(2))
	poll.Until(t, 5*time.Second, "lines held back three times", func() bool { return h.waits(t, "budget") >= 3 })
	got, _ := h.m.Get(context.Background(), h.caller(), b.ID)
	if got.Status != StatusInProgress || got.Counts.Left() != 2 || h.up.Requests() != 0 || asked.Load() < 3 {
		t.Fatalf("with the key's budget spent: %+v, upstream %d, asked %d", got, h.up.Requests(), asked.Load())
	}
}

// TestAnExpiredKeysLinesFail: a key that expired (or was revoked) while
// its batch runs is refused for the lines left, as its requests are,
// before the state that lists it is rebuilt; nothing reaches the upstream.
func TestAnExpiredKeysLinesFail(t *testing.T) {
	for _, live := range []auth.Caller{{Expires: time.Now().Add(-time.Second)}, {Revoked: true}} {
		h := newHarness(t, harnessOpts{key: func(name string) *auth.Caller { c := live; c.Name = name; return &c }})
		b := h.create(t, EndpointChat, chatInput(3))
		got := h.wait(t, b.ID, StatusCompleted, 5*time.Second)
		if got.Counts.Failed != 3 || h.up.Requests() != 0 {
			t.Fatalf("%+v: batch %+v, upstream %d", live, got.Counts, h.up.Requests())
		}
		if errs := strings.Join(h.lines(t, got.ErrorFileID), "\n"); !strings.Contains(errs, "invalid_api_key") ||
			!strings.Contains(errs, "revoked or has expired") {
			t.Fatalf("error file: %s", errs)
		}
	}
}

// TestAPausedTeamDoesNotHoldBackOthers: lines of a team whose budget is
// spent wait without keeping another team's batch from the workers.
func TestAPausedTeamDoesNotHoldBackOthers(t *testing.T) {
	h := newHarness(t, harnessOpts{teamYAML: "    budget: { usd: 0.000001, period: total }\n",
		opts: Options{Workers: 2, BudgetPause: time.Hour}})
	paused := h.create(t, EndpointChat, chatInput(10))
	poll.Until(t, 5*time.Second, "a line held back by the budget", func() bool { return h.waits(t, "budget") >= 1 })
	other := h.createAs(t, h.callerOf("ops"), EndpointChat, chatInput(5))
	h.waitAs(t, h.callerOf("ops"), other.ID, "status completed", 5*time.Second,
		func(b *Batch) bool { return b.Status == StatusCompleted })
	if b, _ := h.m.Get(context.Background(), h.caller(), paused.ID); b.Status != StatusInProgress || b.Counts.Left() != 10 {
		t.Fatalf("paused batch %+v", b)
	}
}

// TestExpiryKeepsWhatIsDone: an expired batch's output holds the lines that
// ran; the others are in the error file as batch_expired.
func TestExpiryKeepsWhatIsDone(t *testing.T) {
	h := newHarness(t, harnessOpts{opts: Options{Workers: 1}})
	h.up.SetLatency(150 * time.Millisecond)
	b := h.create(t, EndpointChat, chatInput(10))
	h.waitAs(t, h.caller(), b.ID, "two completed lines", 10*time.Second,
		func(b *Batch) bool { return b.Counts.Completed >= 2 })
	h.store.Update(context.Background(), b.ID, func(x *Batch) bool { x.ExpiresAt = time.Now().Unix() - 1; return true })
	got := h.wait(t, b.ID, StatusExpired, 5*time.Second)
	if got.Counts.Completed < 2 || got.Counts.Completed+got.Counts.Failed != 10 {
		t.Fatalf("counts %+v", got.Counts)
	}
	if n := len(h.lines(t, got.OutputFileID)); int64(n) != got.Counts.Completed {
		t.Errorf("output lines %d, completed %d", n, got.Counts.Completed)
	}
	for _, l := range h.lines(t, got.ErrorFileID) {
		if !strings.Contains(l, `"code":"batch_expired"`) {
			t.Errorf("error line %s", l)
		}
	}
}

// TestReclaimedLineWithAResultIsNotRunAgain: lines of a replica that died
// are reclaimed and run; one whose result the dead replica stored before it
// died (without the acknowledgement) is acknowledged and not run again.
func TestReclaimedLineWithAResultIsNotRunAgain(t *testing.T) {
	srv := redistest.Start(t)
	c := redis.NewClient(&redis.Options{Addr: srv.Addr})
	defer c.Close()
	store := NewRedis(c, "t:")
	h := newHarness(t, harnessOpts{store: store, opts: Options{ReclaimAfter: 200 * time.Millisecond}})
	ctx := context.Background()
	in := chatInput(3)
	w, _ := h.m.files.Create(ctx, File{ID: NewFileID(time.Now()), Owner: "t:design", Purpose: PurposeBatch}, 1<<20, Quota{})
	w.Write(in)
	f, _ := w.Commit()
	v, err := validate(bytes.NewReader(in), EndpointChat, 1<<20, h.m.checker(h.rt, h.caller(), EndpointChat))
	if err != nil || v.invalid > 0 {
		t.Fatal(err, v.errors)
	}
	// Validating: the live replica leaves it alone while the dead one takes
	// every line.
	b := &Batch{ID: NewBatchID(time.Now()), Owner: "t:design", Team: "design", Key: "ci", Endpoint: EndpointChat,
		InputFileID: f.ID, CompletionWindow: "24h", Status: StatusValidating, CreatedAt: time.Now().Unix(),
		ExpiresAt: time.Now().Add(time.Hour).Unix()}
	if err := store.Create(ctx, b, v.lines); err != nil {
		t.Fatal(err)
	}
	tasks, _ := store.Take(ctx, b.ID, "dead", 3)
	if len(tasks) != 3 {
		t.Fatalf("dead replica took %d lines", len(tasks))
	}
	unacked := tasks[1]
	unacked.ref = ""
	store.Done(ctx, unacked, Completed, []byte(`{"custom_id":"r1"}`))
	store.Update(ctx, b.ID, func(x *Batch) bool { x.Status = StatusInProgress; return true })

	got := h.wait(t, b.ID, StatusCompleted, 5*time.Second)
	if got.Counts.Completed != 3 {
		t.Fatalf("counts %+v", got.Counts)
	}
	if n := h.up.Requests(); n != 2 {
		t.Errorf("upstream requests %d, want 2: the line with a result ran again", n)
	}
	if n, _ := c.XLen(ctx, store.queue(b.ID)).Result(); n != 0 {
		t.Errorf("%d queue entries left", n)
	}
}

func TestCreateRefusals(t *testing.T) {
	h := newHarness(t, harnessOpts{})
	ctx := context.Background()
	caller := h.caller()
	for _, tc := range []struct {
		p      CreateParams
		status int
		param  string
	}{
		{CreateParams{InputFileID: "file-x", Endpoint: "/v1/embeddings", CompletionWindow: "24h"}, 400, "endpoint"},
		{CreateParams{InputFileID: "file-x", Endpoint: EndpointChat, CompletionWindow: "48h"}, 400, "completion_window"},
		{CreateParams{InputFileID: "../../etc/passwd", Endpoint: EndpointChat, CompletionWindow: "24h"}, 400, "input_file_id"},
		{CreateParams{InputFileID: NewFileID(time.Now()), Endpoint: EndpointChat, CompletionWindow: "24h"}, 404, "input_file_id"},
	} {
		_, err := h.m.Create(ctx, h.rt, caller, tc.p)
		pe, ok := err.(*ParamError)
		if !ok || pe.Status != tc.status || pe.Param != tc.param {
			t.Errorf("%+v: %v", tc.p, err)
		}
	}
	// Another team's file is unknown.
	w, _ := h.m.files.Create(ctx, File{ID: NewFileID(time.Now()), Owner: "t:ops", Purpose: PurposeBatch}, 100, Quota{})
	w.Write(chatInput(1)[:50])
	f, _ := w.Commit()
	if _, err := h.m.Create(ctx, h.rt, caller, CreateParams{InputFileID: f.ID, Endpoint: EndpointChat,
		CompletionWindow: "24h"}); err == nil || err.(*ParamError).Status != 404 {
		t.Errorf("another team's file: %v", err)
	}
}

func TestImagesLinesUseLinksUnlessB64Asked(t *testing.T) {
	h := newHarness(t, harnessOpts{})
	in := fmt.Sprintf(`{"custom_id":"u","method":"POST","url":"/v1/images/generations","body":{"model":%q,"prompt":"p"}}
{"custom_id":"b","method":"POST","url":"/v1/images/generations","body":{"model":%q,"prompt":"p","response_format":"b64_json","n":2}}
`, testModel, testModel)
	b := h.create(t, EndpointImages, []byte(in))
	b = h.wait(t, b.ID, StatusCompleted, 5*time.Second)
	out := h.lines(t, b.OutputFileID)
	if len(out) != 2 {
		t.Fatalf("output %q", out)
	}
	for _, l := range out {
		switch {
		case strings.Contains(l, `"custom_id":"u"`):
			if !strings.Contains(l, `"url":"http://127.0.0.1:1/images/`) {
				t.Errorf("line u has no link: %.300s", l)
			}
		case strings.Contains(l, `"custom_id":"b"`):
			if strings.Count(l, `"b64_json":`) != 2 {
				t.Errorf("line b has no base64 images: %.300s", l)
			}
		}
	}
	if h.up.Requests() != 3 {
		t.Errorf("upstream requests %d, want 3 (1 + n=2)", h.up.Requests())
	}
}

// TestPanickingLineFailsAlone: a panic in a line's journey fails that line,
// not the replica.
func TestPanickingLineFailsAlone(t *testing.T) {
	store, _ := OpenLocal(t.TempDir(), nil)
	files, _ := NewFS(t.TempDir())
	m := New(store, files, Options{Metrics: metrics.New()})
	m.rt = func() Runtime { return Runtime{} } // no config: the journey dereferences nil
	b := &Batch{ID: NewBatchID(time.Now()), Key: "ci", Endpoint: EndpointChat}
	a := m.runLineSafe(context.Background(), b, &Task{Batch: b.ID}, chatInput(1))
	if a.outcome != Failed || a.status != 500 || a.retry || !bytes.Contains(a.line, []byte(`"custom_id":"r0"`)) {
		t.Fatalf("%+v: %s", a, a.line)
	}
}

// bothStores runs a test once with each Store.
func bothStores(t *testing.T, run func(t *testing.T, store Store)) {
	t.Run("Local", func(t *testing.T) {
		s, err := OpenLocal(t.TempDir(), nil)
		if err != nil {
			t.Fatal(err)
		}
		run(t, s)
	})
	t.Run("Redis", func(t *testing.T) {
		srv := redistest.Start(t)
		c := redis.NewClient(&redis.Options{Addr: srv.Addr})
		t.Cleanup(func() { c.Close() })
		run(t, NewRedis(c, "t:"))
	})
}

// TestCancelSkipsQueuedLines: after a cancel, queued lines are skipped (in
// neither file), running ones finish, and the batch ends cancelled.
func TestCancelSkipsQueuedLines(t *testing.T) {
	bothStores(t, func(t *testing.T, store Store) {
		h := newHarness(t, harnessOpts{store: store, opts: Options{Workers: 2}})
		h.up.SetLatency(200 * time.Millisecond)
		b := h.create(t, EndpointChat, chatInput(12))
		h.waitAs(t, h.caller(), b.ID, "a completed line", 5*time.Second,
			func(b *Batch) bool { return b.Counts.Completed >= 1 })
		c, err := h.m.Cancel(context.Background(), h.caller(), b.ID)
		if err != nil || (c.Status != StatusCancelling && c.Status != StatusCancelled) {
			t.Fatalf("cancel: %+v %v", c, err)
		}
		got := h.wait(t, b.ID, StatusCancelled, 5*time.Second)
		n := got.Counts
		if n.Completed == 0 || n.Skipped == 0 || n.Completed+n.Skipped != 12 || n.Failed != 0 {
			t.Fatalf("counts %+v", n)
		}
		if int64(h.up.Requests()) != n.Completed || int64(len(h.lines(t, got.OutputFileID))) != n.Completed {
			t.Fatalf("%d upstream requests, %d completed", h.up.Requests(), n.Completed)
		}
		if _, err := h.m.Cancel(context.Background(), h.caller(), b.ID); err != nil {
			t.Errorf("cancelling a cancelled batch: %v", err)
		}
	})
}

// TestExpiryWithEitherStore: an expired batch keeps its output; the lines
// that never ran are batch_expired.
func TestExpiryWithEitherStore(t *testing.T) {
	bothStores(t, func(t *testing.T, store Store) {
		h := newHarness(t, harnessOpts{store: store, opts: Options{Workers: 1}})
		h.up.SetLatency(100 * time.Millisecond)
		b := h.create(t, EndpointChat, chatInput(8))
		h.waitAs(t, h.caller(), b.ID, "a completed line", 5*time.Second,
			func(b *Batch) bool { return b.Counts.Completed >= 1 })
		store.Update(context.Background(), b.ID, func(x *Batch) bool { x.ExpiresAt = time.Now().Unix() - 1; return true })
		got := h.wait(t, b.ID, StatusExpired, 5*time.Second)
		if got.Counts.Completed == 0 || got.Counts.Completed+got.Counts.Failed != 8 {
			t.Fatalf("counts %+v", got.Counts)
		}
		if _, err := h.m.Cancel(context.Background(), h.caller(), b.ID); err != ErrNotCancellable {
			t.Errorf("cancelling an expired batch: %v", err)
		}
	})
}
