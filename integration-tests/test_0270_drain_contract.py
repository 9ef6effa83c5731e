"""The delivery contract of a clean shutdown, in every ordering (partition, key, none).

A drain means done: on SIGTERM the records already buffered keep being started and retried
until they are done or dispatch.drain_timeout_ms passes; only then is the partition committed.
Records finished above one that is still unfinished at the drain timeout travel in the
commit's metadata (the completed-offset map), so the next owner does not call them again.
Either way a clean shutdown exits 0 and no record that got a 2xx is delivered twice.
"""

import collections

import pytest

import kthelpers as kt

ORDERINGS = ('partition', 'key', 'none')
OTHERS = 50


def produce(kafka, topic, first):
    """`first` at offset 0, then OTHERS quick records; each with its own key (k-first and
    k00..k49 fall in different key lanes, so in `key` ordering none waits behind `first`)."""
    recs = [(0, first, 'k-first')] + [(0, 'r%02d' % i, 'k%02d' % i) for i in range(OTHERS)]
    return kafka.produce(topic, recs)


def conf_for(config, port, ordering, drain_timeout_ms):
    conf = config(port)
    conf['dispatch'].update({'ordering': ordering, 'max_in_flight': 8,
                             'drain_timeout_ms': drain_timeout_ms, 'on_failure': 'block'})
    conf['dispatch']['retry'] = {'initial_backoff_ms': 300, 'max_backoff_ms': 300}
    return conf


def ok_bodies(runtimes):
    return collections.Counter(c.body for rt in runtimes for c in rt.calls() if not c.failed)


@pytest.mark.parametrize('ordering', ORDERINGS)
def test_sigterm_finishes_a_retrying_record(kafka, names, config, runtime_factory,
                                            ktrigger_factory, tmp_path, ordering):
    """The first record fails twice (503) then succeeds. SIGTERM comes while it waits for its
    retry: the drain retries it, so everything is done and committed and a second replica in
    the group gets nothing again."""
    kafka.create_topic(names.topic, 1)
    produce(kafka, names.topic, 'flaky')
    rt = runtime_factory(record_file=tmp_path / 'records-1.jsonl',
                         env={'FAIL_TIMES': 'flaky=2'})
    conf = conf_for(config, rt.port, ordering, 10000)
    first = ktrigger_factory(conf)
    kt.wait_for(lambda: any(c.body == 'flaky' and c.failed for c in rt.calls()), 30,
                'the first failure of the flaky record')
    if ordering != 'partition':
        kt.wait_for(lambda: sum(1 for c in rt.calls() if c.body.startswith('r')) >= OTHERS,
                    30, 'the other records answered')
    assert first.stop() == 0
    assert ok_bodies([rt])['flaky'] == 1, 'the drain did not retry the record to success'
    end = kafka.end_offsets(names.topic)
    assert kafka.committed(names.group, names.topic) == end, 'not committed to the end'

    rt2 = runtime_factory(record_file=tmp_path / 'records-2.jsonl')
    second = ktrigger_factory(conf_for(config, rt2.port, ordering, 10000))
    kt.wait_for(lambda: kt.metric_sum(second.metrics(),
                                      'ktrigger_assigned_partitions') == 1, 30,
                'the second replica assigned')
    assert second.stop() == 0
    counts = ok_bodies([rt, rt2])
    dups = sorted(b for b, n in counts.items() if n > 1)
    assert not dups, '%s ordering: delivered again after a clean SIGTERM: %s' % (ordering, dups)
    assert set(counts) == {'flaky'} | {'r%02d' % i for i in range(OTHERS)}


@pytest.mark.parametrize('ordering', ORDERINGS)
def test_drain_timeout_keeps_finished_records(kafka, names, config, runtime_factory,
                                              ktrigger_factory, tmp_path, ordering):
    """The first record keeps failing (503) past the drain timeout while the others are
    answered. SIGTERM: exit 0, the committed offset stays at the stuck record, and the
    records finished above it are in the commit's offset map: the next replica calls only the
    stuck one."""
    kafka.create_topic(names.topic, 1)
    produce(kafka, names.topic, 'stuck')
    rt = runtime_factory(record_file=tmp_path / 'records-1.jsonl',
                         status_bodies={'stuck': 503})
    first = ktrigger_factory(conf_for(config, rt.port, ordering, 1500))
    kt.wait_for(lambda: any(c.body == 'stuck' for c in rt.calls()), 30, 'the stuck record')
    if ordering != 'partition':
        kt.wait_for(lambda: sum(1 for c in rt.calls() if c.body.startswith('r')) >= OTHERS,
                    30, 'the other records answered')
    # The partition cannot move past the stuck record: visible as a gauge, with its age.
    blocked = kt.wait_for(lambda: (lambda m: m if kt.metric_sum(
        m, 'ktrigger_partition_blocked_seconds_max') > 0.2 else None)(first.metrics()), 10,
        'the blocked-partition gauges')
    assert kt.metric_sum(blocked, 'ktrigger_partitions_blocked') == 1
    assert first.stop() == 0, 'a drain timeout is still a clean shutdown'
    assert kafka.committed(names.group, names.topic) == {0: 0} or \
        kafka.committed(names.group, names.topic) == {0: None}, 'committed past the stuck record'

    rt2 = runtime_factory(record_file=tmp_path / 'records-2.jsonl')
    second = ktrigger_factory(conf_for(config, rt2.port, ordering, 10000))
    end = kafka.end_offsets(names.topic)
    kt.wait_for(lambda: kafka.committed(names.group, names.topic) == end, 30,
                'the second replica committed to the end',
                describe=lambda: [c.body for c in rt2.calls()][:10])
    metrics = second.metrics()
    assert second.stop() == 0
    counts = ok_bodies([rt, rt2])
    dups = sorted(b for b, n in counts.items() if n > 1)
    assert not dups, '%s ordering: delivered again after a drain timeout: %s' % (ordering, dups)
    assert set(counts) == {'stuck'} | {'r%02d' % i for i in range(OTHERS)}
    assert 'drain timeout' in first.log(), 'the stuck record was not kept retrying in the drain'
    skipped = kt.metric_sum(metrics, 'ktrigger_records_already_done_total')
    answered_first = len([c for c in rt.calls() if not c.failed])
    assert skipped == answered_first, (skipped, answered_first)


@pytest.mark.parametrize('ordering', ORDERINGS)
def test_revoke_keeps_finished_records(kafka, names, config, runtime_factory, ktrigger_factory,
                                       tmp_path, ordering):
    """Scale-up: a second replica joins, and the first hands one of its two partitions over
    (a cooperative revoke) while that partition's first record keeps failing past the drain
    timeout. The records finished above it are in the revoke's commit: the new owner calls
    only the stuck record, and nothing that got a 2xx is called again."""
    kafka.create_topic(names.topic, 2)
    recs = []
    for p in range(2):
        recs += [(p, 'stuck-%d' % p, 'k-first')]  # no kNN shares its key lane
        recs += [(p, 'p%d-r%02d' % (p, i), 'k%02d' % i) for i in range(OTHERS)]
    kafka.produce(names.topic, recs)
    rt = runtime_factory(record_file=tmp_path / 'records-1.jsonl',
                         status_bodies={'stuck-0': 503, 'stuck-1': 503})
    first = ktrigger_factory(conf_for(config, rt.port, ordering, 1500))
    answered = 2 * OTHERS if ordering != 'partition' else 0
    kt.wait_for(lambda: len([c for c in rt.calls() if not c.failed]) >= answered and
                {'stuck-0', 'stuck-1'} <= {c.body for c in rt.calls()}, 30,
                'the others answered, both stuck records tried')
    rt2 = runtime_factory(record_file=tmp_path / 'records-2.jsonl')
    second = ktrigger_factory(conf_for(config, rt2.port, ordering, 10000))
    kt.wait_for(lambda: any(c.body.startswith('stuck') and not c.failed for c in rt2.calls()),
                60, 'the new owner got a stuck record through',
                describe=lambda: [c.body for c in rt2.calls()][:5])
    moved = [c.body for c in rt2.calls() if c.body.startswith('stuck')][0][-1]
    kt.wait_for(lambda: kafka.committed(names.group, names.topic).get(int(moved)) ==
                1 + OTHERS, 30, 'the moved partition committed to its end')
    metrics = second.metrics()
    assert second.stop() == 0
    assert first.stop() == 0
    counts = ok_bodies([rt, rt2])
    dups = sorted(b for b, n in counts.items() if n > 1)
    assert not dups, '%s ordering: delivered again after a clean revoke: %s' % (ordering, dups)
    moved_answered = len([c for c in rt.calls() if not c.failed and
                          c.body.startswith('p%s-' % moved)])
    assert kt.metric_sum(metrics, 'ktrigger_records_already_done_total') == moved_answered
