"""Bounded memory: with 200,000 records of lag over 8 partitions and a slow runtime, ktrigger's
peak RSS stays under a fixed bound, because each partition's buffer is bounded (paused when
full) and librdkafka's prefetch is bounded by ktrigger's defaults.

Measured on the release binary (an ASan build's RSS says nothing about the product); skipped
if ./ktrigger is not built. Bound: 64 MiB with the default settings (16 MiB of librdkafka
prefetch, 8 x 1000 buffered records, libraries); 41 MiB was measured here."""

import os
import subprocess
import time
from pathlib import Path

import pytest

import kthelpers as kt

PARTITIONS = 8
RECORDS = 200_000
VALUE = 'x' * 94
BOUND_KIB = 64 * 1024


def vm_kib(pid, field):
    with open('/proc/%d/status' % pid) as f:
        for line in f:
            if line.startswith(field + ':'):
                return int(line.split()[1])
    raise AssertionError('%s not in /proc/%d/status' % (field, pid))


def test_rss_bounded_under_lag(kafka, kafka_bootstrap, names, config, runtime_factory, tmp_path):
    release = Path(os.environ.get('KTRIGGER_RELEASE_BIN', kt.REPO / 'ktrigger'))
    if not release.exists():
        pytest.skip('release binary %s not built (make)' % release)
    kafka.create_topic(names.topic, PARTITIONS)
    lines = ''.join('%06d%s\n' % (i, VALUE) for i in range(RECORDS)).encode()
    subprocess.run(['kcat', '-P', '-b', kafka_bootstrap, '-t', names.topic], input=lines,
                   check=True, timeout=120)
    end = kafka.end_offsets(names.topic)
    assert sum(end.values()) == RECORDS

    rt = runtime_factory(delay_ms=5)
    conf_path = tmp_path / 'ktrigger.conf'
    conf_path.write_text(kt.render_config(config(rt.port)))
    log_path = tmp_path / 'ktrigger-release.log'
    with open(log_path, 'ab') as log:
        proc = subprocess.Popen([str(release), '-c', str(conf_path)], env=kt.ktrigger_env(),
                                stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
    try:
        kt.wait_for(lambda: len(rt.calls()) >= 2000, 60, 'the backlog to be flowing')
        # Let it run lagging: every partition keeps hitting its buffer bound.
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            assert proc.poll() is None, kt.tail(log_path)
            time.sleep(0.5)
        peak = vm_kib(proc.pid, 'VmHWM')
        delivered = len(rt.calls())
    finally:
        rc, timed_out = kt.stop_process(proc, 30)
    print('peak RSS %d KiB with %d of %d records delivered' % (peak, delivered, RECORDS))
    assert delivered < RECORDS // 2, 'the lag was gone: nothing bounded was tested'
    assert peak < BOUND_KIB, 'peak RSS %d KiB over the %d KiB bound' % (peak, BOUND_KIB)
    assert rc == 0 and not timed_out, kt.tail(log_path)
