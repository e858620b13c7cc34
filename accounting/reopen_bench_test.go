package accounting

import (
	"context"
	"os"
	"path/filepath"
	"strconv"
	"testing"
	"time"
)

// The embedded store's file after a million records: its size, how long the
// store takes to open it again, and the rate at which Apply wrote it. Run:
//
//	go test -run '^$' -bench MemoryReopen -benchtime 5x -timeout 30m ./accounting/
//
// "30d" spreads the records over the last 30 days, so every id is still
// inside the id window and must be remembered; "365d" over a year, where
// ids of records older than the window are forgotten.
func BenchmarkMemoryReopen(b *testing.B) {
	if testing.Short() {
		b.Skip("writes a million records")
	}
	for _, days := range []int{30, 365} {
		b.Run(strconv.Itoa(days)+"d", func(b *testing.B) { benchReopen(b, 1_000_000, days) })
	}
}

func benchReopen(b *testing.B, n, days int) {
	path := filepath.Join(b.TempDir(), "usage.jsonl")
	rate, slowest := writeRecords(b, path, n, days)
	fi, err := os.Stat(path)
	if err != nil {
		b.Fatal(err)
	}
	for b.Loop() {
		m, err := OpenMemory(path, Options{}, nil)
		if err != nil {
			b.Fatal(err)
		}
		b.StopTimer()
		m.Close()
		b.StartTimer()
	}
	b.ReportMetric(float64(fi.Size())/1e6, "file-MB")
	b.ReportMetric(rate, "apply-records/s")
	b.ReportMetric(float64(slowest.Microseconds())/1e3, "slowest-apply-ms")
}

// writeRecords applies n records spread over the last days days and returns
// the rate of Apply, in records per second, and its slowest call.
func writeRecords(b *testing.B, path string, n, days int) (float64, time.Duration) {
	m, err := OpenMemory(path, Options{}, nil)
	if err != nil {
		b.Fatal(err)
	}
	p, ctx := NewPricer(testConfig()), context.Background()
	now := time.Now()
	step := time.Duration(days) * 24 * time.Hour / time.Duration(n)
	var slowest time.Duration
	start := time.Now()
	for i := range n {
		r := Record{ID: "req_5f0c2a9e41d7" + strconv.FormatUint(uint64(i), 36), Time: now.Add(-time.Duration(n-i) * step),
			Key: "key" + strconv.Itoa(i%40), Team: "team" + strconv.Itoa(i%8), Model: previewModel,
			Provider: "laozhang", Attempts: 1, Images: 1, PromptTokens: 25, TextTokens: 10, ImageTokens: 1290,
			Status: 200}
		p.Charge(&r)
		t0 := time.Now()
		if _, err := m.Apply(ctx, r); err != nil {
			b.Fatal(err)
		}
		slowest = max(slowest, time.Since(t0))
	}
	rate := float64(n) / time.Since(start).Seconds()
	if err := m.Close(); err != nil {
		b.Fatal(err)
	}
	return rate, slowest
}
