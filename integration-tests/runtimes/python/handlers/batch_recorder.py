"""Test handler for batched delivery (dispatch.batch.max_records > 1): records every request
as one JSON line with the CloudEvents batch it carried, and answers per entry in Dapr's bulk
subscribe form {"statuses": [{"entryId", "status"}]}.

  RECORD_FILE       file to append to (required)
  HANDLER_DELAY_MS  sleep this long in every request (default 0)
  RETRY_TIMES       comma-separated body=n pairs: answer RETRY for that entry the first n times
                    it is seen
  DROP_BODIES       comma-separated bodies: answer DROP for that entry
  MALFORMED_NTH     comma-separated request numbers (1-based): answer 200 with a body that is
                    not a valid statuses answer
  EMPTY_ANSWER      1: answer 200 with an empty body (every entry succeeded)

An entry's body is its data (JSON, printed compactly with sorted keys) or its data_base64
decoded as UTF-8.  A line (JSON):
  seq, time, done, concurrent  as in recorder.py (per request)
  content_type  the request's Content-Type
  batch         true if the body was a JSON array (the CloudEvents batch format)
  bytes         the request body's length
  events        [{id, body, partition, offset, key, attrs: {every attribute but data*}}]
  answer        {entryId: status} sent back (or "malformed" / "empty")
A request that is not a batch (one record per request) is recorded with batch false and
events [] and answered 200.
"""

import base64
import json
import os
import threading
import time

_lock = threading.Lock()
_fd = None
_state = {'seq': 0, 'in_progress': 0, 'retried': {}}


def _list(name):
    return [x for x in os.environ.get(name, '').split(',') if x]


def _pairs(name):
    out = {}
    for item in _list(name):
        body, _, value = item.rpartition('=')
        out[body] = int(value)
    return out


def _record(line):
    global _fd
    data = (json.dumps(line, sort_keys=True) + '\n').encode('utf-8')
    with _lock:
        if _fd is None:
            _fd = os.open(os.environ['RECORD_FILE'], os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        os.write(_fd, data)


def _entry_body(ev):
    if 'data' in ev:
        return json.dumps(ev['data'], sort_keys=True, separators=(',', ':'))
    if 'data_base64' in ev:
        return base64.b64decode(ev['data_base64']).decode('utf-8', errors='backslashreplace')
    return None


def handler(event, context):
    arrival = time.time()
    with _lock:
        _state['seq'] += 1
        _state['in_progress'] += 1
        seq, concurrent = _state['seq'], _state['in_progress']
    try:
        return _handle(event, arrival, seq, concurrent)
    finally:
        with _lock:
            _state['in_progress'] -= 1


def _handle(event, arrival, seq, concurrent):
    request = event['extensions']['request']
    response = event['extensions']['response']
    raw = request.body.read()
    ctype = request.environ.get('CONTENT_TYPE', '')
    line = {'seq': seq, 'time': arrival, 'concurrent': concurrent, 'content_type': ctype,
            'bytes': len(raw), 'events': []}
    delay = float(os.environ.get('HANDLER_DELAY_MS') or 0)
    if delay:
        time.sleep(delay / 1000.0)
    try:
        evs = json.loads(raw)
    except ValueError:
        evs = None
    line['batch'] = isinstance(evs, list)
    if not isinstance(evs, list):
        line['done'] = time.time()
        _record(line)
        return 'ok'
    retry_times = _pairs('RETRY_TIMES')
    drops = _list('DROP_BODIES')
    answer = {}
    for ev in evs:
        body = _entry_body(ev)
        subject = ev.get('subject', '')  # partition:P#O
        part, _, off = subject[len('partition:'):].partition('#')
        key = ev.get('partitionkey')
        if key is not None and ev.get('partitionkeyencoding') == 'base64':
            key = base64.b64decode(key).decode('utf-8', errors='backslashreplace')
        line['events'].append({
            'id': ev.get('id'), 'body': body, 'partition': int(part), 'offset': int(off),
            'key': key,
            'attrs': {k: v for k, v in ev.items() if k not in ('data', 'data_base64')}})
        status = 'SUCCESS'
        with _lock:
            seen = _state['retried'].get(body, 0)
            if seen < retry_times.get(body, 0):
                _state['retried'][body] = seen + 1
                status = 'RETRY'
        if body in drops:
            status = 'DROP'
        answer[ev.get('id')] = status
    if str(seq) in _list('MALFORMED_NTH'):
        line['answer'] = 'malformed'
        out = '{"statuses": "not a list"}'
    elif os.environ.get('EMPTY_ANSWER') == '1':
        line['answer'] = 'empty'
        out = ''
    else:
        line['answer'] = answer
        out = json.dumps({'statuses': [{'entryId': k, 'status': v} for k, v in answer.items()]})
    response.content_type = 'application/json'
    line['done'] = time.time()
    _record(line)
    return out
