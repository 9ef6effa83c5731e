"""The container image (deploy/Dockerfile) as built by `make image`, run against the real broker.

Marked `image`: `make test-integration` leaves it out, `make test-image` (run by .ci/run after
`make check`) builds the image with buildah and runs this file. The image is taken from the
project's image store (scripts/image-buildah), named by KT_IMAGE (default ktrigger:<version of
core/core.h>). Each test works in a buildah container of its own (chroot isolation, the host's
network and PID namespace: the broker and the recorder runtime are on 127.0.0.1).
"""

import json
import os
import re
import signal
import subprocess
import uuid
from pathlib import Path

import pytest

import kthelpers as kt

pytestmark = pytest.mark.image

REPO = Path(__file__).resolve().parent.parent
BUILDAH = REPO / 'scripts' / 'image-buildah'
VERSION = re.search(r'^#define KT_VERSION "([^"]+)"', (REPO / 'core' / 'core.h').read_text(),
                    re.M).group(1)
IMAGE = os.environ.get('KT_IMAGE', 'ktrigger:%s' % VERSION)
UID = 10001
# Debian 12 slim is ~78 MB, the libraries ktrigger links ~17 MB more. An image over this keeps
# something it should not (the first build kept apt's caches: 182 MB).
MAX_IMAGE_MB = 130


def buildah(*args, timeout=120, check=True):
    proc = subprocess.run([str(BUILDAH)] + [str(a) for a in args], capture_output=True,
                          text=True, timeout=timeout, stdin=subprocess.DEVNULL)
    if check:
        assert proc.returncode == 0, 'buildah %s: exit %d\n%s%s' % (
            ' '.join(map(str, args)), proc.returncode, proc.stdout[-2000:], proc.stderr[-3000:])
    return proc


def run_in(ctr, *argv, volumes=(), timeout=60):
    """buildah run (chroot isolation, host network) -> CompletedProcess."""
    args = ['run', '--isolation', 'chroot', '--network', 'host']
    for v in volumes:
        args += ['-v', v]
    return buildah(*(args + [ctr, '--'] + list(argv)), timeout=timeout, check=False)


@pytest.fixture(scope='module')
def image_config():
    proc = buildah('inspect', '--type', 'image', IMAGE, check=False)
    if proc.returncode != 0:
        pytest.fail('image %s is not in the project image store (make image): %s'
                    % (IMAGE, proc.stderr.strip()))
    return json.loads(proc.stdout)


@pytest.fixture
def container(image_config):
    """A fresh working container of the image, removed at the end."""
    name = 'kt-test-%s' % uuid.uuid4().hex[:12]
    buildah('from', '--pull=never', '--name', name, IMAGE)
    yield name
    buildah('rm', name, check=False)


def hadolint():
    proc = subprocess.run([str(REPO / 'scripts' / 'install-image-deps'), '--hadolint'],
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr
    return proc.stdout.strip().splitlines()[-1]


def test_dockerfile_passes_hadolint():
    """hadolint reports nothing; each inline ignore comes after a comment giving its reason."""
    dockerfile = REPO / 'deploy' / 'Dockerfile'
    proc = subprocess.run([hadolint(), '--no-color', str(dockerfile)], capture_output=True,
                          text=True, timeout=60)
    assert (proc.returncode, proc.stdout.strip()) == (0, ''), proc.stdout + proc.stderr
    lines = dockerfile.read_text().splitlines()
    pragmas = [n for n, ln in enumerate(lines) if ln.startswith('# hadolint ignore=')]
    for n in pragmas:
        rules = lines[n].split('=', 1)[1].split(',')
        reason = lines[n - 1]
        assert reason.startswith('#') and 'hadolint' not in reason, (
            'line %d: %s has no reason above it' % (n + 1, lines[n]))
        assert any(r in '\n'.join(lines[max(0, n - 5):n]) or 'reason given' in reason
                   for r in rules), 'line %d: name the rule in the reason' % (n + 1)


def image_size_mb(image):
    [row] = json.loads(buildah('images', '--json', image).stdout)
    value, unit = re.fullmatch(r'([\d.]+)\s*([kMG]?B)', row['size']).groups()
    return float(value) * {'B': 1e-6, 'kB': 1e-3, 'MB': 1, 'GB': 1e3}[unit]


def test_image_shape_libraries_version_check_config(image_config, container, tmp_path,
                                                      kafka_bootstrap):
    config = image_config['OCIv1']['config']
    assert config.get('User') == '%d:%d' % (UID, UID), config
    assert config.get('Entrypoint') == ['/usr/local/bin/ktrigger'], config
    assert '9464/tcp' in config.get('ExposedPorts', {}), config
    labels = config.get('Labels', {})
    assert labels.get('org.opencontainers.image.version') == VERSION, labels
    head = subprocess.run(['git', '-C', str(REPO), 'rev-parse', 'HEAD'], capture_output=True,
                          text=True).stdout.strip()
    if head:
        revision = labels.get('org.opencontainers.image.revision', '')
        assert revision in (head, head + '-dirty'), (
            'image label revision %r, the source is at %s: rebuild (make image)' % (revision, head))
    size = image_size_mb(IMAGE)
    print('image %s: %.1f MB' % (IMAGE, size))
    assert size < MAX_IMAGE_MB, 'image %s is %.1f MB' % (IMAGE, size)

    ident = run_in(container, 'id', '-u')
    assert (ident.returncode, ident.stdout.strip()) == (0, str(UID)), ident

    ldd = run_in(container, 'ldd', '/usr/local/bin/ktrigger')
    assert ldd.returncode == 0, ldd.stderr
    assert 'not found' not in ldd.stdout, ldd.stdout
    # librdkafka is linked statically (scripts/build-librdkafka); the libraries it links are not.
    for lib in ('libcurl.so.4', 'libconfig.so.9', 'libmicrohttpd.so.12', 'libcjson.so.1',
                'libzookeeper_mt.so.2', 'libssl.so.3', 'libsasl2.so.2', 'libzstd.so.1',
                'liblz4.so.1', 'libz.so.1'):
        assert re.search(r'^\s*%s => /' % re.escape(lib), ldd.stdout, re.M), ldd.stdout
    assert 'librdkafka.so' not in ldd.stdout, ldd.stdout
    certs = run_in(container, 'test', '-s', '/etc/ssl/certs/ca-certificates.crt')
    assert certs.returncode == 0, 'no CA bundle for TLS to brokers'

    version = run_in(container, '/usr/local/bin/ktrigger', '--version')
    assert version.returncode == 0, version
    assert version.stdout.split()[:2] == ['ktrigger', VERSION], version.stdout
    # The librdkafka the Makefile links by default, not Debian 12's 2.0.2.
    rdkafka = re.search(r'^LIBRDKAFKA_PREFIX\s*\?=\s*\S*/librdkafka-(\S+)$',
                        (REPO / 'Makefile').read_text(), re.M).group(1)
    assert '(librdkafka %s,' % rdkafka in version.stdout, (rdkafka, version.stdout)

    confdir = tmp_path / 'etc-ktrigger'
    confdir.mkdir()
    conf = kt.base_config(kafka_bootstrap, ['kt-image-check'], 8080, 9464)
    (confdir / 'ktrigger.conf').write_text(kt.render_config(conf))
    mount = ['%s:/etc/ktrigger:ro' % confdir]
    good = run_in(container, '/usr/local/bin/ktrigger', '-c', '/etc/ktrigger/ktrigger.conf',
                  '--check-config', volumes=mount)
    assert good.returncode == 0, good

    conf['runtime']['port'] = 70000
    text = kt.render_config(conf)
    (confdir / 'ktrigger.conf').write_text(text)
    bad = run_in(container, '/usr/local/bin/ktrigger', '-c', '/etc/ktrigger/ktrigger.conf',
                 '--check-config', volumes=mount)
    want = '/etc/ktrigger/ktrigger.conf:%d: runtime.port:' % kt.line_of(text, '70000')
    assert bad.returncode == 78 and want in bad.stderr, (bad.returncode, bad.stderr)

    # The documented sample ships in the image and is a valid config once a handler is set.
    sample = run_in(container, 'test', '-s', '/usr/share/doc/ktrigger/ktrigger.conf.example')
    assert sample.returncode == 0, 'no sample config in the image'


def descendants(pid):
    children = {}
    for st in Path('/proc').glob('[0-9]*/stat'):
        try:
            fields = st.read_text().rsplit(')', 1)[1].split()
        except OSError:
            continue
        children.setdefault(int(fields[1]), []).append(int(st.parent.name))
    out, todo = [], [pid]
    while todo:
        for c in children.get(todo.pop(), []):
            out.append(c)
            todo.append(c)
    return out


def proc_comm(pid):
    try:
        return Path('/proc/%d/comm' % pid).read_text().strip()
    except OSError:
        return None


def proc_ids(pid, field):
    """Real, effective, saved, filesystem ids from /proc/PID/status (Uid or Gid)."""
    for line in Path('/proc/%d/status' % pid).read_text().splitlines():
        if line.startswith(field + ':'):
            return [int(x) for x in line.split()[1:]]
    raise AssertionError('no %s in /proc/%d/status' % (field, pid))


def test_image_delivers_from_real_broker_as_uid_10001(container, tmp_path, kafka, names,
                                                       kafka_bootstrap, runtime_factory):
    """The image's ktrigger, run by its ENTRYPOINT path with a mounted config, consumes the
    real broker, calls a recorder runtime on the host once per record in order, runs as
    10001:10001, exits 0 on SIGTERM and leaves the group committed at the end offsets."""
    partitions, per_partition = 3, 100
    kafka.create_topic(names.topic, partitions)
    rt = runtime_factory()
    metrics_port = kt.free_port()
    conf = kt.base_config(kafka_bootstrap, [names.topic], rt.port, metrics_port,
                          group_id=names.group)
    confdir = tmp_path / 'etc-ktrigger'
    confdir.mkdir()
    (confdir / 'ktrigger.conf').write_text(kt.render_config(conf))
    produced = kafka.produce(names.topic, [(p, 'image-%d-%d' % (p, i))
                                           for p in range(partitions)
                                           for i in range(per_partition)])

    log_path = tmp_path / 'ktrigger-image.log'
    argv = [str(BUILDAH), 'run', '--isolation', 'chroot', '--network', 'host',
            '-v', '%s:/etc/ktrigger:ro' % confdir, container, '--',
            '/usr/local/bin/ktrigger', '-c', '/etc/ktrigger/ktrigger.conf']
    with open(log_path, 'ab') as log:
        proc = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL)
    ktrigger = kt.KTrigger(proc, confdir / 'ktrigger.conf', log_path, metrics_port)
    try:
        ktrigger.wait_healthy(timeout=60)
        pids = kt.wait_for(lambda: [p for p in descendants(proc.pid)
                                    if proc_comm(p) == 'ktrigger'],
                           10, 'the ktrigger process under buildah run')
        assert len(pids) == 1, pids
        pid = pids[0]
        assert proc_ids(pid, 'Uid') == [UID] * 4, proc_ids(pid, 'Uid')
        assert proc_ids(pid, 'Gid') == [UID] * 4, proc_ids(pid, 'Gid')

        total = partitions * per_partition
        kt.wait_for(lambda: len(rt.calls()) >= total, 60, '%d calls' % total,
                    describe=lambda: '%d calls' % len(rt.calls()))
        end = kafka.end_offsets(names.topic)
        kt.wait_for(lambda: kafka.committed(names.group, names.topic) == end, 30,
                    'committed == end offsets %s' % end,
                    describe=lambda: str(kafka.committed(names.group, names.topic)))
        samples = ktrigger.metrics()
        assert kt.metric_sum(samples, 'function_calls_total') == total, samples

        os.kill(pid, signal.SIGTERM)
        rc = proc.wait(timeout=30)
        assert rc == 0, 'buildah run exited %d; log:\n%s' % (rc, kt.tail(log_path))
    finally:
        if proc.poll() is None:
            for p in descendants(proc.pid):
                if proc_comm(p) == 'ktrigger':
                    os.kill(p, signal.SIGKILL)
            kt.stop_process(proc, 10)

    calls = rt.calls()
    kt.assert_exactly_once_in_order(calls, kt.expected_by_partition(produced), partitions,
                                    'image ktrigger')
    assert kafka.committed(names.group, names.topic) == end
    assert 'ERROR' not in ktrigger.log(), kt.tail(log_path)
