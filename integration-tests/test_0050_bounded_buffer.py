"""Bounded buffers: with a tiny per-partition buffer, full partitions stop being read and are
read again over and over while the runtime is slower than Kafka, and still every record
arrives exactly once, in order, and the committed offsets reach the end."""

import kthelpers as kt

PARTITIONS = 3
RECORDS = 600
BUFFER = 5


def test_full_buffers_lose_nothing(kafka, names, config, runtime_factory, ktrigger_factory):
    kafka.create_topic(names.topic, PARTITIONS)
    produced = kafka.produce(names.topic, [(i % PARTITIONS, 'bounded p%d n%d'
                                            % (i % PARTITIONS, i // PARTITIONS))
                                           for i in range(RECORDS)])
    expected = kt.expected_by_partition(produced)
    rt = runtime_factory(delay_ms=1)
    conf = config(rt.port)
    conf['dispatch']['partition_buffer_records'] = BUFFER
    conf['log']['level'] = 'debug'
    ktr = ktrigger_factory(conf)

    kt.wait_for(lambda: len(rt.calls()) >= RECORDS, 90, '%d calls' % RECORDS,
                describe=lambda: kt.count_by_partition(rt.calls()))
    assert ktr.stop() == 0

    log = ktr.log()
    full = log.count('buffer full')
    again = log.count('reading again')
    # Each partition's backlog (200) is 40 buffers deep: it must have filled many times.
    assert full >= PARTITIONS * 5, 'partitions filled only %d times' % full
    assert again >= full - PARTITIONS, (full, again)

    calls = rt.calls()
    assert not [c for c in calls if c.failed]
    kt.assert_exactly_once_in_order(calls, expected, PARTITIONS,
                                    'not exactly once in order across full buffers')
    end = kafka.end_offsets(names.topic)
    assert kafka.committed(names.group, names.topic) == end
