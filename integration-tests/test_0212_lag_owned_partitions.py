"""ktrigger_consumer_lag names only partitions the member owns. librdkafka's statistics stop
listing a partition once it is gone, so a member whose assignment became empty (its partition
went to another member, here across a SIGHUP re-join) used to report the last lag of that
partition for ever."""

import os
import signal

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
    props = {'statistics.interval.ms': '300', 'session.timeout.ms': '6000',
             'heartbeat.interval.ms': '500'}
    rt_a = runtime_factory(record_file=tmp_path / 'a.jsonl')
    a = ktrigger_factory(config(rt_a.port, properties=props))
    kt.wait_for(lambda: len(rt_a.calls()) >= 10, 60, 'A called for the 10 records')
    kt.wait_for(lambda: lag_series(a, names.topic) == ['0'], 20, 'A reports the lag of [0]',
                describe=lambda: lag_series(a, names.topic))

    # B joins and stays idle (one partition). A then re-joins (SIGHUP with a changed kafka
    # property): it leaves the group, the partition goes to B, and A's new consumer owns
    # nothing; librdkafka's statistics of the new consumer never name the partition.
    rt_b = runtime_factory(record_file=tmp_path / 'b.jsonl')
    b = ktrigger_factory(config(rt_b.port, properties=props))
    kt.wait_for(lambda: ready(b), 30, 'B joined (idle)', interval=0.2)
    conf = config(rt_a.port, properties=dict(props, **{'fetch.wait.max.ms': '11'}))
    conf['metrics']['listen'] = '127.0.0.1:%d' % a.metrics_port
    a.config_path.write_text(kt.render_config(conf))
    os.kill(a.pid, signal.SIGHUP)
    kt.wait_for(lambda: kt.metric_sum(b.metrics(), 'ktrigger_assigned_partitions') == 1, 60,
                'B owns the partition', interval=0.2)
    kt.wait_for(lambda: a.log().count('joining group') == 2
                and ready(a)
                and kt.metric_sum(a.metrics(), 'ktrigger_assigned_partitions') == 0, 30,
                'A re-joined with nothing', interval=0.2)
    kt.wait_for(lambda: lag_series(a, names.topic) == [], 5,
                'A reports no lag for the partition it lost',
                describe=lambda: lag_series(a, names.topic))
    kt.wait_for(lambda: lag_series(b, names.topic) == ['0'], 20, 'B reports the lag of [0]',
                describe=lambda: lag_series(b, names.topic))
    assert a.stop() == 0
    assert b.stop() == 0
