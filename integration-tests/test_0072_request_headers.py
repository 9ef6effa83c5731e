"""What a record's headers may do to the request, at the edges: a header name with a NUL
inside is not a token (dropped and counted, it never sets Content-Type nor the trace context);
a record with more header bytes than a request may carry (150 headers of 8 KiB: 1.2 MB, over
libcurl's ~1 MiB) is delivered once with the headers that fit, the rest dropped and counted,
and the records after it flow; W3C trace context (traceparent, tracestate) is propagated as
the call's own headers when valid, counted and not sent when not; a record's
`application/json; charset=utf-8` arrives as exactly `application/json` (the Kubeless Python
and Ruby runtimes parse only that), its own value as event-header-content-type."""

import kthelpers as kt

KIB = 1024
TP = '00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01'


def metric(ktr, name, **labels):
    return kt.metric_sum(ktr.metrics(), name, **labels) or 0


def test_nul_in_header_name_is_dropped(kafka, kafka_bootstrap, names, config, runtime_factory,
                                       ktrigger_factory):
    kafka.create_topic(names.topic, 1)
    kt.produce_raw_headers(kafka_bootstrap, names.topic, 0, b'{"a": 1}', [
        (b'Content-Type\x00junk', b'text/evil'),
        (b'traceparent\x00x', TP.encode()),
        (b'ok', b'fine'),
    ])
    rt = runtime_factory(lang='python')
    ktr = ktrigger_factory(config(rt.port))
    kt.wait_for(lambda: len(rt.calls()) >= 1, 20, 'the record delivered')
    kt.wait_for(lambda: metric(ktr, 'ktrigger_record_headers_dropped_total') == 2, 10,
                'two headers dropped',
                describe=lambda: metric(ktr, 'ktrigger_record_headers_dropped_total'))
    assert ktr.stop() == 0
    calls = rt.calls()
    assert len(calls) == 1 and not calls[0].failed, calls
    h = calls[0].headers
    print('received:', {k: v for k, v in h.items() if k.startswith(('content', 'event-header',
                                                                     'trace'))})
    assert h['content-type'] == 'application/json', h['content-type']
    assert 'traceparent' not in h, h
    assert calls[0].record_headers == [('ok', b'fine')], calls[0].record_headers


def test_huge_headers_do_not_block(kafka, names, config, runtime_factory, ktrigger_factory):
    big = 4 * 1024 * 1024
    kafka.create_topic(names.topic, 1, config={'max.message.bytes': str(big)})
    huge = [('h%03d' % i, b'v' * (8 * KIB)) for i in range(150)]
    recs = [{'partition': 0, 'value': b'before'},
            {'partition': 0, 'value': b'huge', 'headers': huge},
            {'partition': 0, 'value': b'after1'},
            {'partition': 0, 'value': b'after2'}]
    kafka.produce(names.topic, recs, producer_config={'message.max.bytes': big})
    rt = runtime_factory(lang='python')
    conf = config(rt.port)  # dispatch.on_failure = "block", the default: retried for ever
    conf['dispatch'].update({'retry': {'initial_backoff_ms': 50, 'max_backoff_ms': 200}})
    ktr = ktrigger_factory(conf)
    end = kafka.end_offsets(names.topic)
    kt.wait_for(lambda: kafka.committed(names.group, names.topic) == end, 30,
                'committed to the end',
                describe=lambda: 'committed %r, calls %r, function_calls_total %r' % (
                    kafka.committed(names.group, names.topic), [c.body for c in rt.calls()],
                    metric(ktr, 'function_calls_total')))
    calls = rt.calls()
    assert [c.body for c in calls] == ['before', 'huge', 'after1', 'after2'], calls
    assert not [c for c in calls if c.failed]
    sent = len(calls[1].record_headers)
    wire = sum(len(n) + len(v) + 4 for n, v in calls[1].header_list)
    print('huge record: %d of 150 headers forwarded, %d header bytes' % (sent, wire))
    assert 0 < sent < 150 and wire <= 256 * KIB
    assert [n for n, _ in calls[1].record_headers] == ['h%03d' % i for i in range(sent)]
    assert metric(ktr, 'ktrigger_record_headers_dropped_total') == 150 - sent
    assert metric(ktr, 'function_calls_total') == 4
    assert metric(ktr, 'ktrigger_calls_total', outcome='success') == 4
    assert metric(ktr, 'ktrigger_skipped_total') == 0
    assert ktr.stop() == 0


def test_trace_context_propagated(kafka, names, config, runtime_factory, ktrigger_factory):
    kafka.create_topic(names.topic, 1)
    cases = [
        (b'valid', [('traceparent', TP.encode()), ('tracestate', b'congo=t61rcWkgMzE')],
         TP, 'congo=t61rcWkgMzE'),
        (b'upper', [('traceparent', TP.upper().encode()), ('tracestate', b'congo=1')],
         None, None),
        (b'zero', [('traceparent', b'00-' + b'0' * 32 + b'-00f067aa0ba902b7-01')], None, None),
        (b'badstate', [('traceparent', TP.encode()), ('tracestate', b'Bad Key=1')], TP, None),
        (b'none', [], None, None),
    ]
    kafka.produce(names.topic, [{'partition': 0, 'value': v, 'headers': h}
                                for v, h, _, _ in cases])
    rt = runtime_factory(lang='python')
    ktr = ktrigger_factory(config(rt.port))
    kt.wait_for(lambda: len(rt.calls()) >= len(cases), 20, 'every record delivered')
    kt.wait_for(lambda: metric(ktr, 'ktrigger_trace_context_invalid_total') == 3, 10,
                '3 records with invalid trace context',
                describe=lambda: metric(ktr, 'ktrigger_trace_context_invalid_total'))
    assert ktr.stop() == 0
    calls = sorted(rt.calls(), key=lambda c: c.offset)
    for (value, headers, tp, ts), call in zip(cases, calls):
        print(value, 'traceparent:', call.headers.get('traceparent'),
              'tracestate:', call.headers.get('tracestate'))
        assert call.body_bytes == value
        assert call.headers.get('traceparent') == tp, (value, call.headers)
        assert call.headers.get('tracestate') == ts, (value, call.headers)
        # The record's own headers still arrive as event-header-*, whatever their validity.
        assert call.record_headers == [(n, v) for n, v in headers], value


def test_trace_context_cloudevents(kafka, names, config, runtime_factory, ktrigger_factory):
    kafka.create_topic(names.topic, 1)
    kafka.produce(names.topic, [{'partition': 0, 'value': b'ce',
                                 'headers': [('traceparent', TP.encode()),
                                             ('tracestate', b'congo=t61')]}])
    rt = runtime_factory(lang='python')
    conf = config(rt.port)
    conf['dispatch']['event_format'] = 'cloudevents'
    ktr = ktrigger_factory(conf)
    kt.wait_for(lambda: len(rt.calls()) >= 1, 20, 'the record delivered')
    assert ktr.stop() == 0
    h = rt.calls()[0].headers
    print({k: v for k, v in h.items() if 'trace' in k})
    # The hop's context (W3C HTTP headers) and the event's (the distributed-tracing
    # extension's attributes, binary mode): both the record's.
    assert h['traceparent'] == TP and h['tracestate'] == 'congo=t61'
    assert h['ce-traceparent'] == TP and h['ce-tracestate'] == 'congo=t61'


def test_json_content_type_exact(kafka, names, config, runtime_factory, ktrigger_factory):
    kafka.create_topic(names.topic, 1)
    ct = b'application/json; charset=utf-8'
    kafka.produce(names.topic, [{'partition': 0, 'value': b'{"a": 1}',
                                 'headers': [('content-type', ct)]}])
    rt = runtime_factory(lang='python')
    ktr = ktrigger_factory(config(rt.port))
    kt.wait_for(lambda: len(rt.calls()) >= 1, 20, 'the record delivered')
    assert ktr.stop() == 0
    h = rt.calls()[0].headers
    print('content-type:', h['content-type'], 'event-header-content-type:',
          h.get('event-header-content-type'))
    assert h['content-type'] == 'application/json'
    assert h['event-type'] == 'application/json'
    assert h['event-header-content-type'] == ct.decode()
