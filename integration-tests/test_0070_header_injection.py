"""Nothing from a record injects into the HTTP request: record header names that are not HTTP
tokens (space, CRLF, colon, empty, non-ASCII, over 128 bytes) are dropped; values with CR, LF,
NUL, control bytes (C0, DEL, C1 such as U+0085 NEL) or invalid UTF-8 arrive base64 as
event-headerb64-<name>; a value over 8 KiB is dropped (8 KiB exactly is kept); keys with
CRLF/NUL or over 4 KiB arrive base64; header names are sent lower-cased.  The runtime never sees
an `injected` header nor a raw CR/LF/control byte in its header block, every record is still
delivered, and ktrigger_record_headers_dropped_total counts each dropped header.

Three runs (one per test) so a failure names the property: injection/encoding/dropping, the C1
control character, and lower-cased names."""

import base64

import kthelpers as kt

KIB = 1024


def b64(data):
    return base64.b64encode(data).decode('ascii')


# (value, key, record headers, forwarded: sorted [(name, value bytes)], extra event-* headers,
#  number of headers dropped)
CASES = [
    (b'bad names', None,
     [('bad name', b'v1'), ('x\r\ninjected: 1', b'v2'), ('a:b', b'v3'), ('', b'v4'),
      ('n\u00e4me', b'v5'), ('ok', b'fine')],
     [('ok', b'fine')], {'event-header-ok': 'fine'}, 5),
    (b'bad values', None,
     [('crlf', b'a\r\ninjected: 2'), ('lf', b'x\ny'), ('cr', b'x\ry'), ('nul', b'a\x00b'),
      ('esc', b'\x1b[31mred'), ('del', b'a\x7f'), ('badutf8', b'\xff\xfe'), ('tab', b'a\tb'),
      ('utf8', 'h\u00e9llo \u2713'.encode('utf-8'))],
     sorted([('crlf', b'a\r\ninjected: 2'), ('lf', b'x\ny'), ('cr', b'x\ry'),
             ('nul', b'a\x00b'), ('esc', b'\x1b[31mred'), ('del', b'a\x7f'),
             ('badutf8', b'\xff\xfe'), ('tab', b'a\tb'),
             ('utf8', 'h\u00e9llo \u2713'.encode('utf-8'))]),
     {'event-headerb64-crlf': b64(b'a\r\ninjected: 2'), 'event-headerb64-lf': b64(b'x\ny'),
      'event-headerb64-cr': b64(b'x\ry'), 'event-headerb64-nul': b64(b'a\x00b'),
      'event-headerb64-esc': b64(b'\x1b[31mred'), 'event-headerb64-del': b64(b'a\x7f'),
      'event-headerb64-badutf8': b64(b'\xff\xfe'), 'event-header-tab': 'a\tb',
      'event-header-utf8': 'h\u00e9llo \u2713'},
     0),
    (b'sizes', None,
     [('big', b'x' * (20 * KIB)), ('edge8k', b'y' * (8 * KIB)), ('n' * 128, b'long name'),
      ('n' * 129, b'too long a name')],
     sorted([('edge8k', b'y' * (8 * KIB)), ('n' * 128, b'long name')]),
     {'event-header-edge8k': 'y' * (8 * KIB), 'event-header-' + 'n' * 128: 'long name'},
     2),
    (b'crlf key', b'key\r\ninjected: 3', None, [],
     {'event-key': b64(b'key\r\ninjected: 3'), 'event-key-encoding': 'base64'}, 0),
    (b'nul key', b'k\x00ey', None, [],
     {'event-key': b64(b'k\x00ey'), 'event-key-encoding': 'base64'}, 0),
    (b'4 KiB key', b'k' * (4 * KIB), None, [], {'event-key': 'k' * (4 * KIB)}, 0),
    (b'long key', b'k' * (4 * KIB + 1), None, [],
     {'event-key': b64(b'k' * (4 * KIB + 1)), 'event-key-encoding': 'base64'}, 0),
]
# U+0085 (NEL) is a C1 control character: "valid UTF-8 without control characters" excludes it.
C1_CASES = [
    (b'c1 control', None, [('nel', 'a\u0085b'.encode('utf-8')), ('ok', b'fine')],
     sorted([('nel', 'a\u0085b'.encode('utf-8')), ('ok', b'fine')]),
     {'event-headerb64-nel': b64('a\u0085b'.encode('utf-8')), 'event-header-ok': 'fine'}, 0),
]
CASE_CASES = [
    (b'mixed case', b'Key-Case', [('Mixed-Case', b'mc'), ('UPPER', b'up')],
     [('mixed-case', b'mc'), ('upper', b'up')],
     {'event-key': 'Key-Case', 'event-header-mixed-case': 'mc', 'event-header-upper': 'up'}, 0),
]
CONTRACT = ('event-id', 'event-topic', 'event-partition', 'event-offset', 'event-namespace',
            'event-time', 'event-timestamp-type', 'event-type', 'content-type')


def assert_clean_header_block(call):
    """The header block as received: CRLF-terminated lines with no CR, LF, NUL or other
    control byte (tab excepted) inside a line."""
    raw = call.raw_headers
    assert raw is not None, 'the Python runtime records the raw header block'
    assert raw.endswith(b'\r\n\r\n'), raw[-40:]
    for line in raw[:-4].split(b'\r\n'):
        bad = [b for b in line if (b < 0x20 and b != 0x09) or b == 0x7f]
        assert not bad, '%r: control bytes %r in header line %r' % (call, bad, line[:200])
        assert line[:1] not in (b' ', b'\t'), '%r: folded header line %r' % (call, line[:200])


def run(cases, kafka, names, config, runtime_factory, ktrigger_factory):
    """Produce one record per case, let ktrigger deliver them to the Python runtime; check
    each arrived once, clean, with exactly the expected event-key*/event-header* headers and
    the drop count.  Returns the calls in offset order."""
    kafka.create_topic(names.topic, 1)
    produced = kafka.produce(names.topic, [
        {'partition': 0, 'value': value, 'key': key, 'headers': headers}
        for value, key, headers, _, _, _ in cases])
    rt = runtime_factory(lang='python')
    ktr = ktrigger_factory(config(rt.port))
    want_dropped = sum(c[5] for c in cases)

    kt.wait_for(lambda: len(rt.calls()) >= len(cases), 20, '%d calls' % len(cases),
                describe=lambda: [(c.offset, c.body[:20], c.status) for c in rt.calls()])

    def dropped():
        return kt.metric_sum(ktr.metrics(), 'ktrigger_record_headers_dropped_total') or 0

    kt.wait_for(lambda: dropped() == want_dropped, 10,
                'ktrigger_record_headers_dropped_total == %d' % want_dropped, describe=dropped)
    assert ktr.stop() == 0

    calls = sorted(rt.calls(), key=lambda c: c.offset)
    assert len(calls) == len(cases), 'every record delivered exactly once: %r' % calls
    assert not [c for c in calls if c.failed]
    assert [c.offset for c in calls] == [p.offset for p in produced]

    for (value, key, _, forwarded, extra, _), call in zip(cases, calls):
        what = value.decode()
        assert call.body_bytes == value, what
        assert_clean_header_block(call)
        names_received = [n.lower() for n, _ in call.header_list]
        assert 'injected' not in names_received, '%s: injected header arrived' % what
        assert 'injected' not in call.headers, what
        assert len(names_received) == len(set(names_received)), (what, names_received)
        event = {n.lower(): v for n, v in call.header_list
                 if n.lower().startswith('event-') and n.lower() not in CONTRACT}
        assert event == extra, '%s: event-key*/event-header* headers differ' % what
        assert sorted(call.record_headers) == forwarded, what
        assert call.key == key, what
    assert kafka.committed(names.group, names.topic) == kafka.end_offsets(names.topic)
    return calls


def test_no_header_injection(kafka, names, config, runtime_factory, ktrigger_factory):
    run(CASES, kafka, names, config, runtime_factory, ktrigger_factory)


def test_c1_control_value_is_base64(kafka, names, config, runtime_factory, ktrigger_factory):
    run(C1_CASES, kafka, names, config, runtime_factory, ktrigger_factory)


def test_header_names_sent_lower_cased(kafka, names, config, runtime_factory,
                                       ktrigger_factory):
    calls = run(CASE_CASES, kafka, names, config, runtime_factory, ktrigger_factory)
    for name, _ in calls[0].header_list:
        if name.lower().startswith('event-header'):
            assert name == name.lower(), 'header name %r not sent lower-cased' % name
