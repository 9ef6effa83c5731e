"""The harness's own checks, no Kafka: when the broker counts as serving (ktmetadata, used by
kafka.sh start/resume and by kthelpers after topic creation and resume), and finding a
ThreadSanitizer report in a ktrigger log.  The other tests rely on these."""

import json
import subprocess
import sys

import pytest

import kthelpers as kt
import ktmetadata


def kcat_json(topics, brokers=1):
    """`kcat -L -J` output: topics = {name: [(leader, error or None), ...] or an error str}."""
    out = []
    for name, parts in topics.items():
        t = {'topic': name, 'partitions': []}
        if isinstance(parts, str):
            t['error'] = parts
        else:
            for i, (leader, err) in enumerate(parts):
                p = {'partition': i, 'leader': leader, 'replicas': [{'id': 1}],
                     'isrs': [{'id': 1}]}
                if err:
                    p['error'] = err
                t['partitions'].append(p)
        out.append(t)
    return json.dumps({'originating_broker': {'id': 1, 'name': 'b/1'}, 'controllerid': 1,
                       'brokers': [{'id': i, 'name': 'b'} for i in range(brokers)],
                       'topics': out})


OK = (1, None)
NO_LEADER = (-1, None)
NOT_LEADER = (1, 'Broker: Not leader for partition')

# (case, topics, brokers, expected at pause, only these topics, serving?, reason contains)
CASES = [
    ('fresh broker, no topics', {}, 1, None, None, True, None),
    ('all leaders, __consumer_offsets too', {'t': [OK, OK], '__consumer_offsets': [OK] * 4},
     1, None, None, True, None),
    ('no broker in the answer', {}, 0, None, None, False, '0 brokers'),
    ('one partition leaderless', {'t': [OK, NO_LEADER]}, 1, None, None, False, 't [1]: leader -1'),
    ('__consumer_offsets leaderless', {'t': [OK], '__consumer_offsets': [OK, NO_LEADER, OK, OK]},
     1, None, None, False, '__consumer_offsets [1]'),
    ('partition error with a leader', {'t': [NOT_LEADER]}, 1, None, None, False, 'Not leader'),
    ('topic-level error', {'t': 'Broker: Leader not available'}, 1, None, None, False,
     't: Broker: Leader not available'),
    # A broker still loading its metadata lists fewer topics: not vacuously "all leaders".
    ('topic of the pause not listed yet', {'other': [OK]}, 1, {'t': 2, 'other': 1}, None, False,
     'not (fully) listed yet, e.g. t'),
    ('fewer partitions than at the pause', {'t': [OK]}, 1, {'t': 2}, None, False,
     'not (fully) listed'),
    ('everything of the pause back', {'t': [OK, OK], 'new': [OK]}, 1, {'t': 2}, None, True, None),
    ('only the asked topic counts', {'t': [OK], 'other': [NO_LEADER]}, 1, None, ['t'], True, None),
    ('asked topic missing', {'other': [OK]}, 1, None, ['t'], False, 'e.g. t'),
    ('asked topic with no partitions yet', {'t': []}, 1, None, ['t'], False, 'e.g. t'),
]


@pytest.mark.parametrize('case,topics,brokers,expected,only,serving,why', CASES,
                         ids=[c[0] for c in CASES])
def test_not_serving(case, topics, brokers, expected, only, serving, why):
    md = ktmetadata.from_kcat(kcat_json(topics, brokers))
    got = ktmetadata.not_serving(md, expected, only)
    if serving:
        assert got is None, '%s: %s' % (case, got)
    else:
        assert got is not None and why in got, '%s: %r' % (case, got)


@pytest.mark.parametrize('case,topics,brokers,expected,only,serving,why',
                         [c for c in CASES if c[4] is None], ids=[c[0] for c in CASES
                                                                  if c[4] is None])
def test_kafka_sh_check_command(tmp_path, case, topics, brokers, expected, only, serving, why):
    """The same cases through the command kafka.sh runs (any python3, no confluent_kafka)."""
    args = [sys.executable, str(kt.HERE / 'ktmetadata.py'), 'check']
    if expected is not None:
        (tmp_path / 'expected').write_text(json.dumps(expected))
        args.append(str(tmp_path / 'expected'))
    r = subprocess.run(args, input=kcat_json(topics, brokers), capture_output=True, text=True)
    assert r.returncode == (0 if serving else 1), (case, r.stdout, r.stderr)
    if not serving:
        assert why in r.stdout, (case, r.stdout)


def test_kafka_sh_record_then_check(tmp_path):
    before = kcat_json({'t': [OK, OK], '__consumer_offsets': [OK] * 4, 'bad': 'Broker: x'})
    rec = subprocess.run([sys.executable, str(kt.HERE / 'ktmetadata.py'), 'record'],
                         input=before, capture_output=True, text=True)
    assert rec.returncode == 0, rec.stderr
    assert json.loads(rec.stdout) == {'t': 2, '__consumer_offsets': 4}
    (tmp_path / 'expected').write_text(rec.stdout)
    check = [sys.executable, str(kt.HERE / 'ktmetadata.py'), 'check', str(tmp_path / 'expected')]
    partly = subprocess.run(check, input=kcat_json({'t': [OK, OK]}), capture_output=True,
                            text=True)
    assert partly.returncode == 1 and '__consumer_offsets' in partly.stdout, partly.stdout
    garbage = subprocess.run(check, input='% ERROR: no brokers', capture_output=True, text=True)
    assert garbage.returncode == 1 and 'no usable metadata' in garbage.stdout, garbage.stdout


TSAN_REPORT = '''2026-12-01T23:13:07.815Z INFO KAFKA: assigned t [0]
==================
WARNING: ThreadSanitizer: data race (pid=5273)
  Write of size 8 at 0x7b6c00010388 by thread T5:
    #0 free tsan_interceptors_posix.cpp:706 (libtsan.so.2+0x47e82)
SUMMARY: ThreadSanitizer: data race (ktrigger-tsan+0x1)
==================
2026-12-01T23:13:21.730Z INFO LOOP: stopped cleanly
'''


@pytest.mark.parametrize('text,found', [
    ('2026-12-01T23:13:21.730Z INFO LOOP: stopped cleanly\n', False),
    (TSAN_REPORT, True),
    ('ThreadSanitizer: reported 0 warnings\n', False),
])
def test_sanitizer_report(tmp_path, text, found):
    log = tmp_path / 'ktrigger-0.log'
    log.write_text(text)
    rep = kt.sanitizer_report(log)
    if found:
        assert rep is not None and rep.startswith('==================\nWARNING: ThreadSanitizer')
        assert 'SUMMARY' in rep and 'stopped cleanly' in rep
    else:
        assert rep is None, rep
    assert kt.sanitizer_report(tmp_path / 'missing.log') is None


def test_read_jsonl_skips_a_line_still_being_written(tmp_path):
    """A runtime's record file read while the runtime appends: the cut last line is not
    there yet (test_0410 once failed parsing one)."""
    path = tmp_path / 'record.jsonl'
    assert kt.read_jsonl(path) == []
    path.write_text('{"seq": 1}\n{"seq": 2}\n{"seq": 3, "events": [{"id": "t/0/5", "so')
    assert kt.read_jsonl(path) == [{'seq': 1}, {'seq': 2}]
    with open(path, 'a') as f:
        f.write('urce": "x"}]}\n')
    assert [r['seq'] for r in kt.read_jsonl(path)] == [1, 2, 3]
