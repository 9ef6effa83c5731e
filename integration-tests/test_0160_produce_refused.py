"""Kafka refusing a reply or a dead letter: a refusal for good (the topic's max.message.bytes
is smaller than the message) ends by dispatch.on_failure, or blocks the partition with a
growing back-off and one loud line per attempt, never a retry every 100 ms; the producer is
sized so that records over 1,000,000 bytes and replies up to the 1 MiB cap can be written at
all; and replies held while Kafka acknowledges them count in the partition's memory bound, so
calls do not run ahead of it."""

import re
import time

import pytest

import kthelpers as kt

SMALL_TOPIC = {'max.message.bytes': '10000'}
BIG_TOPIC = {'max.message.bytes': '2000000'}


def _lines(log, *needles):
    return [line for line in log.splitlines() if all(n in line for n in needles)]


def _committed_to(kafka, names, want):
    return lambda: kafka.committed(names.group, names.topic) == want


@pytest.mark.parametrize('ordering', ('partition', 'key', 'none'))
def test_refused_reply_is_dead_lettered(kafka, kafka_bootstrap, names, config, runtime_factory,
                                        ktrigger_factory, ordering):
    """A reply over the reply topic's max.message.bytes is refused for good: under
    on_failure = dead-letter the record goes to the dead-letter topic (saying why), the
    partition commits, and each record logs one ERROR, not a WARN every 100 ms."""
    n = 3
    replies, dlq = names.topic + '-replies', names.topic + '-dlq'
    kafka.create_topic(names.topic, 1)
    kafka.create_topic(replies, 1, config=SMALL_TOPIC)
    kafka.create_topic(dlq, 1)
    produced = kafka.produce(names.topic, [(0, 'ask %d' % i, b'k%d' % i) for i in range(n)])
    rt = runtime_factory(env={'REPLY_BYTES': '20000'})
    conf = config(rt.port)
    conf['dispatch']['ordering'] = ordering
    conf['dispatch'].update({'reply_topic': replies, 'on_failure': 'dead-letter',
                             'dead_letter_topic': dlq})
    ktr = ktrigger_factory(conf)
    kt.wait_for(_committed_to(kafka, names, {0: n}), 30, 'committed to the end',
                describe=lambda: kafka.committed(names.group, names.topic))
    time.sleep(1)  # a retry loop would show now
    m = ktr.metrics()
    assert kt.metric_sum(m, 'ktrigger_produce_failures_total', kind='reply',
                         error='permanent') == n
    assert kt.metric_sum(m, 'ktrigger_dead_lettered_total') == n
    assert kt.metric_sum(m, 'ktrigger_replies_total') == 0
    assert ktr.stop() == 0

    log = ktr.log()
    for r in produced:
        where = '%s [0] @%d' % (names.topic, r.offset)
        refused = _lines(log, where, 'reply to %s refused' % replies)
        assert len(refused) == 1 and ' ERROR ' in refused[0], refused
    assert not _lines(log, 'not written'), _lines(log, 'not written')[:3]
    assert not _lines(log, 'trying again')

    got = kt.read_topic(kafka_bootstrap, dlq, 1, names.group + '-reader')
    assert sorted(k for k, _, _ in got) == [r.key for r in produced]
    for key, value, h in got:
        assert value.startswith(b'ask '), value
        assert h['ktrigger-reply-error'] == b'MSG_SIZE_TOO_LARGE', h
        assert b'refused' in h['ktrigger-last-error'], h
    assert kt.read_topic(kafka_bootstrap, replies, 1, names.group + '-r2') == []


@pytest.mark.parametrize('ordering', ('partition', 'key', 'none'))
def test_refused_reply_is_skipped(kafka, names, config, runtime_factory, ktrigger_factory, ordering):
    """Under on_failure = skip a reply refused for good is skipped: counted, one ERROR per
    record, committed."""
    n = 3
    replies = names.topic + '-replies'
    kafka.create_topic(names.topic, 1)
    kafka.create_topic(replies, 1, config=SMALL_TOPIC)
    produced = kafka.produce(names.topic, [(0, 'ask %d' % i) for i in range(n)])
    rt = runtime_factory(env={'REPLY_BYTES': '20000'})
    conf = config(rt.port)
    conf['dispatch']['ordering'] = ordering
    conf['dispatch'].update({'reply_topic': replies, 'on_failure': 'skip'})
    ktr = ktrigger_factory(conf)
    kt.wait_for(_committed_to(kafka, names, {0: n}), 30, 'committed to the end',
                describe=lambda: kafka.committed(names.group, names.topic))
    time.sleep(1)
    m = ktr.metrics()
    assert kt.metric_sum(m, 'ktrigger_skipped_total') == n
    assert kt.metric_sum(m, 'ktrigger_produce_failures_total', kind='reply',
                         error='permanent') == n
    assert ktr.stop() == 0
    log = ktr.log()
    for r in produced:
        lines = _lines(log, '%s [0] @%d' % (names.topic, r.offset), 'refused')
        assert len(lines) == 1 and ' ERROR ' in lines[0] and 'skipped' in lines[0], lines
    assert len(rt.calls()) == n, 'the function is not called again'


def test_reply_over_a_million_bytes_is_written(kafka, kafka_bootstrap, names, config,
                                               runtime_factory, ktrigger_factory):
    """A reply between the producer's default message.max.bytes (1,000,000) and the 1 MiB
    reply cap reaches a topic that takes it: the producer is sized for replies."""
    replies = names.topic + '-replies'
    kafka.create_topic(names.topic, 1)
    kafka.create_topic(replies, 1, config=BIG_TOPIC)
    kafka.produce(names.topic, [(0, 'ask', b'k')])
    rt = runtime_factory(env={'REPLY_BYTES': '1040000'})
    conf = config(rt.port)
    conf['dispatch']['reply_topic'] = replies
    ktr = ktrigger_factory(conf)
    kt.wait_for(_committed_to(kafka, names, {0: 1}), 30, 'committed to the end',
                describe=lambda: kafka.committed(names.group, names.topic))
    assert kt.metric_sum(ktr.metrics(), 'ktrigger_replies_total') == 1
    assert ktr.stop() == 0
    got = kt.read_topic(kafka_bootstrap, replies, 1, names.group + '-reader')
    assert [len(v) for _, v, _ in got] == [1040000]


def test_refused_reply_blocks_under_block(kafka, names, config, runtime_factory,
                                          ktrigger_factory):
    """Under on_failure = block a reply refused for good is written again after a back-off:
    the partition is blocked at that record (nothing committed), one ERROR per attempt naming
    it, and the partition counts as blocked (ktrigger_partitions_blocked), although the call
    itself succeeded; the function is not called again."""
    replies = names.topic + '-replies'
    kafka.create_topic(names.topic, 1)
    kafka.create_topic(replies, 1, config=SMALL_TOPIC)
    kafka.produce(names.topic, [(0, 'ask %d' % i) for i in range(3)])
    rt = runtime_factory(env={'REPLY_BYTES': '20000'})
    conf = config(rt.port)
    conf['dispatch'].update({'reply_topic': replies, 'on_failure': 'block',
                             'retry': {'initial_backoff_ms': 100, 'max_backoff_ms': 1000}})
    ktr = ktrigger_factory(conf)
    where = '%s [0] @0' % names.topic

    def blocked():
        ktr.assert_running()
        m = ktr.metrics()
        return (kt.metric_sum(m, 'ktrigger_partitions_blocked') == 1
                and (kt.metric_sum(m, 'ktrigger_partition_blocked_seconds_max') or 0) >= 1
                and (kt.metric_sum(m, 'ktrigger_produce_failures_total', kind='reply',
                                   error='permanent') or 0) >= 3)

    kt.wait_for(blocked, 30, 'the partition counted as blocked on its refused reply',
                describe=lambda: [x for x in ktr.metrics()
                                  if 'blocked' in x[0] or 'produce_failures' in x[0]])
    assert kafka.committed(names.group, names.topic) == {0: None}
    lines = _lines(ktr.log(), where, 'reply to %s refused by Kafka for good' % replies)
    assert len(lines) >= 3 and all(' ERROR ' in line for line in lines), lines[:3]
    assert [c.body for c in rt.calls()].count('ask 0') == 1  # written again, not called again
    assert ktr.stop() == 0


def test_refused_dead_letter_blocks_with_backoff(kafka, names, config, runtime_factory,
                                                 ktrigger_factory):
    """A dead letter the dead-letter topic refuses for good blocks its partition's commits
    (nothing at or behind it is committed; the records behind it are still called, as while
    any dead letter is written) with a growing back-off: a few ERROR lines, each naming the
    record, over several seconds; the other partition goes on and commits; the metric
    counts the refusals."""
    per = 8
    bad_index = 2
    bad_body = 'fail-' + 'x' * 20000  # over the dead-letter topic's 10000 bytes
    dlq = names.topic + '-dlq'
    kafka.create_topic(names.topic, 2)
    kafka.create_topic(dlq, 1, config=SMALL_TOPIC)
    recs = []
    for i in range(per):
        for p in range(2):
            recs.append((p, bad_body if (p, i) == (0, bad_index) else 'p%d-n%d' % (p, i)))
    produced = kafka.produce(names.topic, recs)
    bad = next(r for r in produced if r.value == bad_body)
    rt = runtime_factory(fail_bodies=[bad_body])
    conf = config(rt.port)
    conf['dispatch'].update({'on_failure': 'dead-letter', 'dead_letter_topic': dlq,
                             'retry': {'initial_backoff_ms': 100, 'max_backoff_ms': 2000,
                                       'max_attempts': 1}})
    ktr = ktrigger_factory(conf)
    where = '%s [0] @%d' % (names.topic, bad.offset)

    def refusals():
        return _lines(ktr.log(), where, 'dead letter')

    kt.wait_for(lambda: (ktr.assert_running() or
                         (kafka.committed(names.group, names.topic) == {0: bad.offset, 1: per}
                          and refusals())), 30,
                'partition 1 committed to the end, partition 0 up to the refused record',
                describe=lambda: kafka.committed(names.group, names.topic))
    before = len(refusals())
    time.sleep(6)
    during = refusals()[before:]
    # Back-off from 100 ms growing to 2 s (full jitter: uniform from 100 ms up to the cap):
    # about 6 attempts in 6 s; main retried every 100-200 ms, 37 in 6 s.
    assert 2 <= len(during) <= 15, '%d refusal lines in 6 s: %s' % (len(during), during[:3])
    assert all(' ERROR ' in line and dlq in line for line in during), during[:3]
    attempts = [int(a) for a in re.findall(r'attempt (\d+)', '\n'.join(during))]
    assert attempts == sorted(attempts) and len(set(attempts)) == len(attempts), attempts
    assert kafka.committed(names.group, names.topic) == {0: bad.offset, 1: per}
    n = kt.metric_sum(ktr.metrics(), 'ktrigger_produce_failures_total', kind='dead_letter',
                      error='permanent')
    assert n is not None and n >= before + len(during), n
    assert ktr.stop() == 0


def test_dead_letter_to_a_missing_topic_blocks(kafka, names, config, runtime_factory,
                                               ktrigger_factory):
    """A dead-letter topic that does not exist (the test broker does not create topics) is a
    permanent refusal too: the partition stays blocked, the refusal is counted as permanent
    and logged as an ERROR naming the record. librdkafka reports the unknown topic after
    topic.metadata.propagation.max.ms, shortened here."""
    dlq = names.topic + '-missing-dlq'
    kafka.create_topic(names.topic, 1)
    kafka.produce(names.topic, [(0, 'ok-0'), (0, 'bad'), (0, 'ok-2')])
    rt = runtime_factory(fail_bodies=['bad'])
    conf = config(rt.port)
    conf['dispatch'].update({'on_failure': 'dead-letter', 'dead_letter_topic': dlq,
                             'retry': {'initial_backoff_ms': 100, 'max_backoff_ms': 2000,
                                       'max_attempts': 1}})
    ktr = ktrigger_factory(conf, env={
        'KTRIGGER_KAFKA_PRODUCER_PROPERTIES': 'topic.metadata.propagation.max.ms=500'})
    where = '%s [0] @1' % names.topic

    def refused():
        ktr.assert_running()
        n = kt.metric_sum(ktr.metrics(), 'ktrigger_produce_failures_total', kind='dead_letter',
                          error='permanent')
        return n and n >= 2

    kt.wait_for(refused, 30, 'two permanent refusals of the dead letter')
    assert kafka.committed(names.group, names.topic) in ({0: None}, {0: 1})
    lines = _lines(ktr.log(), where, 'dead letter to %s' % dlq)
    assert lines and all(' ERROR ' in line for line in lines), lines[:3]
    assert ktr.stop() == 0


@pytest.mark.parametrize('ordering', ('partition', 'key', 'none'))
def test_big_record_is_dead_lettered(kafka, kafka_bootstrap, names, config, runtime_factory,
                                     ktrigger_factory, ordering):
    """A record over 1,000,000 bytes that a Node runtime answers 413 (its 1 MiB body limit)
    reaches the dead-letter topic under on_failure = dead-letter, and the partition
    commits: the dead-letter producer takes what the consumer hands over."""
    dlq = names.topic + '-dlq'
    big = b'y' * 1100000
    kafka.create_topic(names.topic, 1, config=BIG_TOPIC)
    kafka.create_topic(dlq, 1, config=BIG_TOPIC)
    kafka.produce(names.topic, [(0, 'small-0'), (0, big), (0, 'small-2')],
                  producer_config={'message.max.bytes': 2000000})
    rt = runtime_factory(lang='node', env={'REQ_MB_LIMIT': '1'})  # upstream's limit
    conf = config(rt.port)
    conf['dispatch']['ordering'] = ordering
    conf['dispatch'].update({'on_failure': 'dead-letter', 'dead_letter_topic': dlq})
    ktr = ktrigger_factory(conf)
    kt.wait_for(_committed_to(kafka, names, {0: 3}), 30, 'committed to the end',
                describe=lambda: kafka.committed(names.group, names.topic))
    assert kt.metric_sum(ktr.metrics(), 'ktrigger_dead_lettered_total') == 1
    assert ktr.stop() == 0
    # Express answered 413 before the handler ran: only the small ones were recorded.
    assert sorted(c.offset for c in rt.calls()) == [0, 2]
    got = kt.read_topic(kafka_bootstrap, dlq, 1, names.group + '-reader')
    assert [(v == big, h.get('ktrigger-last-status')) for _, v, h in got] == [(True, b'413')]
    log = ktr.log()
    assert _lines(log, '%s [0] @1' % names.topic, 'written to dead-letter topic %s' % dlq)


def test_replies_held_bound_calls(kafka, names, config, runtime_factory, ktrigger_factory):
    """Replies waiting for Kafka's acknowledgement count in dispatch.partition_buffer_bytes:
    with 200 KiB replies and a 512 KiB bound a partition runs about three calls at once, not
    max_in_flight (64), whatever the ordering."""
    n = 60
    replies = names.topic + '-replies'
    kafka.create_topic(names.topic, 1)
    kafka.create_topic(replies, 1)
    kafka.produce(names.topic, [(0, 'r%d' % i) for i in range(n)])
    rt = runtime_factory(delay_ms=100, env={'REPLY_BYTES': str(200 * 1024)})
    conf = config(rt.port)
    conf['dispatch'].update({'reply_topic': replies, 'ordering': 'none', 'max_in_flight': 64,
                             'partition_buffer_bytes': 512 * 1024})
    ktr = ktrigger_factory(conf)
    kt.wait_for(_committed_to(kafka, names, {0: n}), 60, 'committed to the end',
                describe=lambda: kafka.committed(names.group, names.topic))
    assert kt.metric_sum(ktr.metrics(), 'ktrigger_replies_total') == n
    assert ktr.stop() == 0
    calls = rt.calls()
    assert len(calls) == n
    # 512 KiB / 200 KiB: at most 3 calls whose replies fit (one more may run while replies
    # are acknowledged at the edge); main ran all 60 at once.
    assert kt.max_concurrent(calls) <= 4, kt.max_concurrent(calls)
    assert kt.max_concurrent(calls) >= 2, 'no parallelism left: %d' % kt.max_concurrent(calls)
