package accounting

import (
	"context"
	"fmt"
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
	if _, err := m.Reserve(context.Background(), Ask{ID: "x", Team: "t", Budget: &config.Budget{USD: 1}, Micros: 1}); err != nil {
		t.Fatal(err)
	}
}

// TestMemoryStoreBoundsItsIDs: past MaxIDs the oldest ids are forgotten
// first, so memory stays bounded however fast records come; the newest are
// still remembered, and so are they after a restart, within the bound.
func TestMemoryStoreBoundsItsIDs(t *testing.T) {
	const max = 64
	path := filepath.Join(t.TempDir(), "usage.jsonl")
	clk := newClock(nov25)
	m, err := OpenMemory(path, Options{Now: clk.Now, MaxIDs: max}, nil)
	if err != nil {
		t.Fatal(err)
	}
	var recs []Record
	for i := range 500 {
		// Three days, and two teams.
		recs = append(recs, Record{ID: fmt.Sprintf("r%d", i), Time: nov25.Add(time.Duration(i) * 10 * time.Minute),
			Key: "k", Team: []string{"t", "u"}[i%2], Model: previewModel, Provider: "laozhang", Images: 1, CostMicros: 1})
	}
	for i := 0; i < len(recs); i += 25 {
		if _, err := m.ApplyBatch(context.Background(), recs[i:i+25]); err != nil {
			t.Fatal(err)
		}
	}
	checkIDs := func(m *Memory) {
		t.Helper()
		m.mu.Lock()
		defer m.mu.Unlock()
		listed := 0
		for _, r := range m.order[m.head:] {
			if _, ok := m.ids[idKey{r.team, r.id}]; !ok {
				t.Fatalf("id %s of day %d listed, not remembered", r.id, r.day)
			}
			listed++
		}
		if len(m.ids) > max || listed != len(m.ids) {
			t.Fatalf("%d ids remembered, %d listed; want the same, at most %d", len(m.ids), listed, max)
		}
	}
	checkIDs(m)
	spent := func(m *Memory) int64 {
		return read(t, m, "t", PeriodTotal).Team.CostMicros + read(t, m, "u", PeriodTotal).Team.CostMicros
	}
	// The newest ids count once more; the oldest, forgotten, count again.
	if n, err := m.ApplyBatch(context.Background(), recs[len(recs)-max/2:]); err != nil || n != 0 {
		t.Fatalf("replaying the newest records applied %d (%v), want 0", n, err)
	}
	if n, err := m.ApplyBatch(context.Background(), recs[:3]); err != nil || n != 3 {
		t.Fatalf("replaying the oldest records applied %d (%v), want 3 (forgotten)", n, err)
	}
	if got := spent(m); got != 503 {
		t.Fatalf("spent %d, want 503", got)
	}
	m.Close()
	m2, err := OpenMemory(path, Options{Now: clk.Now, MaxIDs: max}, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer m2.Close()
	checkIDs(m2)
	if got := spent(m2); got != 503 {
		t.Fatalf("spent %d after a restart, want 503", got)
	}
	if n, err := m2.ApplyBatch(context.Background(), recs[len(recs)-max/2:]); err != nil || n != 0 {
		t.Fatalf("after a restart, replaying the newest records applied %d (%v), want 0", n, err)
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
