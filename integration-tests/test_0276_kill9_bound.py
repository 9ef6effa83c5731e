"""After a kill -9, the next owner calls again only what the last commit did not cover.

The contract (README, delivery table): a member killed with -9 re-delivers the records it had
in flight and those it finished since its last periodic commit, nothing else. Here that is
checked exactly, in every ordering, against the broker's own record of that last commit: the
committed offset of each partition and the completed-offset map in its metadata, decoded by
this file (independently of ktrigger's decoder). The records at or above the committed offset
that the map does not list are the only ones the next owner may call again; everything below
it or listed in the map must never reach the function a second time, and nothing may be lost.
"""

import signal

import pytest

import kthelpers as kt

PARTS = 4
PER = 700
INTERVAL_MS = 300
STUCK = 'stuck-p0'  # partition 0, offset 3: 503 for the first owner, block

B64 = 'ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_'


def _fnv1a(text):
    h = 2166136261
    for ch in text.encode():
        h = ((h ^ ch) * 16777619) & 0xffffffff
    return h


def decode_offset_map(md, committed):
    """The offsets a kt1 completed-offset map lists as done above \\p committed (a set), or
    None if \\p md is not a well-formed map of that commit (consumer/consumer_offsetmap.c)."""
    if not md:
        return None
    head, _, check = md.rpartition(':')
    h, want = _fnv1a(head + ':'), ''
    for _ in range(6):
        want = B64[h & 63] + want
        h >>= 6
    fields = head.split(':')
    if check != want or len(fields) != 4 or fields[0] != 'kt1' or not fields[3]:
        return None
    if int(fields[1]) != committed:
        return None
    n, kind, digits = int(fields[2]), fields[3][0], [B64.index(c) for c in fields[3][1:]]
    pos = 0

    def vlq():
        nonlocal pos
        v, shift = 0, 0
        while True:
            d = digits[pos]
            pos += 1
            v |= (d & 31) << shift
            shift += 5
            if not d & 32:
                return v

    done = set()
    if kind == 'r':
        nxt = committed + 1
        while pos < len(digits):
            gap, length = vlq(), vlq() + 1
            start = nxt + gap
            done.update(range(start, start + length))
            nxt = start + length + 1
    elif kind == 'b':
        first = committed + 1 + vlq()
        for i, d in enumerate(digits[pos:]):
            for b in range(6):
                if d & (32 >> b):
                    done.add(first + 6 * i + b)
    else:
        return None
    assert len(done) == n, 'map %r lists %d offsets, says %d' % (md, len(done), n)
    return done


def conf_for(config, port, ordering):
    conf = config(port, properties={'auto.commit.interval.ms': str(INTERVAL_MS),
                                    'session.timeout.ms': '6000',
                                    'heartbeat.interval.ms': '500'})
    conf['dispatch'].update({'ordering': ordering, 'max_in_flight': 8, 'on_failure': 'block'})
    conf['dispatch']['retry'] = {'initial_backoff_ms': 200, 'max_backoff_ms': 200}
    return conf


@pytest.mark.parametrize('ordering', ['partition', 'key', 'none'])
def test_kill9_redelivers_only_what_the_last_commit_missed(kafka, names, config,
                                                           runtime_factory, ktrigger_factory,
                                                           tmp_path, ordering):
    """4 partitions x 700 keyed records, a 10 ms runtime; partition 0's offset 3 keeps
    failing for the first owner (so in `key`/`none` its map lists what finished above it).
    The first owner is killed with -9 while records flow; its last commit, as the broker holds
    it, decides exactly what the next owner may call again."""
    kafka.create_topic(names.topic, PARTS)
    recs = []
    for i in range(PER):
        for p in range(PARTS):
            body = STUCK if (p, i) == (0, 3) else 'p%d-n%d' % (p, i)
            recs.append((p, body, 'k%d' % (i % 40)))
    produced = kafka.produce(names.topic, recs)
    total = len(produced)

    rt1 = runtime_factory(record_file=tmp_path / 'records-1.jsonl', delay_ms=10,
                          status_bodies={STUCK: 503})
    first = ktrigger_factory(conf_for(config, rt1.port, ordering))

    def answered(rt):
        return {(c.partition, c.offset) for c in rt.calls() if not c.failed}

    # Kill while records still flow, once a periodic commit holds a map (key/none: partition
    # 0's records above the stuck one are done) or has moved partition 1 on (partition).
    def ready():
        first.assert_running()
        if len(answered(rt1)) < total // 4:
            return False
        if ordering == 'partition':
            return (kafka.committed(names.group, names.topic, [1])[1] or 0) > 0
        return decode_offset_map(kafka.committed_metadata(names.group, names.topic, 0),
                                 kafka.committed(names.group, names.topic, [0])[0] or 0)

    kt.wait_for(ready, 60, 'a quarter answered and a periodic commit holding it', interval=0.2)
    first.proc.send_signal(signal.SIGKILL)
    first.proc.wait(10)

    committed = kafka.committed(names.group, names.topic)
    covered, maps = set(), {}
    for p in range(PARTS):
        w = committed[p] or 0
        covered.update((p, o) for o in range(w))
        done = decode_offset_map(kafka.committed_metadata(names.group, names.topic, p), w)
        maps[p] = done or set()
        covered.update((p, o) for o in maps[p])
    by_first = answered(rt1)
    assert covered <= by_first, 'the last commit covers records never answered: %s' % (
        sorted(covered - by_first)[:5])
    if ordering != 'partition':
        assert maps[0], 'no completed-offset map on partition 0: %s' % committed

    rt2 = runtime_factory(record_file=tmp_path / 'records-2.jsonl')
    second = ktrigger_factory(conf_for(config, rt2.port, ordering))
    end = kafka.end_offsets(names.topic)
    kt.wait_for(lambda: second.assert_running() or
                kafka.committed(names.group, names.topic) == end, 90,
                'the second owner committed to the end',
                describe=lambda: kafka.committed(names.group, names.topic))
    metrics = second.metrics()
    assert second.stop() == 0

    by_first, by_second = answered(rt1), answered(rt2)  # rt1 may answer after the kill too
    again = by_first & by_second
    allowed = by_first - covered  # in flight at the kill, or finished since the last commit
    print('%s: kill -9 after %d of %d answered; the last commit covered %d (maps: %s); '
          'the next owner called again %d (allowed: at most %d)' % (
              ordering, len(by_first), total, len(covered),
              {p: len(m) for p, m in maps.items()}, len(again), len(allowed)))
    assert not (by_second & covered), 'called again though committed: %s' % (
        sorted(by_second & covered)[:10])
    assert again <= allowed
    everything = {(r.partition, r.offset) for r in produced}
    assert by_first | by_second == everything, 'lost: %s' % sorted(
        everything - by_first - by_second)[:10]
    assert kt.metric_sum(metrics, 'ktrigger_records_already_done_total') == sum(
        len(m) for m in maps.values())
