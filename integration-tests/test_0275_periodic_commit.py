"""ktrigger's own periodic commits carry the completed-offset map.

librdkafka's auto-commit is off: every auto.commit.interval.ms ktrigger commits, itself, the
watermark of each partition with the offsets finished above it in the commit metadata. So
after a kill -9 (no drain, no final commit) a new owner skips what was finished above a
record that never succeeded, and calls only that one again.
"""

import collections
import signal

import kthelpers as kt

OTHERS = 49
INTERVAL_MS = 300


def conf_for(config, port):
    conf = config(port, properties={'auto.commit.interval.ms': str(INTERVAL_MS),
                                    'session.timeout.ms': '6000',
                                    'heartbeat.interval.ms': '500'})
    conf['dispatch'].update({'ordering': 'none', 'max_in_flight': 8, 'on_failure': 'block'})
    conf['dispatch']['retry'] = {'initial_backoff_ms': 300, 'max_backoff_ms': 300}
    return conf


def test_periodic_commit_carries_the_map_over_a_kill9(kafka, names, config, runtime_factory,
                                                      ktrigger_factory, tmp_path):
    """One partition: record #1 keeps failing (503, block), the 49 behind it succeed. Within
    an interval the group's commit is offset 0 with those 49 in its metadata; after kill -9
    the next replica calls only #1."""
    kafka.create_topic(names.topic, 1)
    kafka.produce(names.topic, [(0, 'stuck', 'k-first')] +
                  [(0, 'r%02d' % i, 'k%02d' % i) for i in range(OTHERS)])
    rt = runtime_factory(record_file=tmp_path / 'records-1.jsonl', status_bodies={'stuck': 503})
    first = ktrigger_factory(conf_for(config, rt.port))
    kt.wait_for(lambda: len({c.body for c in rt.calls() if not c.failed}) == OTHERS, 30,
                'the %d records behind the stuck one answered' % OTHERS)

    # The map is in the group's committed metadata, read from the broker itself.
    want = 'kt1:0:%d:' % OTHERS
    seen = []

    def map_committed():
        md = kafka.committed_metadata(names.group, names.topic, 0)
        seen[:] = [md]
        return md is not None and md.startswith(want)

    try:
        kt.wait_for(map_committed, 10 * INTERVAL_MS / 1000 + 5, 'a periodic commit with the map',
                    interval=0.5, describe=lambda: 'last committed metadata: %r' % seen)
        map_error = None
    except AssertionError as e:  # go on: show what the next owner does without it
        map_error = str(e)
    assert kafka.committed(names.group, names.topic) in ({0: 0}, {0: None})

    first.proc.send_signal(signal.SIGKILL)
    first.proc.wait(10)
    answered_first = [c.body for c in rt.calls() if not c.failed]

    rt2 = runtime_factory(record_file=tmp_path / 'records-2.jsonl')
    second = ktrigger_factory(conf_for(config, rt2.port))
    end = kafka.end_offsets(names.topic)
    kt.wait_for(lambda: kafka.committed(names.group, names.topic) == end, 60,
                'the second replica committed to the end',
                describe=lambda: [c.body for c in rt2.calls()][:10])
    metrics = second.metrics()
    assert second.stop() == 0
    again = sorted(c.body for c in rt2.calls() if not c.failed and c.body != 'stuck')
    print('after kill -9: committed metadata %r; the next owner called again %d of the %d '
          'answered (%s...), already done %s' % (
              seen[0] if seen else None, len(again), len(answered_first), again[:3],
              kt.metric_sum(metrics, 'ktrigger_records_already_done_total')))
    assert map_error is None, map_error
    assert not again, 'delivered again after a kill -9: %d records %s' % (len(again), again[:5])
    counts = collections.Counter(c.body for c in rt2.calls() if not c.failed)
    assert counts == {'stuck': 1}, counts
    assert kt.metric_sum(metrics, 'ktrigger_records_already_done_total') == OTHERS
