#!/usr/bin/python3
"""Latency sink: a minimal HTTP/1.1 keep-alive runtime that records produce-to-invoke latency.

    sink.py PORT [DELAY_MS]

Every POST answers 200 with an empty body (after DELAY_MS, without blocking other connections).
A POST body that starts with 19 ASCII digits is taken as the produce time in ns since the epoch
(bench.py's latency producer writes it); arrival time minus that is recorded. GET /stats answers
JSON {"count", "p50_ms", "p99_ms", "p999_ms", "max_ms"} and GET /reset clears the samples;
GET anything else (the health path) answers 200.
"""
import asyncio
import json
import sys
import time

OK = b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n"
samples = []


def pct(sorted_ns, q):
    if not sorted_ns:
        return None
    i = min(len(sorted_ns) - 1, max(0, int(round(q * len(sorted_ns))) - 1))
    return sorted_ns[i] / 1e6


def stats():
    s = sorted(samples)
    return {'count': len(s), 'p50_ms': pct(s, 0.50), 'p99_ms': pct(s, 0.99),
            'p999_ms': pct(s, 0.999), 'max_ms': s[-1] / 1e6 if s else None}


async def handle(reader, writer, delay):
    try:
        while True:
            head = await reader.readuntil(b"\r\n\r\n")
            now = time.time_ns()
            lines = head.split(b"\r\n")
            method, target = lines[0].split(b" ")[:2]
            length = 0
            for line in lines[1:]:
                if line[:15].lower() == b"content-length:":
                    length = int(line[15:].strip())
            body = await reader.readexactly(length) if length else b""
            if method == b"GET":
                if target == b"/stats":
                    out = json.dumps(stats()).encode()
                    writer.write(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
                                 b"Content-Length: %d\r\n\r\n%s" % (len(out), out))
                else:
                    if target == b"/reset":
                        samples.clear()
                    writer.write(OK)
                continue
            if len(body) >= 19 and body[:19].isdigit():
                samples.append(now - int(body[:19]))
            if delay:
                await asyncio.sleep(delay)
            writer.write(OK)
    except (asyncio.IncompleteReadError, ConnectionError):
        pass
    finally:
        writer.close()


async def main():
    port = int(sys.argv[1])
    delay = float(sys.argv[2]) / 1000 if len(sys.argv) > 2 else 0.0
    server = await asyncio.start_server(lambda r, w: handle(r, w, delay), '127.0.0.1', port,
                                        backlog=1024)
    async with server:
        await server.serve_forever()


if __name__ == '__main__':
    try:
        asyncio.run(main())
    except KeyboardInterrupt:
        pass
