"""CloudEvents binary mode: with dispatch.event_format = "cloudevents" the runtime receives the
record as a CloudEvents 1.0 event (ce-* attributes), the body unchanged."""

import re

import kthelpers as kt


def test_cloudevents_binary_mode(kafka, names, config, runtime_factory, ktrigger_factory):
    kafka.create_topic(names.topic, 1)
    produced = kafka.produce(names.topic, [
        {'partition': 0, 'value': '{"a": 1}', 'key': b'user-7', 'headers': [('trace', b'x')]},
        {'partition': 0, 'value': 'text', 'key': None},
    ])
    rt = runtime_factory()
    conf = config(rt.port)
    conf['dispatch']['event_format'] = 'cloudevents'
    ktr = ktrigger_factory(conf)
    kt.wait_for(lambda: len(rt.calls()) >= 2, 30, '2 calls')
    assert ktr.stop() == 0
    calls = sorted(rt.calls(), key=lambda c: c.seq)
    for c, r in zip(calls, produced):
        h = c.headers
        assert h['ce-specversion'] == '1.0'
        assert h['ce-id'] == '%s/0/%d' % (names.topic, r.offset)
        assert h['ce-source'] == 'kafka://' + names.topic
        assert h['ce-type'] == 'dev.ktrigger.kafka.record'
        assert h['ce-subject'] == 'partition:0#%d' % r.offset
        assert re.fullmatch(r'\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z', h['ce-time'])
        assert 'event-id' not in h and 'event-namespace' not in h
        assert c.body == r.value
    assert calls[0].headers['content-type'] == 'application/json'
    assert calls[0].headers['ce-partitionkey'] == 'user-7'
    assert calls[0].headers['event-header-trace'] == 'x'
    assert calls[1].headers['content-type'] == 'text/plain; charset=utf-8'
    assert 'ce-partitionkey' not in calls[1].headers
