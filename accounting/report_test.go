package accounting

import (
	"bytes"
	"encoding/csv"
	"testing"
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
