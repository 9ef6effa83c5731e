"""A record the function keeps failing (500) blocks its own partition only: it is retried
(within the configured back-off), nothing at or behind it is committed and nothing behind it is delivered, while the other
partitions go on.  Once the function is fixed (runtime restarted on the same port without the
failure, after an outage during which ktrigger finds it down) that record and the ones behind
it are delivered and committed, exactly once."""

import time

import kthelpers as kt

PARTITIONS = 4
PER_PARTITION = 30
FAIL_PARTITION = 2
FAIL_INDEX = 10
FAIL_BODY = 'p%d-n%d-fail-me' % (FAIL_PARTITION, FAIL_INDEX)
MAX_BACKOFF_MS = 300
# Slack over the back-off for the HTTP call itself and a busy machine.
RETRY_SLACK_MS = 300
OUTAGE_S = 1.5


def test_failed_record_blocks_its_partition(kafka, names, config, runtime_factory,
                                            ktrigger_factory, tmp_path):
    kafka.create_topic(names.topic, PARTITIONS)
    records = []
    for n in range(PER_PARTITION):
        for p in range(PARTITIONS):
            body = FAIL_BODY if (p, n) == (FAIL_PARTITION, FAIL_INDEX) else 'p%d-n%d' % (p, n)
            records.append((p, body))
    produced = kafka.produce(names.topic, records)
    expected = kt.expected_by_partition(produced)
    fail_rec = next(r for r in produced if r.value == FAIL_BODY)
    assert fail_rec.offset == FAIL_INDEX

    record_file = tmp_path / 'records.jsonl'
    rt = runtime_factory(record_file=record_file, fail_bodies=[FAIL_BODY])
    conf = config(rt.port)
    conf['dispatch']['retry'] = {'initial_backoff_ms': 100, 'max_backoff_ms': MAX_BACKOFF_MS}
    ktr = ktrigger_factory(conf)

    def check_blocked():
        """The invariants while the record fails; returns the state for the wait conditions."""
        ktr.assert_running()
        calls = rt.calls()
        bad = [c for c in calls if c.partition == FAIL_PARTITION and c.offset > fail_rec.offset]
        assert not bad, 'records behind the failing one were delivered: %s' % bad[:3]
        failed = [c for c in calls if c.failed]
        assert all(c.body == FAIL_BODY for c in failed), failed[:3]
        assert not [c for c in calls if c.body == FAIL_BODY and not c.failed]
        committed = kafka.committed(names.group, names.topic)
        fc = committed[FAIL_PARTITION]
        assert fc is None or fc <= fail_rec.offset, (
            'committed offset %s is past the failing record at %d' % (fc, fail_rec.offset))
        return calls, failed, committed

    want_committed = {p: PER_PARTITION for p in range(PARTITIONS)}
    want_committed[FAIL_PARTITION] = fail_rec.offset

    def other_partitions_done():
        calls, failed, committed = check_blocked()
        return len(failed) >= 2 and committed == want_committed

    kt.wait_for(other_partitions_done, 60,
                'other partitions committed to their end, failing partition to %d, retries'
                % fail_rec.offset,
                describe=lambda: 'committed %s, calls %s, failed attempts %d' % (
                    kafka.committed(names.group, names.topic),
                    kt.count_by_partition(rt.delivered()),
                    len([c for c in rt.calls() if c.failed])))

    # Keep watching while it retries at least twice more: still blocked, still committed
    # exactly at the failing record.
    attempts = len([c for c in rt.calls() if c.failed])

    def two_more_attempts():
        calls, failed, committed = check_blocked()
        assert committed == want_committed, committed
        return len(failed) >= attempts + 2

    kt.wait_for(two_more_attempts, 30, 'two more attempts of the failing record')

    # Before it: delivered in order, exactly once.
    delivered = kt.by_partition(rt.delivered())
    for p in range(PARTITIONS):
        upto = fail_rec.offset if p == FAIL_PARTITION else PER_PARTITION
        assert ([(c.offset, c.body) for c in delivered[p]]
                == [(r.offset, r.value) for r in expected[p][:upto]]), p

    # Fix the function: same port, same record file, no failure.  The outage is a fixed
    # duration longer than the longest back-off, so that at least one attempt finds the
    # runtime down (connection refused); ktrigger must carry on once it is back.
    assert rt.stop() == 0
    time.sleep(OUTAGE_S)
    ktr.assert_running()
    rt2 = runtime_factory(record_file=record_file, port=rt.port)

    end = kafka.end_offsets(names.topic)
    assert end == {p: PER_PARTITION for p in range(PARTITIONS)}
    kt.wait_for(lambda: (ktr.assert_running()
                         or kafka.committed(names.group, names.topic) == end), 60,
                'committed offsets to reach the end offsets after the fix',
                describe=lambda: 'committed %s, delivered %s' % (
                    kafka.committed(names.group, names.topic),
                    kt.count_by_partition(rt2.delivered())))
    assert ktr.stop() == 0

    calls = rt2.calls()
    failed = [c for c in calls if c.failed]
    assert len(failed) >= 4 and all(c.body == FAIL_BODY for c in failed)
    got = kt.by_partition([c for c in calls if not c.failed])
    for p in range(PARTITIONS):
        assert ([(c.offset, c.body) for c in got[p]]
                == [(r.offset, r.value) for r in expected[p]]), (
            'partition %d: not exactly once in order' % p)
    # Every failed attempt came before the success, and nothing behind it came earlier.
    success = next(i for i, c in enumerate(calls) if c.body == FAIL_BODY and not c.failed)
    assert all(i < success for i, c in enumerate(calls) if c.failed)
    assert all(i > success for i, c in enumerate(calls)
               if c.partition == FAIL_PARTITION and c.offset > fail_rec.offset)
    assert kafka.committed(names.group, names.topic) == end

    # Retries follow the configured back-off: no gap between two attempts (all made while the
    # first runtime was up) much over dispatch.retry.max_backoff_ms.
    gaps_ms = [round((b.time - a.time) * 1000) for a, b in zip(failed, failed[1:])]
    assert max(gaps_ms) <= MAX_BACKOFF_MS + RETRY_SLACK_MS, (
        'dispatch.retry.max_backoff_ms = %d, but attempts came %s ms apart' % (MAX_BACKOFF_MS, gaps_ms))
