"""Test handler: records every call it receives, one JSON line per call.

  RECORD_FILE        file to append to (required)
  FAIL_BODIES        comma-separated raw bodies to fail (raise -> 500); the attempt is still
                     recorded, with "failed": true
  HANDLER_DELAY_MS   sleep this long in every call (default 0)

A line: {"body": raw body as str, "headers": {lower-cased name: value}, "time": epoch float}
plus "failed": true for a failed attempt.  Each line is written with a single write() on an
O_APPEND descriptor under a lock, so concurrent calls never interleave.
"""

import json
import os
import threading
import time

_lock = threading.Lock()
_fd = None


class InjectedFailure(Exception):
    pass


def _record(line):
    global _fd
    data = (json.dumps(line, sort_keys=True) + '\n').encode('utf-8')
    with _lock:
        if _fd is None:
            _fd = os.open(os.environ['RECORD_FILE'], os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        os.write(_fd, data)


def handler(event, context):
    request = event['extensions']['request']
    raw = request.body.read()
    body = raw.decode('utf-8', errors='backslashreplace')
    headers = {name.lower(): value for name, value in request.headers.items()}
    delay_ms = float(os.environ.get('HANDLER_DELAY_MS') or 0)
    if delay_ms > 0:
        time.sleep(delay_ms / 1000.0)
    fail = [b for b in os.environ.get('FAIL_BODIES', '').split(',') if b]
    line = {'body': body, 'headers': headers, 'time': time.time()}
    if body in fail:
        line['failed'] = True
        _record(line)
        raise InjectedFailure('failing on purpose for body %r' % body)
    _record(line)
    return 'ok'
