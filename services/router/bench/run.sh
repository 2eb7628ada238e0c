#!/usr/bin/env bash
# Side-by-side load test on loopback: direct to one backend (the ceiling),
# through bin/router (with a real embedded NATS) and through HAProxy
# (balance roundrobin, keep-alive to backends, nbthread 2), interleaved over
# ROUNDS rounds with the same wrk load. Prints req/s, p50, p99, the proxy's
# CPU time per request and the ratios. Usage: bench/run.sh (from anywhere).
# BASELINE=/path/to/an/older/router/binary adds it as a fourth target
# ("baseline", same NATS and backends) for before/after in one run.
# ROUTER_GOMAXPROCS=n sets GOMAXPROCS for the router(s) only.
# REGIONS=https makes the backends HTTPS (self-signed, trusted by both
# proxies, which verify it): what real deployments to https regions cost.
# FRONT=https makes wrk talk HTTPS to both proxies (the same self-signed
# ECDSA P-256 certificate; keep-alive, so handshakes are amortised);
# FRONT=handshakes does the same with "Connection: close", one full
# handshake per request (wrk does not resume sessions). FRONT=h2 loads both
# over HTTP/2 with h2load (nghttp2-client; CONNS connections of 100 streams;
# the p50 column is h2load's mean, p99 its max).
set -euo pipefail
cd "$(dirname "$0")/.."            # services/router
ROOT=$(cd ../.. && pwd)
ROUNDS=${ROUNDS:-3}
DURATION=${DURATION:-10s}
CONNS=${CONNS:-64}
THREADS=${THREADS:-2}
WORK=$(mktemp -d)
PIDS=()
cleanup() { for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; rm -rf "$WORK"; }
trap cleanup EXIT

if ! command -v wrk >/dev/null || ! command -v haproxy >/dev/null || ! command -v h2load >/dev/null; then
  echo "installing wrk, haproxy and h2load..." >&2
  apt-get update -qq && apt-get install -y -qq wrk haproxy nghttp2-client >/dev/null
fi

mkdir -p "$ROOT/bin"
go build -o "$ROOT/bin/router" ./cmd/router
go build -o "$WORK/backend" ./bench/backend
go build -o "$WORK/natsd" ./bench/natsd

B1=127.0.0.1:9101 B2=127.0.0.1:9102 B3=127.0.0.1:9103
SCHEME=http BFLAGS=() HASSL="" FSCHEME=http FSSL="" WRKH=()
RENV=(); [ -n "${ROUTER_GOMAXPROCS:-}" ] && RENV=(GOMAXPROCS="$ROUTER_GOMAXPROCS")
"$WORK/backend" -gencert "$WORK"
if [ "${FRONT:-http}" != http ]; then
  FSCHEME=https FSSL="ssl crt $WORK/both.pem alpn http/1.1"
  [ "$FRONT" = h2 ] && FSSL="ssl crt $WORK/both.pem alpn h2,http/1.1"
  RENV+=(ROUTER_TLS_CERT_FILE="$WORK/cert.pem" ROUTER_TLS_KEY_FILE="$WORK/key.pem" ROUTER_TLS_ADDR=127.0.0.1:8443)
  [ "$FRONT" = handshakes ] && WRKH=(-H "Connection: close")
fi
if [ "${REGIONS:-http}" = https ]; then
  SCHEME=https BFLAGS=(-tls "$WORK") HASSL="ssl verify required ca-file $WORK/cert.pem"
  RENV+=(REGION_TLS_CA_FILE="$WORK/cert.pem")
fi
"$WORK/backend" "${BFLAGS[@]}" $B1 $B2 $B3 & PIDS+=($!)
"$WORK/natsd" -listen 127.0.0.1:4333 -dir "$WORK/js" \
  -regions "b1=$SCHEME://$B1,b2=$SCHEME://$B2,b3=$SCHEME://$B3" 2>"$WORK/natsd.log" & PIDS+=($!)

env "${RENV[@]}" NATS_URL=nats://127.0.0.1:4333 ROUTER_ADDR=127.0.0.1:8000 METRICS_ADDR=127.0.0.1:9094 \
  ROUTER_STATE_FILE="$WORK/router-state.json" LOG_LEVEL=warn "$ROOT/bin/router" 2>"$WORK/router.log" &
ROUTER_PID=$!; PIDS+=($ROUTER_PID)
TARGETS="direct router haproxy"
if [ -n "${BASELINE:-}" ]; then
  env "${RENV[@]}" NATS_URL=nats://127.0.0.1:4333 ROUTER_ADDR=127.0.0.1:8002 METRICS_ADDR=127.0.0.1:9096 \
    ROUTER_STATE_FILE="$WORK/baseline-state.json" LOG_LEVEL=warn "$BASELINE" 2>"$WORK/baseline.log" &
  BASELINE_PID=$!; PIDS+=($BASELINE_PID)
  TARGETS="direct baseline router haproxy"
fi

cat >"$WORK/haproxy.cfg" <<CFG
global
  nbthread 2
  maxconn 4096
defaults
  mode http
  timeout connect 5s
  timeout client 30s
  timeout server 30s
  option http-keep-alive
  http-reuse always
frontend fe
  bind 127.0.0.1:8001 $FSSL
  default_backend be
backend be
  balance roundrobin
  server b1 $B1 $HASSL
  server b2 $B2 $HASSL
  server b3 $B3 $HASSL
CFG
haproxy -f "$WORK/haproxy.cfg" -db >"$WORK/haproxy.log" 2>&1 & HAPROXY_PID=$!; PIDS+=($HAPROXY_PID)

wait_ok() { for _ in $(seq 1 200); do curl -fsS -k -o /dev/null "$1" 2>/dev/null && return 0; sleep 0.05; done; echo "not answering: $1" >&2; cat "$WORK"/*.log >&2; return 1; }
wait_ok "$SCHEME://$B1/"; wait_ok "$FSCHEME://127.0.0.1:8001/"
# The router answers 503 until it read the regions from NATS.
for port in 8000 ${BASELINE:+8002}; do
  for _ in $(seq 1 200); do [ "$(curl -s -o /dev/null -w '%{http_code}' http://127.0.0.1:$port/)" = 200 ] && break; sleep 0.05; done
done

TCK=$(getconf CLK_TCK)
cpu_ticks() { [ -z "$1" ] && { echo 0; return; }; awk '{print $14+$15}' "/proc/$1/stat"; }
to_ms() { awk -v v="$1" 'BEGIN{ if (v ~ /us$/) {sub(/us$/,"",v); print v/1000} else if (v ~ /ms$/) {sub(/ms$/,"",v); print v+0} else if (v ~ /s$/) {sub(/s$/,"",v); print v*1000} else print v }'; }

declare -A RPS P50 P99 CPU
run_one() { # name url pid
  local name=$1 url=$2 pid=$3 out before after reqs
  before=$(cpu_ticks "$pid")
  if [ "${FRONT:-}" = h2 ] && [ "$name" != direct ]; then
    out=$(h2load -c"$CONNS" -m100 -t"$THREADS" -D"${DURATION%s}" "$url")
    after=$(cpu_ticks "$pid")
    reqs=$(echo "$out" | awk '/^requests:/{print $8}')
    RPS[$name]+="$(echo "$out" | awk '/^finished in/{print $4}') "
    P50[$name]+="$(to_ms "$(echo "$out" | awk '/^time for request:/{print $6}')") "
    P99[$name]+="$(to_ms "$(echo "$out" | awk '/^time for request:/{print $5}')") "
  else
    out=$(wrk -t"$THREADS" -c"$CONNS" -d"$DURATION" --latency "${WRKH[@]}" "$url")
    after=$(cpu_ticks "$pid")
    reqs=$(echo "$out" | awk '/requests in/{print $1}')
    RPS[$name]+="$(echo "$out" | awk '/Requests\/sec/{print $2}') "
    P50[$name]+="$(to_ms "$(echo "$out" | awk '$1=="50%"{print $2}')") "
    P99[$name]+="$(to_ms "$(echo "$out" | awk '$1=="99%"{print $2}')") "
  fi
  if [ -n "$pid" ]; then
    CPU[$name]+="$(awk -v t=$((after-before)) -v hz="$TCK" -v n="$reqs" 'BEGIN{printf "%.2f", t/hz/n*1e6}') "
  fi
  if echo "$out" | grep -q "Non-2xx"; then echo "warning: $name had non-2xx answers" >&2; fi
}

for r in $(seq 1 "$ROUNDS"); do
  echo "round $r/$ROUNDS..." >&2
  run_one direct  "$SCHEME://$B1/"        ""
  if [ -n "${BASELINE:-}" ]; then run_one baseline "http://127.0.0.1:8002/" "$BASELINE_PID"; fi
  if [ "$FSCHEME" = https ]; then
    run_one router "https://127.0.0.1:8443/" "$ROUTER_PID"
  else
    run_one router "http://127.0.0.1:8000/" "$ROUTER_PID"
  fi
  run_one haproxy "$FSCHEME://127.0.0.1:8001/" "$HAPROXY_PID"
done

avg() { echo "$1" | awk '{s=0; for(i=1;i<=NF;i++) s+=$i; if (NF) printf "%.2f", s/NF; else printf "-"}'; }
printf "\n%-8s %12s %10s %10s %14s\n" target "req/s" "p50 ms" "p99 ms" "cpu us/req"
for n in $TARGETS; do
  printf "%-8s %12s %10s %10s %14s\n" $n "$(avg "${RPS[$n]}")" "$(avg "${P50[$n]}")" "$(avg "${P99[$n]}")" "$(avg "${CPU[$n]:-}")"
done
R=$(avg "${RPS[router]}") H=$(avg "${RPS[haproxy]}") D=$(avg "${RPS[direct]}")
RC=$(avg "${CPU[router]}") HC=$(avg "${CPU[haproxy]}")
echo
awk -v r="$R" -v h="$H" -v d="$D" -v rc="$RC" -v hc="$HC" 'BEGIN{
  printf "throughput router/haproxy: %.2fx\n", r/h
  printf "throughput router/direct:  %.2fx (haproxy/direct %.2fx)\n", r/d, h/d
  printf "cpu/request router/haproxy: %.2fx\n", rc/hc }'
if [ -n "${BASELINE:-}" ]; then
  awk -v r="$R" -v b="$(avg "${RPS[baseline]}")" -v rc="$RC" -v bc="$(avg "${CPU[baseline]}")" -v h="$H" -v hc="$HC" 'BEGIN{
    printf "baseline/haproxy: throughput %.2fx, cpu/request %.2fx\n", b/h, bc/hc
    printf "router/baseline:  throughput %.2fx, cpu/request %.2fx\n", r/b, rc/bc }'
fi
echo "(${FRONT:+FRONT=$FRONT }wrk/h2load -t$THREADS -c$CONNS -d$DURATION, $ROUNDS interleaved rounds, $SCHEME regions, $FSCHEME clients${WRKH:+ (Connection: close)}, router GOMAXPROCS=${ROUTER_GOMAXPROCS:-default}, event loop ${ROUTER_EVENT_LOOP:-true}, averages; per-round values below)"
for n in $TARGETS; do echo "$n req/s: ${RPS[$n]}"; echo "$n p99 ms: ${P99[$n]}"; echo "$n cpu us/req: ${CPU[$n]:-}"; done
