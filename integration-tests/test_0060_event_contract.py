"""The event contract, on each Kubeless-style runtime (Python/Bottle, Node.js/Express,
Ruby/Sinatra): every kind of record value (JSON object, JSON array, JSON scalar, UTF-8 text,
binary, null/tombstone, empty, 1 MiB) arrives as the exact body bytes, with exactly the event-*
headers the contract gives it: event-id/topic/partition/offset/namespace, event-time in RFC 3339
UTC with milliseconds, event-timestamp-type (create and log-append), Content-Type = event-type
chosen from the record's content-type header or its value, event-tombstone, event-key (plain
or base64 with event-key-encoding), and record headers as event-header-* / event-headerb64-*.
"""

import base64
import datetime
import random
import time

import pytest
from confluent_kafka import TIMESTAMP_CREATE_TIME, TIMESTAMP_LOG_APPEND_TIME

import kthelpers as kt

MIB = 1024 * 1024
TEXT = 'text/plain; charset=utf-8'
OCTETS = 'application/octet-stream'
JSON = 'application/json'


def rfc3339_ms(ms):
    """Kafka timestamp (ms) -> '2023-11-14T22:13:20.123Z'."""
    dt = datetime.datetime.fromtimestamp(ms // 1000, datetime.timezone.utc)
    return dt.strftime('%Y-%m-%dT%H:%M:%S') + '.%03dZ' % (ms % 1000)


def big_value():
    rng = random.Random(6060)
    alphabet = b'abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789 .,;\n'
    return bytes(rng.choice(alphabet) for _ in range(MIB))


# (what, value, key, record headers, Content-Type/event-type, extra event-* headers)
CASES = [
    ('json object', b'{"a": 1, "b": [true, null], "s": "\\u00e9t\xc3\xa9"}', None, None, JSON, {}),
    ('json array', b'[1, "two", {"three": 3}]', None, None, JSON, {}),
    ('json scalar', b'"just a JSON string"', None, None, TEXT, {}),
    ('utf-8 text', 'hello, w\u00f6rld \u2713 \U0001f600 plain text'.encode('utf-8'), None, None,
     TEXT, {}),
    ('binary', b'\x00\xffbin\xfe\x80' + bytes(range(256)) + b'\x00', None, None, OCTETS, {}),
    ('tombstone', None, None, None, OCTETS, {'event-tombstone': 'true'}),
    ('empty', b'', None, None, TEXT, {}),
    ('key and headers', b'with key and headers', b'k1',
     [('trace-id', b'abc'), ('bin', b'\x00\x01')], TEXT,
     {'event-key': 'k1', 'event-header-trace-id': 'abc', 'event-headerb64-bin': 'AAE='}),
    ('content-type header', b'a,b\n1,2\n', None, [('content-type', b'text/csv')], 'text/csv',
     {'event-header-content-type': 'text/csv'}),
    ('binary key', b'binary key', b'\x00\xffkey', None, TEXT,
     {'event-key': base64.b64encode(b'\x00\xffkey').decode(), 'event-key-encoding': 'base64'}),
    ('null header value', b'null header value', None, [('nullhdr', None)], TEXT,
     {'event-header-nullhdr': ''}),
    ('1 MiB', None, None, None, TEXT, {}),  # value filled in by the test (big_value())
]


def event_headers(call):
    """The event-* headers and Content-Type the runtime received, {lower-cased name: value};
    a header received twice fails."""
    out = {}
    for name, value in call.header_list:
        name = name.lower()
        if name.startswith('event-') or name == 'content-type':
            assert name not in out, 'header %s received twice: %r' % (name, call.header_list)
            out[name] = value
    return out


def base_headers(topic, produced, ts_type):
    return {
        'event-id': '%s/%d/%d' % (topic, produced.partition, produced.offset),
        'event-topic': topic,
        'event-partition': str(produced.partition),
        'event-offset': str(produced.offset),
        'event-namespace': kt.NAMESPACE,
        'event-time': rfc3339_ms(produced.timestamp[1]),
        'event-timestamp-type': ts_type,
    }


@pytest.mark.parametrize('lang', kt.LANGS)
def test_event_contract(lang, kafka, names, config, runtime_factory, ktrigger_factory):
    topic = names.topic
    log_append_topic = names.topic + '-la'
    kafka.create_topic(topic, 1, config={'max.message.bytes': str(4 * MIB)})
    kafka.create_topic(log_append_topic, 1, config={'message.timestamp.type': 'LogAppendTime'})

    # Record timestamps with every width of milliseconds (.000, .005, .042, .999, ...).
    base_ms = (int(time.time()) // 60 * 60 - 3600) * 1000
    millis = [123, 0, 5, 999, 42, 500, 1, 10, 100, 7, 998, 250]
    records, cases = [], []
    for i, (what, value, key, headers, ctype, extra) in enumerate(CASES):
        if what == '1 MiB':
            value = big_value()
        records.append({'partition': 0, 'value': value, 'key': key, 'headers': headers,
                        'timestamp': base_ms + i * 1000 + millis[i % len(millis)]})
        cases.append((what, value, ctype, extra))
    produced = kafka.produce(topic, records, producer_config={'message.max.bytes': 4 * MIB})
    log_append = kafka.produce(log_append_topic, [(0, b'log append time')])[0]
    for rec, p in zip(records, produced):
        assert p.timestamp == (TIMESTAMP_CREATE_TIME, rec['timestamp'])
    assert log_append.timestamp[0] == TIMESTAMP_LOG_APPEND_TIME

    rt = runtime_factory(lang=lang)
    ktr = ktrigger_factory(config(rt.port, topics=[topic, log_append_topic]))
    total = len(records) + 1
    kt.wait_for(lambda: len(rt.calls()) >= total, 30, '%d calls' % total,
                describe=lambda: [(c.topic, c.offset, c.status) for c in rt.calls()])
    assert ktr.stop() == 0

    calls = rt.calls()
    assert len(calls) == total, 'each record exactly once: %r' % calls
    assert not [c for c in calls if c.failed], [(c, c.status) for c in calls if c.failed]
    by_topic = {}
    for c in calls:
        by_topic.setdefault(c.topic, []).append(c)
    assert sorted(by_topic) == sorted([topic, log_append_topic])
    got = sorted(by_topic[topic], key=lambda c: c.offset)
    assert [c.offset for c in got] == [p.offset for p in produced]

    for (what, value, ctype, extra), p, call in zip(cases, produced, got):
        body = value if value is not None else b''
        assert call.body_bytes == body, '%s: body differs (%d bytes sent, %d received)' % (
            what, len(body), len(call.body_bytes))
        want = base_headers(topic, p, 'create')
        want.update({'content-type': ctype, 'event-type': ctype})
        want.update(extra)
        have = event_headers(call)
        assert have == want, '%s (%s): event headers differ' % (what, lang)

    # Decoded through the helpers the other tests use.
    keyed = got[[c[0] for c in cases].index('key and headers')]
    assert keyed.key == b'k1'
    assert sorted(keyed.record_headers) == [('bin', b'\x00\x01'), ('trace-id', b'abc')]
    assert got[[c[0] for c in cases].index('binary key')].key == b'\x00\xffkey'
    assert got[[c[0] for c in cases].index('json object')].key is None

    (la_call,) = by_topic[log_append_topic]
    assert la_call.body_bytes == b'log append time'
    want = base_headers(log_append_topic, log_append, 'log-append')
    want.update({'content-type': TEXT, 'event-type': TEXT})
    assert event_headers(la_call) == want, 'log-append record (%s): event headers differ' % lang

    assert kafka.committed(names.group, topic) == kafka.end_offsets(topic)
    assert kafka.committed(names.group, log_append_topic) == kafka.end_offsets(log_append_topic)
