package main

import (
	"fmt"
	"os/exec"
	"slices"
	"strconv"
	"strings"
)

// microResult is one micro-benchmark: the median of each metric over the
// -count runs.
type microResult struct {
	name    string
	metrics map[string]float64 // unit -> value: ns/op, B/op, allocs/op, MB/s, custom
	units   []string           // in the order go test printed them
}

// runMicro runs the compiled bench test binary and parses its output.
func runMicro(testBin, dir string, count int, benchtime string) ([]microResult, string, error) {
	cmd := exec.Command(testBin, "-test.run", "^$", "-test.bench", ".", "-test.benchmem",
		"-test.count", strconv.Itoa(count), "-test.benchtime", benchtime)
	cmd.Dir = dir
	out, err := cmd.CombinedOutput()
	if err != nil {
		return nil, string(out), fmt.Errorf("micro-benchmarks: %w", err)
	}
	return parseBench(string(out)), string(out), nil
}

// parseBench reads `go test -bench` lines such as
//
//	BenchmarkAuthLookup-2   12345   95.3 ns/op   0 B/op   0 allocs/op
func parseBench(out string) []microResult {
	type acc struct {
		units []string
		vals  map[string][]float64
	}
	var order []string
	all := map[string]*acc{}
	for _, line := range strings.Split(out, "\n") {
		f := strings.Fields(line)
		if len(f) < 4 || !strings.HasPrefix(f[0], "Benchmark") {
			continue
		}
		name := strings.TrimPrefix(f[0], "Benchmark")
		if i := strings.LastIndexByte(name, '-'); i > 0 {
			if _, err := strconv.Atoi(name[i+1:]); err == nil {
				name = name[:i] // the GOMAXPROCS suffix
			}
		}
		a := all[name]
		if a == nil {
			a = &acc{vals: map[string][]float64{}}
			all[name] = a
			order = append(order, name)
		}
		for i := 2; i+1 < len(f); i += 2 {
			v, err := strconv.ParseFloat(f[i], 64)
			if err != nil {
				break
			}
			u := f[i+1]
			if _, seen := a.vals[u]; !seen {
				a.units = append(a.units, u)
			}
			a.vals[u] = append(a.vals[u], v)
		}
	}
	res := make([]microResult, 0, len(order))
	for _, n := range order {
		a := all[n]
		m := microResult{name: n, metrics: map[string]float64{}, units: a.units}
		for u, vs := range a.vals {
			m.metrics[u] = medianF(vs)
		}
		res = append(res, m)
	}
	return res
}

func medianF(vs []float64) float64 {
	if len(vs) == 0 {
		return 0
	}
	s := slices.Clone(vs)
	slices.Sort(s)
	if len(s)%2 == 1 {
		return s[len(s)/2]
	}
	return (s[len(s)/2-1] + s[len(s)/2]) / 2
}
