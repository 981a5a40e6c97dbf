#!/usr/bin/env bash
# The README's "wakes after an origin outage" row: `device run` (300 phones × 6 cycles with
# flaps) against a gateway, a Redis-store origin and a proxy; the origin is killed with
# `kill -9` OUTAGE_AT seconds into the run and restarted on the same address OUTAGE seconds
# later. Prints the device run's report (events, missed wakes) and when the proxy's upstream
# connections were all back. Extra proxy settings through the environment, e.g.
# SSEPUSH_PROXY_UPSTREAM__REFUSED_BACKOFF_MAX_MS=30000 for the backoff before issue 11.
#
#   deploy/bench/origin-outage.sh      # BIN=target/release/ssepush DEVICES=300 CYCLES=6 OUTAGE=4
set -euo pipefail
BIN=${BIN:-target/release/ssepush}
DEVICES=${DEVICES:-300}
CYCLES=${CYCLES:-6}
OUTAGE_AT=${OUTAGE_AT:-8}
OUTAGE=${OUTAGE:-4}
REDIS=${REDIS:-redis://127.0.0.1:6379}
BASE=${BASE_PORT:-18000}
GW=127.0.0.1:$((BASE + 70)) ORIGIN=127.0.0.1:$((BASE + 80)) PROXY=127.0.0.1:$((BASE + 90))
NS="outage-$$-$(date +%s)"
dir=$(mktemp -d)
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; rm -rf "$dir"; }
trap cleanup EXIT

start_origin() {
  SSEPUSH_ORIGIN_NAMESPACE=$NS "$BIN" origin --listen "$ORIGIN" --store "$REDIS" \
    >>"$dir/origin.log" 2>&1 &
  origin_pid=$!
  pids+=("$origin_pid")
}
wait_up() { for _ in $(seq 100); do curl -fs "http://$1/healthz" >/dev/null 2>&1 && return; sleep 0.1; done; echo "$1 not up" >&2; exit 1; }

"$BIN" gateway --listen "$GW" --credentials-dir "$dir/gw" >"$dir/gw.log" 2>&1 & pids+=($!)
start_origin
sleep 0.5
# Phones cycle every few seconds: lift the hourly wake budget (default 3, Apple's advice) to
# the most accepted, so every sleep may be woken.
SSEPUSH_PROXY_WAKE__MAX_PER_HOUR=${SSEPUSH_PROXY_WAKE__MAX_PER_HOUR:-60} \
  "$BIN" proxy --listen "$PROXY" --gateway-credentials "$dir/gw" >"$dir/proxy.log" 2>&1 & pids+=($!)
wait_up "$ORIGIN"; wait_up "$PROXY"

"$BIN" device run --origin "http://$ORIGIN" --proxy "http://$PROXY" --gateway "http://$GW" \
  --devices "$DEVICES" --cycles "$CYCLES" --flaps >"$dir/report.txt" 2>&1 &
run=$!
sleep "$OUTAGE_AT"
conns() { curl -fs "http://$PROXY/metrics" | awk '/^ssepush_proxy_upstream_connections /{printf "%d", $2}'; }
before=$(conns)
kill -9 "$origin_pid"
killed=$(date +%s.%N)
sleep "$OUTAGE"
start_origin
back=$(date +%s.%N)
wait_up "$ORIGIN"
up=$(date +%s.%N)
# When the proxy's upstream connections are back to what they were (sampled every 100 ms).
for _ in $(seq 300); do
  now=$(conns)
  [ "${now:-0}" -ge "${before:-1}" ] && break
  sleep 0.1
done
echo "origin killed at $killed, back at $back; upstream connections: $before before the kill," \
  "$now again $(echo "$(date +%s.%N) - $back" | bc) s after the restart," \
  "$(echo "$(date +%s.%N) - $up" | bc) s after it answered /healthz"
status=0
wait "$run" || status=$?
cat "$dir/report.txt"
exit "$status"
