"""The metrics server itself: /healthz and /metrics keep answering while ktrigger holds more
than 1024 file descriptors (libmicrohttpd polls with epoll, not select()), and its own
messages (e.g. a port already taken) come out through ktrigger's logger, so log.format = "json"
gives only JSON lines."""

import json
import os
import resource
import socket
import subprocess
import sys

import pytest

import kthelpers as kt

HELD = 1300  # calls held open by the runtime: ktrigger's fd numbers go past 1024

# A runtime that answers GET (its /healthz) and holds every POST open without answering.
HOLDER = r'''
import asyncio, sys

held = []

async def serve(reader, writer):
    head = await reader.readuntil(b'\r\n\r\n')
    if head.startswith(b'GET'):
        writer.write(b'HTTP/1.1 200 OK\r\nContent-Length: 3\r\nConnection: close\r\n\r\nOK\n')
        await writer.drain()
        writer.close()
        return
    held.append(writer)
    await reader.read()  # until ktrigger gives the call up

async def main():
    server = await asyncio.start_server(serve, '127.0.0.1', int(sys.argv[1]), backlog=4096)
    print('listening', flush=True)
    async with server:
        await server.serve_forever()

asyncio.run(main())
'''


def open_fds(pid):
    return len(os.listdir('/proc/%d/fd' % pid))


def max_fds(pid):
    with open('/proc/%d/limits' % pid) as f:
        for line in f:
            if line.startswith('Max open files'):
                return int(line.split()[3])
    raise AssertionError('no Max open files in /proc/%d/limits' % pid)


def test_healthz_answers_with_over_1024_fds(kafka, names, config, ktrigger_factory, tmp_path):
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = HELD + 1024
    if soft < want:
        if hard != resource.RLIM_INFINITY and hard < want:
            pytest.skip('RLIMIT_NOFILE hard limit %d is too low to hold %d fds' % (hard, want))
        resource.setrlimit(resource.RLIMIT_NOFILE, (want, hard))  # inherited by ktrigger
    kafka.create_topic(names.topic, 2)
    kafka.produce(names.topic, [(i % 2, 'held %d' % i) for i in range(HELD)])
    port = kt.free_port()
    script = tmp_path / 'holder.py'
    script.write_text(HOLDER)
    with open(tmp_path / 'holder.log', 'wb') as log:
        holder = subprocess.Popen([sys.executable, str(script), str(port)], stdout=log,
                                  stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
    try:
        kt.wait_for(lambda: kt.http_get('http://127.0.0.1:%d/healthz' % port)[0] == 200, 20,
                    'the holding runtime')
        conf = config(port)
        conf['dispatch'].update({'ordering': 'none', 'max_in_flight': HELD + 100,
                                 'partition_buffer_records': HELD, 'drain_timeout_ms': 500})
        ktr = ktrigger_factory(conf)
        kt.wait_for(lambda: open_fds(ktr.pid) > HELD, 60,
                    'ktrigger to hold over %d fds' % HELD,
                    describe=lambda: open_fds(ktr.pid))
        print('ktrigger holds %d fds' % open_fds(ktr.pid))
        base = 'http://127.0.0.1:%d' % ktr.metrics_port
        for path in ('/healthz', '/metrics', '/readyz'):
            got = kt.http_get(base + path)
            assert got[0] is not None, '%s: no answer with %d fds open: %s' % (
                path, open_fds(ktr.pid), got[1])
        assert kt.http_get(base + '/healthz')[0] == 200
        samples = ktr.metrics()
        assert kt.metric_sum(samples, 'ktrigger_in_flight') >= HELD
        # The process collector's gauges see the same (give or take the scrape's connection).
        fds = kt.metric_sum(samples, 'process_open_fds')
        assert fds > HELD and abs(fds - open_fds(ktr.pid)) <= 5, (fds, open_fds(ktr.pid))
        assert kt.metric_sum(samples, 'process_max_fds') == max_fds(ktr.pid)
        assert ktr.stop() == 0
    finally:
        kt.stop_process(holder, 10)


def test_bind_failure_in_json_log_mode(names, config, tmp_path):
    taken = socket.socket()
    taken.bind(('127.0.0.1', 0))
    taken.listen(1)
    try:
        conf = config(kt.free_port())
        port = taken.getsockname()[1]
        conf['metrics']['listen'] = '127.0.0.1:%d' % port
        conf['log']['format'] = 'json'
        ktr = kt.spawn_ktrigger(tmp_path, conf)
        rc = ktr.proc.wait(timeout=30)
    finally:
        taken.close()
    assert rc not in (0, None) and rc > 0, 'exit %s' % rc
    lines = [l for l in ktr.log().splitlines() if l.strip()]
    assert lines
    objs = []
    for line in lines:
        try:
            objs.append(json.loads(line))
        except ValueError:
            raise AssertionError('not a JSON line on stderr: %r' % line)
    for obj in objs:
        assert set(obj) == {'time', 'level', 'facility', 'message'}, obj
    # libmicrohttpd's own reason, through the logger, and ktrigger's start-up error.
    assert any(o['facility'] == 'METRICS' and 'bind' in o['message'].lower() and
               str(port) in o['message'] for o in objs), objs
    assert any(o['level'] == 'ERROR' and 'cannot listen' in o['message'] for o in objs), objs
    assert not any('standard MHD logger' in o['message'] for o in objs), objs
