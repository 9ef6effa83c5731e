"""Clean events right after a member of the group was killed with -9: the group is then
rebalancing (a new member joined) and waits up to session.timeout.ms for the dead one. A
SIGTERM of a survivor in that window still drains, commits (waiting until the group's join lets
the commit through) and exits 0, a SIGHUP re-join in that window commits before it leaves, and
the revoke that hands part of the survivor's partitions to the new member once the join
completes drains and commits them; no record that got a 2xx is delivered twice, in every
ordering.

The member killed with -9 (b) reads a topic of its own in the same group, so the survivor (a)
holds every partition of the test's topic when the new member (c) joins: the join then has to
revoke half of a's partitions, whatever order a and b joined in. (With one topic for both, a and
b could join in one generation with 3 partitions each, and c's join would revoke nothing.)
"""

import collections
import os
import signal
import time

import pytest

import kthelpers as kt

PARTITIONS = 6


@pytest.mark.parametrize('event', ('sigterm', 'rejoin', 'revoke'))
@pytest.mark.parametrize('ordering', ('partition', 'key', 'none'))
def test_clean_event_while_the_group_waits_for_a_dead_member(kafka, names, config,
                                                             runtime_factory, ktrigger_factory,
                                                             tmp_path, ordering, event):
    kafka.create_topic(names.topic, PARTITIONS)
    produced = kafka.produce(names.topic, [(i % PARTITIONS, 'rec %05d' % i, 'k%d' % (i % 7))
                                           for i in range(3000)])
    b_topic = names.topic + '-b'  # b's own: see the module's docstring
    kafka.create_topic(b_topic, 2)
    kafka.produce(b_topic, [(i % 2, 'b-rec %05d' % i, 'k%d' % (i % 7)) for i in range(3000)])
    runtimes = [runtime_factory(record_file=tmp_path / ('records-%d.jsonl' % i), delay_ms=3)
                for i in range(3)]
    # librdkafka's cgrp debug lines (log.level debug) tell when a member's JoinGroup is out.
    props = {'session.timeout.ms': '10000', 'heartbeat.interval.ms': '500', 'debug': 'cgrp'}

    def conf(rt):
        c = config(rt.port, properties=props)
        c['log']['level'] = 'debug'
        c['dispatch'].update({'ordering': ordering, 'max_in_flight': 16,
                              'partition_buffer_records': 40, 'drain_timeout_ms': 15000})
        return c

    a = ktrigger_factory(conf(runtimes[0]))
    b_conf = conf(runtimes[1])
    b_conf['kafka']['topics'] = [b_topic]
    b = ktrigger_factory(b_conf)
    kt.wait_for(lambda: all(len(rt.calls()) > 100 for rt in runtimes[:2]), 60,
                'both replicas working', describe=lambda: [len(rt.calls()) for rt in runtimes])
    kt.wait_for(lambda: kt.metric_sum(a.metrics(), 'ktrigger_assigned_partitions') == PARTITIONS,
                30, 'a holding every partition of the topic')
    b.proc.send_signal(signal.SIGKILL)
    b.proc.wait(10)
    b_calls = len([c for c in runtimes[1].calls() if not c.failed])
    # A new member joins: the group rebalances and waits for the dead one's session to end;
    # a's JoinGroup then waits at the broker, and so would a commit sent behind it.
    c = ktrigger_factory(conf(runtimes[2]))

    def a_join_state():
        lines = [x for x in a.log().splitlines() if 'changed join state' in x]
        return lines[-1].split(' -> ')[1].split()[0] if lines else None

    kt.wait_for(lambda: a_join_state() == 'wait-join', 20, 'a re-joining (its JoinGroup out)',
                describe=a_join_state)
    # More records while the group waits: a finishes them in the window, where its commits
    # cannot go through, so the event has finished records of its own to commit.
    produced += kafka.produce(names.topic, [(i % PARTITIONS, 'rec %05d' % i, 'k%d' % (i % 7))
                                            for i in range(3000, 4500)])
    t0 = time.monotonic()
    revokes = kt.metric_sum(a.metrics(), 'ktrigger_rebalances_total', type='revoke') or 0
    if event == 'rejoin':
        # A kafka.* change re-joins: drain, commit, leave, join again with a new consumer.
        new_conf = conf(runtimes[0])
        new_conf['kafka']['properties']['fetch.wait.max.ms'] = '20'
        new_conf['metrics'] = {'listen': '127.0.0.1:%d' % a.metrics_port}
        a.config_path.write_text(kt.render_config(new_conf))
        os.kill(a.pid, signal.SIGHUP)
        kt.wait_for(lambda: a.log().count('KAFKA: joining group') >= 2, 40,
                    'the re-join', describe=lambda: a.log()[-1500:])
    end = kafka.end_offsets(names.topic)
    if event == 'revoke':
        # a stays: when b's session ends the join completes and a's revoke hands some of its
        # partitions to c (cooperative-sticky); a drains and commits them first.
        kt.wait_for(lambda: a.assert_running() or
                    (kt.metric_sum(a.metrics(), 'ktrigger_rebalances_total', type='revoke')
                     or 0) > revokes, 40, 'a revoked partitions for c')
        kt.wait_for(lambda: (kt.metric_sum(c.metrics(), 'ktrigger_assigned_partitions') or 0)
                    >= 1, 40, 'c holding the partitions a handed over')
        kt.wait_for(lambda: kafka.committed(names.group, names.topic) == end, 120,
                    'a and c committed everything')
        assert kt.metric_sum(a.metrics(), 'ktrigger_assigned_partitions') < PARTITIONS
    assert a.stop(timeout=40) == 0, 'a clean SIGTERM must exit 0'
    took = time.monotonic() - t0
    a_log = a.log()
    kt.wait_for(lambda: kafka.committed(names.group, names.topic) == end, 120,
                'the last member committed everything')
    assert c.stop() == 0
    counts = collections.Counter(x.body for rt in runtimes for x in rt.calls() if not x.failed)
    lost = {r.value for r in produced} - set(counts)
    assert not lost, '%d lost' % len(lost)
    # b's crash re-delivers nothing of this topic (b read its own); everything a delivered
    # before its clean stop must not come again.
    a_bodies = {x.body for x in runtimes[0].calls() if not x.failed}
    a_dups = sorted(body for body in a_bodies if counts[body] > 1)
    print('%s %s: took %.1f s; duplicates of records a finished: %d; b delivered %d'
          % (event, ordering, took, len(a_dups), b_calls))
    assert 'final commit did not complete' not in a_log, a_log[-2000:]
    assert not a_dups, '%d records a finished were delivered again: %s' % (len(a_dups),
                                                                            a_dups[:5])
