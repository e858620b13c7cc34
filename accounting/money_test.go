package accounting

import (
	"context"
	"math"
	"strconv"
	"testing"
	"time"

	"nanogate/config"
)

func TestFormatUSD(t *testing.T) {
	for micros, want := range map[int64]string{
		0:              "0",
		1:              "0.000001",
		10:             "0.00001",
		35_000:         "0.035",
		39_015:         "0.039015",
		1_000_000:      "1",
		500_000_000:    "500",
		35_000_000_000: "35000",
		-8_000:         "-0.008",
		-1:             "-0.000001",
		math.MaxInt64:  "9223372036854.775807",
		math.MinInt64:  "-9223372036854.775808",
	} {
		if got := FormatUSD(micros); got != want {
			t.Errorf("FormatUSD(%d) = %s, want %s", micros, got, want)
		}
	}
}

// TestAMillionImagesSumToExactly35000: one million records of one $0.035
// image through a store and a report read back exactly $35000; the same
// sum in float64 does not.
func TestAMillionImagesSumToExactly35000(t *testing.T) {
	const n = 1_000_000
	price := config.Price{PerImage: 0.035}
	var f float64
	for range n {
		f += price.PerImage
	}
	t.Logf("the same sum in float64 dollars: %v", f) // 35000.00000009709

	s, err := OpenMemory("", Options{Now: func() time.Time { return nov25 }}, nil)
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	batch := make([]Record, 0, 1000)
	for i := range n {
		batch = append(batch, Record{ID: strconv.Itoa(i), Time: nov25, Key: "k", Team: "t", Model: previewModel,
			Provider: "laozhang", Images: 1, ImageTokens: 1290, CostMicros: Cost(price, 1, 0, 0),
			ListCostMicros: Cost(config.Price{PerImage: 0.039}, 1, 0, 0)})
		if len(batch) == cap(batch) {
			if _, err := s.ApplyBatch(ctx, batch); err != nil {
				t.Fatal(err)
			}
			batch = batch[:0]
		}
	}
	got, err := KeyUsage(ctx, s, KeyQuery{Key: "k", Team: "t", Now: nov25})
	if err != nil {
		t.Fatal(err)
	}
	want := `{"period":"2026-11","key":{"name":"k","requests":1000000,"failed":0,"images":1000000,` +
		`"prompt_tokens":0,"completion_tokens":1290000000,"image_tokens":1290000000,"cost_usd":35000,` +
		`"list_cost_usd":39000,"savings_usd":4000},"team":{"name":"t","requests":1000000,"failed":0,` +
		`"images":1000000,"prompt_tokens":0,"completion_tokens":1290000000,"image_tokens":1290000000,` +
		`"cost_usd":35000,"list_cost_usd":39000,"savings_usd":4000,"sizes":[]}}`
	if string(got) != want {
		t.Errorf("usage =\n%s\nwant\n%s", got, want)
	}
}
