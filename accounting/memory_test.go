package accounting

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"nanogate/config"
)

// TestMemoryStoreSurvivesARestart: totals, and the ids already counted, come
// back from the usage file.
func TestMemoryStoreSurvivesARestart(t *testing.T) {
	path := filepath.Join(t.TempDir(), "data", "usage.jsonl")
	clk := newClock(nov25)
	recs := fixture(NewPricer(testConfig()))
	m, err := OpenMemory(path, Options{Now: clk.Now}, nil)
	if err != nil {
		t.Fatal(err)
	}
	mustApply(t, m, recs...)
	if err := m.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := m.Apply(context.Background(), recs[0]); err == nil {
		t.Error("Apply after Close succeeded")
	}

	m, err = OpenMemory(path, Options{Now: clk.Now}, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	for _, team := range []string{"design", "marketing"} {
		for _, period := range []string{"2026-11-24", "2026-11-25", "2026-11", PeriodTotal} {
			checkBucket(t, m, recs, team, period)
		}
	}
	if ok, err := m.Apply(context.Background(), recs[1]); err != nil || ok {
		t.Errorf("re-applying a record of before the restart = %v, %v; want not counted", ok, err)
	}
	teams, _ := m.Teams(context.Background())
	if len(teams) != 2 {
		t.Errorf("teams %v after the restart", teams)
	}
}

// TestMemoryStoreDropsATornLastLine: a crash mid-write leaves half a line;
// the store opens without it and appends whole lines after it.
func TestMemoryStoreDropsATornLastLine(t *testing.T) {
	path := filepath.Join(t.TempDir(), "usage.jsonl")
	clk := newClock(nov25)
	recs := fixture(NewPricer(testConfig()))
	m, err := OpenMemory(path, Options{Now: clk.Now}, nil)
	if err != nil {
		t.Fatal(err)
	}
	mustApply(t, m, recs[:2]...)
	m.Close()
	f, _ := os.OpenFile(path, os.O_APPEND|os.O_WRONLY, 0)
	f.WriteString("not json\n")              // a damaged line: skipped, logged
	f.WriteString(`{"id":"torn","time":"20`) // the torn tail: dropped
	f.Close()

	m, err = OpenMemory(path, Options{Now: clk.Now}, nil)
	if err != nil {
		t.Fatal(err)
	}
	mustApply(t, m, recs[2:]...)
	m.Close()
	m, err = OpenMemory(path, Options{Now: clk.Now}, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	checkBucket(t, m, recs, "design", "2026-11")
	checkBucket(t, m, recs, "marketing", "2026-11")
}

// TestMemoryStoreForgetsIDsAfterTheWindow keeps memory bounded: ids older
// than the window are pruned, as Redis expires them.
func TestMemoryStoreForgetsIDsAfterTheWindow(t *testing.T) {
	clk := newClock(nov25)
	m, _ := OpenMemory("", Options{Now: clk.Now}, nil)
	mustApply(t, m, fixture(NewPricer(testConfig()))...)
	clk.Add(DefaultIDWindow + 72*time.Hour)
	mustApply(t, m, Record{ID: "later", Time: clk.Now(), Key: "k", Team: "t", Model: previewModel})
	m.mu.Lock()
	n := len(m.ids)
	m.mu.Unlock()
	if n != 1 {
		t.Errorf("%d ids remembered, want 1", n)
	}
	if _, err := m.Reserve(context.Background(), "t", config.Budget{USD: 1}, "x", 1); err != nil {
		t.Fatal(err)
	}
}

// TestMemoryStoreBatchWritesEachNewRecordOnce: a batch holding records seen
// before, twice in itself, and an invalid one writes each new record's line
// once, stops at the invalid one, and a restart reads the same totals.
func TestMemoryStoreBatchWritesEachNewRecordOnce(t *testing.T) {
	path := filepath.Join(t.TempDir(), "usage.jsonl")
	clk := newClock(nov25)
	recs := fixture(NewPricer(testConfig()))
	m, err := OpenMemory(path, Options{Now: clk.Now}, nil)
	if err != nil {
		t.Fatal(err)
	}
	mustApply(t, m, recs[0])
	invalid := recs[2]
	invalid.ID = ""
	batch := []Record{recs[0], recs[1], recs[1], recs[2], invalid, recs[3]}
	n, err := m.ApplyBatch(context.Background(), batch)
	if err == nil {
		t.Error("a batch with an invalid record succeeded")
	}
	if n != 2 {
		t.Errorf("applied %d records, want 2 (recs[1] and recs[2])", n)
	}
	if err := m.Close(); err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if lines := strings.Count(string(b), "\n"); lines != 3 {
		t.Errorf("the file has %d lines, want 3:\n%s", lines, b)
	}
	m, err = OpenMemory(path, Options{Now: clk.Now}, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	for _, period := range []string{"2026-11-25", PeriodTotal} {
		checkBucket(t, m, recs[:3], "design", period)
	}
}
