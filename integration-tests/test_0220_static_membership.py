"""Static membership: with kafka.static_membership each replica joins with
group.instance.id = POD_NAME; a replica restarted within session.timeout.ms gets its
partitions back without a rebalance of the others, and nothing is lost or duplicated."""

import collections

import kthelpers as kt

PARTITIONS = 4


def test_restart_without_rebalance(kafka, names, config, runtime_factory, ktrigger_factory,
                                   tmp_path):
    kafka.create_topic(names.topic, PARTITIONS)
    produced = kafka.produce(names.topic, [(i % PARTITIONS, 'st %d' % i) for i in range(200)])
    rts = [runtime_factory(record_file=tmp_path / ('r%d.jsonl' % i)) for i in range(2)]
    props = {'session.timeout.ms': '30000', 'heartbeat.interval.ms': '1000'}
    confs = []
    for rt in rts:
        c = config(rt.port, properties=props)
        c['kafka']['static_membership'] = True
        confs.append(c)
    a = ktrigger_factory(confs[0], env={'POD_NAME': 'replica-a'})
    b = ktrigger_factory(confs[1], env={'POD_NAME': 'replica-b'})
    end = kafka.end_offsets(names.topic)
    kt.wait_for(lambda: kafka.committed(names.group, names.topic) == end, 60, 'first batch')
    kt.wait_for(lambda: kt.metric_sum(b.metrics(), 'ktrigger_assigned_partitions') > 0, 20,
                'b has partitions')

    def rebalances(k):
        s = k.metrics()
        return (kt.metric_sum(s, 'ktrigger_rebalances_total', type='assign'),
                kt.metric_sum(s, 'ktrigger_rebalances_total', type='revoke'))

    before = rebalances(a)
    assert b.stop() == 0
    b2 = ktrigger_factory(confs[1], env={'POD_NAME': 'replica-b'})
    more = kafka.produce(names.topic, [(i % PARTITIONS, 'st2 %d' % i) for i in range(200)])
    end = kafka.end_offsets(names.topic)
    kt.wait_for(lambda: kafka.committed(names.group, names.topic) == end, 60, 'second batch')
    assert rebalances(a) == before, 'replica a saw a rebalance: %s -> %s' % (before,
                                                                          rebalances(a))
    assert a.stop() == 0 and b2.stop() == 0
    counts = collections.Counter(c.body for rt in rts for c in rt.calls())
    assert set(counts) == {r.value for r in produced + more}
    assert max(counts.values()) == 1, 'duplicates'
