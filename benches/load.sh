#!/usr/bin/env bash
# The load harness: in one run, on this machine, loopback only, bounded in count and time:
#   peers   — ../shared/bench: nginx (upstream, proxy_pass, static 402) and the reference x402 stack
#             (@x402/express + a local facilitator paying real USDC on anvil);
#   tollgate — in front of the same nginx upstream and the same anvil: free route, 402, paid
#             (the same pre-signed payments, c8 and c32, settle before and after), CPU per payment,
#             resident memory idle and at 1,000 keep-alive connections;
#   hosted   — tollgate in hosted mode on PostgreSQL with 10,000 tenants: 402 across 1,000 of them, paid
#             with quota counting, the management API (GET /usage, x402-form POST /verify) and the
#             database queries its key lookups make, memory with 100,000 tenants and 10,000 active;
#   facilitator — tollgate's /facilitator/verify and /settle beside the reference facilitator (@x402/core +
#             @x402/evm, viem's nonce manager on), the same pre-signed bodies a stock server sends, c8/c32,
#             every settlement checked on chain.
#   solana  — paid requests on Solana: payments made by the official @x402/svm client, settled on the
#             LiteSVM JSON-RPC test server (tests/js/solana-rpc.mjs; the real SVM and SPL Token program,
#             not a validator), c8/c32, every payment checked in the payee's token account.
# Prints one table and writes it to benches/results/latest.md (raw data beside it).
#
# Knobs: REPS=3  WRK_ARGS="-t2 -c64 -d10s"  N=300  N_FAC=1000  CONCS="8 32"  MODES="before after"  TG_LOG=warn
#        PEERS=1 (0: skip the peer scripts and reuse benches/results/peers/)  NM_VARIANTS=1  LOAD_MAX=1
#        HOSTED=1 (0: skip hosted mode)  BENCH_PG=postgres://postgres@127.0.0.1:5432/test (an admin URL)
#        FACIL_ONLY=1 (run only the facilitator section; the other rows keep their last run's figures)
#        SOLANA=1 (0: skip the Solana section)  SOLANA_ONLY=1 (run only it)  N_SOL=300
#        OPS=1 (0: skip the operations section)  OPS_ONLY=1 (run only it)  OPS_ROUNDS=5
#        BLOCK_TIME=2 (the paid runs on anvil mining a block every 2 s instead of on arrival, tollgate told
#        the interval: labels t_paid_*_bt2; each run also reports the relayer's transactions and gas;
#        with PEERS=1 or REF_BT=1 the reference stack's paid runs on the same 2 s chain: peers/x402ref-paid_bt2.jsonl)
#        ANSWERS="confirmed" (also "verified", "submitted": the route's answer mode; labels *_verified …)
#   ops     — the free route and the 402 with metrics on and off, with rate limits on (a limit no
#             request reaches), and over TLS: variants interleaved round by round (the machine's drift
#             falls on all of them alike), medians and ratios against metrics off.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
SHARED=${SHARED_BENCH:-$ROOT/../shared/bench}
OUT=$ROOT/benches/results
export REPS=${REPS:-3} N=${N:-300} WARMUP=${WARMUP:-20} N_FAC=${N_FAC:-1000}
CONCS=${CONCS:-"8 32"}; MODES=${MODES:-"before after"}
export NM_VARIANTS=${NM_VARIANTS:-1}
FACIL_ONLY=${FACIL_ONLY:-0}
SOLANA_ONLY=${SOLANA_ONLY:-0}; N_SOL=${N_SOL:-300}
# Only the Solana section: every other section is skipped (as FACIL_ONLY=1 HOSTED=0 would).
[ "$SOLANA_ONLY" = 1 ] && { FACIL_ONLY=1; HOSTED=0; OPS=0; }
OPS_ONLY=${OPS_ONLY:-0}
[ "$OPS_ONLY" = 1 ] && { FACIL_ONLY=1; HOSTED=0; SOLANA=0; PEERS=0; }
BT_SUFFIX=""; [ -n "${BLOCK_TIME:-}" ] && BT_SUFFIX="_bt$BLOCK_TIME"
ANSWERS=${ANSWERS:-confirmed}
TG_PORT=18402
mkdir -p "$OUT/peers" "$OUT/raw"

# A writable copy of the peer side (shared/ is read-only).
B=${BENCH_DIR:-/var/tmp/tollgate-bench}
mkdir -p "$B"; cp -r "$SHARED/." "$B/"; chmod -R u+w "$B"
cd "$B"
./setup.sh > "$OUT/raw/setup.log" 2>&1 || { cat "$OUT/raw/setup.log"; exit 1; }
. lib/measure.sh

echo "== build tollgate (release)"
(cd "$ROOT" && cargo build --release --bin tollgate 2>&1 | tail -1)
TARGET=${CARGO_TARGET_DIR:-$(cd "$ROOT" && cargo metadata --format-version 1 --no-deps | python3 -c 'import sys,json;print(json.load(sys.stdin)["target_directory"])')}
TOLLGATE=$TARGET/release/tollgate

PIDS=()
cleanup() { for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done; ./chain.sh stop >/dev/null 2>&1 || true; }
trap cleanup EXIT

# The saved chain state every paid run restarts from: Circle's USDC at the Base address (chain.sh),
# plus Multicall3 at its canonical address, where Base has it (tollgate batches settlements through it;
# the reference stack does not use it).
./chain.sh stop >/dev/null 2>&1 || true
[ -f run/usdc-state.json ] || { FRESH_STATE=1 ./chain.sh start > /dev/null; ./chain.sh stop > /dev/null; }
cp "$ROOT/benches/load/multicall3.mjs" lib/
./chain.sh start > /dev/null && node lib/multicall3.mjs run/usdc-state.json && ./chain.sh stop > /dev/null

if [ "${PEERS:-1}" = 1 ] && [ "$FACIL_ONLY" != 1 ]; then
  echo "== peers: nginx"
  timeout 3600 ./bench-nginx.sh 2>&1 | tail -12
  echo "== peers: reference x402"
  timeout 3600 ./bench-x402ref.sh 2>&1 | tail -8
  cp results/nginx.tsv results/x402ref-wrk.tsv results/x402ref-paid.jsonl "$OUT/peers/"
fi
if [ "${REF_BT:-${PEERS:-1}}" = 1 ] && [ -n "${BLOCK_TIME:-}" ]; then
  echo "== peers: reference x402, paid, on ${BLOCK_TIME} s blocks"
  # Its closing summary reads the wrk table, which SKIP_WRK leaves as it is: make sure there is one.
  mkdir -p results
  [ -f results/x402ref-wrk.tsv ] || printf "label\trep\trps\tp50_ms\tp99_ms\trequests\tnon2xx\tsocket_errors\tload1\tcpu_busy_pct\n" > results/x402ref-wrk.tsv
  ANVIL_EXTRA="--block-time $BLOCK_TIME" SKIP_WRK=1 NM_VARIANTS=1 CONCS="$CONCS" timeout 3600 ./bench-x402ref.sh 2>&1 | tail -4
  cp results/x402ref-paid.jsonl "$OUT/peers/x402ref-paid$BT_SUFFIX.jsonl"
fi

echo "== tollgate"
RESULTS=$OUT/raw/tollgate-wrk.tsv; LOG=$OUT/raw/tollgate-wrk.log; PAID=$OUT/raw/tollgate-paid$BT_SUFFIX.jsonl
if [ "$FACIL_ONLY" != 1 ]; then
  # (A block-time run has only paid rows, in their own file: the instant-mining rows stay.)
  [ -z "$BT_SUFFIX" ] && { printf "label\trep\trps\tp50_ms\tp99_ms\trequests\tnon2xx\tsocket_errors\tload1\tcpu_busy_pct\n" > "$RESULTS"; : > "$LOG"; }
  : > "$PAID"
fi
mkdir -p run/tg nginx/tmp; rm -f run/tg/tollgate-*.log
# The same upstream as the peers: nginx, one worker, return 200 {"ok":true}.
cat > nginx/tg-upstream.conf <<CONF
worker_processes 1;
pid $B/nginx/tg-upstream.pid;
error_log $B/nginx/tg-upstream.error.log warn;
events { worker_connections 4096; }
http {
  access_log off;
  client_body_temp_path $B/nginx/tmp/body; proxy_temp_path $B/nginx/tmp/proxy;
  fastcgi_temp_path $B/nginx/tmp/fcgi; uwsgi_temp_path $B/nginx/tmp/uwsgi; scgi_temp_path $B/nginx/tmp/scgi;
  keepalive_requests 1000000;
  default_type application/json;
  server { listen 127.0.0.1:18080; location / { return 200 '{"ok":true}'; } }
}
CONF
nginx -p "$B/nginx" -c "$B/nginx/tg-upstream.conf" -g 'daemon off;' > run/tg/nginx.out 2>&1 & PIDS+=($!)
for i in $(seq 1 50); do curl -s -o /dev/null http://127.0.0.1:18080/ && break; sleep 0.1; done

TG_PID=""
start_tollgate() { # start_tollgate MODE [ANSWER]
  [ -n "$TG_PID" ] && { kill "$TG_PID"; wait "$TG_PID" 2>/dev/null || true; }
  rm -f run/tg/tollgate.db*
  cat > run/tg/tollgate.toml <<CONF
listen = "127.0.0.1:$TG_PORT"
upstream = "http://127.0.0.1:18080"
database = "sqlite://$B/run/tg/tollgate.db"
pay_to = "0x90F79bf6EB2c4f870365E785982E1f101E93b906"
[networks.base]
rpc_url = "http://127.0.0.1:18545"
$([ -n "${BLOCK_TIME:-}" ] && echo "block_time_ms = $((BLOCK_TIME * 1000))")
[[routes]]
method = "GET"
path = "/paid"
price = "\$0.001"
max_timeout_seconds = 600
description = "paid JSON"
settle = "$1"
answer = "${2:-confirmed}"
CONF
  TOLLGATE_RELAYER_KEY=0x5de4111afa1a4b94908f83103eb1f1706367c2e68ca870fc3fb9a804cdab365a TOLLGATE_LOG=${TG_LOG:-warn} \
    "$TOLLGATE" serve --config run/tg/tollgate.toml >> run/tg/tollgate-$1.log 2>&1 &
  TG_PID=$!; PIDS+=($TG_PID)
  for i in $(seq 1 100); do curl -s -o /dev/null http://127.0.0.1:$TG_PORT/ && return 0; sleep 0.1; done
  echo "tollgate did not start"; cat run/tg/tollgate-$1.log; exit 1
}
block_number() { curl -s -X POST -H 'content-type: application/json' --data '{"jsonrpc":"2.0","id":1,"method":"eth_blockNumber","params":[]}' \
  http://127.0.0.1:18545 | python3 -c 'import sys,json; print(int(json.load(sys.stdin)["result"],16))'; }
rss_kb() { awk '/VmRSS/ {print $2}' /proc/$1/status; }
ticks() { awk '{print $14+$15}' /proc/$1/stat; }
payee_bal() { curl -s -X POST -H 'content-type: application/json' --data \
  '{"jsonrpc":"2.0","id":1,"method":"eth_call","params":[{"to":"0x833589fCD6eDb6E08f4c7C32D4f71b54bdA02913","data":"0x70a0823100000000000000000000000090F79bf6EB2c4f870365E785982E1f101E93b906"},"latest"]}' \
  http://127.0.0.1:18545 | python3 -c 'import sys,json; print(int(json.load(sys.stdin)["result"],16))'; }

# One paid run: a fresh chain from the saved state (anvil slows as its chain grows), a fresh gateway,
# warm-up, N pre-signed payments at concurrency $2 to path $3.
paid_run() { # paid_run LABEL CONC PATH START_CMD
  local label=$1 c=$2 path=$3 start=$4
  sed "s#\${C.SRV_URL}/paid#\${C.SRV_URL}$path#" x402ref/pregen.mjs > x402ref/pregen-p.mjs
  sed "s#\${C.SRV_URL}/paid#\${C.SRV_URL}$path#" x402ref/fire.mjs > x402ref/fire-p.mjs
  ./chain.sh stop > /dev/null
  ANVIL_EXTRA=${BLOCK_TIME:+--block-time $BLOCK_TIME} ./chain.sh start > /dev/null; ANVIL_PID=$(cat run/anvil.pid)
  $start
  SRV_PORT=$TG_PORT node x402ref/pregen-p.mjs $WARMUP run/tg/h-warm.json > /dev/null
  SRV_PORT=$TG_PORT node x402ref/fire-p.mjs run/tg/h-warm.json 8 warmup > /dev/null
  # Answered before their settlement, the warm-up's payments may still be settling: let them land
  # before the payee's balance is read.
  [ -n "${BLOCK_TIME:-}" ] && sleep $((BLOCK_TIME * 2))
  SRV_PORT=$TG_PORT node x402ref/pregen-p.mjs $N run/tg/h.json > /dev/null
  wait_quiet
  echo "[$label rep $r] uptime: $(uptime)"
  B0=$(payee_bal); A0=$(ticks $ANVIL_PID); G0=$(ticks $TG_PID); BLK0=$(block_number)
  OUT_JSON=$(SRV_PORT=$TG_PORT timeout 600 node x402ref/fire-p.mjs run/tg/h.json $c "$label")
  A1=$(ticks $ANVIL_PID); G1=$(ticks $TG_PID)
  # The last batch mined (answered before their settlement, payments may still be on their way).
  [ -n "${BLOCK_TIME:-}" ] && sleep $((BLOCK_TIME * 3))
  B1=$(payee_bal)
  OUT_JSON=$(echo "$OUT_JSON" | python3 "$ROOT/benches/load/relayer_txs.py" http://127.0.0.1:18545 "$BLK0")
  echo "$OUT_JSON" | python3 -c '
import sys, json
d = json.loads(sys.stdin.read()); a = sys.argv
d.update(rep=int(a[1]), landed_onchain=(int(a[3]) - int(a[2])) // 1000, load1=float(a[4]), cpu_busy_pct=int(a[5]),
         anvil_cpu_s=(int(a[7]) - int(a[6])) / 100, gateway_cpu_s=(int(a[9]) - int(a[8])) / 100)
print(json.dumps(d))' "$r" "$B0" "$B1" "$LAST_LOAD" "$LAST_BUSY" "$A0" "$A1" "$G0" "$G1" | tee -a "$PAID"
}

if [ "$FACIL_ONLY" != 1 ]; then
./chain.sh start > /dev/null
if [ -z "$BT_SUFFIX" ]; then
start_tollgate before
sleep 1
RSS_IDLE=$(rss_kb $TG_PID)
run_wrk "t_tollgate_free" http://127.0.0.1:$TG_PORT/
run_wrk "t_tollgate_402" http://127.0.0.1:$TG_PORT/paid
ulimit -n 8192 2>/dev/null || true
RSS_BEFORE_CONNS=$(rss_kb $TG_PID)
python3 "$ROOT/benches/load/conns.py" $TG_PORT 1000 4 / > run/tg/conns.out &
CP=$!; sleep 3; RSS_1000=$(rss_kb $TG_PID); wait $CP || true
echo "rss: idle ${RSS_IDLE} kB, after wrk ${RSS_BEFORE_CONNS} kB, 1000 keep-alive connections ${RSS_1000} kB ($(cat run/tg/conns.out))"
printf '{"rss_idle_kb":%s,"rss_after_wrk_kb":%s,"rss_1000_conns_kb":%s,"conns":"%s"}\n' "$RSS_IDLE" "$RSS_BEFORE_CONNS" "$RSS_1000" "$(cat run/tg/conns.out)" > "$OUT/raw/tollgate-rss.json"
fi

for ANSWER in $ANSWERS; do
  ANS_SUFFIX=""; [ "$ANSWER" != confirmed ] && ANS_SUFFIX="_$ANSWER"
  for MODE in $MODES; do
    for C in $CONCS; do
      for r in $(seq 1 "$REPS"); do
        paid_run "t_paid_${MODE}_c$C$BT_SUFFIX$ANS_SUFFIX" "$C" /paid "start_tollgate $MODE $ANSWER"
      done
    done
  done
done
fi


if [ "${HOSTED:-1}" = 1 ]; then
  echo "== tollgate hosted (PostgreSQL)"
  PG_ADMIN=${BENCH_PG:-postgres://postgres@127.0.0.1:5432/test}
  HURL=${PG_ADMIN%/*}/tollgate_bench_hosted
  API_PORT=18403
  BENCH_KEY=x402_live_benchbenchbenchbenchbenchbench12
  KEY_HASH=$(printf '%s' "$BENCH_KEY" | sha256sum | cut -d' ' -f1)
  cat > run/tg/hosted.toml <<CONF
listen = "127.0.0.1:$TG_PORT"
database = "$HURL"
[api]
listen = "127.0.0.1:$API_PORT"
[hosted]
path_prefix = true
allow_private_upstreams = true
tenant_cache_secs = 60
key_cache_secs = 30
[networks.base]
rpc_url = "http://127.0.0.1:18545"
[plans.bench]
verifications = 100000000
chains = ["base"]
CONF
  # seed_tenants FROM TO: tenants tFROM..tTO in front of the nginx upstream, one priced route each.
  seed_tenants() {
    psql -q "$HURL" -c "INSERT INTO tenants (id, slug, name, email, plan, status, upstream, pay_to_evm, pay_to_solana, routes, period_start, used, created_at, updated_at)
      SELECT 'tn_' || i, 't' || i, 'Tenant ' || i, 't' || i || '@bench.test', 'bench', 'active', 'http://127.0.0.1:18080',
             '0x90F79bf6EB2c4f870365E785982E1f101E93b906', NULL,
             '[{\"method\":\"GET\",\"path\":\"/paid\",\"price\":\"\$0.001\",\"max_timeout_seconds\":600,\"description\":\"paid JSON\"}]',
             0, 0, 0, 0 FROM generate_series($1, $2) AS i"
  }
  reset_hosted_db() {
    psql -q "$PG_ADMIN" -c "DROP DATABASE IF EXISTS tollgate_bench_hosted WITH (FORCE)" -c "CREATE DATABASE tollgate_bench_hosted"
    "$TOLLGATE" migrate --config run/tg/hosted.toml > /dev/null
    seed_tenants 1 "${1:-10000}"
    psql -q "$HURL" -c "INSERT INTO api_keys (hash, id, tenant_id, name, prefix, scopes, created_at) VALUES ('$KEY_HASH', 'key_bench', 'tn_1', 'bench', 'x402_live_benc', '', 0)"
  }
  start_hosted() {
    [ -n "$TG_PID" ] && { kill "$TG_PID"; wait "$TG_PID" 2>/dev/null || true; }
    TOLLGATE_RELAYER_KEY=0x5de4111afa1a4b94908f83103eb1f1706367c2e68ca870fc3fb9a804cdab365a TOLLGATE_LOG=${TG_LOG:-warn} \
      "$TOLLGATE" serve --config run/tg/hosted.toml >> run/tg/tollgate-hosted.log 2>&1 &
    TG_PID=$!; PIDS+=($TG_PID)
    for i in $(seq 1 100); do curl -s -o /dev/null http://127.0.0.1:$TG_PORT/t/t1/paid && return 0; sleep 0.1; done
    echo "hosted tollgate did not start"; cat run/tg/tollgate-hosted.log; exit 1
  }
  key_scans() { sleep 1.5; psql -Atq "$HURL" -c "SELECT COALESCE(idx_scan,0) + COALESCE(seq_scan,0) FROM pg_stat_user_tables WHERE relname = 'api_keys'"; }

  if [ "$FACIL_ONLY" != 1 ]; then
  reset_hosted_db 10000
  start_hosted
  TENANTS=1000 run_wrk "t_hosted_402" http://127.0.0.1:$TG_PORT/ -s "$ROOT/benches/load/tenants.lua"
  # The management API: the key is looked up once, then served from the cache.
  K0=$(key_scans)
  run_wrk "t_api_usage" http://127.0.0.1:$API_PORT/api/v1/x402/usage -H "Authorization: Bearer $BENCH_KEY"
  K1=$(key_scans)
  USAGE_REQS=$(awk -F'\t' '$1=="t_api_usage" {s+=$6} END {print s}' "$RESULTS")
  # x402-form verify: a real signed payment (never settled), checked offline and simulated on anvil.
  psql -q "$HURL" -c "UPDATE tenants SET pay_to_evm = '0x90F79bf6EB2c4f870365E785982E1f101E93b906' WHERE id = 'tn_1'"
  sed "s#\${C.SRV_URL}/paid#\${C.SRV_URL}/t/t1/paid#" x402ref/pregen.mjs > x402ref/pregen-p.mjs
  SRV_PORT=$TG_PORT node x402ref/pregen-p.mjs 1 run/tg/h-verify.json > /dev/null
  python3 -c '
import base64, json, sys
h = json.load(open(sys.argv[1]))[0]; p = json.loads(base64.b64decode(list(h.values())[0]))
json.dump({"x402Version": 2, "paymentPayload": p, "paymentRequirements": p["accepted"]}, open(sys.argv[2], "w"))' run/tg/h-verify.json run/tg/verify-body.json
  curl -s -X POST -H "Authorization: Bearer $BENCH_KEY" -H 'content-type: application/json' --data @run/tg/verify-body.json \
    http://127.0.0.1:$API_PORT/api/v1/x402/verify | grep -q '"isValid":true' || { echo "x402 verify is not valid"; exit 1; }
  KEY=$BENCH_KEY VERIFY_BODY=run/tg/verify-body.json run_wrk "t_api_verify_x402" http://127.0.0.1:$API_PORT/api/v1/x402/verify -s "$ROOT/benches/load/verify.lua"
  printf '{"key_table_scans":%s,"usage_requests":%s}\n' "$((K1 - K0))" "${USAGE_REQS:-0}" > "$OUT/raw/tollgate-api-keys.json"
  echo "api_keys table scans during $USAGE_REQS authenticated GET /usage: $((K1 - K0))"

  # Paid, with quota counting, against the drop-in rows above (settle before).
  for C in $CONCS; do
    for r in $(seq 1 "$REPS"); do
      reset_hosted_db 10000
      paid_run "t_hosted_paid_before_c$C" "$C" /t/t1/paid start_hosted
    done
  done
  fi

  # The facilitator endpoints beside the reference facilitator: the same kind of pre-signed bodies (signed
  # by the official client, for the bench payee, which is tenant t1's payTo), each run on a fresh chain and
  # a fresh facilitator; settle counts settlements answered success:true, and the payee's balance says how
  # many landed. Verify sends each body 10 times (it changes nothing).
  echo "== facilitator: tollgate vs the reference facilitator"
  cp "$ROOT/benches/load/fac-pregen.mjs" "$ROOT/benches/load/fac-fire.mjs" lib/
  FAC=$OUT/raw/facilitator.jsonl; : > "$FAC"
  FAC_PID=""
  start_ref_fac() {
    [ -n "$FAC_PID" ] && { kill "$FAC_PID"; wait "$FAC_PID" 2>/dev/null || true; }
    NONCE_MANAGER=1 node x402ref/facilitator.mjs > run/tg/fac-ref.log 2>&1 & FAC_PID=$!; PIDS+=($FAC_PID)
    for i in $(seq 1 100); do curl -s -o /dev/null http://127.0.0.1:14022/supported && return 0; sleep 0.1; done
    echo "the reference facilitator did not start"; cat run/tg/fac-ref.log; exit 1
  }
  start_tg_fac() { reset_hosted_db 10000; start_hosted; }
  fac_run() { # fac_run LABEL CONC settle|verify BASE_URL KEY START_CMD
    local label=$1 c=$2 what=$3 base=$4 key=$5 start=$6
    ./chain.sh stop > /dev/null; ./chain.sh start > /dev/null
    $start
    node lib/fac-pregen.mjs $WARMUP run/tg/fac-warm.json > /dev/null
    node lib/fac-fire.mjs run/tg/fac-warm.json "$base" settle 8 warmup "$key" > /dev/null
    node lib/fac-pregen.mjs $N_FAC run/tg/fac.json > /dev/null
    wait_quiet
    B0=$(payee_bal)
    local repeat=1; [ "$what" = verify ] && repeat=10
    OUT_JSON=$(DEADLINE_S=300 timeout 600 node lib/fac-fire.mjs run/tg/fac.json "$base" "$what" "$c" "$label" "$key" $repeat || true)
    [ -n "$OUT_JSON" ] || OUT_JSON="{\"label\":\"$label\",\"what\":\"$what\",\"n\":0,\"conc\":$c,\"ok\":0,\"ok_rps\":0,\"p50_ms\":0,\"p99_ms\":0,\"failure_sample\":\"no result\"}"
    B1=$(payee_bal)
    echo "$OUT_JSON" | python3 -c '
import sys, json
d = json.loads(sys.stdin.read()); a = sys.argv
d.update(rep=int(a[1]), landed_onchain=(int(a[3]) - int(a[2])) // 1000, load1=float(a[4]), cpu_busy_pct=int(a[5]))
print(json.dumps(d))' "$r" "$B0" "$B1" "$LAST_LOAD" "$LAST_BUSY" | tee -a "$FAC"
  }
  for WHAT in settle verify; do
    for C in $CONCS; do
      for r in $(seq 1 "$REPS"); do
        fac_run "fac_tollgate_${WHAT}_c$C" "$C" "$WHAT" "http://127.0.0.1:$API_PORT/facilitator" "$BENCH_KEY" start_tg_fac
        fac_run "fac_reference_${WHAT}_c$C" "$C" "$WHAT" "http://127.0.0.1:14022" "" start_ref_fac
      done
    done
  done
  [ -n "$FAC_PID" ] && kill "$FAC_PID" 2>/dev/null || true

  if [ "$FACIL_ONLY" != 1 ]; then

  # Memory: 100,000 tenants in the database, 10,000 of them active.
  reset_hosted_db 100000
  start_hosted
  sleep 1; H_IDLE=$(rss_kb $TG_PID)
  TOUCHED=$(python3 "$ROOT/benches/load/touch_tenants.py" $TG_PORT 10000)
  H_ACTIVE=$(rss_kb $TG_PID)
  echo "hosted rss: idle ${H_IDLE} kB, 10,000 active tenants ${H_ACTIVE} kB ($TOUCHED)"
  printf '{"rss_idle_kb":%s,"rss_10k_active_kb":%s,"touched":"%s"}\n' "$H_IDLE" "$H_ACTIVE" "$TOUCHED" > "$OUT/raw/tollgate-hosted-rss.json"
  fi
  psql -q "$PG_ADMIN" -c "DROP DATABASE IF EXISTS tollgate_bench_hosted WITH (FORCE)"
fi

if [ "${SOLANA:-1}" = 1 ]; then
  # Solana: a fresh LiteSVM RPC server and a fresh gateway per run; the payments are made by the official
  # @x402/svm client (one random memo each, so each is its own transaction); the payee's USDC account says
  # how many landed.
  echo "== solana (LiteSVM RPC test server)"
  SOL=$OUT/raw/solana.jsonl; : > "$SOL"
  JS=$ROOT/tests/js
  [ -d "$JS/node_modules/litesvm" ] || (cd "$JS" && npm ci --no-audit --no-fund --loglevel=error)
  FP=$(node "$JS/sol-keys.mjs" 21); PAYER=$(node "$JS/sol-keys.mjs" 22); PAYEE=$(node "$JS/sol-keys.mjs" 23)
  j() { python3 -c 'import sys,json;print(json.loads(sys.argv[1])[sys.argv[2]])' "$1" "$2"; }
  SRPC=http://127.0.0.1:18899; SRPC_PID=""
  srpc() { curl -s -X POST -H 'content-type: application/json' --data "{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"$1\",\"params\":$2}" $SRPC; }
  sol_payee_bal() { srpc tg_usdcOf "[\"$(j "$PAYEE" address)\"]" | python3 -c 'import sys,json;print(int(json.load(sys.stdin)["result"]))'; }
  start_sol() {
    [ -n "$SRPC_PID" ] && { kill "$SRPC_PID"; wait "$SRPC_PID" 2>/dev/null || true; }
    [ -n "$TG_PID" ] && { kill "$TG_PID"; wait "$TG_PID" 2>/dev/null || true; TG_PID=""; }
    node "$JS/solana-rpc.mjs" 18899 > run/tg/solana-rpc.out 2>&1 & SRPC_PID=$!; PIDS+=($SRPC_PID)
    for i in $(seq 1 100); do srpc getHealth '[]' | grep -q ok && break; sleep 0.1; done
    srpc requestAirdrop "[\"$(j "$FP" address)\", 100000000000]" > /dev/null
    srpc tg_mintUsdc "[\"$(j "$PAYER" address)\", 1000000000]" > /dev/null
    srpc tg_createUsdcAccount "[\"$(j "$PAYEE" address)\"]" > /dev/null
    rm -f run/tg/tollgate-sol.db*
    cat > run/tg/tollgate-sol.toml <<CONF
listen = "127.0.0.1:$TG_PORT"
upstream = "http://127.0.0.1:18080"
database = "sqlite://$B/run/tg/tollgate-sol.db"
pay_to_solana = "$(j "$PAYEE" address)"
[networks.solana]
rpc_url = "$SRPC"
[[routes]]
method = "GET"
path = "/paid"
price = "\$0.001"
description = "paid JSON"
CONF
    TOLLGATE_SOLANA_KEY=$(j "$FP" keypair58) TOLLGATE_LOG=${TG_LOG:-warn} \
      "$TOLLGATE" serve --config run/tg/tollgate-sol.toml >> run/tg/tollgate-sol.log 2>&1 &
    TG_PID=$!; PIDS+=($TG_PID)
    for i in $(seq 1 100); do curl -s -o /dev/null http://127.0.0.1:$TG_PORT/ && return 0; sleep 0.1; done
    echo "tollgate did not start"; cat run/tg/tollgate-sol.log; exit 1
  }
  sol_pregen() { PAYER_SECRET=$(j "$PAYER" seed58) SOLANA_RPC=$SRPC node "$JS/sol-pregen.mjs" "$1" "$2" http://127.0.0.1:$TG_PORT/paid > /dev/null; }
  for C in $CONCS; do
    for r in $(seq 1 "$REPS"); do
      label="t_sol_paid_c$C"
      start_sol
      sol_pregen $WARMUP run/tg/sol-warm.json
      SRV_PORT=$TG_PORT node x402ref/fire.mjs run/tg/sol-warm.json 8 warmup > /dev/null
      sol_pregen $N_SOL run/tg/sol.json
      wait_quiet
      echo "[$label rep $r] uptime: $(uptime)"
      B0=$(sol_payee_bal); R0=$(ticks $SRPC_PID); G0=$(ticks $TG_PID)
      OUT_JSON=$(SRV_PORT=$TG_PORT timeout 600 node x402ref/fire.mjs run/tg/sol.json $C "$label")
      R1=$(ticks $SRPC_PID); G1=$(ticks $TG_PID); B1=$(sol_payee_bal)
      echo "$OUT_JSON" | python3 -c '
import sys, json
d = json.loads(sys.stdin.read()); a = sys.argv
d.update(rep=int(a[1]), landed_onchain=(int(a[3]) - int(a[2])) // 1000, load1=float(a[4]), cpu_busy_pct=int(a[5]),
         rpc_cpu_s=(int(a[7]) - int(a[6])) / 100, gateway_cpu_s=(int(a[9]) - int(a[8])) / 100)
print(json.dumps(d))' "$r" "$B0" "$B1" "$LAST_LOAD" "$LAST_BUSY" "$R0" "$R1" "$G0" "$G1" | tee -a "$SOL"
    done
  done
  kill "$SRPC_PID" 2>/dev/null || true
fi

if [ "${OPS:-1}" = 1 ]; then
  # Operations: the same free route and 402 under variants of the drop-in config, interleaved.
  echo "== operations (metrics on/off, rate limits, TLS)"
  OPS_TSV=$OUT/raw/tollgate-ops.tsv
  printf "label\trep\trps\tp50_ms\tp99_ms\trequests\tnon2xx\tsocket_errors\tload1\tcpu_busy_pct\n" > "$OPS_TSV"
  [ -f run/tg/tls.crt ] || openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 30 \
    -subj /CN=localhost -keyout run/tg/tls.key -out run/tg/tls.crt 2> /dev/null
  start_ops() { # start_ops VARIANT
    [ -n "$TG_PID" ] && { kill "$TG_PID"; wait "$TG_PID" 2>/dev/null || true; TG_PID=""; }
    rm -f run/tg/tollgate-ops.db*
    local extra=""
    case $1 in
      metrics_off) extra=$'[metrics]\nenabled = false' ;;
      ratelimit) extra=$'[rate_limits]\nper_ip = "100000000/s"' ;;
      tls) extra=$"[tls]"$'\n'"cert_file = \"$B/run/tg/tls.crt\""$'\n'"key_file = \"$B/run/tg/tls.key\"" ;;
    esac
    cat > run/tg/tollgate-ops.toml <<CONF
listen = "127.0.0.1:$TG_PORT"
upstream = "http://127.0.0.1:18080"
database = "sqlite://$B/run/tg/tollgate-ops.db"
pay_to = "0x90F79bf6EB2c4f870365E785982E1f101E93b906"
$extra
[networks.base]
rpc_url = "http://127.0.0.1:18545"
[[routes]]
method = "GET"
path = "/paid"
price = "\$0.001"
description = "paid JSON"
CONF
    TOLLGATE_LOG=${TG_LOG:-warn} "$TOLLGATE" serve --config run/tg/tollgate-ops.toml >> run/tg/tollgate-ops.log 2>&1 &
    TG_PID=$!; PIDS+=($TG_PID)
    local scheme=http; [ "$1" = tls ] && scheme=https
    for i in $(seq 1 100); do curl -sk -o /dev/null $scheme://127.0.0.1:$TG_PORT/ && return 0; sleep 0.1; done
    echo "tollgate did not start"; cat run/tg/tollgate-ops.log; exit 1
  }
  for round in $(seq 1 "${OPS_ROUNDS:-5}"); do
    for V in metrics_on metrics_off ratelimit tls; do
      start_ops $V
      scheme=http; [ "$V" = tls ] && scheme=https
      RESULTS=$OPS_TSV REPS=1 run_wrk "ops_${V}_free" $scheme://127.0.0.1:$TG_PORT/
      RESULTS=$OPS_TSV REPS=1 run_wrk "ops_${V}_402" $scheme://127.0.0.1:$TG_PORT/paid
    done
  done
  kill "$TG_PID" 2>/dev/null || true; TG_PID=""
fi

python3 "$ROOT/benches/load/summary.py" "$OUT" | tee "$OUT/latest.md"
if [ -n "$BT_SUFFIX" ]; then
  echo "== paid on ${BLOCK_TIME} s blocks: tollgate by answer mode beside the reference"
  python3 "$ROOT/benches/load/blocktime.py" "$OUT" "$BT_SUFFIX" | tee "$OUT/blocktime$BT_SUFFIX.md"
fi
