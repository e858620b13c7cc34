#!/usr/bin/env bash
# Runs every test of nanogate. Installs what the tests need when it is
# missing (redis-server from Debian's packages), then vets and tests with the
# race detector. Used by `make test` and CI (.ci/run).
set -euo pipefail
cd "$(dirname "$0")/.."

need=()
command -v redis-server >/dev/null 2>&1 || need+=(redis-server)
if [ ${#need[@]} -gt 0 ]; then
  echo "test.sh: installing ${need[*]}"
  sudo=""
  [ "$(id -u)" -ne 0 ] && sudo="sudo"
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${need[@]}"
fi
command -v go >/dev/null 2>&1 || { echo "test.sh: Go is not installed (https://go.dev/doc/install)"; exit 1; }

# Pinned test tools (versitygw for the S3 tests) into .tools/bin, on PATH.
. scripts/tools.sh

echo "test.sh: go vet, go mod tidy -diff"
go vet ./...
if ! go mod tidy -diff >/dev/null; then
  echo "test.sh: go.mod or go.sum is not tidy (go mod tidy -diff):"; go mod tidy -diff; exit 1
fi
# Other systems: go vet type-checks test files too, which go build skips.
for goos in darwin windows; do
  echo "test.sh: GOOS=$goos go build, go vet"
  GOOS=$goos go build ./...
  GOOS=$goos go vet ./...
done
# Pinned so that a new release's checks never fail an unchanged tree.
echo "test.sh: staticcheck"
go run honnef.co/go/tools/cmd/staticcheck@v0.8.2 ./...
unformatted=$(gofmt -l $(git ls-files '*.go' 2>/dev/null || find . -name '*.go'))
if [ -n "$unformatted" ]; then
  echo "test.sh: gofmt would change:"; echo "$unformatted"; exit 1
fi
# Tests wait on conditions (internal/poll) or run in synctest bubbles; a
# sleep is the exception and this keeps it one.
sleeps=$(grep -rn "time.Sleep" --include='*_test.go' . | grep -v node_modules | wc -l)
if [ "$sleeps" -gt 15 ]; then
  echo "test.sh: $sleeps time.Sleep calls in tests (at most 15): wait on a condition instead"; exit 1
fi
echo "test.sh: go test -race"
go test -race -count=1 -timeout 15m ./...
# The journey and the HTTP server are tested directly, not only through e2e.
for pkg in gateway proxy; do
  pct=$(go test -count=1 -cover "./$pkg" | sed -n 's/.*coverage: \([0-9]*\)\..*/\1/p')
  if [ -z "$pct" ] || [ "$pct" -lt 60 ]; then
    echo "test.sh: $pkg own-package coverage ${pct:-?}% (at least 60%)"; exit 1
  fi
  echo "test.sh: $pkg own-package coverage $pct%"
done

# The official OpenAI SDKs (Node, Go) against the real binary.
echo "test.sh: SDK compatibility suites"
./scripts/compat.sh

# The /admin/ dashboard in headless Chromium (installed from Debian when missing).
echo "test.sh: dashboard in a real browser"
./scripts/browser.sh
