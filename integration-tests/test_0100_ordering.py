"""Ordering modes and the global concurrency bound, seen from the runtime: it records the
order calls arrive in (seq) and how many were in progress at once (concurrent).

- partition: within a partition, calls arrive in offset order, one at a time;
- key: calls with equal keys (and keyless calls, per partition) arrive in offset order, and a
  partition's different keys really run in parallel;
- none: calls run in parallel up to dispatch.max_in_flight.
In every mode dispatch.max_in_flight is never exceeded, every record arrives exactly once and
the committed offsets reach the end."""

import pytest

import kthelpers as kt

PARTITIONS = 2
PER_PARTITION = 120
KEYS = 12
MAX_IN_FLIGHT = 6
DELAY_MS = 15


def make_records():
    recs = []
    for p in range(PARTITIONS):
        for n in range(PER_PARTITION):
            key = None if n % 10 == 9 else ('key-%d' % (n % KEYS)).encode()
            recs.append({'partition': p, 'value': 'ord p%d n%d' % (p, n), 'key': key})
    return recs


@pytest.mark.parametrize('ordering', ['partition', 'key', 'none'])
def test_ordering_mode(ordering, kafka, names, config, runtime_factory, ktrigger_factory):
    kafka.create_topic(names.topic, PARTITIONS)
    produced = kafka.produce(names.topic, make_records())
    rt = runtime_factory(delay_ms=DELAY_MS)
    conf = config(rt.port)
    conf['dispatch'].update({'ordering': ordering, 'max_in_flight': MAX_IN_FLIGHT})
    ktr = ktrigger_factory(conf)
    total = PARTITIONS * PER_PARTITION
    kt.wait_for(lambda: len(rt.calls()) >= total, 60, '%d calls' % total,
                describe=lambda: kt.count_by_partition(rt.calls()))
    assert ktr.stop() == 0

    calls = sorted(rt.calls(), key=lambda c: c.seq)
    assert not [c for c in calls if c.failed]
    # Exactly once.
    assert sorted((c.partition, c.offset) for c in calls) == sorted(
        (r.partition, r.offset) for r in produced)
    peak = kt.max_concurrent(calls)
    assert peak <= MAX_IN_FLIGHT, 'max_in_flight %d exceeded: %d' % (MAX_IN_FLIGHT, peak)

    def arrival_offsets(pred):
        return [c.offset for c in calls if pred(c)]

    if ordering == 'partition':
        for p in range(PARTITIONS):
            offs = arrival_offsets(lambda c: c.partition == p)
            assert offs == sorted(offs), 'partition %d out of order' % p
        assert peak <= PARTITIONS, 'more calls in flight (%d) than partitions' % peak
    elif ordering == 'key':
        for p in range(PARTITIONS):
            for key in [None] + [('key-%d' % k).encode() for k in range(KEYS)]:
                offs = arrival_offsets(lambda c: c.partition == p and c.key == key)
                assert offs, 'no calls for key %r' % key
                assert offs == sorted(offs), 'partition %d key %r out of order: %s' % (
                    p, key, offs)
        assert peak > PARTITIONS, 'keys of a partition never ran in parallel (peak %d)' % peak
    else:
        assert peak > PARTITIONS, 'calls never ran in parallel (peak %d)' % peak

    end = kafka.end_offsets(names.topic)
    assert end == {p: PER_PARTITION for p in range(PARTITIONS)}
    assert kafka.committed(names.group, names.topic) == end
