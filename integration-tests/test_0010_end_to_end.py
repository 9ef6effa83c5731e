"""End to end: every record reaches the runtime exactly once, in partition order, with the
Kubeless event headers; a clean shutdown leaves the group committed at the end offsets; the
Kubeless function metrics count the calls."""

import json
import re

import kthelpers as kt

PARTITIONS = 4
RECORDS = 1000


def make_value(i, partition, n):
    """Unique bodies, a mix of JSON objects and arrays (sent as application/json) and things
    that are not (plain text, JSON scalars, form-encoded text: text/plain)."""
    kind = i % 6
    if kind in (0, 1):
        return json.dumps({'p': partition, 'n': n, 'kind': 'object', 'nested': {'i': i}})
    if kind == 2:
        return 'plain text p%d n%d' % (partition, n)
    if kind == 3:
        return json.dumps([partition, n, 'array'])
    if kind == 4:
        return '"json string p%d n%d"' % (partition, n)
    return 'p=%d&n=%d&kind=form' % (partition, n)


def is_json_object(value):
    try:
        return isinstance(json.loads(value), dict)
    except ValueError:
        return False


def is_json_container(value):
    try:
        return isinstance(json.loads(value), (dict, list))
    except ValueError:
        return False


def test_end_to_end(kafka, names, config, runtime_factory, ktrigger_factory):
    kafka.create_topic(names.topic, PARTITIONS)
    records = []
    for i in range(RECORDS):
        p = i % PARTITIONS
        records.append((p, make_value(i, p, i // PARTITIONS)))
    produced = kafka.produce(names.topic, records)
    expected = kt.expected_by_partition(produced)
    assert 0 < sum(1 for v in records if is_json_object(v[1])) < RECORDS

    rt = runtime_factory()
    ktr = ktrigger_factory(config(rt.port))

    kt.wait_for(lambda: len(rt.calls()) >= RECORDS, 60, '%d calls' % RECORDS,
                describe=lambda: 'calls per partition %s' % kt.count_by_partition(rt.calls()))

    # The Kubeless metrics count every call for this function and topic.
    def calls_metric():
        return kt.metric_sum(ktr.metrics(), 'function_calls_total',
                             function=kt.HANDLER, topic=names.topic)

    kt.wait_for(lambda: calls_metric() == RECORDS, 10, 'function_calls_total == %d' % RECORDS,
                describe=calls_metric)
    samples = ktr.metrics()
    assert kt.metric_sum(samples, 'function_duration_seconds_count',
                         function=kt.HANDLER, topic=names.topic) == RECORDS
    assert kt.metric_sum(samples, 'function_duration_seconds_sum',
                         function=kt.HANDLER, topic=names.topic) > 0
    assert kt.metric_sum(samples, 'function_failures_total',
                         function=kt.HANDLER, topic=names.topic) in (None, 0)

    assert ktr.stop() == 0

    calls = rt.calls()
    assert not [c for c in calls if c.failed]
    assert len(calls) == RECORDS, 'expected %d calls, got %d' % (RECORDS, len(calls))
    got = kt.by_partition(calls)
    assert sorted(got) == list(range(PARTITIONS))
    kt.assert_exactly_once_in_order(calls, expected, PARTITIONS,
                                    'calls not exactly once in offset order')

    for c in calls:
        h = c.headers
        assert c.topic == names.topic
        assert h.get('event-namespace') == kt.NAMESPACE, h
        assert h.get('event-topic') == names.topic, h
        assert h.get('event-partition') == str(c.partition), h
        assert h.get('event-offset') == str(c.offset), h
        assert h.get('event-type'), h
        assert h.get('event-time'), h
        want_ct = ('application/json' if is_json_container(c.body)
                   else 'text/plain; charset=utf-8')
        assert h.get('content-type', '') == want_ct, (c.body, h)
        assert h.get('event-type') == want_ct, h
        assert re.fullmatch(r'\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z', h.get('event-time', '')), h
        assert h.get('event-timestamp-type') == 'create', h

    end = kafka.end_offsets(names.topic)
    assert end == {p: len(expected[p]) for p in range(PARTITIONS)}
    assert kafka.committed(names.group, names.topic) == end
