"""A record whose headers librdkafka refuses to parse (more than 100,000 of them: _BAD_MSG) is
still delivered, but without its headers: that loss is counted in
ktrigger_record_headers_dropped_total and logged, not silent (before, the record arrived with
no event-header-* at all, nothing counted, nothing logged)."""

import kthelpers as kt

MANY = 100001  # librdkafka's rd_kafka_msg_headers_parse refuses more than 100,000


def test_unreadable_headers_are_counted(kafka, names, config, runtime_factory,
                                        ktrigger_factory, tmp_path):
    kafka.create_topic(names.topic, 1)
    rt = runtime_factory(record_file=tmp_path / 'records.jsonl')
    ktr = ktrigger_factory(config(rt.port))
    kafka.produce(names.topic, [
        {'partition': 0, 'value': 'few', 'headers': [('a', b'1')]},
        {'partition': 0, 'value': 'many', 'headers': [('h', None)] * MANY},
        {'partition': 0, 'value': 'after', 'headers': [('b', b'2')]},
    ])
    end = kafka.end_offsets(names.topic)
    kt.wait_for(lambda: kafka.committed(names.group, names.topic) == end, 60,
                'committed == end')
    calls = {c.body: c for c in rt.calls()}
    assert sorted(calls) == ['after', 'few', 'many'], 'lost or doubled: %s' % sorted(calls)
    assert calls['few'].headers.get('event-header-a') == '1'
    assert calls['after'].headers.get('event-header-b') == '2'
    assert not [h for h in calls['many'].headers if h.startswith('event-header')]
    dropped = kt.metric_sum(ktr.metrics(), 'ktrigger_record_headers_dropped_total')
    print('ktrigger_record_headers_dropped_total %s' % dropped)
    assert dropped == 1, 'ktrigger_record_headers_dropped_total %s, want 1' % dropped
    assert 'record headers unreadable' in ktr.log(), 'the loss was not logged'
    assert ktr.stop() == 0
