"""A call past FUNC_TIMEOUT: ktrigger waits runtime.timeout_s plus runtime.timeout_grace_ms, so
the runtime's own 408 is the outcome it sees (not its own timeout, which used to fire in the
same millisecond).  And a runtime that exits after its 408 (the real Go runtime and Ruby's
function proxy do; restarted here on the same port, as Kubernetes restarts the container)
cuts the calls in progress: each of those may have run the handler, so each is an attempt and a
function call, also when curl's re-send of it then finds nothing listening."""

import threading

import pytest

import kthelpers as kt

SLOW = 'slow'


def dead_letters(kafka_bootstrap, dlq, group):
    return {v.decode(): h for _, v, h in kt.read_topic(kafka_bootstrap, dlq, 1, group + '-dlq')}


@pytest.mark.parametrize('ordering', ('partition', 'key', 'none'))
def test_runtime_408_is_what_ktrigger_sees(kafka, kafka_bootstrap, names, config,
                                           runtime_factory, ktrigger_factory, ordering):
    dlq = names.topic + '-dlq'
    kafka.create_topic(names.topic, 1)
    kafka.create_topic(dlq, 1)
    kafka.produce(names.topic, [(0, 'before'), (0, SLOW), (0, 'after')])
    rt = runtime_factory(func_timeout=1, sleep_bodies={SLOW: 2500})
    conf = config(rt.port)
    conf['dispatch']['ordering'] = ordering
    conf['runtime']['timeout_s'] = 1  # = FUNC_TIMEOUT; timeout_grace_ms is left at its default
    conf['dispatch'].update({'on_failure': 'dead-letter', 'dead_letter_topic': dlq,
                             'retry': {'initial_backoff_ms': 50, 'max_backoff_ms': 200,
                                       'max_attempts': 2}})
    ktr = ktrigger_factory(conf)
    end = kafka.end_offsets(names.topic)
    kt.wait_for(lambda: kafka.committed(names.group, names.topic) == end, 60,
                'committed == end offsets')
    samples = ktr.metrics()

    def outcome(o):
        return kt.metric_sum(samples, 'ktrigger_calls_total', outcome=o)

    assert (outcome('http_4xx'), outcome('timeout')) == (2, 0), \
        'the runtime answered 408 twice; ktrigger must see it, not time out itself'
    assert outcome('success') == 2
    log = ktr.log()
    assert 'attempt 1: runtime answered 408' in log, kt.tail(ktr.log_path)
    assert ktr.stop() == 0

    h = dead_letters(kafka_bootstrap, dlq, names.group)[SLOW]
    assert (h['ktrigger-last-status'], h['ktrigger-attempts']) == (b'408', b'2'), h
    # The recorder writes a line once the sleep is over: two calls, both answered 408.
    kt.wait_for(lambda: len([c for c in rt.calls() if c.body == SLOW]) == 2, 10,
                'both slow calls recorded', describe=rt.calls)
    assert [c.status for c in rt.calls() if c.body == SLOW] == [408, 408]


PARTITIONS = 3
PER_PARTITION = 40
MAX_ATTEMPTS = 3


def test_runtime_exit_after_408_counts_every_run(kafka, kafka_bootstrap, names, config,
                                                 runtime_factory, ktrigger_factory,
                                                 tmp_path):
    dlq = names.topic + '-dlq'
    kafka.create_topic(names.topic, PARTITIONS)
    kafka.create_topic(dlq, 1)
    recs = [(p, 'p%d-n%d' % (p, n)) for n in range(PER_PARTITION) for p in range(PARTITIONS)]
    recs.insert(6, (0, SLOW))
    produced = kafka.produce(names.topic, recs)
    record_file, arrival_file = tmp_path / 'records.jsonl', tmp_path / 'arrivals.jsonl'
    # Node keeps connections alive (as the Go runtime): a call cut by the exit was sent on a
    # reused connection, so curl re-sends it, and the re-send finds nothing listening.
    kw = dict(lang='node', record_file=record_file, arrival_file=arrival_file, func_timeout=1,
              delay_ms=150, sleep_bodies={SLOW: 2500}, exit_after_timeout=True)
    runtimes = [runtime_factory(**kw)]
    port = runtimes[0].port
    stop = threading.Event()
    errors = []

    def restart():
        """Start the runtime again whenever it exited (as Kubernetes would)."""
        try:
            while not stop.wait(0.05):
                if runtimes[-1].proc.poll() is not None:
                    runtimes.append(runtime_factory(port=port, **kw))
        except Exception as e:  # reported by the test, not lost in the thread
            errors.append(e)

    restarter = threading.Thread(target=restart, daemon=True)
    restarter.start()
    conf = config(port)
    conf['runtime']['timeout_s'] = 1
    conf['dispatch'].update({'on_failure': 'dead-letter', 'dead_letter_topic': dlq,
                             'retry': {'initial_backoff_ms': 50, 'max_backoff_ms': 200,
                                       'max_attempts': MAX_ATTEMPTS}})
    try:
        ktr = ktrigger_factory(conf)
        end = kafka.end_offsets(names.topic)
        kt.wait_for(lambda: not errors and kafka.committed(names.group, names.topic) == end,
                    120, 'committed == end offsets',
                    describe=lambda: (errors, kafka.committed(names.group, names.topic)))
        samples = ktr.metrics()
        assert ktr.stop() == 0
    finally:
        stop.set()
        restarter.join(30)
    assert not errors, errors

    arrivals = runtimes[-1].arrivals()
    calls = kt.metric_sum(samples, 'function_calls_total')
    h = dead_letters(kafka_bootstrap, dlq, names.group)
    assert SLOW in h, sorted(h)
    # A neighbour in flight at every one of the MAX_ATTEMPTS exits (a slow machine can start
    # its retry late enough) is cut each time: it is dead-lettered after MAX_ATTEMPTS counted
    # attempts, none answered, and it did not run more often than that.
    for body in set(h) - {SLOW}:
        assert int(h[body]['ktrigger-attempts']) == MAX_ATTEMPTS, (body, h[body])
        assert 'ktrigger-last-status' not in h[body], (body, h[body])
        assert len([a for a in arrivals if a['body'] == body]) <= MAX_ATTEMPTS, body
    slow_runs = [a for a in arrivals if a['body'] == SLOW]
    # One exit per attempt of the slow record, each seen as the runtime's 408.
    assert len(runtimes) >= 1 + MAX_ATTEMPTS, len(runtimes)
    assert h[SLOW]['ktrigger-last-status'] == b'408', h[SLOW]
    assert int(h[SLOW]['ktrigger-attempts']) == len(slow_runs) == MAX_ATTEMPTS, \
        (h[SLOW], slow_runs)
    # The exits cut calls of the other partitions in progress (their handlers ran, no answer).
    finished = [c for c in runtimes[-1].calls() if c.body != SLOW]
    started = [a for a in arrivals if a['body'] != SLOW]
    assert len(started) > len(finished), 'no call was cut by an exit: the scenario did not happen'
    assert kt.metric_sum(samples, 'ktrigger_calls_total', outcome='transport_error') >= \
        len(started) - len(finished)
    # Every handler run is an attempt, counted: no "4 runs for 3 attempts". The only calls
    # counted that did not run are calls cut without an answer in the instant the runtime
    # exited, before its handler started: a request left unread (the kernel resets the
    # connection) or read but not yet handed to the handler (a plain close, so curl re-sends
    # it and the re-send finds nothing listening). ktrigger cannot tell those from a cut
    # call whose handler ran, so it counts them too, as it must for at-least-once: each is a
    # transport failure.
    cut = kt.metric_sum(samples, 'ktrigger_calls_total', outcome='transport_error')
    assert len(arrivals) <= calls <= len(arrivals) + cut, (calls, len(arrivals), cut)
    # And every record was delivered (a 2xx) except the dead-lettered ones.
    ok = {c.body for c in runtimes[-1].calls() if not c.failed}
    assert ok == {r.value for r in produced} - set(h)
