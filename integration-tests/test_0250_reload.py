"""Configuration reload on SIGHUP: a dispatch setting applies live; a changed topic list re-joins
the group without losing or repeating a record; a broken file is refused with every error
named, and ktrigger goes on with the configuration it had."""

import os
import re
import signal

import pytest

import kthelpers as kt


def reloads(ktr, result):
    return kt.metric_sum(ktr.metrics(), 'ktrigger_config_reloads_total', result=result)


def config_hash(ktr):
    hashes = [lb['hash'] for n, lb, v in ktr.metrics() if n == 'ktrigger_config_info']
    assert len(hashes) == 1, hashes
    return hashes[0]


def rewrite_and_hup(ktr, conf):
    ktr.config_path.write_text(conf if isinstance(conf, str) else kt.render_config(conf))
    os.kill(ktr.pid, signal.SIGHUP)


def test_max_in_flight_applies_live(kafka, names, config, runtime_factory, ktrigger_factory):
    partitions, records = 4, 240
    kafka.create_topic(names.topic, partitions)
    rt = runtime_factory(delay_ms=100)
    conf = config(rt.port)
    conf['dispatch']['ordering'] = 'none'
    conf['dispatch']['max_in_flight'] = 2
    ktr = ktrigger_factory(conf)
    before_hash = config_hash(ktr)
    produced = kafka.produce(names.topic, [(i % partitions, 'live n%d' % i)
                                           for i in range(records)])

    kt.wait_for(lambda: len(rt.calls()) >= 20, 60, '20 calls at max_in_flight 2')
    early = rt.calls()
    assert kt.max_concurrent(early) <= 2, 'more than 2 calls at once before the reload'

    conf['dispatch']['max_in_flight'] = 16
    rewrite_and_hup(ktr, conf)
    kt.wait_for(lambda: 'reload: dispatch.max_in_flight changed: applied' in ktr.log(), 20,
                'the reload to be logged', describe=lambda: kt.tail(ktr.log_path, 10))
    n_at_reload = len(rt.calls())
    kt.wait_for(lambda: len(rt.calls()) >= records, 90, '%d calls' % records,
                describe=lambda: len(rt.calls()))
    later = rt.calls()[n_at_reload + 16:]
    assert kt.max_concurrent(later) > 2, 'max_in_flight 16 did not apply: at most %d at once' % (
        kt.max_concurrent(later))
    assert 're-join' not in ktr.log(), 'a dispatch setting must not re-join the group'
    assert reloads(ktr, 'applied') == 1
    assert config_hash(ktr) != before_hash

    # Nothing lost, nothing twice, and the offsets were committed.
    calls = rt.calls()
    assert sorted((c.partition, c.offset) for c in calls) == sorted(
        (r.partition, r.offset) for r in produced)
    kt.wait_for(lambda: kafka.committed(names.group, names.topic) ==
                kafka.end_offsets(names.topic), 30, 'offsets committed')
    assert ktr.stop() == 0


def test_topic_change_rejoins_without_loss_or_duplicates(kafka, names, config, runtime_factory,
                                                         ktrigger_factory):
    partitions, records = 3, 600
    topic_a, topic_b = names.topic, names.topic + '-b'
    kafka.create_topic(topic_a, partitions)
    kafka.create_topic(topic_b, partitions)
    rt = runtime_factory(delay_ms=5)
    conf = config(rt.port)
    conf['dispatch']['max_in_flight'] = 8
    conf['dispatch']['ordering'] = 'key'
    ktr = ktrigger_factory(conf)
    produced_a = kafka.produce(topic_a, [(i % partitions, 'a n%d' % i, 'k%d' % (i % 7))
                                         for i in range(records)])

    # Reload while records of topic a are in flight and buffered.
    kt.wait_for(lambda: len(rt.calls()) >= 50, 60, '50 calls of topic a')
    conf['kafka']['topics'] = [topic_a, topic_b]
    rewrite_and_hup(ktr, conf)
    kt.wait_for(lambda: 're-joining the group' in ktr.log(), 20, 'the re-join to be logged',
                describe=lambda: kt.tail(ktr.log_path, 10))
    assert len(rt.calls()) < records, 'all records were done before the reload: test too slow'
    produced_b = kafka.produce(topic_b, [(i % partitions, 'b n%d' % i) for i in range(records)])

    kt.wait_for(lambda: len(rt.calls()) >= 2 * records, 120, '%d calls' % (2 * records),
                describe=lambda: len(rt.calls()))
    # Once every offset is committed nothing is outstanding: a duplicate would have come first.
    for topic in (topic_a, topic_b):
        kt.wait_for(lambda t=topic: kafka.committed(names.group, t) == kafka.end_offsets(t), 30,
                    'offsets of %s committed' % topic)
    calls = rt.calls()
    assert not [c for c in calls if c.failed]
    for topic, produced in ((topic_a, produced_a), (topic_b, produced_b)):
        mine = [c for c in calls if c.topic == topic]
        got = sorted((c.partition, c.offset) for c in mine)
        want = sorted((r.partition, r.offset) for r in produced)
        assert got == want, 'topic %s across the re-join: %d calls for %d records, %d distinct' % (
            topic, len(got), len(want), len(set(got)))
        # ordering = key: each key's records in offset order.
        last = {}
        for c in mine:
            k = (c.partition, c.key)
            assert c.offset > last.get(k, -1), 'key %r out of order at %s' % (k, c)
            last[k] = c.offset
    assert reloads(ktr, 'applied') == 1
    assert ktr.stop() == 0


def test_broken_file_keeps_running_config(kafka, names, config, runtime_factory,
                                          ktrigger_factory):
    kafka.create_topic(names.topic, 1)
    rt = runtime_factory()
    conf = config(rt.port)
    ktr = ktrigger_factory(conf)
    before_hash = config_hash(ktr)
    kafka.produce(names.topic, [(0, 'before %d' % i) for i in range(5)])
    kt.wait_for(lambda: len(rt.calls()) >= 5, 60, '5 calls')

    good = kt.render_config(conf)
    broken = good.replace('drain_timeout_ms = 10000', 'drain_timeout_ms = -1;\n  max_in_fligth = 3')
    assert broken != good
    rewrite_and_hup(ktr, broken)
    kt.wait_for(lambda: 'still running on the previous one' in ktr.log(), 20,
                'the refused reload to be logged', describe=lambda: kt.tail(ktr.log_path, 10))
    log = ktr.log()
    path = str(ktr.config_path)
    line_drain = kt.line_of(broken, 'drain_timeout_ms = -1')
    line_typo = kt.line_of(broken, 'max_in_fligth')
    assert '%s:%d: dispatch: unknown key \'max_in_fligth\'' % (path, line_typo) in log, log
    assert '%s:%d: dispatch.drain_timeout_ms: -1 is outside 0..3600000' % (
        path, line_drain) in log, log
    assert reloads(ktr, 'invalid') == 1
    assert reloads(ktr, 'applied') == 0
    assert config_hash(ktr) == before_hash

    # Still consuming, on the old configuration.
    kafka.produce(names.topic, [(0, 'after %d' % i) for i in range(5)])
    kt.wait_for(lambda: len(rt.calls()) >= 10, 60, '10 calls')
    ktr.assert_running()

    # The same file again: nothing changed.
    rewrite_and_hup(ktr, good)
    kt.wait_for(lambda: reloads(ktr, 'unchanged') == 1, 20, 'an unchanged reload')
    assert ktr.stop() == 0


def test_reload_while_waiting_for_the_runtime(kafka, names, config, runtime_factory,
                                              ktrigger_factory):
    """A wrong runtime.port keeps ktrigger waiting before it joins; fixing the file and sending
    SIGHUP lets it start without a restart."""
    kafka.create_topic(names.topic, 1)
    rt = runtime_factory()
    conf = config(kt.free_port())  # nothing listens there
    conf['runtime']['wait_at_start'] = True
    ktr = ktrigger_factory(conf)
    kt.wait_for(lambda: 'waiting for the runtime' in ktr.log(), 20, 'waiting for the runtime')
    kafka.produce(names.topic, [(0, 'waited %d' % i) for i in range(5)])
    conf['runtime']['port'] = rt.port
    rewrite_and_hup(ktr, conf)
    kt.wait_for(lambda: len(rt.calls()) >= 5, 60, '5 calls after the reload',
                describe=lambda: kt.tail(ktr.log_path, 10))
    assert 'applied before joining' in ktr.log()
    assert reloads(ktr, 'applied') == 1
    assert ktr.stop() == 0


def test_rejoin_that_cannot_start_falls_back(kafka, names, config, runtime_factory,
                                             ktrigger_factory):
    """Settings librdkafka accepts one by one but cannot start with (a CA file that does not
    exist) pass validation; the re-join then joins again with the running configuration."""
    kafka.create_topic(names.topic, 1)
    rt = runtime_factory()
    conf = config(rt.port)
    ktr = ktrigger_factory(conf)
    kafka.produce(names.topic, [(0, 'before %d' % i) for i in range(5)])
    kt.wait_for(lambda: len(rt.calls()) >= 5, 60, '5 calls')
    bad = {k: (dict(v) if isinstance(v, dict) else v) for k, v in conf.items()}
    bad['kafka']['properties'] = dict(conf['kafka']['properties'])
    bad['kafka']['properties'].update({'security.protocol': 'ssl',
                                       'ssl.ca.location': '/nonexistent/ca.pem'})
    rewrite_and_hup(ktr, bad)
    kt.wait_for(lambda: 'joining again with the running configuration' in ktr.log(), 30,
                'the fallback to be logged', describe=lambda: kt.tail(ktr.log_path, 10))
    assert reloads(ktr, 'invalid') == 1
    kafka.produce(names.topic, [(0, 'after %d' % i) for i in range(5)])
    kt.wait_for(lambda: len(rt.calls()) >= 10, 60, '10 calls after the fallback')
    calls = rt.calls()
    assert sorted(c.offset for c in calls) == list(range(10)), 'lost or repeated records'
    ktr.assert_running()
    assert ktr.stop() == 0


def test_changed_back_while_rejoin_waits(kafka, names, config, runtime_factory,
                                         ktrigger_factory):
    """A re-join waits for the buffered records; a second SIGHUP with the original file
    cancels it: no re-join happens, fetching resumes, nothing is lost or repeated."""
    kafka.create_topic(names.topic, 1)
    kafka.create_topic(names.topic + '-b', 1)
    rt = runtime_factory(delay_ms=20)
    conf = config(rt.port)
    ktr = ktrigger_factory(conf)
    first = kafka.produce(names.topic, [(0, 'first %d' % i) for i in range(200)])
    kt.wait_for(lambda: len(rt.calls()) >= 20, 60, '20 calls')

    original = ktr.config_path.read_text()
    changed = dict(conf, kafka=dict(conf['kafka'], topics=[names.topic, names.topic + '-b']))
    rewrite_and_hup(ktr, changed)
    kt.wait_for(lambda: 're-joining the group' in ktr.log(), 20, 'the re-join to wait')
    assert len(rt.calls()) < 200, 'the buffer was done before the second reload: test too slow'
    rewrite_and_hup(ktr, original)
    kt.wait_for(lambda: 're-join is cancelled' in ktr.log(), 20, 'the re-join to be cancelled',
                describe=lambda: kt.tail(ktr.log_path, 10))
    more = kafka.produce(names.topic, [(0, 'more %d' % i) for i in range(20)])
    kt.wait_for(lambda: len(rt.calls()) >= 220, 60, '220 calls',
                describe=lambda: len(rt.calls()))
    kt.assert_exactly_once_in_order(rt.calls(), kt.expected_by_partition(first + more), 1,
                                    'records around a cancelled re-join')
    assert 'left the group' not in ktr.log(), 'the cancelled re-join left the group'
    assert ktr.stop() == 0


# (id, make the bad text from (good text, tmp_path), needle of its line, key, reason regex)
def _fifo(tmp_path):
    path = tmp_path / 'fifo'
    os.mkfifo(path)
    return path


def _dir(tmp_path):
    path = tmp_path / 'a-dir'
    path.mkdir()
    return path


def _empty(tmp_path):
    path = tmp_path / 'empty-secret'
    path.write_text('')
    return path


def _secret(text, ref):
    return text.replace('("fetch.wait.max.ms", "10")',
                        '("fetch.wait.max.ms", "10"),\n    ("sasl.password", "%s")' % ref)


BAD_RELOADS = [
    ('include-directory', lambda t, p: t + '@include "%s"\n' % _dir(p), '@include',
     '@include', r'cannot read "[^"]*": it is a directory'),
    ('secret-fifo', lambda t, p: _secret(t, '${file:%s}' % _fifo(p)), 'sasl.password',
     'kafka.properties', r'cannot read \S+: it is a FIFO'),
    ('secret-directory', lambda t, p: _secret(t, '${file:%s}' % _dir(p)), 'sasl.password',
     'kafka.properties', r'cannot read \S+: it is a directory'),
    ('secret-empty', lambda t, p: _secret(t, '${file:%s}' % _empty(p)), 'sasl.password',
     'kafka.properties', r'\S+ is empty'),
]


@pytest.mark.parametrize('case,make,needle,key,reason', BAD_RELOADS,
                         ids=[c[0] for c in BAD_RELOADS])
def test_unreadable_input_on_reload_keeps_running(kafka, names, config, runtime_factory,
                                                  ktrigger_factory, tmp_path, case, make,
                                                  needle, key, reason):
    """SIGHUP with a file ktrigger must not read (libconfig exits on an @include of a directory,
    a FIFO blocks, a directory or an empty file is no secret): the error is logged as
    file:line: key: reason, the running configuration stays, /healthz stays 200 (the loop is
    not blocked) and records keep flowing."""
    kafka.create_topic(names.topic, 1)
    rt = runtime_factory()
    conf = config(rt.port)
    ktr = ktrigger_factory(conf)
    before_hash = config_hash(ktr)
    kafka.produce(names.topic, [(0, 'before %d' % i) for i in range(5)])
    kt.wait_for(lambda: len(rt.calls()) >= 5, 60, '5 calls')

    bad = make(kt.render_config(conf), tmp_path)
    rewrite_and_hup(ktr, bad)
    kt.wait_for(lambda: 'still running on the previous one' in ktr.log(), 20,
                'the refused reload to be logged', describe=lambda: kt.tail(ktr.log_path, 10))
    ktr.assert_running()
    pattern = r'reload: %s:%d: %s: %s' % (re.escape(str(ktr.config_path)),
                                          kt.line_of(bad, needle), re.escape(key), reason)
    assert re.search(pattern, ktr.log()), (pattern, kt.tail(ktr.log_path, 10))
    assert reloads(ktr, 'invalid') == 1
    assert reloads(ktr, 'applied') == 0
    assert config_hash(ktr) == before_hash
    status, _ = kt.http_get('http://127.0.0.1:%d/healthz' % ktr.metrics_port, timeout=2)
    assert status == 200, '/healthz %s after the refused reload' % status

    kafka.produce(names.topic, [(0, 'after %d' % i) for i in range(5)])
    kt.wait_for(lambda: len(rt.calls()) >= 10, 30, '10 calls after the refused reload')
    ktr.assert_running()
    assert ktr.stop() == 0
