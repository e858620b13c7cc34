.PHONY: test run build check

# Every test: installs redis-server when missing, vets, runs go test -race.
test:
	./scripts/test.sh

run:
	go run . -config config.yaml

build:
	CGO_ENABLED=0 go build -trimpath -ldflags="-s -w" -o bin/nanogate .

check:
	go run . -check -config config.yaml
