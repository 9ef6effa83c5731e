"""Batched delivery (dispatch.batch.*), against a batch-aware Python runtime
(runtimes/{python,node,ruby}/handlers/batch_recorder.*): several records per POST in the CloudEvents
JSON batch format, per-entry results in Dapr's bulk subscribe form.

- exact delivery and per-lane order with `partition` and `key` ordering; a `partition` batch
  is consecutive records of one partition; max_records and max_in_flight (requests) hold;
  function_calls_total counts records, ktrigger_batch_records counts requests;
- partial failure: an entry answered RETRY is sent again with its lane's later entries (and
  only after it), one answered DROP is given up (on_failure = skip) and never sent again;
- an unreadable per-entry answer fails the whole batch, which is sent again;
- max_wait_ms: a batch that is not full waits for its oldest record that long;
- a record bigger than max_bytes goes alone, every other body stays under max_bytes;
- batching switched on by SIGHUP applies live."""

import os
import signal
import time

import pytest

import kthelpers as kt


def text(v):
    return v.decode() if isinstance(v, bytes) else v


def start_batch_runtime(runtime_factory, tmp_path, lang='python', **env):
    record = tmp_path / 'batches.jsonl'
    environ = {'MOD_NAME': 'batch_recorder'}
    environ.update({k: str(v) for k, v in env.items()})
    rt = runtime_factory(record_file=record, env=environ, lang=lang)
    return rt, record


def requests(record):
    return sorted(kt.read_jsonl(record), key=lambda r: r['seq'])


def entries(reqs):
    return [dict(e, seq=r['seq'], answer=(r['answer'].get(e['id'])
                                          if isinstance(r.get('answer'), dict) else r.get('answer')))
            for r in reqs for e in r['events']]


def succeeded(record):
    return {(e['partition'], e['offset']) for e in entries(requests(record))
            if e['answer'] in ('SUCCESS', 'empty')}


def batch_conf(config, rt, ordering='partition', max_records=20, max_bytes=1048576,
               max_wait_ms=0, max_in_flight=4, **dispatch):
    conf = config(rt.port)
    conf['dispatch'].update({'ordering': ordering, 'max_in_flight': max_in_flight,
                             'batch': {'max_records': max_records, 'max_bytes': max_bytes,
                                       'max_wait_ms': max_wait_ms}})
    conf['dispatch'].update(dispatch)
    return conf


@pytest.mark.parametrize('lang', kt.LANGS)
@pytest.mark.parametrize('ordering', ['partition', 'key'])
def test_exact_delivery_and_lane_order(ordering, lang, kafka, names, config, runtime_factory,
                                       ktrigger_factory, tmp_path):
    parts, per, keys = 2, 150, 5
    kafka.create_topic(names.topic, parts)
    recs = [{'partition': p, 'value': 'b p%d n%d' % (p, n), 'key': ('k%d' % (n % keys)).encode()}
            for p in range(parts) for n in range(per)]
    produced = kafka.produce(names.topic, recs)
    rt, record = start_batch_runtime(runtime_factory, tmp_path, lang=lang, HANDLER_DELAY_MS=5)
    ktr = ktrigger_factory(batch_conf(config, rt, ordering=ordering, max_records=20,
                                      max_in_flight=3))
    total = parts * per
    kt.wait_for(lambda: len(succeeded(record)) >= total, 60, '%d records' % total,
                describe=lambda: len(succeeded(record)))
    kt.wait_for(lambda: kafka.committed(names.group, names.topic) ==
                {p: per for p in range(parts)}, 30, 'committed to the end')
    samples = ktr.metrics()
    assert ktr.stop() == 0

    reqs = requests(record)
    evs = entries(reqs)
    assert all(r['batch'] and r['content_type'] == 'application/cloudevents-batch+json'
               for r in reqs)
    # Exactly once (every answer was SUCCESS), with the value and key of each record.
    assert sorted((e['partition'], e['offset']) for e in evs) == sorted(
        (r.partition, r.offset) for r in produced)
    by_pos = {(r.partition, r.offset): r for r in produced}
    for e in evs:
        r = by_pos[(e['partition'], e['offset'])]
        assert e['body'] == text(r.value) and e['key'] == text(r.key)
        assert e['id'] == '%s/%d/%d' % (names.topic, e['partition'], e['offset'])
    sizes = [len(r['events']) for r in reqs]
    assert max(sizes) <= 20 and max(sizes) > 1, sizes
    # One partition per batch; max_in_flight counts requests.
    assert all(len({e['partition'] for e in r['events']}) == 1 for r in reqs)
    assert max(r['concurrent'] for r in reqs) <= 3
    for p in range(parts):
        if ordering == 'partition':
            offs = [e['offset'] for e in evs if e['partition'] == p]
            assert offs == sorted(offs), 'partition %d out of order' % p
            for r in reqs:
                o = [e['offset'] for e in r['events']]
                assert o == list(range(o[0], o[0] + len(o))), 'not consecutive: %s' % o
        else:
            for k in range(keys):
                offs = [e['offset'] for e in evs
                        if e['partition'] == p and e['key'] == 'k%d' % k]
                assert offs == sorted(offs), 'partition %d key k%d out of order: %s' % (p, k, offs)
    if ordering == 'key':
        # Heads of distinct keys shared a batch.
        assert any(len({e['key'] for e in r['events']}) > 1 for r in reqs)
    assert kt.metric_sum(samples, 'function_calls_total') == total
    assert kt.metric_sum(samples, 'ktrigger_batch_records_count') == len(reqs)
    assert kt.metric_sum(samples, 'ktrigger_batch_records_sum') == total
    assert kt.metric_sum(samples, 'ktrigger_calls_total', outcome='success') == total


@pytest.mark.parametrize('lang', kt.LANGS)
def test_partial_failure_retry_and_drop(lang, kafka, names, config, runtime_factory, ktrigger_factory,
                                        tmp_path):
    n = 30
    kafka.create_topic(names.topic, 1)
    kafka.produce(names.topic, [(0, 'e%d' % i) for i in range(n)])
    rt, record = start_batch_runtime(runtime_factory, tmp_path, lang=lang, RETRY_TIMES='e5=1',
                                     DROP_BODIES='e12')
    ktr = ktrigger_factory(batch_conf(config, rt, max_records=10, on_failure='skip'))
    want = set((0, i) for i in range(n)) - {(0, 12)}
    kt.wait_for(lambda: succeeded(record) >= want, 60, 'all but e12 succeeded',
                describe=lambda: sorted(want - succeeded(record)))
    kt.wait_for(lambda: kafka.committed(names.group, names.topic) == {0: n}, 30,
                'committed to the end (the dropped record is skipped)')
    samples = ktr.metrics()
    assert ktr.stop() == 0

    evs = entries(requests(record))
    sent = [e['offset'] for e in evs]
    # e5 was answered RETRY once: it and the entries after it in its batch were sent again,
    # after it; nothing before it was.
    first = [e for e in evs if e['offset'] == 5]
    assert [e['answer'] for e in first] == ['RETRY', 'SUCCESS'], first
    retry_seq = first[1]['seq']
    first_seq = first[0]['seq']
    same_batch_after = [e['offset'] for e in evs if e['seq'] == first_seq and e['offset'] > 5]
    assert same_batch_after, 'e5 was the last of its batch: the test needs entries after it'
    for off in same_batch_after:
        later = [e for e in evs if e['offset'] == off and e['seq'] > first_seq]
        assert later and later[0]['seq'] >= retry_seq, 'e%d not sent again after e5' % off
    for off in range(5):
        assert sent.count(off) == 1, 'e%d sent %d times' % (off, sent.count(off))
    # Each record's last delivery (the one taken as done) in offset order.
    last = {}
    for e in evs:
        last[e['offset']] = e['seq']
    seqs = [last[o] for o in sorted(last)]
    assert seqs == sorted(seqs), seqs
    # DROP: given up at once (skip), never sent again.
    assert sent.count(12) == 1
    assert kt.metric_sum(samples, 'ktrigger_skipped_total') == 1
    assert kt.metric_sum(samples, 'ktrigger_calls_total', outcome='http_4xx') == 1
    assert kt.metric_sum(samples, 'ktrigger_calls_total', outcome='http_5xx') == 1
    # function_calls_total counts records sent, the ones sent again included.
    assert kt.metric_sum(samples, 'function_calls_total') == len(evs)


@pytest.mark.parametrize('lang', kt.LANGS)
def test_malformed_answer_fails_the_whole_batch(lang, kafka, names, config, runtime_factory,
                                                ktrigger_factory, tmp_path):
    n = 8
    kafka.create_topic(names.topic, 1)
    kafka.produce(names.topic, [(0, 'm%d' % i) for i in range(n)])
    rt, record = start_batch_runtime(runtime_factory, tmp_path, lang=lang, MALFORMED_NTH='1')
    # max_wait_ms: all 8 in the first batch.
    ktr = ktrigger_factory(batch_conf(config, rt, max_records=n, max_wait_ms=3000))
    kt.wait_for(lambda: len(succeeded(record)) >= n, 60, 'all succeeded',
                describe=lambda: requests(record))
    kt.wait_for(lambda: kafka.committed(names.group, names.topic) == {0: n}, 30, 'committed')
    samples = ktr.metrics()
    assert ktr.stop() == 0
    reqs = requests(record)
    assert reqs[0]['answer'] == 'malformed' and len(reqs[0]['events']) == n
    # Every entry went again: none was taken as done from an answer that could not be read.
    assert sorted(e['offset'] for e in entries(reqs[1:])) == list(range(n))
    assert kt.metric_sum(samples, 'ktrigger_calls_total', outcome='http_other') == n
    assert 'unreadable per-entry statuses' in ktr.log()


def test_max_wait_ms_is_honoured(kafka, names, config, runtime_factory, ktrigger_factory,
                                 tmp_path):
    kafka.create_topic(names.topic, 1)
    rt, record = start_batch_runtime(runtime_factory, tmp_path, EMPTY_ANSWER=1)
    ktr = ktrigger_factory(batch_conf(config, rt, max_records=100, max_wait_ms=1500))
    kt.wait_for(lambda: kt.metric_sum(ktr.metrics(), 'ktrigger_assigned_partitions') == 1, 30,
                'partition assigned')
    t0 = time.time()
    kafka.produce(names.topic, [(0, 'w%d' % i) for i in range(3)])
    kt.wait_for(lambda: len(succeeded(record)) >= 3, 30, '3 records')
    reqs = requests(record)
    assert len(reqs) == 1 and len(reqs[0]['events']) == 3, [len(r['events']) for r in reqs]
    waited = reqs[0]['time'] - t0
    assert 1.3 <= waited <= 5, 'sent %.3f s after producing, max_wait_ms is 1.5 s' % waited
    assert kt.metric_sum(ktr.metrics(), 'ktrigger_batch_records_bucket', le='5') == 1
    assert ktr.stop() == 0


def test_record_bigger_than_max_bytes_goes_alone(kafka, names, config, runtime_factory,
                                                 ktrigger_factory, tmp_path):
    kafka.create_topic(names.topic, 1)
    big = 'B' * 5000
    values = ['s%d' % i for i in range(10)] + [big] + ['t%d' % i for i in range(10)]
    kafka.produce(names.topic, [(0, v) for v in values])
    rt, record = start_batch_runtime(runtime_factory, tmp_path)
    ktr = ktrigger_factory(batch_conf(config, rt, max_records=50, max_bytes=2048,
                                      max_wait_ms=2000))
    kt.wait_for(lambda: len(succeeded(record)) >= len(values), 30, 'all records')
    kt.wait_for(lambda: kafka.committed(names.group, names.topic) == {0: len(values)}, 30,
                'committed')
    assert ktr.stop() == 0
    reqs = requests(record)
    alone = [r for r in reqs if any(e['body'] == big for e in r['events'])]
    assert len(alone) == 1 and len(alone[0]['events']) == 1, alone
    others = [r for r in reqs if r is not alone[0]]
    assert all(r['bytes'] <= 2048 for r in others), [r['bytes'] for r in others]
    assert any(len(r['events']) > 1 for r in others)
    assert [e['body'] for e in entries(reqs)] == values


def test_batching_switched_on_by_reload(kafka, names, config, runtime_factory, ktrigger_factory,
                                        tmp_path):
    kafka.create_topic(names.topic, 1)
    rt, record = start_batch_runtime(runtime_factory, tmp_path)
    conf = batch_conf(config, rt, max_records=0)
    ktr = ktrigger_factory(conf)
    kafka.produce(names.topic, [(0, 'r%d' % i) for i in range(5)])
    kt.wait_for(lambda: len(requests(record)) >= 5, 30, '5 single-record requests')
    assert all(not r['batch'] for r in requests(record))
    conf['dispatch']['batch'] = {'max_records': 10, 'max_bytes': 1048576, 'max_wait_ms': 1000}
    ktr.config_path.write_text(kt.render_config(conf))
    os.kill(ktr.pid, signal.SIGHUP)
    kt.wait_for(lambda: kt.metric_sum(ktr.metrics(), 'ktrigger_config_reloads_total',
                                      result='applied') == 1, 20, 'reload applied',
                describe=lambda: [s for s in ktr.metrics() if 'reload' in s[0]])
    kafka.produce(names.topic, [(0, 'q%d' % i) for i in range(6)])
    kt.wait_for(lambda: len(succeeded(record)) >= 6, 30, '6 batched records')
    batched = [r for r in requests(record) if r['batch']]
    assert len(batched) == 1 and [e['body'] for e in batched[0]['events']] == [
        'q%d' % i for i in range(6)]
    kt.wait_for(lambda: kafka.committed(names.group, names.topic) == {0: 11}, 30, 'committed')
    assert ktr.stop() == 0


def test_shutdown_sends_a_waiting_batch(kafka, names, config, runtime_factory, ktrigger_factory,
                                        tmp_path):
    """A drain means done: a batch waiting for max_wait_ms (here 60 s, past the 10 s drain
    timeout) is sent at once when the shutdown starts, and committed."""
    kafka.create_topic(names.topic, 1)
    rt, record = start_batch_runtime(runtime_factory, tmp_path)
    ktr = ktrigger_factory(batch_conf(config, rt, max_records=100, max_wait_ms=60000))
    kafka.produce(names.topic, [(0, 'h%d' % i) for i in range(4)])
    kt.wait_for(lambda: kt.metric_sum(ktr.metrics(), 'ktrigger_buffered_records') == 4, 30,
                '4 records buffered', describe=lambda: [s for s in ktr.metrics()
                                                        if 'buffered' in s[0]])
    assert requests(record) == []  # waiting for more
    t0 = time.time()
    assert ktr.stop() == 0
    assert time.time() - t0 < 8, 'the shutdown waited for max_wait_ms'
    reqs = requests(record)
    assert [[e['body'] for e in r['events']] for r in reqs] == [['h0', 'h1', 'h2', 'h3']]
    assert kafka.committed(names.group, names.topic) == {0: 4}


def test_drain_timeout_cancels_a_batch_in_flight(kafka, names, config, runtime_factory,
                                                 ktrigger_factory, tmp_path):
    """A batch still running at the drain deadline is cancelled with its partition: none of
    its records is committed, ktrigger exits 0 (under ASan: nothing leaked, nothing used after
    it was freed)."""
    kafka.create_topic(names.topic, 1)
    rt, record = start_batch_runtime(runtime_factory, tmp_path, HANDLER_DELAY_MS=4000)
    ktr = ktrigger_factory(batch_conf(config, rt, max_records=10, max_wait_ms=200,
                                      drain_timeout_ms=300))
    kafka.produce(names.topic, [(0, 'c%d' % i) for i in range(5)])
    kt.wait_for(lambda: kt.metric_sum(ktr.metrics(), 'ktrigger_in_flight') == 1, 30,
                'the batch in flight')
    t0 = time.time()
    assert ktr.stop() == 0
    assert time.time() - t0 < 3.5, 'the shutdown waited for the batch'
    assert kafka.committed(names.group, names.topic) in (None, {}, {0: 0}, {0: None}), \
        kafka.committed(names.group, names.topic)
    assert 'stopped cleanly' in ktr.log()


def test_key_ordering_retry_holds_only_its_key(kafka, names, config, runtime_factory,
                                               ktrigger_factory, tmp_path):
    """With `key` ordering, an entry answered RETRY holds back only its key: the other keys'
    entries in the same batch are done (sent once); the retry goes with its key's later
    entries only."""
    kafka.create_topic(names.topic, 1)
    recs = [{'partition': 0, 'value': '%s%d' % (k, i), 'key': k.encode()}
            for i in range(6) for k in ('a', 'b')]  # a0 b0 a1 b1 ...
    kafka.produce(names.topic, recs)
    rt, record = start_batch_runtime(runtime_factory, tmp_path, RETRY_TIMES='a1=1')
    ktr = ktrigger_factory(batch_conf(config, rt, ordering='key', max_records=20,
                                      max_wait_ms=2000))
    kt.wait_for(lambda: len(succeeded(record)) >= 12, 30, 'all 12 records',
                describe=lambda: requests(record))
    kt.wait_for(lambda: kafka.committed(names.group, names.topic) == {0: 12}, 30, 'committed')
    assert ktr.stop() == 0
    reqs = requests(record)
    evs = entries(reqs)
    first = [e for e in evs if e['body'] == 'a1'][0]
    assert first['answer'] == 'RETRY'
    bodies = [e['body'] for e in evs]
    for i in range(6):
        assert bodies.count('b%d' % i) == 1, 'b%d sent %d times' % (i, bodies.count('b%d' % i))
    assert bodies.count('a0') == 1
    # a1 and the a-records after it in its batch went again, after a1, with no b-record.
    retry = [r for r in reqs if r['seq'] > first['seq'] and
             any(e['body'] == 'a1' for e in r['events'])]
    assert retry, 'a1 was not sent again'
    assert all(e['key'] == 'a' for e in retry[0]['events']), retry[0]['events']
    assert retry[0]['events'][0]['body'] == 'a1'
    last = {}
    for e in evs:
        last[e['body']] = e['seq']
    for k in 'ab':
        seqs = [last['%s%d' % (k, i)] for i in range(6)]
        assert seqs == sorted(seqs), (k, seqs)
