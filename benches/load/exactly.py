#!/usr/bin/env python3
"""Sends exactly N keep-alive GET requests over C connections (one thread each) and exits.

usage: exactly.py URL N [C] [HEADER: value]...
Prints "requests statuses seconds". wrk cannot stop after a count (its threads stop, its clock does not),
and an instruction count per request needs the exact number of requests.
"""
import collections
import http.client
import sys
import threading
import time
import urllib.parse

url = urllib.parse.urlsplit(sys.argv[1])
n = int(sys.argv[2])
c = int(sys.argv[3]) if len(sys.argv) > 3 else 4
extra = dict(h.split(": ", 1) for h in sys.argv[4:])
path = url.path or "/"
statuses = collections.Counter()
lock = threading.Lock()


def run(count):
    conn = http.client.HTTPConnection(url.hostname, url.port, timeout=120)
    seen = collections.Counter()
    for _ in range(count):
        conn.request("GET", path, headers=extra)
        r = conn.getresponse()
        r.read()
        seen[r.status] += 1
    conn.close()
    with lock:
        statuses.update(seen)


t0 = time.monotonic()
threads = [threading.Thread(target=run, args=(n // c + (1 if i < n % c else 0),)) for i in range(c)]
for t in threads:
    t.start()
for t in threads:
    t.join()
print(sum(statuses.values()), dict(statuses), f"{time.monotonic() - t0:.1f}")
