/*
 * Test handler for batched delivery on the Node.js runtime: the twin of
 * runtimes/python/handlers/batch_recorder.py (same variables RECORD_FILE, HANDLER_DELAY_MS,
 * RETRY_TIMES, DROP_BODIES, MALFORMED_NTH, EMPTY_ANSWER and the same JSON line per request);
 * see that file for their meaning.
 */
'use strict';

const fs = require('fs');

let fd = null;
let seqNo = 0;
let inProgress = 0;
const retried = new Map();

function list(name) {
  return (process.env[name] || '').split(',').filter((x) => x !== '');
}

function pairs(name) {
  const out = new Map();
  for (const item of list(name)) {
    const i = item.lastIndexOf('=');
    out.set(item.slice(0, i), Number(item.slice(i + 1)));
  }
  return out;
}

function record(line) {
  if (fd === null) fd = fs.openSync(process.env.RECORD_FILE, 'a', 0o644);
  fs.writeSync(fd, Buffer.from(JSON.stringify(line) + '\n', 'utf-8'));
}

// JSON with sorted keys, compact: as Python's json.dumps(sort_keys=True, separators=(',', ':')).
function sortedJson(v) {
  if (Array.isArray(v)) return '[' + v.map(sortedJson).join(',') + ']';
  if (v && typeof v === 'object') {
    return '{' + Object.keys(v).sort().map((k) => JSON.stringify(k) + ':' + sortedJson(v[k]))
      .join(',') + '}';
  }
  return JSON.stringify(v);
}

function entryBody(ev) {
  if ('data' in ev) return sortedJson(ev.data);
  if ('data_base64' in ev) return Buffer.from(ev.data_base64, 'base64').toString('utf-8');
  return null;
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
    return await handle(event, arrival, seq, concurrent);
  } finally {
    inProgress -= 1;
  }
}

async function handle(event, arrival, seq, concurrent) {
  const req = event.extensions.request;
  const res = event.extensions.response;
  const raw = Buffer.isBuffer(req.body) ? req.body : Buffer.alloc(0);
  const line = {
    seq, time: arrival, concurrent, content_type: req.get('content-type') || '',
    bytes: raw.length, events: [],
  };
  const delay = Number(process.env.HANDLER_DELAY_MS || 0);
  if (delay) await sleep(delay);
  let evs = null;
  try {
    evs = JSON.parse(raw.toString('utf-8'));
  } catch (e) {
    evs = null;
  }
  line.batch = Array.isArray(evs);
  if (!line.batch) {
    line.done = Date.now() / 1000;
    record(line);
    return 'ok';
  }
  const retryTimes = pairs('RETRY_TIMES');
  const drops = list('DROP_BODIES');
  const answer = {};
  const order = [];
  for (const ev of evs) {
    const body = entryBody(ev);
    const subject = (ev.subject || '').slice('partition:'.length);
    const [part, off] = subject.split('#');
    let key = ev.partitionkey === undefined ? null : ev.partitionkey;
    if (key !== null && ev.partitionkeyencoding === 'base64') {
      key = Buffer.from(key, 'base64').toString('utf-8');
    }
    const attrs = {};
    for (const k of Object.keys(ev)) if (k !== 'data' && k !== 'data_base64') attrs[k] = ev[k];
    line.events.push({ id: ev.id, body, partition: Number(part), offset: Number(off), key, attrs });
    let status = 'SUCCESS';
    const seen = retried.get(body) || 0;
    if (seen < (retryTimes.get(body) || 0)) {
      retried.set(body, seen + 1);
      status = 'RETRY';
    }
    if (drops.includes(body)) status = 'DROP';
    answer[ev.id] = status;
    order.push(ev.id);
  }
  let out;
  if (list('MALFORMED_NTH').includes(String(seq))) {
    line.answer = 'malformed';
    out = '{"statuses": "not a list"}';
  } else if (process.env.EMPTY_ANSWER === '1') {
    line.answer = 'empty';
    out = '';
  } else {
    line.answer = answer;
    out = JSON.stringify({ statuses: order.map((id) => ({ entryId: id, status: answer[id] })) });
  }
  res.type('application/json');
  line.done = Date.now() / 1000;
  record(line);
  return out;
}

module.exports = { handler };
