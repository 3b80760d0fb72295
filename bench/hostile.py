#!/usr/bin/env python3
"""Holds many hostile connections against a running server and times normal
requests meanwhile.

Usage: hostile.py HOST:PORT CONNECTIONS [SECONDS]

Opens CONNECTIONS sockets: a third send nothing, a third half a request head
and then a header byte every second (slowloris), a third a join head with
Content-Length 100 and one body byte a second (a slow body). While they are
held (SECONDS, default 30), it makes a normal GET /healthz on a new
connection every 0.5 s and prints how long each took, then how many of the
hostile sockets the server had closed. TOKEN (a bearer token) makes the
slow bodies reach the handler. Standard library only; raise the open-file
limit first (ulimit -n).
"""
import asyncio
import os
import sys
import time


async def hold(host, port, kind, closed):
    try:
        reader, writer = await asyncio.open_connection(host, port)
    except OSError:
        closed["refused"] += 1
        return
    try:
        if kind == 1:
            writer.write(b"GET /healthz HTTP/1.1\r\nHost: x\r\n")
        elif kind == 2:
            writer.write(
                b"POST /v1/matchmaking/queue HTTP/1.1\r\nHost: x\r\n"
                + f"Authorization: Bearer {os.environ.get('TOKEN', '')}\r\n".encode()
                + b"Content-Type: application/json\r\nContent-Length: 100\r\n\r\n{"
            )
        await writer.drain()
        while True:
            try:
                data = await asyncio.wait_for(reader.read(4096), timeout=1.0)
                if not data:
                    closed[kind] += 1
                    return
            except asyncio.TimeoutError:
                pass
            if kind == 1:
                writer.write(b"X-A: b\r\n")
            elif kind == 2:
                writer.write(b" ")
            await writer.drain()
    except (OSError, ConnectionError):
        closed[kind] += 1
    finally:
        writer.close()


async def normal(host, port):
    started = time.monotonic()
    try:
        reader, writer = await asyncio.wait_for(asyncio.open_connection(host, port), 5)
        writer.write(b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        await writer.drain()
        answer = await asyncio.wait_for(reader.read(4096), 5)
        writer.close()
        status = answer.split(b" ", 2)[1].decode() if answer else "closed"
    except (OSError, asyncio.TimeoutError) as e:
        status = type(e).__name__
    return status, time.monotonic() - started


async def main():
    host, port = sys.argv[1].rsplit(":", 1)
    count = int(sys.argv[2])
    seconds = float(sys.argv[3]) if len(sys.argv) > 3 else 30.0
    closed = {0: 0, 1: 0, 2: 0, "refused": 0}
    tasks = []
    for i in range(count):
        tasks.append(asyncio.create_task(hold(host, int(port), i % 3, closed)))
        if i % 500 == 499:
            await asyncio.sleep(0.05)
    print(f"holding {count} hostile connections")
    times = []
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        status, took = await normal(host, int(port))
        times.append(took)
        print(f"normal GET /healthz: {status} in {took * 1000:.1f} ms")
        await asyncio.sleep(0.5)
    times.sort()
    print(
        f"normal requests: {len(times)}, median {times[len(times) // 2] * 1000:.1f} ms, "
        f"max {times[-1] * 1000:.1f} ms"
    )
    print(
        f"closed by the server: idle {closed[0]}, slow head {closed[1]}, "
        f"slow body {closed[2]}; refused at connect {closed['refused']}"
    )
    for t in tasks:
        t.cancel()


if __name__ == "__main__":
    asyncio.run(main())
