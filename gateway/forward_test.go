package gateway

import (
	"context"
	"io"
	"testing"
	"time"

	"go.uber.org/zap"
	"go.uber.org/zap/zaptest/observer"

	"nanogate/accounting"
	"nanogate/catalog"
	"nanogate/config"
	"nanogate/images/signatures"
	"nanogate/internal/fakeup"
	"nanogate/provider"
	"nanogate/router"
)

// geminiJourney is a gateway over fake Gemini upstreams, tried in order,
// with its books.
func geminiJourney(t *testing.T, ups ...*fakeup.Server) *journey {
	t.Helper()
	var entries []router.Entry
	var pcs []config.Provider
	for i, up := range ups {
		pc := config.Provider{Name: string(rune('a' + i)), Kind: config.KindGemini, BaseURL: up.URL(), APIKey: "k",
			Models: map[string]string{"m": fakeup.DefaultGeminiModel}, Price: config.Price{PerImage: 0.035 + float64(i)/1000},
			Timeout: time.Minute}
		p, err := provider.New(pc, provider.Options{})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(p.Close)
		entries = append(entries, router.Entry{Provider: p, Config: pc})
		pcs = append(pcs, pc)
	}
	r := router.New(entries, config.Routing{MaxAttempts: len(ups), Health: config.Health{FailureThreshold: 100}}, nil, nil, nil)
	j := &journey{books: &ledger{}, limits: &tally{}}
	j.rec = accounting.NewRecorder(j.books, accounting.RecorderOptions{SpoolPath: t.TempDir() + "/spool"})
	t.Cleanup(func() { j.rec.Close(context.Background()) })
	team := &config.Team{Name: "design", Budget: &config.Budget{USD: 100, Period: "monthly"}}
	j.g = New(r, Options{TokensPerImage: 1290, Limiter: j.limits, Accounting: &Accounting{Store: j.books,
		Recorder: j.rec, Pricer: accounting.NewPricer(&config.Config{Providers: pcs}), Teams: map[string]*config.Team{"design": team}}})
	return j
}

func startGemini(t *testing.T, imageSize int) *fakeup.Server {
	t.Helper()
	up, err := fakeup.Start(fakeup.Options{Kind: fakeup.Gemini, ImageSize: imageSize})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(up.Close)
	return up
}

// drain reads a forwarded answer to its end: the images completed and the
// error that ended it (nil for a whole answer).
func drain(a *ForwardAnswer) (images int, err error) {
	if a.Whole != nil { // small: read whole by the provider
		return a.Whole.Result.Images(), nil
	}
	for {
		ev, err := a.Next()
		if err == io.EOF {
			return images, nil
		}
		if err != nil {
			return images, err
		}
		if ev.Piece != nil && ev.Piece.Step == provider.ImageEnd {
			images++
		}
	}
}

// TestForwardBillsAWholeAnswerOnce: a forwarded answer is billed when it is
// closed, once, like a buffered one.
func TestForwardBillsAWholeAnswerOnce(t *testing.T) {
	j := geminiJourney(t, startGemini(t, 200<<10))
	call := j.call(t, chatOne)
	if !j.g.Forwards(call) {
		t.Fatal("a one-answer call without offload is not forwarded")
	}
	a, _, err := j.g.ChatForward(context.Background(), call)
	if err != nil {
		t.Fatal(err)
	}
	if n, err := drain(a); n != 1 || err != nil {
		t.Fatalf("%d images, %v", n, err)
	}
	a.Close()
	a.Close()
	b := call.Close()
	r := j.records(t)["req1"]
	if r.Status != 200 || r.Provider != "a" || r.Images != 1 || r.CostMicros != b.CostMicros || b.CostMicros == 0 {
		t.Fatalf("record %+v, bill %+v", r, b)
	}
}

// TestForwardCutAfterCommitBillsNothing: an upstream that drops the
// connection half-way through the image, after the answer was committed,
// ends it with an error; no image was completed, so nothing is billed and
// the TPM estimate is given back.
func TestForwardCutAfterCommitBillsNothing(t *testing.T) {
	up := startGemini(t, 1500<<10)
	up.SetFault(fakeup.Fault{DropMidBody: true})
	j := geminiJourney(t, up)
	call := j.call(t, chatOne)
	a, _, err := j.g.ChatForward(context.Background(), call)
	if err != nil {
		t.Fatalf("the cut came after the commit, yet ChatForward failed: %v", err)
	}
	n, err := drain(a)
	if n != 0 || err == nil {
		t.Fatalf("%d images, err %v: the cut answer looks whole", n, err)
	}
	if _, ok := provider.AsError(err); !ok {
		t.Errorf("err = %v, want a provider error", err)
	}
	a.Close()
	call.Close()
	r := j.records(t)["req1"]
	if r.Status != 502 || r.CostMicros != 0 || r.Images != 0 {
		t.Fatalf("record %+v", r)
	}
	if used := j.settled(); used != 0 {
		t.Fatalf("TPM holds %d for an answer that made nothing", used)
	}
}

// TestForwardFailsOverBeforeCommit: garbage, an error status, or an answer
// that ends before the first image's header and window are in, fail over to
// the next provider, which alone is billed.
func TestForwardFailsOverBeforeCommit(t *testing.T) {
	for name, f := range map[string]fakeup.Fault{
		"garbage":      {Garbage: true},
		"error status": {Status: 500},
		// An answer that ends inside the first window of its image.
		"cut early": {Body: []byte(`{"candidates":[{"content":{"parts":[{"inlineData":{"mimeType":"image/png","data":"` +
			fakeup.PNGBase64(200 << 10)[:30<<10])},
	} {
		t.Run(name, func(t *testing.T) {
			bad, good := startGemini(t, 0), startGemini(t, 0)
			bad.SetFault(f)
			j := geminiJourney(t, bad, good)
			call := j.call(t, chatOne)
			a, served, err := j.g.ChatForward(context.Background(), call)
			if err != nil {
				t.Fatal(err)
			}
			if served.Provider != "b" || served.Attempts != 2 {
				t.Fatalf("served %+v", served)
			}
			if n, err := drain(a); n != 1 || err != nil {
				t.Fatalf("%d images, %v", n, err)
			}
			a.Close()
			call.Close()
			if r := j.records(t)["req1"]; r.Provider != "b" || r.Images != 1 || r.Status != 200 {
				t.Fatalf("record %+v", r)
			}
		})
	}
}

// TestForwardRefusesAnImageBeyondTheLimits: an image whose header declares
// a decompression bomb is refused before the commit, like a broken answer.
func TestForwardRefusesAnImageBeyondTheLimits(t *testing.T) {
	up := startGemini(t, 0)
	up.SetFault(fakeup.Fault{Body: []byte(`{"candidates":[{"content":{"parts":[{"inlineData":{"mimeType":"image/png","data":"` +
		bombPNG + `"}}]},"finishReason":"STOP"}]}`)})
	j := geminiJourney(t, up)
	call := j.call(t, chatOne)
	_, _, err := j.g.ChatForward(context.Background(), call)
	pe, ok := provider.AsError(err)
	if !ok || pe.Kind != provider.KindInvalidResponse {
		t.Fatalf("err = %v", err)
	}
	call.Close()
	if r := j.records(t)["req1"]; r.Status != 502 || r.CostMicros != 0 {
		t.Fatalf("record %+v", r)
	}
}

// bombPNG is a PNG signature and IHDR declaring 100000 x 100000 pixels.
const bombPNG = "iVBORw0KGgoAAAANSUhEUgABhqAAAYagCAIAAAAnMJyf"

// TestForwardDigestsOnlyWhatMayBeSigned: a forwarded image is digested, and
// its signature kept, unless the catalogue says its model signs none; a
// signature from such a model is logged, once, not kept.
func TestForwardDigestsOnlyWhatMayBeSigned(t *testing.T) {
	no := false
	sizes := map[string]catalog.Size{"1K": {Tokens: 1290}}
	for _, c := range []struct {
		name  string
		model *catalog.Model // nil: the catalogue does not know it
		kept  int
	}{
		{"unknown model", nil, 1},
		{"3.x model", &catalog.Model{Name: "g3", Sizes: sizes, DefaultSize: "1K"}, 1},
		{"2.5 model", &catalog.Model{Name: "g25", Sizes: sizes, DefaultSize: "1K", ImageSignatures: &no}, 0},
	} {
		t.Run(c.name, func(t *testing.T) {
			up, err := fakeup.Start(fakeup.Options{Kind: fakeup.Gemini, ImageSize: 300 << 10, ThoughtSignatures: true})
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(up.Close)
			j := geminiJourney(t, up)
			sigs := signatures.NewMemory(0)
			core, logs := observer.New(zap.WarnLevel)
			j.g.sigs, j.g.log = sigs, zap.New(core)
			j.g.modelOf = func(string) *catalog.Model { return c.model }
			for range 2 {
				call := j.call(t, chatOne)
				a, _, err := j.g.ChatForward(context.Background(), call)
				if err != nil {
					t.Fatal(err)
				}
				if n, err := drain(a); n != 1 || err != nil {
					t.Fatalf("%d images, %v", n, err)
				}
				a.Close()
				call.Close()
				if call.Req.ForwardDigest != (c.kept > 0) {
					t.Fatalf("digest asked: %v", call.Req.ForwardDigest)
				}
			}
			// The fake draws the same image each time: one key.
			if got := sigs.Len(); got != c.kept {
				t.Fatalf("%d signatures kept, want %d", got, c.kept)
			}
			if warned := logs.FilterMessageSnippet("signed one").Len(); warned != 1-c.kept {
				t.Fatalf("%d warnings of an unexpected signature", warned)
			}
		})
	}
}
