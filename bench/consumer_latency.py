#!/usr/bin/python3
"""Kafka's own produce-to-consume latency: the floor under ktrigger's produce-to-invoke latency.

    consumer_latency.py BOOTSTRAP TOPIC RECORDS SINCE_NS OUT.json READY [PROPERTY=VALUE ...]

A plain librdkafka consumer (confluent_kafka, its own group, from the beginning) reads the
latency scenario's records while ktrigger does, with ktrigger's benchmark fetch properties, and
records arrival time minus the produce time at the start of each value (19 ASCII digits, ns),
as sink.py does, for records produced at SINCE_NS or later (an earlier run's are skipped).
Creates the file READY on its first record (bench.py's warm-up record: joined and fetching).
Writes {"count", "p50_ms", "p99_ms", "p999_ms", "max_ms"} to OUT.json after RECORDS timed
records or 120 s.
"""
import json
import sys
import time

from confluent_kafka import Consumer


def pct(sorted_ns, q):
    if not sorted_ns:
        return None
    i = min(len(sorted_ns) - 1, max(0, int(round(q * len(sorted_ns))) - 1))
    return sorted_ns[i] / 1e6


def main():
    bootstrap, topic, records = sys.argv[1], sys.argv[2], int(sys.argv[3])
    since, out, ready = int(sys.argv[4]), sys.argv[5], sys.argv[6]
    conf = {'bootstrap.servers': bootstrap, 'group.id': f'floor-{topic}-{time.time_ns()}',
            'auto.offset.reset': 'earliest', 'enable.auto.commit': False}
    conf.update(kv.split('=', 1) for kv in sys.argv[7:])
    c = Consumer(conf)
    c.subscribe([topic])
    samples = []
    seen = False
    deadline = time.monotonic() + 120
    while len(samples) < records and time.monotonic() < deadline:
        m = c.poll(0.1)
        if m is None or m.error():
            continue
        now = time.time_ns()
        if not seen:
            seen = True
            open(ready, 'w').close()
        v = m.value() or b''
        if len(v) >= 19 and v[:19].isdigit() and int(v[:19]) >= since:
            samples.append(now - int(v[:19]))
    c.close()
    s = sorted(samples)
    with open(out, 'w') as f:
        json.dump({'count': len(s), 'p50_ms': pct(s, 0.50), 'p99_ms': pct(s, 0.99),
                   'p999_ms': pct(s, 0.999), 'max_ms': s[-1] / 1e6 if s else None}, f)


if __name__ == '__main__':
    main()
