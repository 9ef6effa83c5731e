"""A response is an answer only when its header block is complete.  Against a raw TCP
"runtime" that answers each call of one record with a broken response and closes: cut off
inside a header line (`200 OK\\r\\nContent-Ty`), the status line alone, a 1xx interim response
and nothing after it, nothing at all, a header block over libcurl's 100 KiB limit; each is a
retriable transport failure (ktrigger_calls_total{outcome="transport_error"}), never a 2xx, a
call of the function (function_calls_total and function_failures_total count it), and not
"a request that could not be built".  The sixth call gets a whole 200 and the record is done."""

import socket
import threading

import kthelpers as kt

BROKEN = [
    b'HTTP/1.1 200 OK\r\nContent-Ty',
    b'HTTP/1.1 200 OK\r\n',
    b'HTTP/1.1 100 Continue\r\n\r\n',
    b'',
    b'HTTP/1.1 200 OK\r\nX-Big: ' + b'a' * (200 * 1024) + b'\r\nContent-Length: 0\r\n\r\n',
]
GOOD = b'HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok'


class RawRuntime:
    """Answers GET /healthz with 200; the n-th POST with BROKEN[n] (then GOOD), then closes."""

    def __init__(self):
        self.sock = socket.socket()
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(('127.0.0.1', 0))
        self.sock.listen(16)
        self.port = self.sock.getsockname()[1]
        self.posts = []
        self.stopping = False
        self.thread = threading.Thread(target=self.serve, daemon=True)
        self.thread.start()

    def serve(self):
        while not self.stopping:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            with conn:
                conn.settimeout(5)
                try:
                    self.answer(conn)
                except OSError:
                    pass

    def answer(self, conn):
        data = b''
        while b'\r\n\r\n' not in data:
            chunk = conn.recv(65536)
            if not chunk:
                return
            data += chunk
        head, body = data.split(b'\r\n\r\n', 1)
        length = 0
        for line in head.split(b'\r\n')[1:]:
            name, _, value = line.partition(b':')
            if name.strip().lower() == b'content-length':
                length = int(value)
        while len(body) < length:
            body += conn.recv(65536)
        if head.startswith(b'GET '):
            conn.sendall(GOOD)
            return
        n = len(self.posts)
        self.posts.append(body)
        conn.sendall(BROKEN[n] if n < len(BROKEN) else GOOD)
        conn.shutdown(socket.SHUT_RDWR)

    def close(self):
        self.stopping = True
        self.sock.close()


def test_truncated_responses_are_retried(kafka, names, config, ktrigger_factory):
    kafka.create_topic(names.topic, 1)
    kafka.produce(names.topic, [(0, b'rec')])
    rt = RawRuntime()
    try:
        conf = config(rt.port)
        conf['dispatch'].update({'on_failure': 'skip',
                                 'retry': {'initial_backoff_ms': 20, 'max_backoff_ms': 100,
                                           'max_attempts': 10}})
        ktr = ktrigger_factory(conf)
        end = kafka.end_offsets(names.topic)
        kt.wait_for(lambda: kafka.committed(names.group, names.topic) == end, 30,
                    'committed to the end', describe=lambda: len(rt.posts))
        samples = ktr.metrics()

        def m(name, **labels):
            return kt.metric_sum(samples, name, **labels) or 0

        print('posts: %d; outcomes: success %d transport_error %d; calls %d failures %d; '
              'unbuildable %d; skipped %d' % (
                  len(rt.posts), m('ktrigger_calls_total', outcome='success'),
                  m('ktrigger_calls_total', outcome='transport_error'),
                  m('function_calls_total'), m('function_failures_total'),
                  m('ktrigger_requests_unbuildable_total'), m('ktrigger_skipped_total')))
        assert len(rt.posts) == len(BROKEN) + 1, 'one call per broken answer, then the good one'
        assert all(b == b'rec' for b in rt.posts)
        assert m('ktrigger_calls_total', outcome='success') == 1
        assert m('ktrigger_calls_total', outcome='transport_error') == len(BROKEN)
        assert m('function_calls_total') == len(BROKEN) + 1
        assert m('function_failures_total') == len(BROKEN)
        assert m('ktrigger_requests_unbuildable_total') == 0
        assert m('ktrigger_skipped_total') == 0
        log = ktr.log()
        assert 'response cut off in its header block' in log
        assert ktr.stop() == 0
    finally:
        rt.close()
