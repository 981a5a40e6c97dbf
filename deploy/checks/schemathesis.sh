#!/usr/bin/env bash
# Schemathesis (https://schemathesis.readthedocs.io) against /v1/openapi.json of both servers:
# an origin (in-memory store) and a proxy, started from this checkout on free loopback ports.
# Every answer must be a documented status with a documented content type and a body that
# matches its schema, never a 5xx; schema-valid requests must be accepted and invalid ones
# refused (deploy/checks/schemathesis.toml says which answers count as which).
#
#   deploy/checks/schemathesis.sh [SECONDS_PER_SERVER]   # default 60
#
# Installs schemathesis into a venv under the cargo target dir when missing (PyPI), builds the
# debug binary, and exits non-zero on any finding. Streaming routes (/v1/sse, /v1/ws and the
# proxy's SSE relay) never end by design and are left out.
set -euo pipefail

here="$(cd "$(dirname "$0")" && pwd)"
root="$(cd "$here/../.." && pwd)"
target="${CARGO_TARGET_DIR:-$root/target}"
seconds="${1:-60}"
version="${SCHEMATHESIS_VERSION:-4.32.5}"
venv="$target/schemathesis-venv"

if ! "$venv/bin/schemathesis" --version 2>/dev/null | grep -q "$version"; then
    python3 -m venv "$venv"
    "$venv/bin/pip" install --quiet "schemathesis==$version"
fi
(cd "$root" && cargo build --quiet --bin ssepush)
bin="$target/debug/ssepush"

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
origin_port="$(free_port)"
proxy_port="$(free_port)"
logs="$(mktemp -d)"
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; }
trap cleanup EXIT

"$bin" origin --listen "127.0.0.1:$origin_port" >"$logs/origin.log" 2>&1 &
pids+=($!)
"$bin" proxy --listen "127.0.0.1:$proxy_port" >"$logs/proxy.log" 2>&1 &
pids+=($!)

status=0
run() {
    local name="$1" url="$2"; shift 2
    echo "== schemathesis: $name ($url)"
    (cd "$here" && "$venv/bin/schemathesis" --config-file "$here/schemathesis.toml" run "$url" \
        --wait-for-schema 30 --max-time "$seconds" --workers 1 --no-color "$@") || status=1
}
run origin "http://127.0.0.1:$origin_port/v1/openapi.json" \
    --exclude-path /v1/sse --exclude-path /v1/ws
run proxy "http://127.0.0.1:$proxy_port/v1/openapi.json"
if [ "$status" -ne 0 ]; then
    echo "schemathesis found problems; server logs in $logs" >&2
fi
exit "$status"
