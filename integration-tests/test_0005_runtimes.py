"""The test runtimes themselves (no Kafka, no ktrigger): each Kubeless-style runtime (Python,
Node.js, Ruby) with the recorder handler answers /healthz, records every call in the same
format (exact body bytes, headers, seq, concurrent, status) and misbehaves exactly as told:
FAIL_BODIES / FAIL_NTH / FAIL_KEYS (500), STATUS_BODIES with Retry-After on 429/503,
SLEEP_BODIES (past FUNC_TIMEOUT: 408), DROP_BODIES (connection closed, no response) and
REPLY_BODY (application/json); with EXIT_AFTER_TIMEOUT=1 the process exits once its 408 is
written, cutting the calls in progress (as the real Go and Ruby runtimes do), and ARRIVAL_FILE
shows every handler that ran, also those cut.  The other tests rely on these behaviours."""

import base64
import http.client
import threading
import time

import pytest

import kthelpers as kt


def post(port, body, headers=None, timeout=10):
    """POST body; returns (status, {lower-cased header: value}, body bytes)."""
    conn = http.client.HTTPConnection('127.0.0.1', port, timeout=timeout)
    try:
        conn.request('POST', '/', body=body, headers=headers or {})
        resp = conn.getresponse()
        return resp.status, {k.lower(): v for k, v in resp.getheaders()}, resp.read()
    finally:
        conn.close()


@pytest.mark.parametrize('lang', kt.LANGS)
def test_recorder_behaviours(lang, runtime_factory):
    rt = runtime_factory(lang=lang, fail_bodies=['fail'], fail_nth=[2], fail_keys=['bad-key'],
                         status_bodies={'bad': 400, 'busy': 429, 'down=1': 503},
                         retry_after=3, sleep_bodies={'slow': 1500}, drop_bodies=['drop'],
                         reply_body='{"reply": true}', func_timeout=1)
    json_ct = 'application/json'
    status, headers, body = post(rt.port, b'first', {'event-key': 'k1'})
    assert status == 200 and body == b'{"reply": true}', (status, body)
    assert headers['content-type'].startswith(json_ct), headers
    assert post(rt.port, b'second')[0] == 500  # FAIL_NTH=2
    assert post(rt.port, b'fail')[0] == 500
    assert post(rt.port, b'x', {'event-key': 'bad-key'})[0] == 500
    assert post(rt.port, b'y', {'event-key': base64.b64encode(b'bad-key').decode(),
                                'event-key-encoding': 'base64'})[0] == 500
    status, headers, _ = post(rt.port, b'bad')
    assert status == 400 and 'retry-after' not in headers, (status, headers)
    status, headers, _ = post(rt.port, b'busy')
    assert (status, headers.get('retry-after')) == (429, '3'), (status, headers)
    status, headers, _ = post(rt.port, b'down=1')
    assert (status, headers.get('retry-after')) == (503, '3'), (status, headers)
    with pytest.raises((http.client.RemoteDisconnected, ConnectionResetError)):
        post(rt.port, b'drop')
    binary = b'\x00\xff\xfe\x80bin\x00'
    assert post(rt.port, binary, {'Content-Type': 'application/octet-stream'})[0] == 200
    assert post(rt.port, b'', {'Content-Type': 'text/plain'})[0] == 200
    assert post(rt.port, b'slow')[0] == 408  # 1.5 s > FUNC_TIMEOUT 1 s

    kt.wait_for(lambda: len(rt.calls()) >= 12, 5, '12 recorded calls',
                describe=lambda: rt.calls())
    calls = sorted(rt.calls(), key=lambda c: c.seq)
    assert [c.seq for c in calls] == list(range(1, 13))
    assert [c.status for c in calls] == [200, 500, 500, 500, 500, 400, 429, 503, None, 200,
                                         200, 408]
    assert [c.failed for c in calls] == [False] + [True] * 8 + [False, False, True]
    assert calls[0].body == 'first' and calls[0].key == b'k1'
    assert calls[0].headers['event-key'] == 'k1'
    assert calls[4].key == b'bad-key'
    assert calls[8].line.get('dropped') is True
    assert calls[9].body_bytes == binary
    assert calls[9].body == '\x00\\xff\\xfe\\x80bin\x00'  # Python's backslashreplace
    assert calls[10].body_bytes == b'' and calls[10].body == ''
    assert calls[11].line.get('slept_ms') == 1500
    concurrent = [(c.seq, c.body, c.concurrent) for c in calls]
    assert [c.concurrent for c in calls] == [1] * 12, concurrent
    assert all(isinstance(c.header_list, list) and c.time > 0 for c in calls)


@pytest.mark.parametrize('lang', kt.LANGS)
def test_recorder_counts_concurrent_calls(lang, runtime_factory):
    rt = runtime_factory(lang=lang, sleep_bodies={'slow': 400})
    results = []
    threads = [threading.Thread(target=lambda: results.append(post(rt.port, b'slow')[0]))
               for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(10)
    assert results == [200] * 4
    assert post(rt.port, b'after')[0] == 200
    calls = rt.calls()
    assert len(calls) == 5
    assert kt.max_concurrent(calls) == 4, [(c.seq, c.concurrent) for c in calls]
    assert [c.concurrent for c in calls if c.body == 'after'] == [1]


def test_python_runtime_records_raw_header_block(runtime_factory):
    rt = runtime_factory(lang='python')
    assert post(rt.port, b'raw', {'Event-Header-a_b': 'x y', 'event-key': 'k'})[0] == 200
    (call,) = rt.calls()
    assert call.raw_headers.endswith(b'\r\n\r\n')
    assert b'Event-Header-a_b: x y\r\n' in call.raw_headers
    # Underscored names, which the WSGI environ drops, are kept.
    assert ['Event-Header-a_b', 'x y'] in call.header_list
    assert call.record_headers == [('a_b', b'x y')]


@pytest.mark.parametrize('lang', kt.LANGS)
def test_exit_after_timeout(lang, runtime_factory, tmp_path):
    """EXIT_AFTER_TIMEOUT=1, as the real Go and Ruby runtimes: a call past FUNC_TIMEOUT is
    answered 408 and then the process exits, cutting a call still in progress on another
    connection (no answer at all); ARRIVAL_FILE shows that both handlers ran."""
    rt = runtime_factory(lang=lang, func_timeout=1, sleep_bodies={'slow': 1500, 'cut': 4000},
                         arrival_file=tmp_path / 'arrivals.jsonl', exit_after_timeout=True)
    assert post(rt.port, b'fast')[0] == 200
    assert rt.proc.poll() is None, 'exited after a 200'
    results = {}

    def call(body):
        try:
            results[body] = post(rt.port, body.encode())[0]
        except (http.client.HTTPException, OSError) as e:
            results[body] = e

    def arrived(body):
        return any(a['body'] == body for a in rt.arrivals())

    threads = [threading.Thread(target=call, args=('slow',))]
    threads[0].start()
    kt.wait_for(lambda: arrived('slow'), 5, 'slow arrived')
    # 'cut' starts well within slow's second: it is in progress (not past its own timeout)
    # when slow's 408 makes the runtime exit.
    time.sleep(0.3)
    threads.append(threading.Thread(target=call, args=('cut',)))
    threads[1].start()
    kt.wait_for(lambda: arrived('cut'), 5, 'cut arrived')
    kt.wait_for(lambda: rt.proc.poll() is not None, 5, 'the runtime to exit after its 408')
    assert rt.proc.returncode == 0
    for t in threads:
        t.join(10)
    assert results['slow'] == 408, results  # 1.5 s > FUNC_TIMEOUT 1 s
    # The call in progress got no answer: the connection was closed under it.
    assert isinstance(results['cut'], (http.client.RemoteDisconnected,
                                       ConnectionResetError)), results
    assert sorted(a['body'] for a in rt.arrivals()) == ['cut', 'fast', 'slow']
    # Only ARRIVAL_FILE knows the cut call ran (Ruby's recorder writes slow's 408 line when
    # Timeout interrupts it; the others never finish slow's sleep).
    assert 'cut' not in [c.body for c in rt.calls()], rt.calls()
    # Without the variable the runtime stays up after a 408 (test_recorder_behaviours).
