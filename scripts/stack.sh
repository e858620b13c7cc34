# Shared by scripts/compat.sh and scripts/browser.sh, which source it after
# setting root and die: a work directory, the processes the script starts
# (stopped by their ids on exit), the gateway and fakeup builds, and two small
# helpers.

# stack_init NAME makes the work directory, sets the exit traps and builds
# the binaries into it.
stack_init() {
	tmp=$(mktemp -d "${TMPDIR:-/tmp}/nanogate-$1.XXXXXX")
	pids=()
	trap cleanup EXIT
	trap 'exit 130' INT TERM
	echo "$1: building the gateway and the fake upstreams"
	(cd "$root" && go build -o "$tmp/nanogate" . && go build -o "$tmp/fakeup" ./internal/fakeup/cmd/fakeup) ||
		die "build failed"
}

stop_stack() {
	# Only the processes this script started, by their ids.
	for p in "${pids[@]}"; do kill "$p" 2>/dev/null; done
	for p in "${pids[@]}"; do wait "$p" 2>/dev/null; done
	pids=()
}

cleanup() { stop_stack; rm -rf "$tmp"; }

# free_port prints a loopback port free at the time of the call.
free_port() {
	node -e 'const s=require("net").createServer().listen(0,"127.0.0.1",()=>{console.log(s.address().port);s.close()})'
}

# http_status prints the status code of GET http://127.0.0.1:$1$2, or nothing (bash only: no curl needed).
http_status() {
	(
		exec 3<>"/dev/tcp/127.0.0.1/$1" || exit 0
		printf 'GET %s HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n' "$2" >&3
		IFS=' ' read -r _ code _ <&3 && echo "$code"
	) 2>/dev/null
}
