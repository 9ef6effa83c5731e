"""Leaving the group while the broker does not answer keeps /healthz honest.

A shutdown whose broker stopped answering (its process stopped, connections still open)
used to block the loop in rd_kafka_consumer_close() for as long as librdkafka waited for the
coordinator, with no heartbeat: /healthz answered 503 past its stall limit and a kubelet
would have restarted the pod in the middle of its shutdown. The close is now asynchronous,
served in short steps with the heartbeat between them, and bounded (10 s); librdkafka's
destroy, which then still waits for the requests out, runs on a thread of its own while the
loop thread keeps beating.

This test stops a broker: it starts its own (kafka.sh with its own KT_KAFKA_DIR), never the
shared one.
"""

import os
import shutil
import signal
import subprocess
import time
from pathlib import Path

import pytest
from confluent_kafka.admin import AdminClient

import kthelpers as kt

KAFKA_SH = Path(__file__).parent / 'kafka' / 'kafka.sh'
RECORDS = 20


@pytest.fixture
def own_broker(tmp_path_factory):
    """(bootstrap, pid) of a broker of this test's own, stopped at the end."""
    state = tmp_path_factory.mktemp('own-kafka')
    env = dict(os.environ, KT_KAFKA_DIR=str(state))
    r = subprocess.run([str(KAFKA_SH), 'start'], env=env, capture_output=True, text=True,
                       timeout=180)
    if r.returncode != 0:
        pytest.fail('own broker did not start: %s' % r.stderr[-2000:])
    pid = int((state / 'pid').read_text())
    try:
        yield r.stdout.strip().splitlines()[-1], pid
    finally:
        try:
            os.kill(pid, signal.SIGCONT)
        except ProcessLookupError:
            pass
        subprocess.run([str(KAFKA_SH), 'stop'], env=env, capture_output=True, timeout=120)
        shutil.rmtree(state, ignore_errors=True)


def test_healthz_stays_200_while_leaving_a_stalled_broker(own_broker, names, runtime_factory,
                                                          ktrigger_factory, tmp_path):
    bootstrap, broker_pid = own_broker
    kafka = kt.Kafka(bootstrap, AdminClient({'bootstrap.servers': bootstrap}))
    try:
        kafka.create_topic(names.topic, 1)
        kafka.produce(names.topic, [(0, 'r%02d' % i, None) for i in range(RECORDS)])
        rt = runtime_factory(record_file=tmp_path / 'records.jsonl')
        conf = kt.base_config(bootstrap, [names.topic], rt.port, kt.free_port(),
                              group_id=names.group,
                              properties={'session.timeout.ms': '45000'})
        conf['dispatch']['drain_timeout_ms'] = 1000
        k = ktrigger_factory(conf)
        kt.wait_for(lambda: kafka.committed(names.group, names.topic) == {0: RECORDS}, 30,
                    'all %d records delivered and committed' % RECORDS)
        healthz = 'http://127.0.0.1:%d/healthz' % k.metrics_port

        os.kill(broker_pid, signal.SIGSTOP)  # connections stay open; nothing answers
        t0 = time.monotonic()
        k.proc.send_signal(signal.SIGTERM)
        answers = []  # (s since SIGTERM, status, wall-clock time the answer came)
        while k.proc.poll() is None and time.monotonic() - t0 < 120:
            status, _ = kt.http_get(healthz, timeout=2)
            if k.proc.poll() is None:
                answers.append((round(time.monotonic() - t0, 1), status, time.time()))
            time.sleep(0.5)
        took = time.monotonic() - t0
        os.kill(broker_pid, signal.SIGCONT)
        rc = k.proc.wait(30)
        # The metrics server stops after the loop ended ("stopped cleanly"), and the process
        # exits after it (a sanitizer's leak check at exit takes a second or more on a busy
        # machine): no connection is fine from then on, never before.
        stopped = kt.log_time(k.log(), 'stopped cleanly')
        bad = [(t, s) for t, s, wall in answers
               if s != 200 and not (s is None and stopped is not None and wall >= stopped)]
        print('shutdown with a stalled broker: exit %s after %.1f s; /healthz answers not 200: '
              '%s (of %d)' % (rc, took, bad[:5], len(answers)))
        assert not bad, '/healthz not 200 while shutting down: %s' % bad[:10]
        assert rc == 0, 'exit status %s' % rc
        # librdkafka's destroy waits for the requests still out (up to session.timeout.ms).
        assert took < 45 + 20, 'the shutdown took %.1f s' % took
        assert 'leaving the group took more than' in k.log()
    finally:
        kafka.close()


def test_final_commit_not_through_exits_0_saying_how_many_come_again(own_broker, names,
                                                                     runtime_factory,
                                                                     ktrigger_factory,
                                                                     tmp_path):
    """The delivery table's row "final commit not through by the deadline": a clean shutdown
    whose broker stops answering before its final commit still exits 0, with one WARN giving
    how many finished records will come again ("up to"); the next owner then delivers at most
    those, each once, and nothing is lost. auto.commit.interval.ms = 0: only drains commit, so
    all the records are finished and uncommitted when the broker stops.

    The final commit is sent before the deadline and waits, unread, in the stopped broker's
    socket buffer. Once resumed, the broker either expires the old member's session first
    (the commit is refused: all RECORDS come again, the usual case) or reads the commit first
    and applies it (none come again: seen in a fresh-clone run on a loaded machine).
    Which one is known once the next owner has its assignment (the old generation's commit
    cannot land after it), and a record produced then, delivered in order after any re-sent
    ones, marks the end of what the next owner delivers."""
    bootstrap, broker_pid = own_broker
    kafka = kt.Kafka(bootstrap, AdminClient({'bootstrap.servers': bootstrap}))
    props = {'session.timeout.ms': '6000', 'heartbeat.interval.ms': '500',
             'auto.commit.interval.ms': '0'}
    try:
        kafka.create_topic(names.topic, 1)
        kafka.produce(names.topic, [(0, 'r%02d' % i, None) for i in range(RECORDS)])
        rt = runtime_factory(record_file=tmp_path / 'records-1.jsonl')
        conf = kt.base_config(bootstrap, [names.topic], rt.port, kt.free_port(),
                              group_id=names.group, properties=props)
        conf['dispatch']['drain_timeout_ms'] = 1000
        k = ktrigger_factory(conf)
        kt.wait_for(lambda: len([c for c in rt.calls() if not c.failed]) == RECORDS, 30,
                    'all %d records answered' % RECORDS)
        assert kafka.committed(names.group, names.topic) == {0: None}

        os.kill(broker_pid, signal.SIGSTOP)
        try:
            k.proc.send_signal(signal.SIGTERM)
            rc = k.proc.wait(90)
        finally:
            os.kill(broker_pid, signal.SIGCONT)
        log = k.log()
        warns = [line for line in log.splitlines()
                 if 'the final commit did not complete in time' in line]
        assert rc == 0, 'exit status %s' % rc
        assert len(warns) == 1 and ' WARN ' in warns[0], warns or kt.tail(k.log_path)
        assert 'up to %d finished records will be delivered again' % RECORDS in warns[0], warns

        rt2 = runtime_factory(record_file=tmp_path / 'records-2.jsonl')
        conf2 = kt.base_config(bootstrap, [names.topic], rt2.port, kt.free_port(),
                               group_id=names.group, properties=props)
        k2 = ktrigger_factory(conf2)
        kt.wait_for(lambda: kt.metric_sum(k2.metrics(), 'ktrigger_assigned_partitions') == 1,
                    60, 'the next owner assigned')
        landed = kafka.committed(names.group, names.topic) == {0: RECORDS}
        last = 'r%02d' % RECORDS
        kafka.produce(names.topic, [(0, last, None)])
        kt.wait_for(lambda: any(c.body == last and not c.failed for c in rt2.calls()), 60,
                    'the next owner delivering %s' % last)
        assert k2.stop() == 0
        assert kafka.committed(names.group, names.topic) == {0: RECORDS + 1}
        again = [c.body for c in sorted(rt2.calls(), key=lambda c: c.seq) if not c.failed]
        print('the final commit %s after the broker resumed: %d delivered again' % (
            'landed' if landed else 'was refused', len(again) - 1))
        want = [] if landed else ['r%02d' % i for i in range(RECORDS)]
        assert again == want + [last], (landed, again)
    finally:
        kafka.close()
