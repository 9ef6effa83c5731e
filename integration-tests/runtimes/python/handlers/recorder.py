"""Test handler: records every call it receives, one JSON line per call, and misbehaves on
demand in each way ktrigger's dispatch engine must survive.

  RECORD_FILE        file to append to (required)
  FAIL_BODIES        comma-separated raw bodies to fail (raise -> 500)
  FAIL_NTH           comma-separated call numbers (seq, 1-based in this process) to fail (500)
  FAIL_KEYS          comma-separated keys: fail (500) every call whose event-key header is one
  STATUS_BODIES      comma-separated body=status pairs: answer that status for that body
                     (e.g. "bad=400,slow=429"; the last '=' splits, so a body may contain '=')
  RETRY_AFTER        seconds, sent as Retry-After on every 429 and 503 this handler answers
  HANDLER_DELAY_MS   sleep this long in every call (default 0)
  SLEEP_BODIES       comma-separated body=ms pairs: sleep that long (on top of
                     HANDLER_DELAY_MS) before answering that body, e.g. past ktrigger's timeout
  DROP_BODIES        comma-separated bodies: close the connection without any response
                     (the client sees an empty reply)
  FAIL_TIMES         comma-separated body=n pairs: answer 503 to the first n calls of that body,
                     then as usual (Python runtime only)
  REPLY_BODY         answer this string with Content-Type: application/json (default: "ok")
  ARRIVAL_FILE       also append {"body", "event-id", "seq", "time"} to this file at arrival,
                     before any sleep: a call cut short by the runtime's exit (it never reaches
                     RECORD_FILE) is still seen to have run
  REPLY_BYTES        answer this many bytes ("x" repeated) with Content-Type: application/json
                     instead (a body too big for an environment variable)

Sleeping comes first, then: drop, else FAIL_* (500), else STATUS_BODIES, else 200.

A line (JSON, sorted keys):
  body        raw body as str (undecodable bytes backslash-escaped)
  body_b64    base64 of the raw body bytes (exact, for binary/empty bodies)
  headers     {lower-cased name: value}; values decoded as UTF-8 (undecodable bytes
              backslash-escaped); repeated headers joined with ", "
  header_list [[name as sent, value], ...] in the order received
  raw_headers_b64  the request's header block exactly as received (Python runtime only)
  time        epoch seconds at arrival;  done: epoch seconds when the line is written
  seq         1-based number of this call in this process
  concurrent  calls in progress in this process at arrival, this one included (a dropped
              call stops counting before its connection closes)
  status      the status answered (408 if the call outlived the runtime's FUNC_TIMEOUT, so the
              runtime answered 408); null when the connection was dropped
  failed      true unless the status is 2xx;  dropped: true for a dropped connection
  slept_ms    the sleep of this call, when there was one

Each line is written with a single write() on an O_APPEND descriptor under a lock, so
concurrent calls never interleave; the line is written just before the answer.
"""

import base64
import json
import os
import socket
import threading
import time

_lock = threading.Lock()
_fd = None
_state = {'seq': 0, 'in_progress': 0, 'fail_times': {}}


class InjectedFailure(Exception):
    pass


def _list(name):
    return [x for x in os.environ.get(name, '').split(',') if x]


def _pairs(name):
    out = {}
    for item in _list(name):
        body, sep, value = item.rpartition('=')
        if not sep:
            raise ValueError('%s: %r is not body=value' % (name, item))
        out[body] = int(value)
    return out


def _record(line):
    global _fd
    data = (json.dumps(line, sort_keys=True) + '\n').encode('utf-8')
    with _lock:
        if _fd is None:
            _fd = os.open(os.environ['RECORD_FILE'], os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        os.write(_fd, data)


def _record_arrival(body, headers, seq, arrival):
    path = os.environ.get('ARRIVAL_FILE')
    if not path:
        return
    data = (json.dumps({'body': body, 'event-id': headers.get('event-id'), 'seq': seq,
                        'time': arrival}, sort_keys=True) + '\n').encode('utf-8')
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, data)
    finally:
        os.close(fd)


def _text(raw):
    return raw.decode('utf-8', errors='backslashreplace')


def _parse_raw_headers(raw):
    """The header block as received -> [[name, value], ...] (obs-fold lines joined)."""
    out = []
    for line in raw.split(b'\n'):
        line = line[:-1] if line.endswith(b'\r') else line
        if not line:
            continue
        if line[:1] in (b' ', b'\t') and out:
            out[-1][1] += ' ' + _text(line.strip())
            continue
        name, _, value = line.partition(b':')
        out.append([_text(name), _text(value.strip(b' \t'))])
    return out


def _header_list(environ):
    raw = environ.get('kubeless.raw_headers')
    if raw is not None:
        return _parse_raw_headers(raw)
    # No raw block (another WSGI server): rebuild from the environ, names normalised.
    out = []
    for key, value in environ.items():
        if key.startswith('HTTP_'):
            name = key[5:]
        elif key in ('CONTENT_TYPE', 'CONTENT_LENGTH') and value:
            name = key
        else:
            continue
        out.append([name.replace('_', '-').lower(), _text(value.encode('latin-1'))])
    return out


def _headers(header_list):
    out = {}
    for name, value in header_list:
        name = name.lower()
        out[name] = out[name] + ', ' + value if name in out else value
    return out


def handler(event, context):
    arrival = time.time()
    with _lock:
        _state['seq'] += 1
        _state['in_progress'] += 1
        seq, concurrent = _state['seq'], _state['in_progress']
    released = []

    def release():
        # Once only: DROP_BODIES releases before the client can see its connection close.
        if not released:
            released.append(True)
            with _lock:
                _state['in_progress'] -= 1
    try:
        return _handle(event, context, arrival, seq, concurrent, release)
    finally:
        release()


def _handle(event, context, arrival, seq, concurrent, release):
    request = event['extensions']['request']
    response = event['extensions']['response']
    raw = request.body.read()
    body = _text(raw)
    header_list = _header_list(request.environ)
    headers = _headers(header_list)
    line = {'body': body, 'body_b64': base64.b64encode(raw).decode('ascii'),
            'headers': headers, 'header_list': header_list, 'time': arrival, 'seq': seq,
            'concurrent': concurrent}
    if 'kubeless.raw_headers' in request.environ:
        line['raw_headers_b64'] = base64.b64encode(
            request.environ['kubeless.raw_headers']).decode('ascii')

    _record_arrival(body, headers, seq, arrival)
    sleep_ms = float(os.environ.get('HANDLER_DELAY_MS') or 0) + _pairs('SLEEP_BODIES').get(body, 0)
    if sleep_ms > 0:
        line['slept_ms'] = sleep_ms
        time.sleep(sleep_ms / 1000.0)

    def finish(status, **extra):
        timeout = context.get('timeout') if isinstance(context, dict) else None
        if status is not None and timeout and time.time() - arrival >= float(timeout):
            status = 408  # the runtime has already answered 408 for us
        line.update(extra)
        line['status'] = status
        if status is None or not 200 <= status < 300:
            line['failed'] = True
        line['done'] = time.time()
        _record(line)

    if body in _list('DROP_BODIES'):
        sock = request.environ.get('kubeless.socket')
        if sock is None:
            raise RuntimeError('DROP_BODIES needs the runtime to expose kubeless.socket')
        finish(None, dropped=True)
        release()  # else the caller's next call can arrive first and count this one
        sock.shutdown(socket.SHUT_RDWR)  # the runtime's answer then fails to be written
        raise InjectedFailure('dropped the connection for body %r' % body)

    key = headers.get('event-key')
    if key is not None and headers.get('event-key-encoding') == 'base64':
        key = _text(base64.b64decode(key))
    if (body in _list('FAIL_BODIES') or str(seq) in _list('FAIL_NTH')
            or (key is not None and key in _list('FAIL_KEYS'))):
        finish(500)
        raise InjectedFailure('failing on purpose: call %d, body %r, key %r' % (seq, body, key))

    times = _pairs('FAIL_TIMES').get(body, 0)
    with _lock:
        failed_before = _state['fail_times'].get(body, 0)
        if failed_before < times:
            _state['fail_times'][body] = failed_before + 1
    status = 503 if failed_before < times else _pairs('STATUS_BODIES').get(body, 200)
    response.status = status
    if status in (429, 503) and os.environ.get('RETRY_AFTER'):
        response.set_header('Retry-After', os.environ['RETRY_AFTER'])
    reply = os.environ.get('REPLY_BODY')
    if os.environ.get('REPLY_BYTES'):
        reply = 'x' * int(os.environ['REPLY_BYTES'])
    if reply is not None:
        response.content_type = 'application/json'
    finish(status)
    return reply if reply is not None else 'ok'
