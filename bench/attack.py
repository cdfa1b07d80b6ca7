#!/usr/bin/env python3
"""Open-loop wrong-password load: RATE Basic requests per second for DURATION seconds.

Usage: attack.py HOST PORT PATH RATE DURATION USERNAME PASSWORD [SOURCE_ADDR]

USERNAME may hold "{i}", replaced by the request's number (a distinct username each time).
SOURCE_ADDR may be a range of loopback addresses, "127.0.1.1-250": request i then comes from
the (i mod 250)th of them, so the flood has many client addresses.

Requests are sent on a fixed schedule (not closed-loop), each on an idle keep-alive
connection or a new one, so a slow server does not slow the attacker down. Bounded: at most
RATE*DURATION requests, at most MAX_OPEN connections, every request abandoned after
TIMEOUT seconds, and the whole run ends DURATION+TIMEOUT seconds after it started.
SOURCE_ADDR (for example 127.0.0.2) makes the attacker a different client address than the
legitimate load, as it would be in reality. Prints one JSON line of counts.
"""

import asyncio
import base64
import json
import sys
import time

MAX_OPEN = 2000
TIMEOUT = 5.0


def sources_of(spec):
    """None, one address, or the addresses of a range like 127.0.1.1-250."""
    if spec is None:
        return [None]
    if "-" not in spec:
        return [spec]
    first, last = spec.rsplit("-", 1)
    prefix, start = first.rsplit(".", 1)
    return [f"{prefix}.{n}" for n in range(int(start), int(last) + 1)]


def request_for(host, port, path, username, password, i):
    name = username.replace("{i}", str(i))
    auth = base64.b64encode(f"{name}:{password}".encode()).decode()
    return (
        f"GET {path} HTTP/1.1\r\nHost: {host}:{port}\r\n"
        f"Authorization: Basic {auth}\r\nAccept: application/json\r\n\r\n"
    ).encode()


async def one(host, port, source, request, idle, stats, latencies):
    started = time.monotonic()
    conn = idle.pop() if idle else None
    try:
        if conn is None:
            stats["opened"] += 1
            conn = await asyncio.wait_for(
                asyncio.open_connection(
                    host, port, local_addr=(source, 0) if source else None
                ),
                TIMEOUT,
            )
        reader, writer = conn
        writer.write(request)
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), TIMEOUT)
        status = head.split(b" ", 2)[1].decode()
        length = 0
        close = False
        for line in head.split(b"\r\n")[1:]:
            name, _, value = line.partition(b":")
            name = name.strip().lower()
            if name == b"content-length":
                length = int(value.strip())
            elif name == b"connection" and value.strip().lower() == b"close":
                close = True
        if length:
            await asyncio.wait_for(reader.readexactly(length), TIMEOUT)
        stats[status] = stats.get(status, 0) + 1
        latencies.append(time.monotonic() - started)
        if close:
            writer.close()
        else:
            idle.append(conn)
    except (asyncio.TimeoutError, OSError, asyncio.IncompleteReadError, ValueError, IndexError):
        stats["failed"] += 1
        if conn is not None:
            conn[1].close()


async def main():
    host, port, path = sys.argv[1], int(sys.argv[2]), sys.argv[3]
    rate, duration = float(sys.argv[4]), float(sys.argv[5])
    username, password = sys.argv[6], sys.argv[7]
    sources = sources_of(sys.argv[8] if len(sys.argv) > 8 else None)
    stats = {"sent": 0, "skipped": 0, "opened": 0, "failed": 0}
    latencies = []
    idle = {source: [] for source in sources}  # idle connections, by source address
    tasks = set()
    total = int(rate * duration)
    start = time.monotonic()
    for i in range(total):
        due = start + i / rate
        delay = due - time.monotonic()
        if delay > 0:
            await asyncio.sleep(delay)
        if time.monotonic() - start > duration + 1:
            break
        if len(tasks) >= MAX_OPEN:
            stats["skipped"] += 1
            continue
        stats["sent"] += 1
        source = sources[i % len(sources)]
        request = request_for(host, port, path, username, password, i)
        task = asyncio.create_task(
            one(host, port, source, request, idle[source], stats, latencies)
        )
        tasks.add(task)
        task.add_done_callback(tasks.discard)
    sending = time.monotonic() - start
    if tasks:
        await asyncio.wait(tasks, timeout=TIMEOUT + 1)
    for task in tasks:
        task.cancel()
    for conns in idle.values():
        for _, writer in conns:
            writer.close()
    latencies.sort()
    pct = lambda p: round(latencies[min(len(latencies) - 1, int(p * len(latencies)))] * 1e3, 1) if latencies else None
    stats.update(
        rate_sent=round(stats["sent"] / sending, 1) if sending else 0,
        p50_ms=pct(0.50),
        p99_ms=pct(0.99),
    )
    print(json.dumps(stats))


if __name__ == "__main__":
    asyncio.run(main())
