package logsink

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"testing/synctest"
	"time"

	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
)

var _ zapcore.WriteSyncer = (*Sink)(nil)

// output is what a Sink wrote: the bytes, and each write apart.
type output struct {
	mu     sync.Mutex
	buf    bytes.Buffer
	writes []int // the length of each write
	// fail, when set, is returned by the next write, which writes nothing.
	fail error
	// gate, when set, is received from before each write: a slow output
	// the test releases one write at a time.
	gate     chan struct{}
	openGate sync.Once
}

// gated returns a Sink on an output held at its gate until the test releases
// it. When the test ends the gate opens and the Sink closes, also after a
// failure, so that no goroutine is left blocked in the bubble.
func gated(t *testing.T, maxPending int) (*output, *Sink) {
	out := &output{gate: make(chan struct{})}
	s := New(out, maxPending)
	t.Cleanup(func() {
		out.open()
		s.Close()
	})
	return out, s
}

// open lets every write through from now on.
func (o *output) open() { o.openGate.Do(func() { close(o.gate) }) }

func (o *output) Write(p []byte) (int, error) {
	if o.gate != nil {
		<-o.gate
	}
	o.mu.Lock()
	defer o.mu.Unlock()
	if err := o.fail; err != nil {
		o.fail = nil
		return 0, err
	}
	o.writes = append(o.writes, len(p))
	return o.buf.Write(p)
}

func (o *output) String() string {
	o.mu.Lock()
	defer o.mu.Unlock()
	return o.buf.String()
}

func (o *output) writeLens() []int {
	o.mu.Lock()
	defer o.mu.Unlock()
	return append([]int(nil), o.writes...)
}

// line is line n of writer w: the numbers first, then a filler whose length
// varies, so that lines of many sizes meet in one batch.
func line(w, n int) string {
	s := fmt.Sprintf("w%03d n%06d ", w, n)
	return s + strings.Repeat(string(rune('a'+(w+n)%26)), (w*7+n*13)%300) + "\n"
}

// maxLine is the length of the longest line.
const maxLine = 13 + 299 + 1

// checkLines fails t unless out holds, for each writer w, the lines
// mk(w, 0..counts[w]-1) exactly once, whole and in order.
func checkLines(t *testing.T, out string, counts []int, mk func(w, n int) string) {
	t.Helper()
	next := make([]int, len(counts))
	lines := strings.SplitAfter(out, "\n")
	if lines[len(lines)-1] != "" {
		t.Fatalf("the output ends in a partial line %q", lines[len(lines)-1])
	}
	for _, l := range lines[:len(lines)-1] {
		var w, n int
		if _, err := fmt.Sscanf(l, "w%03d n%06d ", &w, &n); err != nil || w < 0 || w >= len(counts) {
			t.Fatalf("not a line written: %.80q", l)
		}
		if n != next[w] || l != mk(w, n) {
			t.Fatalf("writer %d: got line %d (%.80q), want line %d, whole", w, n, l, next[w])
		}
		next[w]++
	}
	for w, n := range next {
		if n != counts[w] {
			t.Errorf("writer %d: %d lines arrived, want %d", w, n, counts[w])
		}
	}
}

// same is n writers' counts of perWriter lines each.
func same(n, perWriter int) []int {
	counts := make([]int, n)
	for i := range counts {
		counts[i] = perWriter
	}
	return counts
}

func TestConcurrentLinesArriveWholeOnceInOrder(t *testing.T) {
	const writers, perWriter = 32, 500
	out := &output{}
	// A small cap, so that writers also meet a full buffer.
	s := New(out, 4096)
	defer s.Close()
	var wg sync.WaitGroup
	for w := range writers {
		wg.Go(func() {
			var buf []byte
			for n := range perWriter {
				buf = append(buf[:0], line(w, n)...)
				s.Write(buf)
				// zap reuses its buffer once Write returns: the
				// sink must have copied the line.
				for i := range buf {
					buf[i] = '#'
				}
			}
		})
	}
	wg.Wait()
	if err := s.Sync(); err != nil {
		t.Fatal(err)
	}
	checkLines(t, out.String(), same(writers, perWriter), line)
	for _, n := range out.writeLens() {
		if n > 4096+maxLine {
			t.Fatalf("a write of %d bytes: above the cap and one line", n)
		}
	}
}

func TestLinesLoggedDuringAWriteShareTheNext(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		out, s := gated(t, 0)
		s.Write([]byte(line(0, 0)))
		synctest.Wait() // the flusher is writing line 0, held at the gate
		for n := 1; n < 4; n++ {
			s.Write([]byte(line(0, n)))
		}
		out.gate <- struct{}{}
		out.gate <- struct{}{}
		synctest.Wait()
		checkLines(t, out.String(), same(1, 4), line)
		if got, want := out.writeLens(), []int{len(line(0, 0)), len(line(0, 1) + line(0, 2) + line(0, 3))}; fmt.Sprint(got) != fmt.Sprint(want) {
			t.Errorf("writes of %v bytes, want %v: the three lines logged during the first write share the second", got, want)
		}
	})
}

// advance moves the fake clock of the calling goroutine's synctest bubble.
func advance(d time.Duration) { time.Sleep(d) }

// TestLinesWaitForTheNextLookWhileLinesKeepComing: the first line after a
// quiet spell goes out at once; lines that follow it wait, without waking
// the flusher, for its next look an Interval later, and share that write.
// A look that finds nothing ends the spell: the next line goes out at once.
func TestLinesWaitForTheNextLookWhileLinesKeepComing(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		out := &output{}
		s := New(out, 0)
		defer s.Close()
		writes := func() int { return len(out.writeLens()) }
		start := time.Now()
		s.Write([]byte(line(0, 0)))
		synctest.Wait()
		if n := writes(); n != 1 {
			t.Fatalf("%d writes after the first line, want it written at once", n)
		}
		for n := 1; n < 4; n++ {
			advance(Interval / 4)
			s.Write([]byte(line(0, n)))
			synctest.Wait()
		}
		if n := writes(); n != 1 {
			t.Fatalf("%d writes before the next look, want the three lines that followed the first waiting", n)
		}
		advance(time.Until(start.Add(Interval)))
		synctest.Wait()
		if got, want := out.writeLens(), []int{len(line(0, 0)), len(line(0, 1) + line(0, 2) + line(0, 3))}; fmt.Sprint(got) != fmt.Sprint(want) {
			t.Fatalf("writes of %v bytes, want %v: the lines that followed share the next look's write", got, want)
		}
		advance(2 * Interval) // a look finds nothing: the spell ends
		s.Write([]byte(line(0, 4)))
		synctest.Wait()
		if n := writes(); n != 3 {
			t.Fatalf("%d writes after a quiet spell, want the line written at once (3)", n)
		}
		checkLines(t, out.String(), same(1, 5), line)
	})
}

// TestHalfAFullBufferWakesTheFlusher: lines that fill half the pending
// buffer are written without waiting for the next look, so that Write
// seldom has to wait for room.
func TestHalfAFullBufferWakesTheFlusher(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		const lineLen, maxPending = 100, 1000
		out := &output{}
		s := New(out, maxPending)
		defer s.Close()
		fixed := func(n int) []byte { return fmt.Appendf(nil, "w000 n%06d %s\n", n, strings.Repeat("x", lineLen-14)) }
		s.Write(fixed(0))
		synctest.Wait() // written at once; the flusher now looks every Interval
		start := time.Now()
		for n := 1; n <= maxPending/2/lineLen; n++ {
			s.Write(fixed(n))
		}
		synctest.Wait()
		if got, want := out.writeLens(), []int{lineLen, maxPending / 2}; fmt.Sprint(got) != fmt.Sprint(want) {
			t.Fatalf("writes of %v bytes, want %v: half the buffer goes out without waiting for the look", got, want)
		}
		if d := time.Since(start); d != 0 {
			t.Fatalf("the write came %v after the lines, want at once", d)
		}
	})
}

func TestAFullBufferMakesWritesWait(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		const writers, perWriter, lineLen = 5, 10, 100
		const maxPending = 10 * lineLen
		out, s := gated(t, maxPending)
		fixed := func(w, n int) []byte { // lines of lineLen bytes
			return fmt.Appendf(nil, "w%03d n%06d %s\n", w, n, strings.Repeat("x", lineLen-14))
		}
		s.Write(fixed(0, 0))
		synctest.Wait() // the output stalls in the first write
		var written atomic.Int32
		for w := range writers {
			go func() {
				first := 0
				if w == 0 {
					first = 1 // after the line that stalled the output
				}
				for n := first; n < first+perWriter; n++ {
					s.Write(fixed(w, n))
					written.Add(1)
				}
			}()
		}
		pending := func() int {
			s.mu.Lock()
			defer s.mu.Unlock()
			return len(s.pending)
		}
		synctest.Wait()
		if n, p := written.Load(), pending(); n != maxPending/lineLen || p != maxPending {
			t.Fatalf("with the output stalled, %d writes returned and %d bytes are pending; want %d and %d",
				n, p, maxPending/lineLen, maxPending)
		}
		// Each write the output lets through makes room for more lines;
		// the pending bytes never pass the cap.
		for range writers * perWriter {
			select {
			case out.gate <- struct{}{}:
			default:
			}
			synctest.Wait()
			if p := pending(); p > maxPending {
				t.Fatalf("%d bytes pending, above the cap of %d", p, maxPending)
			}
		}
		out.open()
		if err := s.Close(); err != nil {
			t.Fatal(err)
		}
		// The line that stalled the output is writer 0's first.
		counts := same(writers, perWriter)
		counts[0]++
		checkLines(t, out.String(), counts, func(w, n int) string { return string(fixed(w, n)) })
		for _, n := range out.writeLens() {
			if n > maxPending {
				t.Fatalf("a write of %d bytes, above the cap of %d", n, maxPending)
			}
		}
	})
}

func TestSyncWaitsForTheWriteUnderWay(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		out, s := gated(t, 0)
		s.Write([]byte(line(0, 0)))
		synctest.Wait() // the flusher is writing line 0, held at the gate
		s.Write([]byte(line(0, 1)))
		synced := make(chan error)
		go func() { synced <- s.Sync() }()
		synctest.Wait()
		select {
		case <-synced:
			t.Fatal("Sync returned while line 0 was still being written")
		default:
		}
		out.gate <- struct{}{} // line 0
		out.gate <- struct{}{} // line 1, written by Sync itself
		if err := <-synced; err != nil {
			t.Fatal(err)
		}
		checkLines(t, out.String(), same(1, 2), line)
	})
}

func TestAWriteErrorSurfacesFromSyncAndLoggingGoesOn(t *testing.T) {
	out := &output{fail: errors.New("broken pipe")}
	s := New(out, 0)
	defer s.Close()
	s.Write([]byte(line(0, 0)))
	if err := s.Sync(); err == nil || err.Error() != "broken pipe" {
		t.Fatalf("Sync after a failed write: %v, want the write's error", err)
	}
	s.Write([]byte(line(1, 0)))
	if err := s.Sync(); err != nil {
		t.Fatalf("Sync after a good write: %v, want nil (the error was reported once)", err)
	}
	// The line of the failed write is lost, the next one is not.
	if got := out.String(); got != line(1, 0) {
		t.Fatalf("the output is %q, want the line written after the error", got)
	}
}

func TestLinesAfterCloseAreWrittenAtOnce(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		out := &output{}
		s := New(out, 0)
		s.Write([]byte(line(0, 0)))
		if err := s.Close(); err != nil {
			t.Fatal(err)
		}
		if got := out.String(); got != line(0, 0) {
			t.Fatalf("after Close the output is %q, want the line written before", got)
		}
		// The flusher has ended (synctest.Test would report it blocked);
		// a line of the shutdown is written by its caller.
		s.Write([]byte(line(0, 1)))
		checkLines(t, out.String(), same(1, 2), line)
	})
}

func TestZapLinesThroughTheSink(t *testing.T) {
	out := &output{}
	s := New(out, 0)
	defer s.Close()
	log := zap.New(zapcore.NewCore(zapcore.NewJSONEncoder(zap.NewProductionEncoderConfig()), s, zap.InfoLevel))
	var wg sync.WaitGroup
	for w := range 8 {
		wg.Go(func() {
			for n := range 100 {
				log.Info("request", zap.Int("w", w), zap.Int("n", n))
			}
		})
	}
	wg.Wait()
	if err := log.Sync(); err != nil {
		t.Fatal(err)
	}
	next := make([]int, 8)
	for l := range strings.Lines(out.String()) {
		var m struct {
			Msg  string
			W, N int
		}
		if err := json.Unmarshal([]byte(l), &m); err != nil || m.Msg != "request" {
			t.Fatalf("not a request line (%v): %q", err, l)
		}
		if m.N != next[m.W] {
			t.Fatalf("writer %d: line %d, want %d", m.W, m.N, next[m.W])
		}
		next[m.W]++
	}
	for w, n := range next {
		if n != 100 {
			t.Errorf("writer %d: %d lines, want 100", w, n)
		}
	}
}
