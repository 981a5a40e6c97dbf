#!/usr/bin/env bash
# SSE fan-out, ssepush origin beside Nchan, on the same machine, with the same load, in one run.
#
# Installs Nchan (Debian's nginx + libnginx-mod-nchan) and jq when missing, writes a minimal
# nginx config (one worker, a publisher and an EventSource subscriber location on a loopback
# port, its own prefix, pid and logs under a temporary directory: the system's nginx config is
# never read or touched), starts it and a release `ssepush origin`, and runs `ssepush bench sse`
# against each at two loads:
#
#   below saturation   10,000 subscribers × 5 events/s
#   at saturation       5,000 subscribers × 40 events/s asked
#
# then prints, per load, each server's CPU per delivered event, p99 publish→receive latency,
# deliveries/s, loss and publishes accepted of those asked, and the ratios ssepush / Nchan
# (SPEC §8 targets: CPU ≤ 1/3, p99 ≤ 1). The publisher is a closed loop (one publish in
# flight; a tick that finds it busy is skipped), so a saturated server shows as fewer
# publishes accepted than asked, and its latency stays the latency of a delivery rather than
# of a queue that grows for the whole run.
#
# Usage: deploy/bench/nchan-compare.sh            (from anywhere in the repository)
# Environment:
#   DURATION=20s           publishing time of each run
#   BELOW="10000 5"        subscribers and events/s below saturation
#   SATURATED="5000 40"    subscribers and events/s at saturation
#   NCHAN_PORT=18181 ORIGIN_PORT=18180
#   SSEPUSH_BIN=path       use this binary instead of building target/release/ssepush
#   SAME_RATE=0            skip the extra ssepush run at the publish rate Nchan accepted
#   KEEP=1                 keep the temporary directory (configs, logs, the JSON reports)
set -euo pipefail

DURATION=${DURATION:-20s}
BELOW=${BELOW:-"10000 5"}
SATURATED=${SATURATED:-"5000 40"}
NCHAN_PORT=${NCHAN_PORT:-18181}
ORIGIN_PORT=${ORIGIN_PORT:-18180}
NCHAN_MODULE=/usr/lib/nginx/modules/ngx_nchan_module.so
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)

say() { printf '\n== %s\n' "$*" >&2; }

# --- Nchan and jq, from Debian's packages, only when missing ----------------------------------
need=()
command -v nginx >/dev/null 2>&1 || [ -x /usr/sbin/nginx ] || need+=(nginx)
[ -f "$NCHAN_MODULE" ] || need+=(libnginx-mod-nchan)
command -v jq >/dev/null 2>&1 || need+=(jq)
if [ ${#need[@]} -gt 0 ]; then
    say "installing ${need[*]}"
    SUDO=; [ "$(id -u)" -eq 0 ] || SUDO=sudo
    $SUDO apt-get update -q
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -q --no-install-recommends "${need[@]}"
fi
NGINX=$(command -v nginx || echo /usr/sbin/nginx)

# --- ssepush, release build -------------------------------------------------------------------
if [ -z "${SSEPUSH_BIN:-}" ]; then
    say "building ssepush (release)"
    (cd "$ROOT" && cargo build --release --quiet --bin ssepush)
    SSEPUSH_BIN="${CARGO_TARGET_DIR:-$ROOT/target}/release/ssepush"
fi

# --- a private nginx ----------------------------------------------------------------------------
DIR=$(mktemp -d -t ssepush-nchan-XXXXXX)
mkdir -p "$DIR/logs" "$DIR/tmp"
cleanup() {
    [ -n "${NGINX_PID:-}" ] && kill "$NGINX_PID" 2>/dev/null || true
    [ -n "${ORIGIN_PID:-}" ] && kill "$ORIGIN_PID" 2>/dev/null || true
    wait 2>/dev/null || true
    if [ "${KEEP:-0}" = 1 ]; then echo "kept $DIR" >&2; else rm -rf "$DIR"; fi
}
trap cleanup EXIT

cat > "$DIR/nginx.conf" <<CONF
load_module $NCHAN_MODULE;
worker_processes 1;
worker_rlimit_nofile 20000;
pid $DIR/nginx.pid;
error_log $DIR/logs/error.log warn;
events {
    worker_connections 20000;
}
http {
    access_log off;
    client_body_temp_path $DIR/tmp/body;
    proxy_temp_path $DIR/tmp/proxy;
    fastcgi_temp_path $DIR/tmp/fastcgi;
    uwsgi_temp_path $DIR/tmp/uwsgi;
    scgi_temp_path $DIR/tmp/scgi;
    server {
        listen 127.0.0.1:$NCHAN_PORT;
        # POST /pub?id=CHANNEL: the body is the message.
        location = /pub {
            nchan_publisher;
            nchan_channel_id \$arg_id;
        }
        # GET /sub?id=CHANNEL: an EventSource stream of the channel's new messages.
        location = /sub {
            nchan_subscriber eventsource;
            nchan_channel_id \$arg_id;
            nchan_subscriber_first_message newest;
        }
    }
}
CONF

ulimit -n "$(ulimit -Hn)"
say "starting nginx + Nchan on 127.0.0.1:$NCHAN_PORT and ssepush origin on 127.0.0.1:$ORIGIN_PORT"
"$NGINX" -p "$DIR" -e "$DIR/logs/error.log" -c "$DIR/nginx.conf" -g 'daemon off;' &
NGINX_PID=$!
SSEPUSH_LOG_FORMAT=json RUST_LOG=warn "$SSEPUSH_BIN" origin --listen "127.0.0.1:$ORIGIN_PORT" \
    2> "$DIR/logs/origin.log" &
ORIGIN_PID=$!

wait_port() {
    for _ in $(seq 1 100); do
        (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return 0
        sleep 0.1
    done
    echo "nothing listens on 127.0.0.1:$1" >&2
    exit 1
}
wait_port "$NCHAN_PORT"
wait_port "$ORIGIN_PORT"
NCHAN_WORKER=$(pgrep -P "$NGINX_PID" | head -n1)
[ -n "$NCHAN_WORKER" ] || { echo "no nginx worker process" >&2; exit 1; }

bench() { # NAME SUBSCRIBERS RATE
    local name=$1 subs=$2 rate=$3 out="$DIR/$1-$2x$3.json"
    case $name in
    nchan)
        set -- --url "http://127.0.0.1:$NCHAN_PORT/sub?id=bench" \
            --publish-url "http://127.0.0.1:$NCHAN_PORT/pub?id=bench" --publish-format raw \
            --server-pid "$NGINX_PID" --server-pid "$NCHAN_WORKER" ;;
    ssepush)
        set -- --url "http://127.0.0.1:$ORIGIN_PORT/v1/sse?channel=bench.sse" \
            --publish-url "http://127.0.0.1:$ORIGIN_PORT/v1/events" --publish-format ssepush \
            --server-pid "$ORIGIN_PID" ;;
    esac
    say "$name: $subs subscribers × $rate events/s for $DURATION (load average $(cut -d' ' -f1-3 /proc/loadavg))"
    "$SSEPUSH_BIN" bench sse "$@" --subscribers "$subs" --rate "$rate" --duration "$DURATION" \
        --json > "$out"
    jq -r '"   delivered \(.received) of \(.expected) (\(.deliveriesPerSec | floor)/s), "
        + "CPU/delivery \(.server.cpuPerDeliveryUs * 100 | round / 100) µs, "
        + "p99 \(.latency.p99Ms) ms"' "$out" >&2
    echo "$out"
}

results=()
for load in "$BELOW" "$SATURATED"; do
    read -r subs rate <<< "$load"
    results+=("$(bench nchan "$subs" "$rate")" "$(bench ssepush "$subs" "$rate")")
done

# --- the comparison -----------------------------------------------------------------------------
echo
echo "SSE fan-out, ssepush origin vs Nchan (nginx $("$NGINX" -v 2>&1 | sed 's/.*nginx\///'), one worker), $DURATION per run"
printf '%-14s %-8s %10s %12s %7s %10s %13s %6s\n' load server published "deliveries/s" loss% "p99 ms" "CPU/deliv µs" cores
for ((i = 0; i < ${#results[@]}; i += 2)); do
    n=${results[i]} s=${results[i+1]}
    what=$(jq -r '"\(.params.subscribers) × \(.params.rate)/s"' "$n")
    for f in "$n" "$s"; do
        jq -r --arg what "$what" --arg server "$(basename "$f" | cut -d- -f1)" \
            '[$what, $server, "\(.published.ok)/\(.published.asked)", (.deliveriesPerSec | floor),
              (.lossPercent * 1000 | round / 1000), .latency.p99Ms,
              (.server.cpuPerDeliveryUs * 100 | round / 100), (.server.cores * 100 | round / 100)]
             | @tsv' "$f"
    done | awk -F'\t' '{ printf "%-14s %-8s %10s %12s %7s %10s %13s %6s\n", $1, $2, $3, $4, $5, $6, $7, $8 }'
    jq -rn --slurpfile n "$n" --slurpfile s "$s" --arg what "$what" \
        '"\($what): CPU per delivery ssepush/Nchan = \(($s[0].server.cpuPerDeliveryUs / $n[0].server.cpuPerDeliveryUs) * 1000 | round / 1000) (target ≤ 0.333); "
         + "p99 ssepush/Nchan = \(($s[0].latency.p99Ms / $n[0].latency.p99Ms) * 1000 | round / 1000) (target ≤ 1)"'
done

# --- the same delivered rate ----------------------------------------------------------------------
# The publisher is a closed loop, so at saturation each server is measured at the rate it
# accepted: Nchan, whose publish answers only after its fan-out, accepts fewer publishes and so
# delivers fewer events than ssepush in the same run, which makes the saturated p99s latencies
# at different loads. Unless SAME_RATE=0, ssepush runs once more at the publish rate Nchan
# accepted, and the p99s are compared at the same delivered rate too.
if [ "${SAME_RATE:-1}" = 1 ]; then
    n=${results[2]}
    read -r subs _ <<< "$SATURATED"
    rate=$(jq -r '(.published.ok / .params.durationSecs) * 10 | floor / 10' "$n")
    same=$(bench ssepush "$subs" "$rate")
    jq -rn --slurpfile n "$n" --slurpfile s "$same" \
        '"at Nchan'"'"'s accepted rate (\($s[0].params.subscribers) × \($s[0].params.rate)/s; published \($s[0].published.ok)/\($s[0].published.asked), \($s[0].deliveriesPerSec | floor) deliveries/s against Nchan'"'"'s \($n[0].deliveriesPerSec | floor)): "
         + "p99 ssepush \($s[0].latency.p99Ms) ms, Nchan \($n[0].latency.p99Ms) ms, ratio \(($s[0].latency.p99Ms / $n[0].latency.p99Ms) * 1000 | round / 1000); "
         + "CPU per delivery ssepush/Nchan = \(($s[0].server.cpuPerDeliveryUs / $n[0].server.cpuPerDeliveryUs) * 1000 | round / 1000)"'
fi
