"""pytest fixtures for ktrigger's integration tests against a real Apache Kafka broker.

Session: the broker (reused from KT_KAFKA_BOOTSTRAP or a running `kafka.sh`, else started
here and stopped at the end); a ZooKeeper server, started only when a test asks for one.  Per test: unique topic/group names, a Kafka helper, factories
for the runtimes (Python, Node.js, Ruby) and for ktrigger processes (all stopped by pid at test
end), and the tail of every process log attached to the report of a failed test.
"""

import os
import re
import uuid
from pathlib import Path

import pytest
from confluent_kafka.admin import AdminClient

import kthelpers as kt


@pytest.fixture(scope='session')
def kafka_bootstrap():
    """Bootstrap address of a running broker; started here only if none runs."""
    env = os.environ.get('KT_KAFKA_BOOTSTRAP')
    if env:
        yield env
        return
    st = kt.kafka_sh('status', 30)
    if st.returncode == 0 and st.stdout.strip():
        yield st.stdout.strip().splitlines()[-1]
        return
    if os.environ.get('PYTEST_XDIST_WORKER'):
        # Each worker is a session of its own: two would start (and stop) one KT_KAFKA_DIR's
        # broker at once. integration-tests/run-suite starts it before the workers.
        pytest.fail('no broker runs: with pytest -n, start one first (kafka/kafka.sh start, '
                    'or KT_KAFKA_BOOTSTRAP), or run integration-tests/run-suite')
    start = kt.kafka_sh('start', 600)
    if start.returncode != 0:
        pytest.fail('kafka.sh start failed (%d):\n%s\n%s'
                    % (start.returncode, start.stdout, start.stderr[-3000:]))
    bootstrap = start.stdout.strip().splitlines()[-1]
    try:
        yield bootstrap
    finally:
        kt.kafka_sh('stop', 120)


@pytest.fixture(scope='session')
def zookeeper(tmp_path_factory):
    """A standalone ZooKeeper server (zookeeper/zk.sh) for the session, started on first use;
    tests keep apart by chroot."""
    zk = kt.ZooKeeper(tmp_path_factory.mktemp('zookeeper'))
    zk.start()
    try:
        yield zk
    finally:
        zk.stop()


@pytest.fixture
def zookeeper_factory(request, tmp_path):
    """start(port=None) -> kt.ZooKeeper: more servers for one test (stopped at its end)."""
    started = []

    def start(port=None):
        zk = kt.ZooKeeper(tmp_path / ('zookeeper-%d' % len(started)))
        started.append(zk)
        zk.start(port)
        _register_log(request, 'zookeeper %s' % zk.address, zk.state_dir / 'zk.log')
        return zk

    yield start
    for zk in started:
        zk.stop()


@pytest.fixture(scope='session')
def kafka_admin(kafka_bootstrap):
    """An admin client of the session's broker, handed out once the broker serves: every
    partition (__consumer_offsets included) has a leader, also when the broker was reused
    right after its (re)start."""
    admin = AdminClient({'bootstrap.servers': kafka_bootstrap})
    kt.Kafka(kafka_bootstrap, admin).wait_for_leaders(timeout=120)
    return admin


@pytest.fixture
def kafka(kafka_bootstrap, kafka_admin):
    k = kt.Kafka(kafka_bootstrap, kafka_admin)
    yield k
    k.close()


class Names:
    def __init__(self, node_name):
        base = re.sub(r'[^A-Za-z0-9]+', '-', node_name).strip('-')[:60]
        suffix = uuid.uuid4().hex[:8]
        self.topic = 'kt-%s-%s' % (base, suffix)
        self.group = 'kt-group-%s-%s' % (base, suffix)


@pytest.fixture
def names(request):
    """Unique topic and group names for this test."""
    return Names(request.node.name)


def _register_log(request, label, path):
    logs = getattr(request.node, '_kt_logs', None)
    if logs is None:
        logs = request.node._kt_logs = []
    logs.append((label, Path(path)))


@pytest.fixture
def runtime_factory(request, tmp_path):
    """start(record_file=None, lang='python'|'node'|'ruby', port=None, **behaviours)
    -> kt.Runtime; behaviours as kt.start_runtime (fail_bodies, fail_nth, fail_keys,
    status_bodies, retry_after, delay_ms, sleep_bodies, drop_bodies, reply_body,
    arrival_file, exit_after_timeout, ...)."""
    started = []

    def start(record_file=None, **kw):
        record_file = record_file or (tmp_path / 'records.jsonl')
        rt = kt.start_runtime(tmp_path, record_file, **kw)
        started.append(rt)
        _register_log(request, '%s runtime pid %d' % (rt.lang, rt.proc.pid), rt.log_path)
        return rt

    yield start
    for rt in started:
        kt.stop_process(rt.proc, 10)


@pytest.fixture
def ktrigger_factory(request, tmp_path):
    """start(conf, env=None, args=()) -> kt.KTrigger; conf is a dict or libconfig text."""
    if not kt.ktrigger_bin().exists():
        pytest.fail('ktrigger binary %s not found (build it, or set KTRIGGER_BIN)'
                    % kt.ktrigger_bin())
    started = []

    def start(conf, **kw):
        k = kt.spawn_ktrigger(tmp_path, conf, **kw)
        started.append(k)
        _register_log(request, 'ktrigger pid %d' % k.pid, k.log_path)
        k.wait_healthy()
        return k

    yield start
    for k in started:
        kt.stop_process(k.proc, 30)
    # A TSan build (ktrigger-tsan, make test-tsan) reports a race on stderr and exits 66 only at
    # the end: fail the test on the report itself, also where the test never checks the status.
    reports = [(k, kt.sanitizer_report(k.log_path)) for k in started]
    reports = [(k, r) for k, r in reports if r]
    if reports:
        pytest.fail('\n\n'.join('ktrigger pid %d (%s):\n%s' % (k.pid, k.log_path, r)
                                  for k, r in reports), pytrace=False)


@pytest.fixture
def config(kafka_bootstrap, names):
    """make(runtime_port, **kw) -> a base config dict for this test's topic and group."""
    def make(runtime_port, **kw):
        kw.setdefault('group_id', names.group)
        return kt.base_config(kafka_bootstrap, kw.pop('topics', [names.topic]), runtime_port,
                              kt.free_port(), **kw)
    return make


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    rep = outcome.get_result()
    if rep.failed:
        for label, path in getattr(item, '_kt_logs', []):
            rep.sections.append(('%s: tail of %s' % (label, path), kt.tail(path)))
