#!/usr/bin/python3
"""Latency sink: a minimal HTTP/1.1 keep-alive runtime that records produce-to-invoke latency.

    sink.py PORT [DELAY_MS]

Every POST answers 200 with an empty body (after DELAY_MS, without blocking other connections).
A POST body that starts with 19 ASCII digits is taken as the produce time in ns since the epoch
(bench.py's latency producer writes it); arrival time minus that is recorded. A batch (ktrigger's
dispatch.batch: a CloudEvents JSON batch, a body starting with '[') records one sample per event,
from the first 19 characters of its data_base64 (decoded) or data; the empty 200 means that
every entry succeeded (README "Batched delivery"). GET /stats answers
JSON {"count", "p50_ms", "p99_ms", "p999_ms", "max_ms"} and GET /reset clears the samples;
GET anything else (the health path) answers 200.
"""
import asyncio
import base64
import binascii
import json
import sys
import time

OK = b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n"
samples = []
#: Requests that carried a batch, and the events they held (GET /stats reports both).
batches = {'requests': 0, 'events': 0}


def pct(sorted_ns, q):
    if not sorted_ns:
        return None
    i = min(len(sorted_ns) - 1, max(0, int(round(q * len(sorted_ns))) - 1))
    return sorted_ns[i] / 1e6


def stats():
    s = sorted(samples)
    return {'count': len(s), 'p50_ms': pct(s, 0.50), 'p99_ms': pct(s, 0.99),
            'p999_ms': pct(s, 0.999), 'max_ms': s[-1] / 1e6 if s else None,
            'batch_requests': batches['requests'], 'batch_events': batches['events']}


def event_ns(ev):
    """The produce time at the start of one batch event's value, or None."""
    if not isinstance(ev, dict):
        return None
    head = b''
    if isinstance(ev.get('data_base64'), str):
        try:
            head = base64.b64decode(ev['data_base64'][:28])   # 28 chars: the first 21 bytes
        except (binascii.Error, ValueError):
            return None
    elif isinstance(ev.get('data'), (str, int)):
        head = str(ev['data']).encode()
    return int(head[:19]) if len(head) >= 19 and head[:19].isdigit() else None


def record(body, now):
    if body[:1] == b"[":
        try:
            events = json.loads(body)
        except ValueError:
            return
        if not isinstance(events, list):
            return
        batches['requests'] += 1
        batches['events'] += len(events)
        for ev in events:
            ns = event_ns(ev)
            if ns is not None:
                samples.append(now - ns)
    elif len(body) >= 19 and body[:19].isdigit():
        samples.append(now - int(body[:19]))


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
                        batches.update(requests=0, events=0)
                    writer.write(OK)
                continue
            record(body, now)
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
