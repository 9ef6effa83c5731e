"""kafka.sh resume (and start) return only once the broker serves what it had: every
partition, __consumer_offsets' included, with a leader, and every topic of before the pause
listed again.  A broker that merely answers metadata is not enough (test_0240 once failed on a
fresh machine with NOT_LEADER_FOR_PARTITION right after resume).

On its own broker (its own KT_KAFKA_DIR; the session's broker is never paused here).  The
window in which a real broker answers metadata without leaders is short and depends on the
machine, so kafka.sh is shown it for as long as the test likes: a `kcat` wrapper first on
PATH passes everything to the real kcat but, while a mode file says so, rewrites the metadata
answers so every partition is leaderless, or leaves the test's topic out.  The test's own
admin client (not wrapped) sees the real broker serving meanwhile."""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from confluent_kafka import TopicPartition
from confluent_kafka.admin import AdminClient

import kthelpers as kt

WRAPPER = r'''#!/usr/bin/env bash
# kcat, except that `-L` answers are rewritten while $MODE_FILE holds a mode.
mode=$(cat "@MODE@" 2>/dev/null || true)
case " $* " in *" -L "*) ;; *) mode= ;; esac
[ -n "$mode" ] || exec "@KCAT@" "$@"
out=$("@KCAT@" "$@")
rc=$?
echo "$mode" >>"@CALLS@"
case " $* " in
  *" -J "*) printf '%s' "$out" | "@PYTHON@" -c '
import json, sys
mode, hide = sys.argv[1], sys.argv[2]
d = json.load(sys.stdin)
if mode == "leaderless":
    for t in d["topics"]:
        for p in t["partitions"]:
            p["leader"] = -1
elif mode == "hide":
    d["topics"] = [t for t in d["topics"] if t["topic"] != hide]
print(json.dumps(d))' "$mode" "@HIDE@" ;;
  *) printf '%s\n' "$out" | sed -e 's/leader [0-9]*,/leader -1,/' ;;
esac
exit $rc
'''


@pytest.fixture
def own_broker(tmp_path, names):
    """(env for kafka.sh, mode file, calls file): a kcat wrapper on PATH, a state dir of ours."""
    real = shutil.which('kcat')
    assert real, 'kcat not found: run scripts/install-deps'
    bindir = tmp_path / 'bin'
    bindir.mkdir()
    mode, calls = tmp_path / 'kcat-mode', tmp_path / 'kcat-calls'
    text = (WRAPPER.replace('@MODE@', str(mode)).replace('@KCAT@', real)
            .replace('@CALLS@', str(calls)).replace('@PYTHON@', sys.executable)
            .replace('@HIDE@', names.topic))
    (bindir / 'kcat').write_text(text)
    (bindir / 'kcat').chmod(0o755)
    env = dict(os.environ, KT_KAFKA_DIR=str(tmp_path / 'kafka'),
               PATH='%s:%s' % (bindir, os.environ.get('PATH', '')))
    env.pop('KT_KAFKA_BOOTSTRAP', None)
    try:
        yield env, mode, calls
    finally:
        subprocess.run(['bash', str(kt.KAFKA_SH), 'stop'], env=env, capture_output=True,
                       timeout=120)


def sh(env, cmd, timeout=180):
    r = subprocess.run(['bash', str(kt.KAFKA_SH), cmd], env=env, capture_output=True,
                       text=True, timeout=timeout)
    assert r.returncode == 0, 'kafka.sh %s (%d): %s %s' % (cmd, r.returncode, r.stdout,
                                                          r.stderr[-2000:])
    return r.stdout.strip().splitlines()[-1]


def ncalls(calls):
    try:
        return len(calls.read_text().splitlines())
    except FileNotFoundError:
        return 0


def held_back(env, mode_file, calls, mode, really_serving):
    """Run kafka.sh resume while the wrapper shows `mode`; assert it does not return although
    the broker really serves (kafka.sh asked twice more since), then lift the mode and
    return what resume printed."""
    mode_file.write_text(mode)
    resume = subprocess.Popen(['bash', str(kt.KAFKA_SH), 'resume'], env=env, text=True,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        seen = {}

        def decided():
            if resume.poll() is not None:
                return True
            if 'n' not in seen and really_serving():
                seen['n'] = ncalls(calls)
            return 'n' in seen and ncalls(calls) >= seen['n'] + 2

        kt.wait_for(decided, 90, 'kafka.sh resume to return or to ask twice more while the '
                    'broker serves', interval=0.1)
        assert resume.poll() is None, (
            'kafka.sh resume returned (%s) while every metadata answer it saw was %s: %s'
            % (resume.returncode, mode, resume.stderr.read()[-1000:]))
        mode_file.unlink()
        out, err = resume.communicate(timeout=60)
        assert resume.returncode == 0, err
        return out.strip().splitlines()[-1]
    finally:
        if resume.poll() is None:
            resume.kill()
            resume.wait()


def test_resume_waits_for_leaders_and_topics(own_broker, names):
    env, mode_file, calls = own_broker
    bootstrap = sh(env, 'start')
    admin = AdminClient({'bootstrap.servers': bootstrap})
    k = kt.Kafka(bootstrap, admin)
    k.create_topic(names.topic, 3)
    k.produce(names.topic, [(p, 'r%d' % p) for p in range(3)])
    # A group commit creates __consumer_offsets, which resume must then wait for too.
    assert k.committed(names.group, names.topic) == {0: None, 1: None, 2: None}
    c = k._consumer(names.group)
    c.commit(offsets=[TopicPartition(names.topic, 0, 1)], asynchronous=False)
    k.wait_for_leaders(topics=['__consumer_offsets'], timeout=60)

    def really_serving():
        md = k.metadata()
        return md is not None and kt.ktmetadata.not_serving(
            md, {names.topic: 3, '__consumer_offsets': 1}) is None

    for mode in ('leaderless', 'hide'):
        sh(env, 'pause')
        assert held_back(env, mode_file, calls, mode, really_serving) == bootstrap
        # What pause recorded for resume to want back (kept after the resume).
        expected = json.loads((Path(env['KT_KAFKA_DIR']) / 'expected-topics').read_text())
        assert expected.get(names.topic) == 3 and '__consumer_offsets' in expected, expected
        k.wait_for_leaders(expected=expected, timeout=30)
    assert k.end_offsets(names.topic) == {0: 1, 1: 1, 2: 1}
    assert k.committed(names.group, names.topic)[0] == 1
    k.close()
