#!/usr/bin/python3
"""Kubeless-style Python function runtime (Bottle), for ktrigger's integration tests.

Modelled on Kubeless' python runtime (docker/runtime/python/kubeless.py): it imports
MOD_NAME from MOD_ROOT_PATH, serves FUNC_HANDLER on 127.0.0.1:FUNC_PORT and calls it as
handler(event, context) for a request on any path with any of GET/POST/PUT/PATCH/DELETE.

  MOD_NAME        module to import (e.g. recorder)                      required
  FUNC_HANDLER    function in that module (e.g. handler)                required
  FUNC_PORT       port to listen on (127.0.0.1)                         default 8080
  FUNC_TIMEOUT    seconds a call may take, else 408                     default 180
  MOD_ROOT_PATH   directory the module is imported from                 default ./handlers
  EXIT_AFTER_TIMEOUT  1: once a 408 for a call past FUNC_TIMEOUT is written, the process
                  exits (status 0), cutting the calls still in progress, as the real Go and
                  Ruby Kubeless runtimes do
  FUNC_RUNTIME, FUNC_MEMORY_LIMIT   passed to the handler in its context

The event is Kubeless' {'data', 'event-id', 'event-type', 'event-time', 'event-namespace',
'extensions': {'request', 'response'}}: data is the parsed JSON for application/json, else the
body as str (bytes if it is not UTF-8).  A handler sets the status and headers of its answer
on extensions.response (a bottle.BaseResponse), as Kubeless' bottle.response.

Differences from Kubeless, on purpose: the handler runs in a worker thread (not a forked
process) so handlers can share state such as a file lock, and a timed-out handler is left to
finish in the background; errors are answered as 500 with the exception text.  Prints
"listening on 127.0.0.1:PORT" once the socket is bound; exits 0 on SIGTERM/SIGINT.

For tests, the WSGI environ also carries 'kubeless.raw_headers' (the request's header block,
bytes exactly as received, so a test can see what the WSGI environ normalises away) and
'kubeless.socket' (the connection, so a handler can drop it without answering).
"""

import importlib.util
import json
import os
import signal
import socketserver
import sys
import threading
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

import bottle

HERE = os.path.dirname(os.path.abspath(__file__))
METHODS = ['GET', 'POST', 'PUT', 'PATCH', 'DELETE']


def load_function():
    mod_name = os.environ.get('MOD_NAME')
    func_name = os.environ.get('FUNC_HANDLER')
    if not mod_name or not func_name:
        sys.exit('kubeless.py: MOD_NAME and FUNC_HANDLER must be set')
    root = os.environ.get('MOD_ROOT_PATH', os.path.join(HERE, 'handlers'))
    path = os.path.join(root, mod_name + '.py')
    spec = importlib.util.spec_from_file_location(mod_name, path)
    if spec is None:
        sys.exit('kubeless.py: cannot load %s' % path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    func = getattr(mod, func_name, None)
    if not callable(func):
        sys.exit('kubeless.py: %s has no function %s' % (path, func_name))
    return mod_name, func_name, func


MOD_NAME, FUNC_NAME, FUNC = load_function()
FUNC_PORT = int(os.environ.get('FUNC_PORT', '8080'))
FUNC_TIMEOUT = float(os.environ.get('FUNC_TIMEOUT', '180'))
EXIT_AFTER_TIMEOUT = os.environ.get('EXIT_AFTER_TIMEOUT') == '1'
# Set in the thread that answered a 408 (bottle runs in the connection's thread).
_exit_after = threading.local()

CONTEXT = {
    'function-name': '%s.%s' % (MOD_NAME, FUNC_NAME),
    'timeout': FUNC_TIMEOUT,
    'runtime': os.environ.get('FUNC_RUNTIME', 'python3'),
    'memory-limit': os.environ.get('FUNC_MEMORY_LIMIT'),
}

app = bottle.Bottle()
calls = {'total': 0, 'failures': 0, 'timeouts': 0}
calls_lock = threading.Lock()


def count(key):
    with calls_lock:
        calls[key] += 1


def build_event(req):
    raw = req.body.read()
    content_type = (req.content_type or '').split(';')[0].strip().lower()
    if content_type == 'application/json':
        try:
            data = json.loads(raw.decode('utf-8')) if raw else None
        except ValueError as e:
            raise bottle.HTTPError(400, 'invalid JSON body: %s' % e)
    else:
        try:
            data = raw.decode('utf-8')
        except UnicodeDecodeError:
            data = raw
    # bottle.request is thread-local; the handler runs in another thread, so hand it a
    # plain request object over the same (already read, cached) WSGI environ.
    # The same goes for bottle.response: the handler gets its own, copied back by to_response().
    request = bottle.BaseRequest(req.environ)
    return {
        'data': data,
        'event-id': req.get_header('event-id'),
        'event-type': req.get_header('event-type'),
        'event-time': req.get_header('event-time'),
        'event-namespace': req.get_header('event-namespace'),
        'extensions': {'request': request, 'response': bottle.BaseResponse()},
    }


def call_with_timeout(event):
    box = {}

    def run():
        try:
            box['result'] = FUNC(event, CONTEXT)
        except BaseException as e:  # reported to the client as 500
            box['error'] = e

    worker = threading.Thread(target=run, name='handler', daemon=True)
    worker.start()
    worker.join(FUNC_TIMEOUT)
    if worker.is_alive():
        return 'timeout', None
    if 'error' in box:
        return 'error', box['error']
    return 'ok', box.get('result')


def to_response(result, handler_response):
    if isinstance(result, bottle.HTTPResponse):
        return result
    # Status and headers the handler set on extensions.response (Content-Length is bottle's).
    bottle.response.status = handler_response.status_line
    seen = set()
    for name, value in handler_response.headerlist:
        lname = name.lower()
        if lname == 'content-length':
            continue
        if lname in seen:
            bottle.response.add_header(name, value)
        else:
            bottle.response.set_header(name, value)
            seen.add(lname)
    if result is None:
        return ''
    if isinstance(result, (dict, list)):
        bottle.response.content_type = 'application/json'
        return json.dumps(result)
    if isinstance(result, (str, bytes)):
        return result
    return str(result)


@app.get('/healthz')
def healthz():
    return 'OK'


@app.get('/metrics')
def metrics():
    bottle.response.content_type = 'text/plain; version=0.0.4'
    with calls_lock:
        snap = dict(calls)
    return ''.join('runtime_%s %d\n' % (k, v) for k, v in sorted(snap.items()))


@app.route('/', method=METHODS)
@app.route('/<path:path>', method=METHODS)
def handler(path=None):
    count('total')
    event = build_event(bottle.request)
    outcome, value = call_with_timeout(event)
    if outcome == 'timeout':
        count('timeouts')
        if EXIT_AFTER_TIMEOUT:
            _exit_after.flag = True
        return bottle.HTTPResponse(status=408, body='Timeout while processing the function')
    if outcome == 'error':
        count('failures')
        return bottle.HTTPResponse(status=500, body='%s: %s' % (type(value).__name__, value))
    return to_response(value, event['extensions']['response'])


class ThreadingWSGIServer(socketserver.ThreadingMixIn, WSGIServer):
    daemon_threads = True
    # socketserver's default backlog of 5 drops the SYNs of a burst of concurrent connections
    # (ktrigger opens up to dispatch.max_in_flight at once), which then wait 1 s to retry.
    request_queue_size = 1024
    allow_reuse_address = True


class _HeaderTee:
    """Reads like the request's rfile, and keeps every line read (the header block)."""

    def __init__(self, rfile):
        self.rfile, self.lines = rfile, []

    def readline(self, *args):
        line = self.rfile.readline(*args)
        self.lines.append(line)
        return line


class QuietHandler(WSGIRequestHandler):
    raw_headers = b''

    def parse_request(self):
        real, tee = self.rfile, _HeaderTee(self.rfile)
        self.rfile = tee
        try:
            return super().parse_request()
        finally:
            self.rfile = real
            self.raw_headers = b''.join(tee.lines)

    def handle(self):
        super().handle()
        if getattr(_exit_after, 'flag', False):
            self.wfile.flush()
            print('exiting after a 408 (EXIT_AFTER_TIMEOUT)', flush=True)
            os._exit(0)

    def get_environ(self):
        env = super().get_environ()
        env['kubeless.raw_headers'] = self.raw_headers
        env['kubeless.socket'] = self.connection
        return env

    def address_string(self):
        return self.client_address[0]

    def log_message(self, format, *args):
        if os.environ.get('RUNTIME_ACCESS_LOG'):
            super().log_message(format, *args)


def main():
    server = make_server('127.0.0.1', FUNC_PORT, app,
                         server_class=ThreadingWSGIServer, handler_class=QuietHandler)
    stop = threading.Event()

    def on_signal(signum, frame):
        stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    serving = threading.Thread(target=server.serve_forever, kwargs={'poll_interval': 0.1},
                               name='serve', daemon=True)
    serving.start()
    print('listening on 127.0.0.1:%d' % server.server_address[1], flush=True)
    while not stop.wait(1.0):
        pass
    server.shutdown()
    server.server_close()
    print('stopped', flush=True)
    return 0


if __name__ == '__main__':
    sys.exit(main())
