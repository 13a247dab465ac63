#!/usr/bin/env python3
"""Opens N keep-alive HTTP/1.1 connections to HOST:PORT, sends one request on each, keeps them open
until stdin closes or SECONDS pass, and prints how many are open. Loopback only.

usage: conns.py PORT N SECONDS PATH
"""
import asyncio, sys

async def main(port, n, seconds, path):
    conns = []
    async def one():
        r, w = await asyncio.open_connection("127.0.0.1", port)
        w.write(f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: keep-alive\r\n\r\n".encode())
        await w.drain()
        status = await r.readline()
        # read headers + body by content-length
        length = 0
        while True:
            line = await r.readline()
            if line in (b"\r\n", b""):
                break
            if line.lower().startswith(b"content-length:"):
                length = int(line.split(b":")[1])
        if length:
            await r.readexactly(length)
        conns.append((r, w))
        return status.startswith(b"HTTP/1.1")
    ok = 0
    for i in range(0, n, 100):
        res = await asyncio.gather(*(one() for _ in range(min(100, n - i))), return_exceptions=True)
        ok += sum(1 for x in res if x is True)
    print(f"open={ok}", flush=True)
    await asyncio.sleep(seconds)
    for _, w in conns:
        w.close()

asyncio.run(main(int(sys.argv[1]), int(sys.argv[2]), float(sys.argv[3]), sys.argv[4]))
