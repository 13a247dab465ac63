#!/usr/bin/env python3
"""Sends one unpaid request to each of tenants t1..tN through the gateway (4 keep-alive connections),
so that N tenants are active (built and cached); prints how many answered 402."""
import http.client, sys, threading

port, n = int(sys.argv[1]), int(sys.argv[2])
ok = [0] * 4

def run(k):
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    for i in range(k + 1, n + 1, 4):
        c.request("GET", f"/t/t{i}/paid")
        r = c.getresponse(); r.read()
        ok[k] += r.status == 402

ts = [threading.Thread(target=run, args=(k,)) for k in range(4)]
[t.start() for t in ts]; [t.join() for t in ts]
print(f"{sum(ok)}/{n} tenants answered 402")
