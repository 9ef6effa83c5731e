"""Waking the fetcher: with prefetch bounds far below one fetch response, every partition goes
over them on every fetch, and librdkafka 2.0.2 would look at it again only on its broker
thread's 1 s wake-up. ktrigger wakes it by seeking each drained partition to the offset after
the last record it read. The seek must neither lose nor repeat a record, and must not be
taken for the log going back."""

import kthelpers as kt

PARTITIONS = 3
RECORDS = 3000


def test_fetch_wakeups_lose_and_repeat_nothing(kafka, names, config, runtime_factory,
                                                ktrigger_factory):
    kafka.create_topic(names.topic, PARTITIONS)
    produced = kafka.produce(names.topic, [(i % PARTITIONS, 'wakeup p%d n%d'
                                            % (i % PARTITIONS, i // PARTITIONS))
                                           for i in range(RECORDS)],
                             # small batches: a fetch returns whole batches
                             producer_config={'linger.ms': 0, 'batch.num.messages': 10})
    expected = kt.expected_by_partition(produced)
    rt = runtime_factory()
    conf = config(rt.port)
    conf['dispatch']['ordering'] = 'partition'
    conf['kafka']['properties'].update({'queued.min.messages': '10',
                                        'queued.max.messages.kbytes': '1',
                                        'fetch.message.max.bytes': '2048'})
    ktr = ktrigger_factory(conf)

    kt.wait_for(lambda: len(rt.calls()) >= RECORDS, 90, '%d calls' % RECORDS,
                describe=lambda: kt.count_by_partition(rt.calls()))
    kt.wait_for(lambda: kafka.committed(names.group, names.topic)
                == kafka.end_offsets(names.topic), 30, 'committed offsets at the end')
    wakeups = kt.metric_sum(ktr.metrics(), 'ktrigger_fetch_wakeups_total')
    assert ktr.stop() == 0

    # 1,000 records a partition in batches of at most 10, fetches of ~2 KiB: each fetch goes
    # over the bounds, so the fetcher was woken many times.
    assert wakeups >= PARTITIONS * 5, 'only %d fetcher wake-ups' % wakeups
    calls = rt.calls()
    assert not [c for c in calls if c.failed]
    kt.assert_exactly_once_in_order(calls, expected, PARTITIONS,
                                    'not exactly once in order across fetcher wake-ups')
    assert 'went back' not in ktr.log()
