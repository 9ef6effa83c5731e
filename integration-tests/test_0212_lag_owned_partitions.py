"""ktrigger_consumer_lag names only partitions the member owns. librdkafka's statistics stop
listing a partition once it is gone, so a member whose assignment became empty (its partition
went to a second member that joined) used to report the last lag of that partition for ever."""

import kthelpers as kt


def lag_series(ktr, topic):
    return sorted(lb['partition'] for n, lb, _ in ktr.metrics()
                  if n == 'ktrigger_consumer_lag' and lb.get('topic') == topic)


def ready(ktr):
    return kt.http_get('http://127.0.0.1:%d/readyz' % ktr.metrics_port)[0] == 200


def test_lag_series_go_with_the_partition(kafka, names, config, runtime_factory,
                                          ktrigger_factory, tmp_path):
    kafka.create_topic(names.topic, 1)
    kafka.produce(names.topic, [(0, 'lag %d' % i) for i in range(10)])
    # The range assignor gives a topic's partitions to the members in member id order, and a
    # member id starts with the client.id: B ("aa-...") gets the one partition once it joins.
    props = {'statistics.interval.ms': '1000', 'partition.assignment.strategy': 'range'}
    rt_a = runtime_factory(record_file=tmp_path / 'a.jsonl')
    a = ktrigger_factory(config(rt_a.port, properties=dict(props, **{'client.id': 'zz-a'})))
    kt.wait_for(lambda: len(rt_a.calls()) >= 10, 60, 'A called for the 10 records')
    kt.wait_for(lambda: lag_series(a, names.topic) == ['0'], 20, 'A reports the lag of [0]',
                describe=lambda: lag_series(a, names.topic))

    # B joins: the partition moves to it (a clean revoke on A), A's assignment is empty.
    rt_b = runtime_factory(record_file=tmp_path / 'b.jsonl')
    b = ktrigger_factory(config(rt_b.port, properties=dict(props, **{'client.id': 'aa-b'})))
    kt.wait_for(lambda: kt.metric_sum(b.metrics(), 'ktrigger_assigned_partitions') == 1, 60,
                'B owns the partition', interval=0.2)
    kt.wait_for(lambda: ready(a) and
                kt.metric_sum(a.metrics(), 'ktrigger_assigned_partitions') == 0, 30,
                'A in the group with nothing', interval=0.2)
    # No statistics of A name the partition any more: nothing but the removal can drop it.
    kt.wait_for(lambda: lag_series(a, names.topic) == [], 5,
                'A reports no lag for the partition it handed over',
                describe=lambda: lag_series(a, names.topic))
    kt.wait_for(lambda: lag_series(b, names.topic) == ['0'], 20, 'B reports the lag of [0]',
                describe=lambda: lag_series(b, names.topic))
    assert a.stop() == 0
    assert b.stop() == 0
