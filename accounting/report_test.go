package accounting

import (
	"bytes"
	"encoding/csv"
	"math"
	"strings"
	"testing"

	"nanogate/config"
)

// Team and key names that a spreadsheet would run as formulas reach the CSV
// as text (a leading '), whatever their first dangerous character; names
// that only contain one later, and the gateway's own numbers, negative
// savings included, are unchanged.
func TestCSVDefusesFormulaCells(t *testing.T) {
	names := []string{`=HYPERLINK("http://evil.example","x")`, "+1+1", "-2+3", "@SUM(A1)", "\tTAB", "\rCR", "a=b", "plain"}
	want := []string{`'=HYPERLINK("http://evil.example","x")`, "'+1+1", "'-2+3", "'@SUM(A1)", "'\tTAB", "'\rCR", "a=b", "plain"}
	rep := &Report{Period: PeriodTotal}
	for _, n := range names {
		// Savings are negative here: list cost below cost.
		rep.Teams = append(rep.Teams, TeamReport{Name: n, Keys: []Named{{Name: n, Totals: Totals{Requests: 1, CostMicros: 20, ListCostMicros: 10}}}})
	}
	rows, err := csv.NewReader(bytes.NewReader(rep.CSV())).ReadAll()
	if err != nil {
		t.Fatal(err)
	}
	if len(rows) != len(names)+1 {
		t.Fatalf("%d rows", len(rows))
	}
	got := map[string]bool{}
	for _, r := range rows[1:] {
		if r[1] != r[2] {
			t.Errorf("team %q, key %q", r[1], r[2])
		}
		if r[11] != "-0.00001" {
			t.Errorf("savings %q, want the number -0.00001", r[11])
		}
		got[r[1]] = true
	}
	for _, w := range want {
		if !got[w] {
			t.Errorf("no cell %q in %q", w, rows)
		}
	}
}

// TestBudgetStateAtTheExtremes: spend and reservations as large as an int64
// holds leave nothing remaining; they never wrap into a large remainder.
func TestBudgetStateAtTheExtremes(t *testing.T) {
	b := &config.Budget{USD: 100, Period: "monthly"}
	for _, c := range []struct {
		spent, reserved int64
		want            string
	}{
		{0, 0, `"remaining_usd":100,`},
		{40_000_000, 10_000_000, `"remaining_usd":50,`},
		{math.MaxInt64, math.MaxInt64, `"remaining_usd":0,`},
		{math.MaxInt64 - 1, 2, `"remaining_usd":0,`},
		{200_000_000, 0, `"remaining_usd":0,`},
	} {
		got := string(budgetState{b: b, period: "2026-12", spent: c.spent, reserved: c.reserved}.append(nil))
		if !strings.Contains(got, c.want) {
			t.Errorf("spent %d, reserved %d: %s; want %s", c.spent, c.reserved, got, c.want)
		}
	}
}
