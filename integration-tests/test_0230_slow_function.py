"""A slow function does not get replicas evicted: each call takes longer than
max.poll.interval.ms, but ktrigger's loop keeps polling Kafka while calls run, so no member
leaves the group and no rebalance loop starts; every record is delivered once."""

import collections
import time

import kthelpers as kt

PARTITIONS = 6


def test_slow_calls_no_eviction(kafka, names, config, runtime_factory, ktrigger_factory,
                                tmp_path):
    kafka.create_topic(names.topic, PARTITIONS)
    rts = [runtime_factory(record_file=tmp_path / ('r%d.jsonl' % i), delay_ms=7000)
           for i in range(3)]
    # A consumer that stopped polling during a call would be evicted after 6 s.
    props = {'session.timeout.ms': '6000', 'heartbeat.interval.ms': '1000',
             'max.poll.interval.ms': '6000'}
    confs = [config(rt.port, properties=props) for rt in rts]
    for c in confs:
        c['dispatch']['drain_timeout_ms'] = 5000  # must stay below max.poll.interval.ms
    reps = [ktrigger_factory(c) for c in confs]
    def assigned():
        return [kt.metric_sum(k.metrics(), 'ktrigger_assigned_partitions') for k in reps]

    kt.wait_for(lambda: assigned() == [2, 2, 2], 60, 'the group to settle', interval=0.5,
                describe=assigned)

    def rebalances():
        out = []
        for k in reps:
            s = k.metrics()
            out.append(tuple(kt.metric_sum(s, 'ktrigger_rebalances_total', type=t)
                             for t in ('assign', 'revoke', 'lost')))
        return out

    produced = kafka.produce(names.topic, [(i % PARTITIONS, 'slow %d' % i) for i in range(18)])
    kt.wait_for(lambda: sum(len(rt.calls()) for rt in rts) >= 6, 30, 'first slow calls done')
    before = rebalances()
    time.sleep(9)  # more than one max.poll.interval.ms with calls in flight all along
    after = rebalances()
    assert after == before, 'rebalances during slow calls: %s -> %s' % (before, after)
    for k in reps:
        assert 'max.poll.interval' not in k.log().lower() or 'exceeded' not in k.log().lower()
    kt.wait_for(lambda: sum(len(rt.calls()) for rt in rts) >= 18, 90, 'all 18 calls')
    for k in reps:
        assert k.stop() == 0
    counts = collections.Counter(c.body for rt in rts for c in rt.calls())
    assert set(counts) == {r.value for r in produced} and max(counts.values()) == 1
