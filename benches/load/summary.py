#!/usr/bin/env python3
"""Turns the load harness's raw results into one markdown table (medians over repetitions)."""
import collections, datetime, json, os, platform, statistics as st, sys

out = sys.argv[1]

def tsv(path):
    rows = collections.OrderedDict()
    if not os.path.exists(path):
        return rows
    for line in open(path):
        if line.startswith("label"):
            continue
        f = line.rstrip("\n").split("\t")
        rows.setdefault(f[0], []).append({"rps": float(f[2]), "p50": float(f[3]), "p99": float(f[4]), "non2xx": int(f[6])})
    return rows

def jsonl(path):
    rows = collections.OrderedDict()
    if not os.path.exists(path):
        return rows
    for line in open(path):
        d = json.loads(line)
        rows.setdefault(d["label"], []).append(d)
    return rows

def med(rows, key):
    return st.median(r[key] for r in rows) if rows else float("nan")

peers = tsv(f"{out}/peers/nginx.tsv")
peers.update(tsv(f"{out}/peers/x402ref-wrk.tsv"))
ref_paid = jsonl(f"{out}/peers/x402ref-paid.jsonl")
tg = tsv(f"{out}/raw/tollgate-wrk.tsv")
tg_paid = jsonl(f"{out}/raw/tollgate-paid.jsonl")
import glob
for extra in sorted(glob.glob(f"{out}/raw/tollgate-paid_bt*.jsonl")):
    tg_paid.update(jsonl(extra))
rss = json.load(open(f"{out}/raw/tollgate-rss.json")) if os.path.exists(f"{out}/raw/tollgate-rss.json") else {}

cpu = open("/proc/cpuinfo").read()
model = next((l.split(":", 1)[1].strip() for l in cpu.splitlines() if l.startswith("model name")), "?")
print(f"Measured {datetime.datetime.utcnow():%Y-%m-%d %H:%M} UTC on {os.cpu_count()} × {model}, "
      f"{round(os.sysconf('SC_PAGE_SIZE') * os.sysconf('SC_PHYS_PAGES') / 2**30)} GiB, {platform.platform()}. "
      f"wrk and every server share the same cores; medians of {max((len(v) for v in tg.values()), default=0)} runs.\n")

print("| what | tollgate | peer | ratio | target |")
print("|---|---|---|---|---|")
def row(name, t, p, target=None, peer_name=""):
    if not t or not p:
        return
    ratio = med(t, "rps") / med(p, "rps")
    ok = "" if target is None else (" ✓" if ratio >= target else " ✗")
    print(f"| {name} | {med(t,'rps'):,.0f} rps, p50 {med(t,'p50'):.2f} / p99 {med(t,'p99'):.2f} ms "
          f"| {peer_name}: {med(p,'rps'):,.0f} rps, p50 {med(p,'p50'):.2f} / p99 {med(p,'p99'):.2f} ms "
          f"| {ratio:.2f}× | {'' if target is None else f'≥ {target}×'}{ok} |")
row("free route (proxied to the nginx upstream)", tg.get("t_tollgate_free"), peers.get("b_nginx_proxy_pass_w1"), 0.9, "nginx proxy_pass")
row("unpaid → 402 (v1 body + v2 header)", tg.get("t_tollgate_402"), peers.get("c_nginx_return402_w1"), 0.8, "nginx static 402")
# The targets are against the anchor figures (nginx with 1 worker); tollgate runs one worker per core,
# so the same comparison with nginx on as many workers is shown too.
row("free route, nginx with as many workers as tollgate", tg.get("t_tollgate_free"), peers.get("b_nginx_proxy_pass_wauto"), None, "nginx proxy_pass, workers auto")
row("unpaid → 402, nginx with as many workers as tollgate", tg.get("t_tollgate_402"), peers.get("c_nginx_return402_wauto"), None, "nginx static 402, workers auto")
row("unpaid → 402", tg.get("t_tollgate_402"), peers.get("e_express_unpaid_402"), None, "reference x402 402")
row("free route", tg.get("t_tollgate_free"), peers.get("d_express_free"), None, "reference x402 free")

row("hosted: unpaid → 402, 10,000 tenants in PostgreSQL, 1,000 hit at random", tg.get("t_hosted_402"), tg.get("t_tollgate_402"), 0.9, "drop-in 402")
for label, name in [("t_api_usage", "management API: authenticated GET /usage"), ("t_api_verify_x402", "management API: x402-form POST /verify (offline checks + eth_call on anvil)")]:
    if tg.get(label):
        print(f"| {name} | {med(tg[label],'rps'):,.0f} rps, p50 {med(tg[label],'p50'):.2f} / p99 {med(tg[label],'p99'):.2f} ms | Unkey's key verification (published): ~30 ms | | |")

print()
print("| paid (N pre-signed payments) | paid/s | p50 / p99 ms | settled on chain per run | gateway CPU ms/payment | anvil CPU ms/payment | vs reference (c same) |")
print("|---|---|---|---|---|---|---|")
def per_pay(ds, key):
    return st.median(d[key] / max(d["landed_onchain"], 1) * 1000 for d in ds)
for label, ds in list(tg_paid.items()) + list(ref_paid.items()):
    c = ds[0]["conc"]
    ref = ref_paid.get(f"f_paid_nm1_c{c}")
    vs = f"{med(ds,'paid_rps') / med(ref,'paid_rps'):.1f}×" + (" (target ≥ 10× at c32)" if c == 32 else "") if ref and label.startswith("t_") and "_bt" not in label else ""
    gw = per_pay(ds, "gateway_cpu_s") if "gateway_cpu_s" in ds[0] else per_pay(ds, "facilitator_cpu_s") + per_pay(ds, "server_cpu_s")
    print(f"| {label} | {med(ds,'paid_rps'):.1f} | {med(ds,'p50_ms'):.0f} / {med(ds,'p99_ms'):.0f} "
          f"| {', '.join(str(d['landed_onchain']) + '/' + str(d['n']) for d in ds)} | {gw:.2f} | {per_pay(ds,'anvil_cpu_s'):.2f} | {vs} |")
print("\n(reference rows `f_paid_nm1_*`: gateway CPU = facilitator + express server.)")
chain_rows = [(label, ds) for label, ds in tg_paid.items() if "relayer_txs" in ds[0]]
if chain_rows:
    print()
    print("| paid, on chain (tollgate's relayer) | settlement transactions per run | blocks with one | payments per transaction | gas per payment |")
    print("|---|---|---|---|---|")
    for label, ds in chain_rows:
        print(f"| {label} | {', '.join(str(d['relayer_txs']) for d in ds)} | {', '.join(str(d['relayer_blocks']) for d in ds)} "
              f"| {med(ds,'payments_per_tx'):.1f} | {med(ds,'gas_per_payment'):,.0f} |")
for c in sorted({d[0]["conc"] for d in tg_paid.values()}):
    h, d = tg_paid.get(f"t_hosted_paid_before_c{c}"), tg_paid.get(f"t_paid_before_c{c}")
    if h and d:
        r = med(h, "paid_rps") / med(d, "paid_rps")
        print(f"\nHosted paid with quota counting, c{c}: {med(h,'paid_rps'):.1f} paid/s vs drop-in {med(d,'paid_rps'):.1f}: "
              f"{r:.2f}× (target ≥ 0.9×{' ✓' if r >= 0.9 else ' ✗'}).")
keys = json.load(open(f"{out}/raw/tollgate-api-keys.json")) if os.path.exists(f"{out}/raw/tollgate-api-keys.json") else None
if keys:
    print(f"\nKey lookups: {keys['key_table_scans']} reads of the api_keys table (pg_stat_user_tables) during "
          f"{keys['usage_requests']:,} authenticated requests (target: 0 at steady state).")
hrss = json.load(open(f"{out}/raw/tollgate-hosted-rss.json")) if os.path.exists(f"{out}/raw/tollgate-hosted-rss.json") else None
if hrss:
    print(f"\nHosted memory, 100,000 tenants in the database: idle {hrss['rss_idle_kb']/1024:.1f} MB, "
          f"with 10,000 active {hrss['rss_10k_active_kb']/1024:.1f} MB ({hrss['touched']}).")
if rss:
    print(f"\nResident memory of the gateway: idle {rss['rss_idle_kb']/1024:.1f} MB, after the wrk runs "
          f"{rss['rss_after_wrk_kb']/1024:.1f} MB, holding 1,000 keep-alive connections "
          f"{rss['rss_1000_conns_kb']/1024:.1f} MB ({rss['conns']}); target < 100 MB.")
fac = jsonl(f"{out}/raw/facilitator.jsonl")
if fac:
    print()
    print("| facilitator (stock-server bodies, N per run) | tollgate | reference facilitator | ratio | settled on chain per run (tollgate; reference) |")
    print("|---|---|---|---|---|")
    for what in ("settle", "verify"):
        for c in sorted({d[0]["conc"] for d in fac.values()}):
            t, r = fac.get(f"fac_tollgate_{what}_c{c}"), fac.get(f"fac_reference_{what}_c{c}")
            if not t or not r:
                continue
            unit = "settled/s" if what == "settle" else "valid/s"
            ratio = med(t, "ok_rps") / med(r, "ok_rps")
            target = " (target ≥ 10×" + (" ✓)" if ratio >= 10 else " ✗)") if what == "settle" and c == 32 else ""
            landed = ""
            if what == "settle":
                landed = f"{', '.join(str(d['landed_onchain']) + '/' + str(d['n']) for d in t)}; " \
                         f"{', '.join(str(d['landed_onchain']) + '/' + str(d['n']) for d in r)}"
            print(f"| {what} c{c} | {med(t,'ok_rps'):,.1f} {unit}, p50 {med(t,'p50_ms'):.1f} / p99 {med(t,'p99_ms'):.1f} ms "
                  f"| {med(r,'ok_rps'):,.1f} {unit}, p50 {med(r,'p50_ms'):.1f} / p99 {med(r,'p99_ms'):.1f} ms "
                  f"| {ratio:.1f}×{target} | {landed} |")
sol = jsonl(f"{out}/raw/solana.jsonl")
if sol:
    print()
    print("| Solana paid (official @x402/svm client, LiteSVM RPC test server) | paid/s | p50 / p99 ms | settled on chain per run | gateway CPU ms/payment | RPC server CPU ms/payment |")
    print("|---|---|---|---|---|---|")
    for label, ds in sol.items():
        print(f"| {label} | {med(ds,'paid_rps'):.1f} | {med(ds,'p50_ms'):.0f} / {med(ds,'p99_ms'):.0f} "
              f"| {', '.join(str(d['landed_onchain']) + '/' + str(d['n']) for d in ds)} "
              f"| {per_pay(ds,'gateway_cpu_s'):.2f} | {per_pay(ds,'rpc_cpu_s'):.2f} |")

ops = tsv(f"{out}/raw/tollgate-ops.tsv")
if ops:
    print()
    print("| operations (interleaved rounds, medians) | free route | 402 | vs metrics off (free; 402) |")
    print("|---|---|---|---|")
    base_free, base_402 = ops.get("ops_metrics_off_free"), ops.get("ops_metrics_off_402")
    names = {"metrics_on": "metrics on (the default)", "metrics_off": "metrics off (`[metrics] enabled = false`)",
             "ratelimit": "rate limit per IP on (never reached)", "tls": "TLS (keep-alive, wrk over HTTPS)"}
    for v, name in names.items():
        f, t = ops.get(f"ops_{v}_free"), ops.get(f"ops_{v}_402")
        if not f or not t:
            continue
        vs = "" if v == "metrics_off" or not base_free else \
            f"{med(f,'rps')/med(base_free,'rps'):.3f}×; {med(t,'rps')/med(base_402,'rps'):.3f}×"
        print(f"| {name} | {med(f,'rps'):,.0f} rps, p50 {med(f,'p50'):.2f} ms | {med(t,'rps'):,.0f} rps, p50 {med(t,'p50'):.2f} ms | {vs} |")
