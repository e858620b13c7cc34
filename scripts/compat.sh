#!/usr/bin/env bash
# compat.sh proves "change the base URL, nothing else": the OpenAI SDKs users run (the `openai` npm package and
# github.com/openai/openai-go/v3, pinned in compat/node and compat/go), unmodified, against the real nanogate
# binary in front of the fake upstreams of internal/fakeup.
#
#   scripts/compat.sh            both suites (node, then go)
#   scripts/compat.sh node       one suite; also: go
#   scripts/compat.sh serve      start the stack, print its NANOGATE_COMPAT_* variables, wait for Ctrl-C (to
#                                run one case by hand: node --test --test-name-pattern=..., go test -run ...)
#
# For each suite it builds the gateway and the fakeup command, starts the fakes (an OpenAI-compatible reseller
# and the Gemini API, with fakeup's control API) and a gateway on free loopback ports, waits for /healthz, runs
# the suite and stops everything, also on failure or Ctrl-C. Each suite gets a fresh gateway and fresh fakes.
#
# The gateway serves four public models: gemini-2.5-flash-image-preview (reseller only),
# gemini-2.5-flash-image (gemini only), nano-banana (both; routing.max_attempts 2) and nano-banana-pro
# (Gemini 3 Pro Image, gemini only; its own key, so that its usage is its own). Client keys: one
# unrestricted, one allowed only nano-banana, and three with rate limits: 1 request per minute (a second call is
# a 429), 30 per minute (an empty bucket refills one request every 2 s, which the SDKs' retries wait out) and
# a generous RPM and TPM (for the x-ratelimit-* headers of admitted answers). An admin key lets a case make a
# key at run time (POST /admin/keys; the embedded key store, in the suite's directory). The suites find all this
# in NANOGATE_COMPAT_* variables.
#
# Needs go, node (20 or newer) and npm; network only for `npm ci` and Go modules. Exit status: 0 when every
# suite passed, 1 when one failed (the stack's logs are printed), 2 when a tool is missing or the stack did not
# start.
set -uo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)

die() { echo "compat: $*" >&2; exit 2; }
command -v go >/dev/null || die "go is not installed (Go 1.26 builds the gateway and runs compat/go)"
command -v node >/dev/null || die "node is not installed (Node.js 20 or newer runs compat/node)"
command -v npm >/dev/null || die "npm is not installed (it comes with Node.js; compat/node installs the openai package with it)"
node_major=$(node -p 'process.versions.node.split(".")[0]')
[ "$node_major" -ge 20 ] || die "node $(node --version) is too old: compat/node needs Node.js 20 or newer"

suites=("$@")
[ ${#suites[@]} -gt 0 ] || suites=(node go)
for s in "${suites[@]}"; do
	case $s in node | go | serve) ;; *) die "unknown suite $s (node, go or serve)" ;; esac
done

. "$root/scripts/stack.sh"
stack_init compat

upstream_key="up-compat-upstream-key-0451"
export NANOGATE_COMPAT_KEY="sk-compat-full-access-0123456789"
export NANOGATE_COMPAT_RESTRICTED_KEY="sk-compat-only-nano-banana-9876"
export NANOGATE_COMPAT_LIMITED_KEY="sk-compat-one-request-a-minute-42"
export NANOGATE_COMPAT_REFILL_KEY="sk-compat-thirty-requests-a-minute-7"
export NANOGATE_COMPAT_METERED_KEY="sk-compat-metered-rpm-and-tpm-1234"
export NANOGATE_COMPAT_REFILL_RPM=30
export NANOGATE_COMPAT_METERED_RPM=6000
export NANOGATE_COMPAT_METERED_TPM=1000000
export NANOGATE_COMPAT_MODEL_OPENAI="gemini-2.5-flash-image-preview"
export NANOGATE_COMPAT_MODEL_GEMINI="gemini-2.5-flash-image"
export NANOGATE_COMPAT_MODEL_BOTH="nano-banana"
export NANOGATE_COMPAT_MODEL_PRO="nano-banana-pro"
export NANOGATE_COMPAT_PRO_KEY="sk-compat-only-pro-at-4k-5555"
# The admin key: the keys case makes a key through POST /admin/keys, as an operator's script would, then uses it
# with the SDK unchanged.
export NANOGATE_COMPAT_ADMIN_KEY="admin-compat-keys-case-2468"
export NANOGATE_COMPAT_MAX_ATTEMPTS=2

# start_stack starts the fakes and a gateway for suite $1 and exports where they are. The gateway runs in the
# suite's own directory, so whatever it writes relative to its working directory stays out of the repository.
start_stack() {
	local dir="$tmp/$1" port i
	mkdir -p "$dir"
	"$tmp/fakeup" -key "$upstream_key" -control 127.0.0.1:0 -models gemini-2.5-flash-image,gemini-3-pro-image \
		>"$dir/fakeup.log" 2>&1 &
	pids+=($!)
	for i in $(seq 100); do
		grep -q '^control ' "$dir/fakeup.log" && break
		sleep 0.05
	done
	grep -q '^control ' "$dir/fakeup.log" || { cat "$dir/fakeup.log" >&2; die "the fake upstreams did not start"; }
	export NANOGATE_COMPAT_CONTROL=$(awk '$1 == "control" {print $2}' "$dir/fakeup.log")
	local openai_url gemini_url
	openai_url=$(awk '$1 == "openai" {print $2}' "$dir/fakeup.log")
	gemini_url=$(awk '$1 == "gemini" {print $2}' "$dir/fakeup.log")

	port=$(free_port)
	cat >"$dir/config.yaml" <<-EOF
		server:
		  listen: "127.0.0.1:$port"
		  shutdown_timeout: 5s
		log: { level: info, format: json }
		admin_key: \${COMPAT_ADMIN_KEY}
		providers:
		  - name: reseller
		    kind: openai
		    base_url: $openai_url
		    api_key: \${COMPAT_UPSTREAM_KEY}
		    models:
		      $NANOGATE_COMPAT_MODEL_OPENAI: gemini-2.5-flash-image-preview
		      $NANOGATE_COMPAT_MODEL_BOTH: gemini-2.5-flash-image-preview
		    price: { per_image: 0.035, input_per_mtok: 0.30, output_per_mtok: 2.50 }
		    timeout: 20s
		  - name: google
		    kind: gemini
		    base_url: $gemini_url
		    api_key: \${COMPAT_UPSTREAM_KEY}
		    models:
		      $NANOGATE_COMPAT_MODEL_GEMINI: gemini-2.5-flash-image
		      $NANOGATE_COMPAT_MODEL_BOTH: gemini-2.5-flash-image
		      $NANOGATE_COMPAT_MODEL_PRO: gemini-3-pro-image
		    price: { per_image: 0.039, input_per_mtok: 0.30, output_per_mtok: 2.50 }
		    timeout: 20s
		routing:
		  strategy: cheapest
		  max_attempts: $NANOGATE_COMPAT_MAX_ATTEMPTS
		  health: { failure_threshold: 1000, cooldown: 1s }   # circuits stay closed: faults are per test
		images: { format: markdown }
		teams:
		  - name: compat
		keys:
		  - name: full
		    team: compat
		    key: \${COMPAT_FULL_KEY}
		  - name: restricted
		    team: compat
		    key: \${COMPAT_RESTRICTED_KEY}
		    models: [$NANOGATE_COMPAT_MODEL_BOTH]
		  - name: limited
		    team: compat
		    key: \${COMPAT_LIMITED_KEY}
		    rpm: 1
		  - name: refill
		    team: compat
		    key: \${COMPAT_REFILL_KEY}
		    rpm: $NANOGATE_COMPAT_REFILL_RPM
		  - name: metered
		    team: compat
		    key: \${COMPAT_METERED_KEY}
		    rpm: $NANOGATE_COMPAT_METERED_RPM
		    tpm: $NANOGATE_COMPAT_METERED_TPM
		  - name: pro
		    team: compat
		    key: \${COMPAT_PRO_KEY}
	EOF
	COMPAT_UPSTREAM_KEY=$upstream_key COMPAT_FULL_KEY=$NANOGATE_COMPAT_KEY \
		COMPAT_RESTRICTED_KEY=$NANOGATE_COMPAT_RESTRICTED_KEY COMPAT_LIMITED_KEY=$NANOGATE_COMPAT_LIMITED_KEY \
		COMPAT_REFILL_KEY=$NANOGATE_COMPAT_REFILL_KEY COMPAT_METERED_KEY=$NANOGATE_COMPAT_METERED_KEY \
		COMPAT_PRO_KEY=$NANOGATE_COMPAT_PRO_KEY COMPAT_ADMIN_KEY=$NANOGATE_COMPAT_ADMIN_KEY \
		bash -c 'cd "$1" && exec "$2" -config config.yaml' _ "$dir" "$tmp/nanogate" >"$dir/gateway.log" 2>&1 &
	pids+=($!)
	local gw=$!
	for i in $(seq 300); do
		[ "$(http_status "$port" /healthz)" = 200 ] && break
		kill -0 "$gw" 2>/dev/null || break
		sleep 0.05
	done
	if [ "$(http_status "$port" /healthz)" != 200 ]; then
		cat "$dir/gateway.log" >&2
		die "the gateway did not become healthy"
	fi
	export NANOGATE_COMPAT_BASE_URL="http://127.0.0.1:$port/v1"
}

# show_logs prints what the stack logged, for a failed suite.
show_logs() {
	echo "----- gateway log ($1, last 60 lines) -----"
	tail -n 60 "$tmp/$1/gateway.log"
	echo "----- fakeup log ($1) -----"
	cat "$tmp/$1/fakeup.log"
}

# sdk_node and sdk_go name the SDK a suite runs, for its closing line.
sdk_node() { echo "openai $(node -p 'require(process.argv[1]).dependencies.openai' "$root/compat/node/package.json") on node $(node --version)"; }
sdk_go() { echo "openai-go $(awk '{for (i = 1; i < NF; i++) if ($i == "github.com/openai/openai-go/v3") print $(i + 1)}' "$root/compat/go/go.mod") on $(go env GOVERSION)"; }

run_node() {
	(cd "$root/compat/node" && npm ci --silent --no-audit --no-fund && npm test --silent)
}

run_go() {
	(cd "$root/compat/go" && go test -count=1 ./...)
}

if [ "${suites[0]}" = serve ]; then
	start_stack serve
	env | grep '^NANOGATE_COMPAT_' | sed 's/^/export /'
	echo "compat: serving; logs in $tmp/serve; Ctrl-C stops"
	while kill -0 "${pids[@]}" 2>/dev/null; do sleep 1; done
	exit 1
fi

failed=()
for s in "${suites[@]}"; do
	start_stack "$s"
	started=$(date +%s)
	if "run_$s"; then
		echo "compat: PASS $s suite ($("sdk_$s")) in $(($(date +%s) - started))s"
	else
		show_logs "$s"
		echo "compat: FAIL $s suite ($("sdk_$s")) in $(($(date +%s) - started))s"
		failed+=("$s")
	fi
	stop_stack
done

if [ ${#failed[@]} -gt 0 ]; then
	echo "compat: FAIL (${failed[*]})"
	exit 1
fi
echo "compat: ok (${suites[*]})"
