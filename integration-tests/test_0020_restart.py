"""Restart: SIGTERM in the middle of a backlog is a clean shutdown (exit 0; the records already
buffered are finished first, then everything that was delivered is committed, nothing more); a
second ktrigger in the same group resumes from there, so every record is delivered exactly once
over the two runs."""

import kthelpers as kt

PARTITIONS = 4
RECORDS = 2000
DELAY_MS = 3  # per call in the runtime, so the backlog takes a few seconds


def test_restart_mid_stream(kafka, names, config, runtime_factory, ktrigger_factory):
    kafka.create_topic(names.topic, PARTITIONS)
    produced = kafka.produce(names.topic, [(i % PARTITIONS, 'restart p%d n%d'
                                            % (i % PARTITIONS, i // PARTITIONS))
                                           for i in range(RECORDS)])
    expected = kt.expected_by_partition(produced)
    rt = runtime_factory(delay_ms=DELAY_MS)
    conf = config(rt.port)
    # The shutdown drain finishes what is buffered: keep that small so the backlog outlives it.
    conf['dispatch']['partition_buffer_records'] = 20

    first = ktrigger_factory(conf)
    kt.wait_for(lambda: len(rt.calls()) >= RECORDS // 2, 60, 'half of the records',
                interval=0.01, describe=lambda: len(rt.calls()))
    assert first.stop() == 0

    # Clean shutdown: in-flight calls finished, then exactly the delivered prefix of each
    # partition was committed.
    calls1 = rt.calls()
    assert not [c for c in calls1 if c.failed]
    assert len(calls1) < RECORDS, 'all records delivered before the stop: restart not tested'
    kt.assert_exactly_once_in_order(calls1, expected, PARTITIONS,
                                    'first run is not an in-order prefix', prefix=True)
    got1 = kt.by_partition(calls1)
    committed1 = kafka.committed(names.group, names.topic)
    assert committed1 == {p: len(got1[p]) or None for p in range(PARTITIONS)}, (
        'after a clean shutdown the committed offsets must equal what was delivered')

    second = ktrigger_factory(conf)
    kt.wait_for(lambda: len({c.body for c in rt.calls()}) >= RECORDS, 60, 'all records',
                describe=lambda: kt.count_by_partition(rt.calls()))
    assert second.stop() == 0

    calls = rt.calls()
    assert not [c for c in calls if c.failed]
    kt.assert_exactly_once_in_order(calls, expected, PARTITIONS,
                                    'not exactly once in order over the restart')
    assert len(calls) == RECORDS

    end = kafka.end_offsets(names.topic)
    assert end == {p: len(expected[p]) for p in range(PARTITIONS)}
    assert kafka.committed(names.group, names.topic) == end
