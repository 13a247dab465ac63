#!/usr/bin/env python3
"""The block-time table: tollgate's paid runs by answer mode beside the reference stack's, same chain.

usage: blocktime.py RESULTS_DIR SUFFIX   (SUFFIX: _bt2 for BLOCK_TIME=2)
Reads raw/tollgate-paid{SUFFIX}.jsonl and peers/x402ref-paid{SUFFIX}.jsonl (one run each, or the median
of several) and prints a markdown table: paid/s, p50/p99, settled on chain, payments per transaction,
gas per payment, and the ratio of paid/s against the reference at the same concurrency.
"""
import json
import re
import statistics
import sys
from collections import defaultdict

out, suffix = sys.argv[1], sys.argv[2]


def load(path):
    rows = defaultdict(list)
    try:
        for line in open(path):
            if line.strip():
                d = json.loads(line)
                rows[d["label"]].append(d)
    except FileNotFoundError:
        pass
    return rows


def med(runs, key):
    vals = [r[key] for r in runs if r.get(key) is not None]
    return statistics.median(vals) if vals else None


tg = load(f"{out}/raw/tollgate-paid{suffix}.jsonl")
ref = load(f"{out}/peers/x402ref-paid{suffix}.jsonl")
ref_by_conc = {}
for label, runs in ref.items():
    m = re.match(r"f_paid_nm1_c(\d+)$", label)
    if m:
        ref_by_conc[int(m.group(1))] = runs

print("| answer | concurrency | paid/s | p50 / p99 ms | settled on chain | payments per tx | gas per payment | paid/s vs reference |")
print("|---|---|---|---|---|---|---|---|")
order = {"confirmed": 0, "submitted": 1, "verified": 2}
entries = []
for label, runs in tg.items():
    m = re.match(rf"t_paid_(\w+?)_c(\d+){suffix}(?:_(verified|submitted))?$", label)
    if not m:
        continue
    entries.append((m.group(3) or "confirmed", int(m.group(2)), runs))
for conc in sorted({c for _, c, _ in entries}):
    r = ref_by_conc.get(conc)
    if r:
        print(f"| reference (x402 facilitator) | c{conc} | {med(r, 'paid_rps'):.1f} | {med(r, 'p50_ms'):,.0f} / {med(r, 'p99_ms'):,.0f} "
              f"| {int(med(r, 'landed_onchain'))}/{r[0]['n']} | 1 | — | 1.0× |")
    for answer, c, runs in sorted((e for e in entries if e[1] == conc), key=lambda e: order.get(e[0], 9)):
        rps = med(runs, "paid_rps")
        ratio = f"{rps / med(r, 'paid_rps'):.1f}×" if r else "—"
        ppt = med(runs, "payments_per_tx")
        gas = med(runs, "gas_per_payment")
        print(f"| tollgate `{answer}` | c{c} | {rps:.1f} | {med(runs, 'p50_ms'):,.0f} / {med(runs, 'p99_ms'):,.0f} "
              f"| {int(med(runs, 'landed_onchain'))}/{runs[0]['n']} | {ppt if ppt is not None else '—'} "
              f"| {f'{gas:,.0f}' if gas else '—'} | {ratio} |")
