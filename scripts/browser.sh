#!/usr/bin/env bash
# browser.sh drives the /admin/ dashboard in headless Chromium against the real nanogate binary in front of the
# fake upstreams of internal/fakeup (e2e/browser/dashboard.test.mjs, with puppeteer-core pinned in
# e2e/browser/package-lock.json).
#
#   scripts/browser.sh           install what is missing, build, start the stack, run the test, stop everything
#   scripts/browser.sh serve     start the stack, print its NANOGATE_BROWSER_* variables and the dashboard's
#                                address and admin key, wait for Ctrl-C (to look at the page by hand)
#
# It installs Debian's chromium package when /usr/bin/chromium is missing (apt-get, with sudo when not root;
# puppeteer's own browser download is never used) and the test's npm packages (npm ci). It builds the gateway and
# the fakeup command, starts the fakes (an OpenAI-compatible reseller at $0.035 an image and the Gemini API at
# $0.039, with fakeup's control API) and a gateway with an admin key on free loopback ports, waits for /healthz,
# runs the test and stops everything, also on failure or Ctrl-C. routing.health.failure_threshold is 2, so the
# test can open the reseller's circuit with two failed requests. The keys and teams the test makes through the page
# go to the gateway's embedded store (data/keys.jsonl in its own directory), gone with the stack.
#
# The screenshot the test takes is left in e2e/browser/screenshot.png (git-ignored).
#
# Needs go, node (20 or newer) and npm; network only for apt-get (when chromium is missing), npm ci and Go
# modules. Exit status: 0 when the test passed, 1 when it failed (the stack's logs are printed), 2 when a tool is
# missing or the stack did not start.
set -uo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)
chromium=${NANOGATE_BROWSER_CHROMIUM:-/usr/bin/chromium}
started=$(date +%s)

die() {
	echo "browser: $*" >&2
	echo "browser: FAIL (setup) after $(($(date +%s) - started))s"
	exit 2
}

mode=${1:-test}
case $mode in test | serve) ;; *) die "unknown mode $mode (test or serve)" ;; esac

command -v go >/dev/null || die "go is not installed (Go 1.26 builds the gateway)"
command -v node >/dev/null || die "node is not installed (Node.js 20 or newer runs e2e/browser)"
command -v npm >/dev/null || die "npm is not installed (it comes with Node.js; e2e/browser installs puppeteer-core with it)"
node_major=$(node -p 'process.versions.node.split(".")[0]')
[ "$node_major" -ge 20 ] || die "node $(node --version) is too old: e2e/browser needs Node.js 20 or newer"

if [ ! -x "$chromium" ]; then
	[ "$chromium" = /usr/bin/chromium ] || die "$chromium (NANOGATE_BROWSER_CHROMIUM) is not an executable"
	echo "browser: installing Debian's chromium package"
	sudo=""
	[ "$(id -u)" -ne 0 ] && sudo="sudo"
	$sudo apt-get update -qq || die "apt-get update failed"
	DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends chromium >/dev/null ||
		die "apt-get install chromium failed"
	[ -x "$chromium" ] || die "the chromium package did not install $chromium"
fi
chromium_version=$("$chromium" --version 2>/dev/null | awk '{print $1" "$2; exit}')

echo "browser: installing the test's npm packages (npm ci)"
(cd "$root/e2e/browser" && PUPPETEER_SKIP_DOWNLOAD=1 npm ci --silent --no-audit --no-fund) || die "npm ci failed in e2e/browser"
puppeteer_version=$(node -p 'require(process.argv[1]).version' "$root/e2e/browser/node_modules/puppeteer-core/package.json")

. "$root/scripts/stack.sh"
stack_init browser

upstream_key="up-browser-upstream-key-0451"
export NANOGATE_BROWSER_ADMIN_KEY="admin-browser-test-key-5150"
export NANOGATE_BROWSER_DESIGN_KEY="sk-browser-design-ci-0123456789"
export NANOGATE_BROWSER_MARKETING_KEY="sk-browser-campaigns-9876543210"
export NANOGATE_BROWSER_LAB_KEY="sk-browser-lab-intern-2468013579"
export NANOGATE_BROWSER_MODEL="gemini-2.5-flash-image-preview"
export NANOGATE_BROWSER_CHROMIUM="$chromium"
export NANOGATE_BROWSER_SCREENSHOT="$root/e2e/browser/screenshot.png"

dir="$tmp/stack"
mkdir -p "$dir"
"$tmp/fakeup" -key "$upstream_key" -control 127.0.0.1:0 >"$dir/fakeup.log" 2>&1 &
pids+=($!)
for i in $(seq 100); do
	grep -q '^control ' "$dir/fakeup.log" && break
	sleep 0.05
done
grep -q '^control ' "$dir/fakeup.log" || { cat "$dir/fakeup.log" >&2; die "the fake upstreams did not start"; }
export NANOGATE_BROWSER_CONTROL=$(awk '$1 == "control" {print $2}' "$dir/fakeup.log")
openai_url=$(awk '$1 == "openai" {print $2}' "$dir/fakeup.log")
gemini_url=$(awk '$1 == "gemini" {print $2}' "$dir/fakeup.log")

# Three teams: design (a roomy budget), marketing (a budget its three test requests nearly use up: a red bar)
# and a team and key whose names would be markup if the page parsed them as HTML.
port=$(free_port)
cat >"$dir/config.yaml" <<EOF
server:
  listen: "127.0.0.1:$port"
  shutdown_timeout: 5s
admin_key: \${BROWSER_ADMIN_KEY}
log: { level: info, format: json }
providers:
  - name: reseller
    kind: openai
    base_url: $openai_url
    api_key: \${BROWSER_UPSTREAM_KEY}
    models: { $NANOGATE_BROWSER_MODEL: gemini-2.5-flash-image-preview }
    price: { per_image: 0.035, input_per_mtok: 0.30, output_per_mtok: 2.50 }
    timeout: 20s
  - name: google
    kind: gemini
    base_url: $gemini_url
    api_key: \${BROWSER_UPSTREAM_KEY}
    models: { $NANOGATE_BROWSER_MODEL: gemini-2.5-flash-image }
    price: { per_image: 0.039, input_per_mtok: 0.30, output_per_mtok: 2.50 }
    timeout: 20s
routing:
  strategy: cheapest
  max_attempts: 2
  health: { failure_threshold: 2, cooldown: 120s }
images: { format: markdown }
teams:
  - name: design
    budget: { usd: 1, period: monthly }
  - name: marketing
    budget: { usd: 0.13, period: monthly }
  - name: "R&D <lab>"
keys:
  - name: design-ci
    team: design
    key: \${BROWSER_DESIGN_KEY}
  - name: campaigns
    team: marketing
    key: \${BROWSER_MARKETING_KEY}
  - name: "intern <i>beta</i>"
    team: "R&D <lab>"
    key: \${BROWSER_LAB_KEY}
EOF
# The gateway runs in its own directory: its data/usage.jsonl stays out of the repository.
BROWSER_UPSTREAM_KEY=$upstream_key BROWSER_ADMIN_KEY=$NANOGATE_BROWSER_ADMIN_KEY \
	BROWSER_DESIGN_KEY=$NANOGATE_BROWSER_DESIGN_KEY BROWSER_MARKETING_KEY=$NANOGATE_BROWSER_MARKETING_KEY \
	BROWSER_LAB_KEY=$NANOGATE_BROWSER_LAB_KEY \
	bash -c 'cd "$1" && exec "$2" -config config.yaml' _ "$dir" "$tmp/nanogate" >"$dir/gateway.log" 2>&1 &
gw=$!
pids+=($gw)
for i in $(seq 300); do
	[ "$(http_status "$port" /healthz)" = 200 ] && break
	kill -0 "$gw" 2>/dev/null || break
	sleep 0.05
done
if [ "$(http_status "$port" /healthz)" != 200 ]; then
	cat "$dir/gateway.log" >&2
	die "the gateway did not become healthy"
fi
export NANOGATE_BROWSER_URL="http://127.0.0.1:$port"

if [ "$mode" = serve ]; then
	env | grep '^NANOGATE_BROWSER_' | sed 's/^/export /'
	echo "browser: dashboard at $NANOGATE_BROWSER_URL/admin/ (admin key $NANOGATE_BROWSER_ADMIN_KEY); logs in $dir; Ctrl-C stops"
	while kill -0 "${pids[@]}" 2>/dev/null; do sleep 1; done
	exit 1
fi

echo "browser: running the dashboard test in $chromium_version with puppeteer-core $puppeteer_version"
out="$tmp/test.out"
(cd "$root/e2e/browser" && npm test --silent) 2>&1 | tee "$out"
status=${PIPESTATUS[0]}
pass=$(awk '$1 == "ℹ" && $2 == "pass" {print $3}' "$out" | tail -n 1)
fail=$(awk '$1 == "ℹ" && $2 == "fail" {print $3}' "$out" | tail -n 1)
elapsed=$(($(date +%s) - started))
if [ "$status" -ne 0 ] || [ -z "$pass" ] || [ "$pass" -eq 0 ]; then
	echo "----- gateway log (last 60 lines) -----"
	tail -n 60 "$dir/gateway.log"
	echo "----- fakeup log -----"
	cat "$dir/fakeup.log"
	echo "browser: FAIL dashboard test ($chromium_version, puppeteer-core $puppeteer_version) in ${elapsed}s"
	echo "browser: ${pass:-0} passed, ${fail:-1} failed"
	exit 1
fi
echo "browser: PASS dashboard test ($chromium_version, puppeteer-core $puppeteer_version) in ${elapsed}s; screenshot in e2e/browser/screenshot.png"
echo "browser: ${pass} passed, ${fail:-0} failed"
