"""Is the test broker serving every partition?  Standard library only: kafka/kafka.sh runs this
file with whatever python3 is on PATH (no confluent_kafka there), kthelpers imports it.

A broker that answers metadata is not yet a broker that serves: right after a start or a
resume (kafka.sh) its partitions (and __consumer_offsets') get their leader only once the
broker is unfenced and has applied the metadata log, and requests sent before that answer
NOT_LEADER_FOR_PARTITION / LEADER_NOT_AVAILABLE.  Worse, a broker still loading may list
fewer topics than it had: "every listed partition has a leader" holds vacuously.  So the
check takes what was there before (the topics and partition counts recorded at pause) and
wants all of it back, each partition with a leader and no error.

Metadata here is plain data: {topic: {'error': str or None, 'partitions': {id: (leader,
error str or None)}}}; from_kcat() and from_confluent() build it.

    python3 ktmetadata.py check [EXPECTED_FILE] < kcat-L-J.json   exit 0 if serving, else 1
    python3 ktmetadata.py record < kcat-L-J.json > EXPECTED_FILE   (what to want back)
The reason it is not serving is the one line printed.
"""

import json
import sys


def from_kcat(text):
    """Metadata from `kcat -L -J` output (ValueError if it is not that)."""
    md = json.loads(text)
    if not isinstance(md, dict) or not isinstance(md.get('topics'), list):
        raise ValueError('no topic list in the metadata')
    out = {'brokers': len(md.get('brokers') or [])}
    topics = out['topics'] = {}
    for t in md['topics']:
        parts = {}
        for p in t.get('partitions') or []:
            parts[int(p['partition'])] = (int(p.get('leader', -1)), p.get('error') or None)
        topics[t['topic']] = {'error': t.get('error') or None, 'partitions': parts}
    return out


def from_confluent(md):
    """Metadata from confluent_kafka's ClusterMetadata (AdminClient.list_topics())."""
    topics = {}
    for name, t in md.topics.items():
        parts = {pid: (p.leader, str(p.error) if p.error is not None else None)
                 for pid, p in t.partitions.items()}
        topics[name] = {'error': str(t.error) if t.error is not None else None,
                        'partitions': parts}
    return {'brokers': len(md.brokers), 'topics': topics}


def expected_of(md):
    """{topic: partition count} of metadata, to want back later (topics in error left out)."""
    return {name: len(t['partitions']) for name, t in md['topics'].items()
            if t['error'] is None and t['partitions']}


def not_serving(md, expected=None, topics=None, brokers=1):
    """Why md is not a broker serving every partition, or None if it is.

    expected: {topic: partitions} that must all be listed (with at least that many
    partitions); topics: only these topics count (each must be listed); brokers: how many
    brokers the metadata must name.
    """
    if md['brokers'] != brokers:
        return 'metadata names %d brokers, not %d' % (md['brokers'], brokers)
    listed = md['topics']
    want = dict(expected or {})
    for name in topics or ():
        want.setdefault(name, 0)
    # A topic listed with an error counts below (as not served), not as missing.
    missing = sorted(n for n, count in want.items()
                     if n not in listed or (listed[n]['error'] is None
                                            and len(listed[n]['partitions']) < max(count, 1)))
    bad = []
    for name in sorted(listed if topics is None else [n for n in topics if n in listed]):
        t = listed[name]
        if t['error'] is not None:
            bad.append('%s: %s' % (name, t['error']))
            continue
        for pid in sorted(t['partitions']):
            leader, err = t['partitions'][pid]
            if leader < 0 or err is not None:
                bad.append('%s [%d]: leader %d%s' % (name, pid, leader,
                                                    ', ' + err if err else ''))
    if missing:
        return '%d of %d topics not (fully) listed yet, e.g. %s' % (
            len(missing), len(want), ', '.join(missing[:3]))
    if bad:
        return '%d partitions/topics without a leader, e.g. %s' % (len(bad), '; '.join(bad[:3]))
    return None


def main(argv):
    if len(argv) < 2 or argv[1] not in ('check', 'record'):
        print('usage: ktmetadata.py check [EXPECTED_FILE] | record  (kcat -L -J on stdin)')
        return 2
    try:
        md = from_kcat(sys.stdin.read())
    except (ValueError, KeyError, TypeError) as e:
        print('no usable metadata: %s' % e)
        return 1
    if argv[1] == 'record':
        json.dump(expected_of(md), sys.stdout, sort_keys=True)
        print()
        return 0
    expected = None
    if len(argv) > 2:
        try:
            with open(argv[2]) as f:
                expected = json.load(f)
        except (OSError, ValueError) as e:
            print('cannot read %s: %s' % (argv[2], e))
            return 1
    why = not_serving(md, expected)
    if why:
        print(why)
        return 1
    return 0


if __name__ == '__main__':
    sys.exit(main(sys.argv))
