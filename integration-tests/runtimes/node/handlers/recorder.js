/*
 * Test handler for the Node.js runtime: the twin of runtimes/python/handlers/recorder.py.
 * Same environment variables (RECORD_FILE, FAIL_BODIES, FAIL_NTH, FAIL_KEYS, STATUS_BODIES,
 * RETRY_AFTER, HANDLER_DELAY_MS, SLEEP_BODIES, DROP_BODIES, REPLY_BODY, ARRIVAL_FILE) and the
 * same JSON line per call (body, body_b64, headers, header_list, time, done, seq, concurrent,
 * status, failed, dropped, slept_ms); see recorder.py for their meaning.  No raw_headers_b64: node's parser
 * hands over parsed headers only (req.rawHeaders, in order and with their case).
 */
'use strict';

const fs = require('fs');

let fd = null;
let seqNo = 0;
let inProgress = 0;

function list(name) {
  return (process.env[name] || '').split(',').filter((x) => x !== '');
}

function pairs(name) {
  const out = new Map();
  for (const item of list(name)) {
    const i = item.lastIndexOf('=');
    if (i < 0) throw new Error(`${name}: ${item} is not body=value`);
    out.set(item.slice(0, i), Number(item.slice(i + 1)));
  }
  return out;
}

function recordArrival(body, headers, seq, arrival) {
  if (!process.env.ARRIVAL_FILE) return;
  const line = { body, 'event-id': headers['event-id'] || null, seq, time: arrival };
  fs.appendFileSync(process.env.ARRIVAL_FILE, JSON.stringify(line) + '\n');
}

function record(line) {
  if (fd === null) fd = fs.openSync(process.env.RECORD_FILE, 'a', 0o644);
  fs.writeSync(fd, Buffer.from(JSON.stringify(line) + '\n', 'utf-8'));
}

// Python's bytes.decode('utf-8', 'backslashreplace'): valid UTF-8 decoded, every byte of an
// invalid sequence written as \xNN.
function seqLen(b, i) {
  const c = b[i];
  let n;
  let lo = 0x80;
  let hi = 0xbf;
  if (c < 0x80) return 1;
  if (c >= 0xc2 && c <= 0xdf) n = 2;
  else if (c >= 0xe0 && c <= 0xef) {
    n = 3;
    if (c === 0xe0) lo = 0xa0;
    if (c === 0xed) hi = 0x9f;
  } else if (c >= 0xf0 && c <= 0xf4) {
    n = 4;
    if (c === 0xf0) lo = 0x90;
    if (c === 0xf4) hi = 0x8f;
  } else return 0;
  if (i + n > b.length) return 0;
  for (let k = 1; k < n; k++) {
    const x = b[i + k];
    if (x < (k === 1 ? lo : 0x80) || x > (k === 1 ? hi : 0xbf)) return 0;
  }
  return n;
}

function text(buf) {
  let out = '';
  let start = 0;
  let i = 0;
  while (i < buf.length) {
    const n = seqLen(buf, i);
    if (n > 0) {
      i += n;
      continue;
    }
    out += buf.toString('utf-8', start, i) + '\\x' + buf[i].toString(16).padStart(2, '0');
    i += 1;
    start = i;
  }
  return out + buf.toString('utf-8', start, buf.length);
}

function sleep(ms) {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

async function handler(event, context) {
  const arrival = Date.now() / 1000;
  seqNo += 1;
  inProgress += 1;
  const seq = seqNo;
  const concurrent = inProgress;
  try {
    return await handle(event, context, arrival, seq, concurrent);
  } finally {
    inProgress -= 1;
  }
}

async function handle(event, context, arrival, seq, concurrent) {
  const req = event.extensions.request;
  const res = event.extensions.response;
  const raw = Buffer.isBuffer(req.body) ? req.body : Buffer.alloc(0);
  const body = text(raw);
  const headerList = [];
  const headers = {};
  for (let i = 0; i + 1 < req.rawHeaders.length; i += 2) {
    // node hands header bytes over as latin-1 characters
    const name = req.rawHeaders[i];
    const value = text(Buffer.from(req.rawHeaders[i + 1], 'latin1'));
    headerList.push([name, value]);
    const lname = name.toLowerCase();
    headers[lname] = lname in headers ? `${headers[lname]}, ${value}` : value;
  }
  const line = {
    body,
    body_b64: raw.toString('base64'),
    headers,
    header_list: headerList,
    time: arrival,
    seq,
    concurrent,
  };

  recordArrival(body, headers, seq, arrival);
  const sleepMs = Number(process.env.HANDLER_DELAY_MS || 0)
    + (pairs('SLEEP_BODIES').get(body) || 0);
  if (sleepMs > 0) {
    line.slept_ms = sleepMs;
    await sleep(sleepMs);
  }

  function finish(status, extra) {
    if (status !== null && context && context.timeout
        && Date.now() / 1000 - arrival >= Number(context.timeout)) {
      status = 408; // the runtime has already answered 408 for us
    }
    Object.assign(line, extra || {});
    line.status = status;
    if (status === null || status < 200 || status >= 300) line.failed = true;
    line.done = Date.now() / 1000;
    record(line);
  }

  if (list('DROP_BODIES').includes(body)) {
    finish(null, { dropped: true });
    req.socket.destroy();
    return undefined;
  }

  let key = headers['event-key'];
  if (key !== undefined && headers['event-key-encoding'] === 'base64') {
    key = text(Buffer.from(key, 'base64'));
  }
  if (list('FAIL_BODIES').includes(body) || list('FAIL_NTH').includes(String(seq))
      || (key !== undefined && list('FAIL_KEYS').includes(key))) {
    finish(500);
    throw new Error(`failing on purpose: call ${seq}, body ${JSON.stringify(body)}, key ${key}`);
  }

  const status = pairs('STATUS_BODIES').get(body) || 200;
  const reply = process.env.REPLY_BODY;
  finish(status);
  if (!res.headersSent) { // else the runtime has answered already (408)
    res.status(status);
    if ((status === 429 || status === 503) && process.env.RETRY_AFTER) {
      res.set('Retry-After', process.env.RETRY_AFTER);
    }
    if (reply !== undefined) res.type('application/json');
  }
  return reply !== undefined ? reply : 'ok';
}

module.exports = { handler };
