"""Outcomes and the failure policies, against a runtime that misbehaves on purpose.

Every produced record is accounted for at the end: delivered (2xx), dead-lettered or skipped,
and nothing else; dead letters carry the original key, value and headers plus ktrigger's error
headers; the group is committed to the end offsets only once every record is resolved."""

import time

import kthelpers as kt

PARTITIONS = 3
PER_PARTITION = 40


def produce_mix(kafka, topic, special):
    """PER_PARTITION records per partition; the special bodies go to partition 1."""
    recs = []
    for p in range(PARTITIONS):
        for n in range(PER_PARTITION):
            recs.append({'partition': p, 'value': 'ok p%d n%d' % (p, n),
                         'key': ('k%d' % n).encode(), 'headers': [('trace', b't%d' % n)]})
    for i, body in enumerate(special):
        recs.insert(PER_PARTITION + 5 + 3 * i, {'partition': 1, 'value': body,
                                                 'key': body.encode(),
                                                 'headers': [('trace', body.encode())]})
    return kafka.produce(topic, recs)


def test_dead_letter(kafka, kafka_bootstrap, names, config, runtime_factory, ktrigger_factory):
    special = ['bad400', 'always500', 'slow', 'drop', 'r429']
    dlq = names.topic + '-dlq'
    kafka.create_topic(names.topic, PARTITIONS)
    kafka.create_topic(dlq, 1)
    produced = produce_mix(kafka, names.topic, special)
    rt = runtime_factory(fail_bodies=['always500'], status_bodies={'bad400': 400, 'r429': 429},
                         retry_after=1, sleep_bodies={'slow': 2500}, drop_bodies=['drop'])
    conf = config(rt.port)
    # ktrigger's own timeout, for a runtime that does not answer 408 at FUNC_TIMEOUT (this one
    # has 180 s): 1 s, no grace ('slow' sleeps 2.5 s).
    conf['runtime'].update({'timeout_s': 1, 'timeout_grace_ms': 0})
    conf['dispatch'].update({'ordering': 'key', 'on_failure': 'dead-letter',
                             'dead_letter_topic': dlq,
                             'retry': {'initial_backoff_ms': 50, 'max_backoff_ms': 5000,
                                       'max_attempts': 3}})
    ktr = ktrigger_factory(conf)

    end = kafka.end_offsets(names.topic)
    kt.wait_for(lambda: kafka.committed(names.group, names.topic) == end, 60,
                'committed == end offsets', describe=lambda: kafka.committed(names.group,
                                                                              names.topic))
    samples = ktr.metrics()
    assert kt.metric_sum(samples, 'ktrigger_dead_lettered_total') == len(special)

    def outcome(o):
        return kt.metric_sum(samples, 'ktrigger_calls_total', outcome=o)

    assert outcome('http_4xx') == 1 + 3, 'bad400 once, r429 three times'
    assert outcome('http_5xx') == 3, 'always500 three times'
    assert outcome('transport_error') == 3, 'drop three times'
    assert 1 <= outcome('timeout') <= 3
    assert outcome('success') == len(produced) - len(special)
    assert ktr.stop() == 0

    calls = rt.calls()
    # 'slow' answers 200 from the runtime's side, after ktrigger gave up waiting.
    ok = {c.body for c in calls if not c.failed and c.body != 'slow'}
    want_ok = {r.value for r in produced if r.value not in special}
    assert ok == want_ok, 'delivered: missing %s' % sorted(want_ok - ok)[:5]
    # Attempts per special record: permanent 400 once, the retriable ones max_attempts times.
    attempts = {b: sum(1 for c in calls if c.body == b) for b in special}
    assert attempts['bad400'] == 1, attempts
    for b in ('always500', 'r429', 'drop'):
        assert attempts[b] == 3, attempts
    assert 1 <= attempts['slow'] <= 3, attempts  # a timed-out call may not reach the recorder
    # Retry-After: 1 was honoured between the 429 attempts (the back-off alone is ~50-200 ms).
    times = sorted(c.time for c in calls if c.body == 'r429')
    gaps = [b - a for a, b in zip(times, times[1:])]
    assert all(g >= 0.9 for g in gaps), 'Retry-After not honoured: gaps %s' % gaps

    dead = kt.read_topic(kafka_bootstrap, dlq, 1, names.group + '-reader')
    by_value = {v.decode(): (k, h) for k, v, h in dead}
    assert sorted(by_value) == sorted(special), sorted(by_value)
    origin = {r.value: r for r in produced}
    for body, (key, h) in by_value.items():
        r = origin[body]
        assert key == body.encode()
        assert h['trace'] == body.encode(), 'original header lost'
        assert h['ktrigger-original-topic'] == names.topic.encode()
        assert h['ktrigger-original-partition'] == str(r.partition).encode()
        assert h['ktrigger-original-offset'] == str(r.offset).encode()
        assert int(h['ktrigger-original-timestamp']) > 0
        assert h['ktrigger-function'] == kt.HANDLER.encode()
        assert h['ktrigger-attempts'] == (b'1' if body == 'bad400' else b'3'), (body, h)
    assert by_value['bad400'][1]['ktrigger-last-status'] == b'400'
    assert by_value['always500'][1]['ktrigger-last-status'] == b'500'
    assert by_value['r429'][1]['ktrigger-last-status'] == b'429'
    assert b'timed out' in by_value['slow'][1]['ktrigger-last-error'].lower() or \
        b'timeout' in by_value['slow'][1]['ktrigger-last-error'].lower()
    assert 'ktrigger-last-error' in by_value['drop'][1]


def test_skip_and_block(kafka, names, config, runtime_factory, ktrigger_factory):
    """skip: a failing record is counted and passed over; the Nth-call failures of a blocking
    policy are retried until they succeed, so nothing is lost."""
    kafka.create_topic(names.topic, PARTITIONS)
    produced = produce_mix(kafka, names.topic, ['always500'])
    rt = runtime_factory(fail_bodies=['always500'], fail_nth=[3, 10, 11, 50])
    conf = config(rt.port)
    conf['dispatch'].update({'on_failure': 'skip',
                             'retry': {'initial_backoff_ms': 20, 'max_backoff_ms': 100,
                                       'max_attempts': 4}})
    ktr = ktrigger_factory(conf)
    end = kafka.end_offsets(names.topic)
    kt.wait_for(lambda: kafka.committed(names.group, names.topic) == end, 60,
                'committed == end offsets')
    samples = ktr.metrics()
    assert kt.metric_sum(samples, 'ktrigger_skipped_total') == 1
    assert kt.metric_sum(samples, 'ktrigger_dead_lettered_total') == 0
    retries = kt.metric_sum(samples, 'ktrigger_retries_total')
    assert ktr.stop() == 0
    calls = rt.calls()
    # Every failed call was retried, except the last attempt of 'always500', which was skipped.
    failed = sum(1 for c in calls if c.failed)
    assert failed >= 4 + 1, 'the Nth-call failures did not happen: %d failed calls' % failed
    assert retries == failed - 1, (retries, failed)
    ok = sorted(c.body for c in calls if not c.failed)
    assert ok == sorted(r.value for r in produced if r.value != 'always500'), 'lost or doubled'
    assert sum(1 for c in calls if c.body == 'always500') == 4
