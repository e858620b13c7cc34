// Package bench holds nanogate's benchmarks. Its tests are micro-benchmarks
// of the per-request path (auth, limiter, request parse, upstream answer
// parse, response rendering and the whole handler in-process), run with
//
//	go test -run '^$' -bench . -benchmem ./bench
//
// bench/run is the harness behind `make bench`: the real binary against the
// fake upstreams and Redis, compared with the same requests sent directly,
// written to bench/RESULTS.md. bench/load is its load generator.
package bench
