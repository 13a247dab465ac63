#!/usr/bin/env bash
# Instructions per request, counted by callgrind: requests per second move 20-30% between runs on
# these machines, instruction counts well under 1%. Use it to judge every change to a hot path.
#
# Each server runs alone under `valgrind --tool=callgrind` (one worker / one thread, every thread of
# the process counted). After a warm-up the counters are zeroed, exactly N keep-alive requests are
# sent over 4 connections (benches/load/exactly.py), and the counters dumped; an idle
# window measured the same way is subtracted (timers, background tasks), scaled to the load's
# duration. Per request: (instructions during the load − idle rate × its duration) / N.
#
#   unpaid → 402    tollgate's priced route without payment   vs nginx `return 402` (the same 586-byte body shape)
#   free route      tollgate's unpriced route, proxied        vs nginx `proxy_pass` with upstream keepalive
#   paid request    tollgate settling on anvil (Circle's USDC), PAID_N pre-signed payments at concurrency PAID_C (4)
#                   (gateway instructions only; the chain is another process)
# and, without valgrind, the paid request's CPU time per payment (utime+stime of the gateway over
# CPU_N payments): the issue's "ms of CPU per payment".
#
# Usage: benches/instructions.sh                 (N=20000 PAID_N=200 PAID_C=4 CPU_N=1000 REPS=2)
#        ONLY="402 free"  benches/instructions.sh  (a subset: 402 free paid cpu; nginx rows come with 402/free)
#        OUT=/tmp/x KEEP=1 (write the table elsewhere; keep the callgrind dumps)
#        BLOCK_TIME=2 (the paid rows on anvil mining a block every 2 s, tollgate told the interval: the
#        relayer's transactions then carry a block's payments, as on a real chain)
# Writes benches/results/instructions.md (the table) and benches/results/instructions/*.txt (the
# top functions of one run of each, inclusive, from callgrind_annotate).
# Needs: valgrind, nginx, python3, node (the peer side of ../shared/bench for anvil and the pre-signed
# payments). Loopback only.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
SHARED=${SHARED:-$ROOT/../shared/bench}
N=${N:-20000}; PAID_N=${PAID_N:-200}; CPU_N=${CPU_N:-1000}; PAID_C=${PAID_C:-4}; REPS=${REPS:-2}
ONLY=${ONLY:-"402 free paid cpu"}
OUT=${OUT:-$ROOT/benches/results}; mkdir -p "$OUT/instructions"
B=${BENCH_DIR:-/var/tmp/tollgate-bench}
W=$(mktemp -d /var/tmp/tollgate-instr.XXXX)
PIDS=()
cleanup() {
  for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
  [ -f "$B/run/anvil.pid" ] && (cd "$B" && ./chain.sh stop >/dev/null 2>&1) || true
  [ "${KEEP:-0}" = 1 ] && echo "callgrind dumps kept in $W" || rm -rf "$W"
}
trap cleanup EXIT
has() { [[ " $ONLY " == *" $1 "* ]]; }

for t in valgrind callgrind_control nginx node python3; do
  command -v $t >/dev/null || { echo "benches/instructions.sh: $t is missing (apt-get install valgrind nginx nodejs python3)" >&2; exit 1; }
done

echo "== build tollgate (release)"
(cd "$ROOT" && cargo build --release --bin tollgate 2>&1 | tail -1)
TARGET=${CARGO_TARGET_DIR:-$(cd "$ROOT" && cargo metadata --format-version 1 --no-deps | python3 -c 'import sys,json;print(json.load(sys.stdin)["target_directory"])')}
TOLLGATE=$TARGET/release/tollgate

# total_ir FILE: the instructions a callgrind dump counted.
total_ir() { awk '/^(summary|totals):/ {print $2; exit}' "$1"; }

# Valgrind counts a `rep movsb` one instruction per byte, and glibc's memcpy copies large blocks with
# it: a 17 KB future moved into a box would count 17k instructions where the CPU runs a few hundred.
# Past this threshold glibc copies with vector loops instead, which callgrind counts as the CPU runs
# them (for every server alike).
export GLIBC_TUNABLES=glibc.cpu.x86_rep_movsb_threshold=1073741824

# Runs "$@" under callgrind as the server answering on URL; sets VG (valgrind's pid) and VGOUT.
vg_start() { # vg_start NAME URL CMD...
  local name=$1 url=$2; shift 2
  VGOUT=$W/$name.cg
  valgrind --tool=callgrind --callgrind-out-file="$VGOUT" --dump-instr=no --trace-children=no "$@" \
    > "$W/$name.log" 2>&1 &
  VG=$!; PIDS+=($VG)
  for _ in $(seq 1 600); do curl -s -o /dev/null "$url" && return 0; sleep 0.1; done
  echo "$name did not start under valgrind"; cat "$W/$name.log"; exit 1
}
vg_stop() { kill "$VG" 2>/dev/null || true; wait "$VG" 2>/dev/null || true; }

# dump: asks for a dump and waits for it; sets LAST_DUMP (its file) and DUMP_IR (its instructions).
dump() {
  callgrind_control -d "$VG" > /dev/null 2>&1
  local f=""
  for _ in $(seq 1 300); do
    f=$(ls -t "$VGOUT".* 2>/dev/null | head -1 || true)
    [ -n "$f" ] && [ "$f" != "${LAST_DUMP:-}" ] && grep -q '^totals:\|^summary:' "$f" && break
    sleep 0.1
  done
  LAST_DUMP=$f
  DUMP_IR=$(total_ir "$f")
}
zero() { callgrind_control -z "$VG" > /dev/null 2>&1; }

# count NAME REQUESTS CMD...: instructions per request while CMD sends REQUESTS requests, an idle
# window of the same server (scaled to CMD's duration) taken off; prints "per_request idle_per_s load_s".
# CMD's output goes to $W/NAME.sent.
count() {
  local name=$1 n=$2; shift 2
  zero; sleep 5; dump; local idle=$DUMP_IR
  zero
  local t0=$(date +%s.%N)
  "$@" > "$W/$name.sent"
  local t1=$(date +%s.%N)
  dump; local load=$DUMP_IR
  cp "$LAST_DUMP" "$W/$name.last.cg"
  python3 -c 'import sys
idle, load, t0, t1, n = int(sys.argv[1]), int(sys.argv[2]), float(sys.argv[3]), float(sys.argv[4]), int(sys.argv[5])
print(f"{(load - idle / 5.0 * (t1 - t0)) / n:.0f} {idle / 5.0:.0f} {t1 - t0:.1f}")' "$idle" "$load" "$t0" "$t1" "$n"
}

# measure NAME URL: exactly $N keep-alive GETs after a warm-up (see count).
measure() {
  local name=$1 url=$2
  python3 "$ROOT/benches/load/exactly.py" "$url" 500 4 > /dev/null   # warm-up
  count "$name" "$N" python3 "$ROOT/benches/load/exactly.py" "$url" "$N" 4
  local sent; read -r sent _ < "$W/$name.sent"
  [ "$sent" = "$N" ] || { echo "$name: sent $sent of $N: $(cat "$W/$name.sent")" >&2; exit 1; }
}

# top NAME: the hottest functions of the last dump, inclusive.
top() {
  callgrind_annotate --inclusive=yes --threshold=95 "$W/$1.last.cg" 2>/dev/null | head -60 > "$OUT/instructions/$1.txt" || true
}

ROWS=$W/rows.tsv; : > "$ROWS"
row() { printf '%s\t%s\t%s\n' "$1" "$2" "$3" >> "$ROWS"; echo "  $1 rep $2: $3"; }

# The upstream every proxy uses: nginx, one worker, not under valgrind.
mkdir -p "$W/nginx/tmp"
ngx_conf() { # ngx_conf NAME PORT MASTER SERVER_BODY [HTTP_EXTRA]
  cat > "$W/nginx/$1.conf" <<CONF
worker_processes 1;
master_process $3;
daemon off;
pid $W/nginx/$1.pid;
error_log $W/nginx/$1.error.log warn;
events { worker_connections 1024; }
http {
  access_log off;
  client_body_temp_path $W/nginx/tmp/body; proxy_temp_path $W/nginx/tmp/proxy;
  fastcgi_temp_path $W/nginx/tmp/fcgi; uwsgi_temp_path $W/nginx/tmp/uwsgi; scgi_temp_path $W/nginx/tmp/scgi;
  keepalive_requests 1000000;
  default_type application/json;
  ${5:-}
  server { listen 127.0.0.1:$2; $4 }
}
CONF
}
ngx_conf upstream 18190 on "location / { return 200 '{\"ok\":true}'; }"
nginx -p "$W/nginx" -c "$W/nginx/upstream.conf" > "$W/upstream.out" 2>&1 & PIDS+=($!)
for _ in $(seq 1 50); do curl -s -o /dev/null http://127.0.0.1:18190/ && break; sleep 0.1; done

BODY402=$(cat "$SHARED/nginx/body402.json")
TG_PORT=18195
tg_conf() { # tg_conf FILE RPC
  cat > "$1" <<CONF
listen = "127.0.0.1:$TG_PORT"
upstream = "http://127.0.0.1:18190"
database = "sqlite://$W/tg.db"
pay_to = "0x90F79bf6EB2c4f870365E785982E1f101E93b906"
threads = 1
[settlement]
receipt_poll_ms = 20
[networks.base]
rpc_url = "$2"
$([ -n "${BLOCK_TIME:-}" ] && [ "$2" != http://127.0.0.1:1 ] && echo "block_time_ms = $((BLOCK_TIME * 1000))")
[[routes]]
method = "GET"
path = "/paid"
price = "\$0.001"
max_timeout_seconds = 600
description = "paid JSON"
CONF
}
# In the environment of every process started here (valgrind must start tollgate itself, not `env`).
export TOLLGATE_RELAYER_KEY=0x5de4111afa1a4b94908f83103eb1f1706367c2e68ca870fc3fb9a804cdab365a TOLLGATE_LOG=warn
tg_cmd() { echo "$TOLLGATE" serve --config "$1"; }

for r in $(seq 1 "$REPS"); do
  if has 402 || has free; then
    echo "== rep $r: nginx"
    if has 402; then
      ngx_conf r402 18192 off "location / { return 402 '$BODY402'; }"
      vg_start nginx_402 http://127.0.0.1:18192/ nginx -p "$W/nginx" -c "$W/nginx/r402.conf"
      row nginx_402 "$r" "$(measure nginx_402 http://127.0.0.1:18192/paid)"; top nginx_402; vg_stop
    fi
    if has free; then
      ngx_conf proxy 18191 off "location / { proxy_pass http://up; proxy_http_version 1.1; proxy_set_header Connection \"\"; }" \
        "upstream up { server 127.0.0.1:18190; keepalive 128; keepalive_requests 1000000; }"
      vg_start nginx_proxy http://127.0.0.1:18191/ nginx -p "$W/nginx" -c "$W/nginx/proxy.conf"
      row nginx_proxy "$r" "$(measure nginx_proxy http://127.0.0.1:18191/)"; top nginx_proxy; vg_stop
    fi
    echo "== rep $r: tollgate"
    rm -f "$W"/tg.db*; tg_conf "$W/tg.toml" http://127.0.0.1:1
    # shellcheck disable=SC2046
    vg_start tollgate http://127.0.0.1:$TG_PORT/ $(tg_cmd "$W/tg.toml")
    has 402 && { row tollgate_402 "$r" "$(measure tollgate_402 http://127.0.0.1:$TG_PORT/paid)"; top tollgate_402; }
    has free && { row tollgate_free "$r" "$(measure tollgate_free http://127.0.0.1:$TG_PORT/)"; top tollgate_free; }
    vg_stop
  fi
done

if has paid || has cpu; then
  # The peer side: anvil with Circle's USDC, and its payment pre-signer.
  mkdir -p "$B"; cp -r "$SHARED/." "$B/"; chmod -R u+w "$B"
  (cd "$B" && ./setup.sh > "$W/setup.log" 2>&1) || { cat "$W/setup.log"; exit 1; }
  cd "$B"
  ./chain.sh stop >/dev/null 2>&1 || true
  [ -f run/usdc-state.json ] || { FRESH_STATE=1 ./chain.sh start > /dev/null; ./chain.sh stop > /dev/null; }
  cp "$ROOT/benches/load/multicall3.mjs" lib/
  ./chain.sh start > /dev/null && node lib/multicall3.mjs run/usdc-state.json > /dev/null && ./chain.sh stop > /dev/null
  fresh_chain() { ./chain.sh stop > /dev/null; ANVIL_EXTRA=${BLOCK_TIME:+--block-time $BLOCK_TIME} ./chain.sh start > /dev/null; }
  export SRV_PORT=$TG_PORT   # the pre-signer and the firer's target
  for r in $(seq 1 "$REPS"); do
    if has paid; then
      echo "== rep $r: tollgate paid (callgrind)"
      fresh_chain; rm -f "$W"/tg.db*; tg_conf "$W/tg.toml" http://127.0.0.1:18545
      # shellcheck disable=SC2046
      vg_start tollgate_paid http://127.0.0.1:$TG_PORT/ $(tg_cmd "$W/tg.toml")
      SRV_PORT=$TG_PORT node x402ref/pregen.mjs 20 "$W/warm.json" > /dev/null
      SRV_PORT=$TG_PORT node x402ref/fire.mjs "$W/warm.json" 4 warm > /dev/null
      SRV_PORT=$TG_PORT node x402ref/pregen.mjs "$PAID_N" "$W/paid.json" > /dev/null
      result=$(count tollgate_paid "$PAID_N" node x402ref/fire.mjs "$W/paid.json" "$PAID_C" paid)
      top tollgate_paid
      ok=$(python3 -c 'import sys,json; print(json.load(open(sys.argv[1]))["paid_ok"])' "$W/tollgate_paid.sent")
      [ "$ok" = "$PAID_N" ] || { echo "only $ok of $PAID_N payments settled: $(cat "$W/tollgate_paid.sent")"; exit 1; }
      row tollgate_paid "$r" "$result"
      vg_stop
    fi
    if has cpu; then
      echo "== rep $r: tollgate paid (CPU time per payment, no valgrind)"
      fresh_chain; rm -f "$W"/tg.db*; tg_conf "$W/tg.toml" http://127.0.0.1:18545
      # shellcheck disable=SC2046
      $(tg_cmd "$W/tg.toml") > "$W/tg-cpu.log" 2>&1 & TGP=$!; PIDS+=($TGP)
      for _ in $(seq 1 100); do curl -s -o /dev/null http://127.0.0.1:$TG_PORT/ && break; sleep 0.1; done
      SRV_PORT=$TG_PORT node x402ref/pregen.mjs 50 "$W/warm.json" > /dev/null
      SRV_PORT=$TG_PORT node x402ref/fire.mjs "$W/warm.json" 8 warm > /dev/null
      SRV_PORT=$TG_PORT node x402ref/pregen.mjs "$CPU_N" "$W/cpu.json" > /dev/null
      sleep 1
      g0=$(awk '{print $14+$15}' /proc/$TGP/stat); s0=$(awk '{print $15}' /proc/$TGP/stat)
      fired=$(SRV_PORT=$TG_PORT node x402ref/fire.mjs "$W/cpu.json" 32 cpu)
      g1=$(awk '{print $14+$15}' /proc/$TGP/stat); s1=$(awk '{print $15}' /proc/$TGP/stat)
      # CPU ticks by thread (user, kernel) since the gateway started: where the time goes.
      for t in /proc/$TGP/task/*; do printf '%s\t%s\n' "$(cat "$t/comm")" "$(awk '{print $14, $15}' "$t/stat")"; done \
        | sort | awk -F'\t' '{split($2, c, " "); u[$1] += c[1]; k[$1] += c[2]; n[$1]++} END {for (x in u) printf "    thread %s (x%d): user %d, kernel %d ticks\n", x, n[x], u[x], k[x]}' | sort -t: -k2 | tee -a "$W/threads.txt"
      ok=$(echo "$fired" | python3 -c 'import sys,json; print(json.load(sys.stdin)["paid_ok"])')
      [ "$ok" = "$CPU_N" ] || { echo "only $ok of $CPU_N payments settled: $fired"; exit 1; }
      hz=$(getconf CLK_TCK)
      ms=$(python3 -c "print(f'{($g1 - $g0) / $hz * 1000 / $CPU_N:.3f}')")
      printf 'tollgate_paid_cpu_ms\t%s\t%s - -\n' "$r" "$ms" >> "$ROWS"; echo "  CPU per payment rep $r: $ms ms (of which kernel: $(python3 -c "print(f'{($s1 - $s0) / $hz * 1000 / $CPU_N:.3f}')") ms)"
      kill $TGP; wait $TGP 2>/dev/null || true
    fi
  done
  cd "$ROOT"
fi

python3 - "$ROWS" "$OUT/instructions.md" "$N" "$PAID_N" "$CPU_N" "$PAID_C" "${BLOCK_TIME:-}" <<'PY'
import sys, statistics, datetime, platform
rows, out, n, paid_n, cpu_n, paid_c, bt = sys.argv[1:8]
chain = f"anvil mining a block every {bt} s" if bt else "anvil mining each transaction on arrival"
by = {}
for line in open(rows):
    label, rep, vals = line.rstrip("\n").split("\t")
    by.setdefault(label, []).append(float(vals.split()[0]))
def cell(label):
    v = by.get(label)
    if not v: return None, "—"
    m = statistics.median(v)
    spread = (max(v) - min(v)) / m * 100 if m else 0
    fmt = f"{m:.3f} ms" if label.endswith("_ms") else f"{m:,.0f}"
    return m, f"{fmt} ({len(v)} runs, spread {spread:.2f}%)"
lines = [f"Instructions per request (callgrind, user space, the whole server process; {n} keep-alive requests, "
         f"{paid_n} paid; idle subtracted), {datetime.date.today()} on {platform.node()}:", "",
         "| path | tollgate | nginx | ratio | goal |", "|---|---|---|---|---|"]
for path, t, g, goal in [("unpaid → 402", "tollgate_402", "nginx_402", 1.0), ("free route, proxied", "tollgate_free", "nginx_proxy", 2.0)]:
    tv, tc = cell(t); gv, gc = cell(g)
    ratio = f"{tv / gv:.2f}×" if tv and gv else "—"
    lines.append(f"| {path} | {tc} | {gc} | {ratio} | ≤ {goal:.1f}× |")
pv, pc = cell("tollgate_paid")
lines.append(f"| paid request, instructions per payment (c{paid_c}, {chain}, gateway only) | {pc} | — | — | — |")
cv, cc = cell("tollgate_paid_cpu_ms")
lines.append(f"| paid request, CPU time per payment ({cpu_n} at c32, {chain}, no valgrind) | {cc} | — | — | ≤ 0.4 ms |")
open(out, "w").write("\n".join(lines) + "\n")
print("\n".join(lines))
PY
