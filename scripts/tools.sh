#!/usr/bin/env bash
# Installs the tools the tests run, at pinned versions, into <repo>/.tools/bin
# when they are missing or at another version:
#   versitygw  an S3 server (SigV4 and presigned-URL checks, posix backend)
#              that images/ tests the S3 store against.
# Run it (scripts/tools.sh) or source it (. scripts/tools.sh): sourced, it also
# puts .tools/bin first in PATH, and it changes no shell option of the caller.
# Needs Go and network access to the Go module proxy the first time.

nanogate_tools() {
  local versitygw_version=v1.8.0 # github.com/versity/versitygw
  local root bin have
  root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)" || return 1
  bin="$root/.tools/bin"

  if ! command -v go >/dev/null 2>&1; then
    echo "tools.sh: Go is not installed (https://go.dev/doc/install)" >&2
    return 1
  fi
  # `go version -m` reads the module version built into the binary, so a
  # binary of another version (or not built by go install) is replaced.
  have=""
  if [ -x "$bin/versitygw" ]; then
    have="$(go version -m "$bin/versitygw" 2>/dev/null |
      awk '$1 == "mod" && $2 == "github.com/versity/versitygw" { print $3 }')"
  fi
  if [ "$have" != "$versitygw_version" ]; then
    echo "tools.sh: installing versitygw $versitygw_version into $bin"
    mkdir -p "$bin" || return 1
    GOBIN="$bin" go install "github.com/versity/versitygw/cmd/versitygw@$versitygw_version" || return 1
  fi
  case ":$PATH:" in
    *":$bin:"*) ;;
    *) PATH="$bin:$PATH" ;;
  esac
  export PATH
}

if [ "${BASH_SOURCE[0]}" = "$0" ]; then
  nanogate_tools || exit 1
else
  nanogate_tools
fi
