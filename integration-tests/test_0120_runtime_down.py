"""The runtime going away is not a record failure: while nothing listens, ktrigger pauses,
reports not-ready and spends no record's retry budget (with max_attempts = 1 and dead-letter,
a single counted failure would dead-letter a record); when the runtime answers /healthz again
everything is delivered exactly once and committed."""

import signal
import time

import kthelpers as kt

PARTITIONS = 2
DOWN_S = 10


def ready(ktr):
    return kt.http_get('http://127.0.0.1:%d/readyz' % ktr.metrics_port)[0]


def test_runtime_down_and_back(kafka, names, config, runtime_factory, ktrigger_factory,
                               tmp_path):
    kafka.create_topic(names.topic, PARTITIONS)
    kafka.create_topic(names.topic + '-dlq', 1)
    first = kafka.produce(names.topic, [(i % PARTITIONS, 'before %d' % i) for i in range(100)])
    record_file = tmp_path / 'records.jsonl'
    rt = runtime_factory(record_file=record_file)
    conf = config(rt.port)
    conf['dispatch'].update({'on_failure': 'dead-letter', 'dead_letter_topic': names.topic + '-dlq',
                             'retry': {'initial_backoff_ms': 50, 'max_backoff_ms': 200,
                                       'max_attempts': 1}})
    ktr = ktrigger_factory(conf)
    kt.wait_for(lambda: len(rt.calls()) >= 100, 30, 'first 100 calls')
    kt.wait_for(lambda: ready(ktr) == 200, 10, '/readyz 200 while all is well')

    port = rt.port
    rt.stop()
    second = kafka.produce(names.topic, [(i % PARTITIONS, 'during %d' % i) for i in range(100)])
    kt.wait_for(lambda: ready(ktr) == 503, 15, '/readyz 503 while the runtime is down')
    kt.wait_for(lambda: kt.metric_sum(ktr.metrics(), 'ktrigger_runtime_up') == 0, 5,
                'ktrigger_runtime_up 0')
    time.sleep(DOWN_S)  # the outage itself: what is tested is what happens meanwhile
    ktr.assert_running()
    samples = ktr.metrics()
    assert kt.metric_sum(samples, 'ktrigger_dead_lettered_total') == 0
    assert kt.metric_sum(samples, 'ktrigger_retries_total') in (None, 0)
    assert kt.metric_sum(samples, 'ktrigger_paused_partitions') == PARTITIONS
    assert kt.metric_sum(samples, 'ktrigger_calls_total', outcome='connect_error') >= 1
    committed = kafka.committed(names.group, names.topic)
    assert sum(v or 0 for v in committed.values()) <= 100, 'committed past the outage'

    rt2 = runtime_factory(record_file=record_file, port=port)
    end = kafka.end_offsets(names.topic)
    kt.wait_for(lambda: kafka.committed(names.group, names.topic) == end, 60,
                'committed == end after the runtime came back')
    kt.wait_for(lambda: ready(ktr) == 200, 10, '/readyz 200 again')
    samples = ktr.metrics()
    assert kt.metric_sum(samples, 'ktrigger_dead_lettered_total') == 0
    assert kt.metric_sum(samples, 'ktrigger_runtime_up') == 1
    assert ktr.stop() == 0
    bodies = sorted(c.body for c in rt2.calls())
    assert bodies == sorted(r.value for r in first + second), 'lost or doubled'
    assert 'runtime answers again' in ktr.log()


def test_revoke_while_the_runtime_is_down_hands_back_at_once(kafka, names, config,
                                                             runtime_factory, ktrigger_factory,
                                                             tmp_path):
    """A revoke that comes while the runtime is down does not wait out drain_timeout_ms (60 s
    here) holding the group's rebalance: nothing of the revoked partitions can be done without
    the runtime, so they are handed back at once (uncommitted) and the new member delivers
    them; the runtime back, the first member delivers its own. Nothing lost, nothing that got
    a 2xx delivered twice.

    So that every partition has records buffered when the runtime goes away: one call at a
    time (max_in_flight 1), each partition's first record sleeps 5 s, and the runtime is
    killed (SIGKILL: the sleeping call gets no answer and writes no line) once everything is
    buffered; its retry then finds nothing listening."""
    parts, per = 4, 30
    kafka.create_topic(names.topic, parts)
    produced = kafka.produce(names.topic, [(p, ('slow-%d' % p) if i == 0 else 'p%d-%d' % (p, i))
                                           for i in range(per) for p in range(parts)])
    rt_a = runtime_factory(record_file=tmp_path / 'a.jsonl',
                           sleep_bodies={'slow-%d' % p: 5000 for p in range(parts)})
    props = {'session.timeout.ms': '10000', 'heartbeat.interval.ms': '500'}
    conf = config(rt_a.port, properties=props)
    conf['dispatch'].update({'drain_timeout_ms': 60000, 'max_in_flight': 1})
    a = ktrigger_factory(conf)
    kt.wait_for(lambda: a.assert_running() or
                kt.metric_sum(a.metrics(), 'ktrigger_buffered_records') == len(produced), 20,
                'a holding every record, its first call sleeping',
                describe=lambda: kt.metric_sum(a.metrics(), 'ktrigger_buffered_records'))
    port = rt_a.port
    rt_a.proc.kill()
    rt_a.proc.wait(10)
    kt.wait_for(lambda: a.assert_running() or
                kt.metric_sum(a.metrics(), 'ktrigger_runtime_up') == 0, 20,
                'a seeing its runtime down')
    assert not rt_a.calls(), rt_a.calls()  # nothing answered: every partition is buffered

    rt_b = runtime_factory(record_file=tmp_path / 'b.jsonl')
    t0 = time.monotonic()
    b = ktrigger_factory(config(rt_b.port, properties=props))
    kt.wait_for(lambda: a.assert_running() or len(rt_b.calls()) > 0, 30,
                'b delivering partitions a handed back (a drain timeout would take 60 s)',
                describe=lambda: kt.tail(a.log_path, 8))
    took = time.monotonic() - t0
    assert 'runtime is down: handed back now' in a.log(), kt.tail(a.log_path, 20)

    rt_a2 = runtime_factory(record_file=tmp_path / 'a2.jsonl', port=port)
    end = kafka.end_offsets(names.topic)
    kt.wait_for(lambda: kafka.committed(names.group, names.topic) == end, 60,
                'everything committed once a\'s runtime is back')
    assert a.stop() == 0 and b.stop() == 0
    delivered = [c.body for rt in (rt_a2, rt_b) for c in rt.calls() if not c.failed]
    print('revoke while the runtime was down: b delivered after %.1f s' % took)
    assert sorted(set(delivered)) == sorted(r.value for r in produced), 'lost'
    assert len(delivered) == len(set(delivered)), 'delivered twice: %s' % sorted(
        x for x in set(delivered) if delivered.count(x) > 1)[:5]


def test_shutdown_with_the_runtime_down_waits_for_a_reply_being_written(
        kafka, kafka_bootstrap, names, config, runtime_factory, ktrigger_factory):
    """A shutdown drain with the runtime down ends early, but not before a reply still being
    written: that record got its 2xx, so once Kafka takes its reply it is done (and
    committed), and the next owner does not call it again.

    Record 0 is answered at once; its reply topic does not exist yet, so the reply is refused
    (for good: written again after a back-off, under block) and the record stays PRODUCING.
    Record 1 sleeps; the runtime is SIGKILLed while it runs, so its retry finds nothing
    listening. Then SIGTERM, and only then is the reply topic created."""
    replies = names.topic + '-late-replies'
    kafka.create_topic(names.topic, 1)
    kafka.produce(names.topic, [(0, 'answered'), (0, 'sleeping')])
    rt = runtime_factory(reply_body='{"answer": 42}', sleep_bodies={'sleeping': 60000})
    conf = config(rt.port)
    conf['kafka']['producer_properties'] = {'topic.metadata.propagation.max.ms': '500'}
    conf['dispatch'].update({'ordering': 'none', 'max_in_flight': 2, 'reply_topic': replies,
                             'on_failure': 'block', 'drain_timeout_ms': 40000,
                             'retry': {'initial_backoff_ms': 100, 'max_backoff_ms': 500}})
    ktr = ktrigger_factory(conf)

    def refusals():
        return kt.metric_sum(ktr.metrics(), 'ktrigger_produce_failures_total', kind='reply',
                             error='permanent') or 0

    kt.wait_for(lambda: ktr.assert_running() or (
        kt.metric_sum(ktr.metrics(), 'ktrigger_calls_total', outcome='success') == 1 and
        refusals() >= 1), 20, 'record 0 answered, its reply refused (no such topic yet)')
    rt.proc.kill()
    rt.proc.wait(10)
    kt.wait_for(lambda: ktr.assert_running() or
                kt.metric_sum(ktr.metrics(), 'ktrigger_runtime_up') == 0, 10,
                'ktrigger seeing its runtime down')
    before = refusals()
    ktr.proc.send_signal(signal.SIGTERM)
    # The old drain ended at once; the one before the write queue waited without writing.
    kt.wait_for(lambda: ktr.assert_running() or refusals() >= before + 2, 15,
                'the reply written again during the drain, the runtime down',
                describe=lambda: kt.tail(ktr.log_path, 10))
    kafka.create_topic(replies, 1)
    assert ktr.proc.wait(40) == 0
    log = ktr.log()
    assert '1 records not done (the runtime is down)' in log, kt.tail(ktr.log_path, 20)
    assert kafka.committed(names.group, names.topic) == {0: 1}, \
        'record 0 (answered, its reply written) not committed: it would be delivered again'
    got = kt.read_topic(kafka_bootstrap, replies, 1, names.group + '-reader')
    assert [v for _, v, _ in got] == [b'{"answer": 42}'], got
