.PHONY: test run build check bench

# Every test: installs redis-server when missing, vets, runs go test -race.
test:
	./scripts/test.sh

run:
	go run . -config config.yaml

build:
	CGO_ENABLED=0 go build -trimpath -ldflags="-s -w" -o bin/nanogate .

check:
	go run . -check -config config.yaml

# Gateway vs direct side by side (fake upstreams, Redis), micro-benchmarks,
# profiles: writes bench/RESULTS.md. `go run ./bench/run -quick` to iterate.
bench:
	go run ./bench/run
