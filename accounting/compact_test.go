package accounting

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"
)

// mixedRecords are n records of the last days before now: three teams and
// their keys, both providers, image sizes, and failures.
func mixedRecords(n int, prefix string, now time.Time) []Record {
	p := NewPricer(testConfig())
	sizes := []string{"", "1K", "2K"}
	out := make([]Record, n)
	for i := range n {
		id := fmt.Sprintf("%s-%d", prefix, i)
		at := now.Add(-time.Duration(i%240) * time.Hour)
		key, team := fmt.Sprint("k", i%5), fmt.Sprint("t", i%3)
		switch {
		case i%7 == 0:
			out[i] = failedRecord(id, at, key, team, 3)
		case i%2 == 0:
			out[i] = served(p, id, at, key, team, "google", 2, 1, 12, 3)
		default:
			out[i] = served(p, id, at, key, team, "laozhang", 1, 2, 25, 0)
		}
		out[i].Size = sizes[i%len(sizes)]
		if out[i].Failed() {
			out[i].Size = ""
		}
	}
	return out
}

// openCompacting opens the store at path, compacting once the file holds
// min bytes past its snapshot.
func openCompacting(t *testing.T, path string, min int64) *Memory {
	t.Helper()
	m, err := OpenMemory(path, Options{}, nil)
	if err != nil {
		t.Fatal(err)
	}
	m.mu.Lock()
	m.compactMin, m.compactAt = min, min
	m.mu.Unlock()
	return m
}

// crash stops m as a killed process stops: no fsync, no cleanup; what it
// wrote is in the files (the kernel has it).
func (m *Memory) crash() {
	m.mu.Lock()
	m.closed = true
	f := m.f
	m.f = nil
	m.mu.Unlock()
	close(m.stop)
	<-m.done
	m.compactions.Wait()
	if f != nil {
		f.Close()
	}
}

// state is everything a store answers about recs: its teams and every
// bucket their records touch, and the admin reports of those periods.
func state(t *testing.T, s Store, recs []Record) string {
	t.Helper()
	ctx := context.Background()
	teams, err := s.Teams(ctx)
	if err != nil {
		t.Fatal(err)
	}
	var b strings.Builder
	fmt.Fprintf(&b, "teams %q\n", teams)
	periods := []string{PeriodTotal}
	for _, r := range recs {
		periods = append(periods, Day(r.Time), Month(r.Time))
	}
	slices.Sort(periods)
	periods = slices.Compact(periods)
	for _, team := range teams {
		for _, p := range periods {
			bs, err := s.Read(ctx, team, []string{p})
			if err != nil {
				t.Fatal(err)
			}
			fmt.Fprintf(&b, "%s %s %s\n", team, p, bucketString(bs[0]))
		}
	}
	for _, p := range periods {
		rep, err := Admin(ctx, s, AdminQuery{Period: p, Now: time.Now()})
		if err != nil {
			t.Fatal(err)
		}
		fmt.Fprintf(&b, "%s\n%s\n%s\n", rep.JSON(), rep.CSV(), rep.SizesCSV())
	}
	return b.String()
}

func bucketString(b *Bucket) string {
	s := fmt.Sprintf("%+v", b.Team)
	for _, m := range []map[string]*Totals{b.Keys, b.Models, b.Providers, b.Sizes} {
		for _, n := range sorted(m) {
			s += fmt.Sprintf(" %s=%+v", n.Name, n.Totals)
		}
	}
	return s
}

// sameState fails t unless s answers about recs as a store that applied
// them once, without a file, does.
func sameState(t *testing.T, s Store, recs []Record) {
	t.Helper()
	ref, _ := OpenMemory("", Options{}, nil)
	mustApply(t, ref, recs...)
	if got, want := state(t, s, recs), state(t, ref, recs); got != want {
		t.Errorf("the store answers\n%s\nwant\n%s", got, want)
	}
}

// fileLines counts the snapshot and record lines of the file at path.
func fileLines(t *testing.T, path string) (snapshot, records int) {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	sc.Buffer(nil, 1<<20)
	for sc.Scan() {
		if isSnapshotLine(sc.Bytes()) {
			snapshot++
		} else {
			records++
		}
	}
	return snapshot, records
}

func TestCompactionKeepsEveryTotal(t *testing.T) {
	path := filepath.Join(t.TempDir(), "usage.jsonl")
	recs := mixedRecords(600, "keep", time.Now())
	m := openCompacting(t, path, 1<<40)
	mustApply(t, m, recs...)
	before := state(t, m, recs)
	if err := m.compact(); err != nil {
		t.Fatal(err)
	}
	if after := state(t, m, recs); after != before {
		t.Fatalf("a compaction changed the store's answers:\n%s\nwant\n%s", after, before)
	}
	mustApply(t, m, recs[0]) // appended after the snapshot, and not counted
	if err := m.Close(); err != nil {
		t.Fatal(err)
	}
	if snap, records := fileLines(t, path); snap == 0 || records != 0 {
		t.Errorf("the compacted file holds %d snapshot lines and %d records; want a snapshot alone", snap, records)
	}
	m, err := OpenMemory(path, Options{}, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	if after := state(t, m, recs); after != before {
		t.Errorf("reopened after a compaction, the store answers:\n%s\nwant\n%s", after, before)
	}
}

func TestARecordCountsOnceAcrossACompaction(t *testing.T) {
	path := filepath.Join(t.TempDir(), "usage.jsonl")
	recs := mixedRecords(300, "once", time.Now())
	m := openCompacting(t, path, 1<<40)
	mustApply(t, m, recs[:200]...)
	if err := m.compact(); err != nil {
		t.Fatal(err)
	}
	mustApply(t, m, recs[150:]...) // 50 replayed after the compaction
	m.Close()

	m, err := OpenMemory(path, Options{}, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	n, err := m.ApplyBatch(context.Background(), recs)
	if err != nil || n != 0 {
		t.Errorf("replaying every record after a compaction and a restart counted %d (%v); want 0", n, err)
	}
	sameState(t, m, recs)
}

// TestACrashMidCompactionLosesNothing stops a compaction between each of
// its steps as a killed process would, goes on applying records where the
// store still can, and opens the files left behind.
func TestACrashMidCompactionLosesNothing(t *testing.T) {
	recs := mixedRecords(400, "crash", time.Now())
	for _, tc := range []struct {
		name string
		stop func(t *testing.T, m *Memory)
	}{
		{"snapshot written", func(t *testing.T, m *Memory) {
			p, err := m.writeCompaction()
			if err != nil {
				t.Fatal(err)
			}
			p.f.Close()
		}},
		{"snapshot half written", func(t *testing.T, m *Memory) {
			os.WriteFile(m.path+compactSuffix, []byte(`{"bucket":{"team":"t0","period":"total","tot`), 0o640)
		}},
		{"records of the meantime copied", stopAt(stepTail)},
		{"renamed", stopAt(stepRename)},
	} {
		t.Run(tc.name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "usage.jsonl")
			m := openCompacting(t, path, 1<<40)
			mustApply(t, m, recs[:300]...)
			tc.stop(t, m)
			mustApply(t, m, recs[300:]...)
			m.crash()

			m, err := OpenMemory(path, Options{}, nil)
			if err != nil {
				t.Fatal(err)
			}
			defer m.Close()
			if _, err := os.Stat(path + compactSuffix); !os.IsNotExist(err) {
				t.Errorf("the snapshot of the cut compaction is still there (%v)", err)
			}
			sameState(t, m, recs)
			if n, _ := m.ApplyBatch(context.Background(), recs); n != 0 {
				t.Errorf("%d records counted twice", n)
			}
		})
	}
}

// stopAt runs a compaction that stops after step.
func stopAt(step compactStep) func(*testing.T, *Memory) {
	return func(t *testing.T, m *Memory) {
		m.stopAt = step
		if err := m.compact(); err != errStopped {
			t.Fatalf("compaction = %v, want it stopped", err)
		}
		m.stopAt = stepNone
	}
}

// TestRecordsAppliedDuringACompactionFollowItsSnapshot: the records applied
// while the snapshot is written are copied after it.
func TestRecordsAppliedDuringACompactionFollowItsSnapshot(t *testing.T) {
	path := filepath.Join(t.TempDir(), "usage.jsonl")
	recs := mixedRecords(300, "during", time.Now())
	m := openCompacting(t, path, 1<<40)
	mustApply(t, m, recs[:200]...)
	p, err := m.writeCompaction()
	if err != nil {
		t.Fatal(err)
	}
	mustApply(t, m, recs[200:]...)
	if _, err := m.install(p); err != nil {
		t.Fatal(err)
	}
	mustApply(t, m, recs[250:]...) // counted already
	m.Close()
	if _, records := fileLines(t, path); records != 100 {
		t.Errorf("%d records after the snapshot, want the 100 of the meantime", records)
	}
	m, err = OpenMemory(path, Options{}, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	sameState(t, m, recs)
}

// TestTheFileIsCompactedAsItGrows: Apply starts compactions on its own,
// and the file stays a snapshot plus a bounded tail.
func TestTheFileIsCompactedAsItGrows(t *testing.T) {
	path := filepath.Join(t.TempDir(), "usage.jsonl")
	recs := mixedRecords(2000, "grow", time.Now())
	m := openCompacting(t, path, 16<<10)
	mustApply(t, m, recs...)
	// Close abandons a compaction still running; let them end.
	m.compactions.Wait()
	if err := m.Close(); err != nil {
		t.Fatal(err)
	}
	snap, records := fileLines(t, path)
	if snap == 0 || records >= len(recs) {
		t.Errorf("%d snapshot lines and %d records of %d: never compacted", snap, records, len(recs))
	}
	m, err := OpenMemory(path, Options{}, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	sameState(t, m, recs)
}

// TestASnapshotForgetsIDsPastTheWindow keeps the snapshot bounded: the ids
// of records older than the id window are not remembered after a restart,
// as Redis expires them; their totals stay.
func TestASnapshotForgetsIDsPastTheWindow(t *testing.T) {
	path := filepath.Join(t.TempDir(), "usage.jsonl")
	old := mixedRecords(50, "old", time.Now().Add(-DefaultIDWindow-72*time.Hour))
	recent := mixedRecords(50, "recent", time.Now())
	m := openCompacting(t, path, 1<<40)
	mustApply(t, m, append(old, recent...)...)
	if err := m.compact(); err != nil {
		t.Fatal(err)
	}
	m.Close()
	m, err := OpenMemory(path, Options{}, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	m.mu.Lock()
	n := len(m.ids)
	m.mu.Unlock()
	if n != len(recent) {
		t.Errorf("%d ids remembered, want the %d inside the window", n, len(recent))
	}
	sameState(t, m, append(old, recent...))
}

// TestMemoryStoreWhileCompacting runs the stores' suite with a compaction
// started whenever the records after the snapshot outgrow it.
func TestMemoryStoreWhileCompacting(t *testing.T) {
	runStoreSuite(t, func(t *testing.T, clk *clock) Store {
		m, err := OpenMemory(filepath.Join(t.TempDir(), "usage.jsonl"), Options{Now: clk.Now}, nil)
		if err != nil {
			t.Fatal(err)
		}
		m.mu.Lock()
		m.compactMin, m.compactAt = 1, 1
		m.mu.Unlock()
		t.Cleanup(func() { m.Close() })
		return m
	})
}

func TestSnapshotLinesAreNotRecords(t *testing.T) {
	for _, line := range []string{`{"id":"req-1","time":"2026-11-25T10:00:00Z"}`, `{"ids_x":1}`} {
		if isSnapshotLine([]byte(line)) {
			t.Errorf("%s taken for a snapshot line", line)
		}
	}
	var b bytes.Buffer
	fz := &frozen{order: []remembered{{"t", "a", 1}}, nids: 1, buckets: []snapBucket{snapOf("t", PeriodTotal, newBucket(PeriodTotal))}}
	if _, err := writeSnapshot(&b, fz); err != nil {
		t.Fatal(err)
	}
	for _, line := range bytes.Split(bytes.TrimSpace(b.Bytes()), []byte("\n")) {
		if !isSnapshotLine(line) {
			t.Errorf("%s not taken for a snapshot line", line)
		}
	}
}

func TestIDsOfAnySpellingSurviveASnapshot(t *testing.T) {
	ids := []string{"req_1", `quo"te`, `back\slash`, "tab\there", "ünï", "<&>", "sp ace", `"]}}`, "]}}"}
	var order []remembered
	for _, id := range ids {
		order = append(order, remembered{"plain", id, 20001}, remembered{`te"am`, id, 20000})
	}
	fz := &frozen{nids: len(order), order: order}
	var b bytes.Buffer
	if _, err := writeSnapshot(&b, fz); err != nil {
		t.Fatal(err)
	}
	m, _ := OpenMemory("", Options{}, nil)
	for _, line := range bytes.SplitAfter(b.Bytes(), []byte("\n")) {
		if len(line) == 0 {
			continue
		}
		if !json.Valid(line) {
			t.Errorf("not JSON: %s", line)
		}
		if err := m.loadSnapshotLine(line, 0); err != nil {
			t.Errorf("%s: %v", line, err)
		}
	}
	for _, r := range fz.order {
		if day, ok := m.ids[idKey{r.team, r.id}]; !ok || day != r.day {
			t.Errorf("id %q of team %q: day %d, %v; want %d", r.id, r.team, day, ok, r.day)
		}
	}
	// A restart remembers the older day's ids first.
	if r := m.order[m.head]; r.day != 20000 {
		t.Errorf("first remembered after a load: %+v, want one of day 20000", r)
	}
	if len(m.ids) != fz.nids {
		t.Errorf("%d ids loaded, want %d", len(m.ids), fz.nids)
	}
}
