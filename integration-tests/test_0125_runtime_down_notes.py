"""What building a record's request found (record headers not forwarded, trace context not
valid) is counted and logged once per record, also when the runtime was down at its first try:
that try is not an attempt (attempts goes back to 0), and before the fix the record was counted
again when the runtime came back (ktrigger_record_headers_dropped_total 2 for 1 header)."""

import kthelpers as kt


def test_notes_counted_once_across_runtime_down(kafka, names, config, runtime_factory,
                                                ktrigger_factory, tmp_path):
    kafka.create_topic(names.topic, 1)
    record_file = tmp_path / 'records.jsonl'
    rt = runtime_factory(record_file=record_file)
    conf = config(rt.port)
    conf['dispatch'].update({'retry': {'initial_backoff_ms': 50, 'max_backoff_ms': 200}})
    ktr = ktrigger_factory(conf)
    kafka.produce(names.topic, [(0, 'warm-up')])
    kt.wait_for(lambda: len(rt.calls()) >= 1, 30, 'the warm-up call')

    port = rt.port
    rt.stop()
    # One header that is not an HTTP token (dropped) and a traceparent that is not W3C.
    kafka.produce(names.topic, [{'partition': 0, 'value': 'while down',
                                 'headers': [('bad name', b'v'), ('traceparent', b'nope')]}])
    kt.wait_for(lambda: kt.metric_sum(ktr.metrics(), 'ktrigger_runtime_up') == 0, 30,
                'ktrigger_runtime_up 0 (the record found the runtime down)')
    samples = ktr.metrics()
    print('while down: dropped %s, trace invalid %s' % (
        kt.metric_sum(samples, 'ktrigger_record_headers_dropped_total'),
        kt.metric_sum(samples, 'ktrigger_trace_context_invalid_total')))

    rt2 = runtime_factory(record_file=record_file, port=port)
    end = kafka.end_offsets(names.topic)
    kt.wait_for(lambda: kafka.committed(names.group, names.topic) == end, 60,
                'committed == end after the runtime came back')
    assert [c.body for c in rt2.calls()].count('while down') == 1, 'lost or doubled'
    samples = ktr.metrics()
    dropped = kt.metric_sum(samples, 'ktrigger_record_headers_dropped_total')
    invalid = kt.metric_sum(samples, 'ktrigger_trace_context_invalid_total')
    print('after: dropped %s, trace invalid %s' % (dropped, invalid))
    assert dropped == 1, 'ktrigger_record_headers_dropped_total %s, want 1' % dropped
    assert invalid == 1, 'ktrigger_trace_context_invalid_total %s, want 1' % invalid
    log = ktr.log()
    assert log.count('record header(s) not forwarded') == 1, 'the drop logged more than once'
    assert log.count('not valid W3C trace context') == 1, 'the trace context logged more than once'
    assert ktr.stop() == 0
