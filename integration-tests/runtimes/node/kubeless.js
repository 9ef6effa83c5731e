#!/usr/bin/env node
/*
 * Kubeless-style Node.js function runtime (Express), for ktrigger's integration tests.
 *
 * Modelled on Kubeless' nodejs runtime (docker/runtime/nodejs/kubeless.js): it loads
 * MOD_NAME.js from MOD_ROOT_PATH, serves FUNC_HANDLER on 127.0.0.1:FUNC_PORT and calls it as
 * handler(event, context) for a request on any path with any method (GET /healthz excepted).
 *
 *   MOD_NAME        module to load (e.g. recorder)                        required
 *   FUNC_HANDLER    exported function of that module (e.g. handler)       required
 *   FUNC_PORT       port to listen on (127.0.0.1)                         default 8080
 *   FUNC_TIMEOUT    seconds a call may take, else 408                     default 180
 *   MOD_ROOT_PATH   directory the module is loaded from                   default ./handlers
 *   REQ_MB_LIMIT    largest request body in MiB                           default 8
 *   EXIT_AFTER_TIMEOUT  1: once a 408 for a call past FUNC_TIMEOUT is written, the process
 *                   exits (status 0), cutting the calls still in progress, as the real Go and
 *                   Ruby Kubeless runtimes do (and node's own for a busy handler)
 *   FUNC_RUNTIME, FUNC_MEMORY_LIMIT   passed to the handler in its context
 *
 * The event is Kubeless' {data, 'event-id', 'event-type', 'event-time', 'event-namespace',
 * extensions: {request, response}}: data is the parsed JSON for application/json, else the
 * body as a string (a Buffer if it is not UTF-8).  The handler may return a value or a
 * promise; a string/Buffer is the response body, anything else is sent as JSON.  It may set
 * the status and headers on extensions.response (Express' res) before it returns.  An
 * exception (or rejected promise) is a 500 with its message; a call over FUNC_TIMEOUT is a 408.
 * Prints "listening on 127.0.0.1:PORT" once the socket is bound; exits 0 on SIGTERM/SIGINT.
 *
 * Express comes from Debian's node-express (/usr/share/nodejs), or from ./node_modules.
 */
'use strict';

const http = require('http');
const path = require('path');

// Debian's nodejs searches /usr/share/nodejs by itself; other builds of node (NodeSource) do
// not, so add it (and this directory's node_modules) to the global search path.
process.env.NODE_PATH = [process.env.NODE_PATH, '/usr/share/nodejs', '/usr/lib/nodejs',
  path.join(__dirname, 'node_modules')].filter(Boolean).join(path.delimiter);
require('module')._initPaths();

const express = require('express');

const modName = process.env.MOD_NAME;
const funcName = process.env.FUNC_HANDLER;
if (!modName || !funcName) {
  console.error('kubeless.js: MOD_NAME and FUNC_HANDLER must be set');
  process.exit(2);
}
const modRoot = process.env.MOD_ROOT_PATH || path.join(__dirname, 'handlers');
const funcPort = Number(process.env.FUNC_PORT || 8080);
const funcTimeout = Number(process.env.FUNC_TIMEOUT || 180);
const exitAfterTimeout = process.env.EXIT_AFTER_TIMEOUT === '1';
const bodyLimit = Number(process.env.REQ_MB_LIMIT || 8) * 1024 * 1024;

const mod = require(path.resolve(modRoot, modName + '.js'));
const func = mod[funcName];
if (typeof func !== 'function') {
  console.error(`kubeless.js: ${modName}.js has no function ${funcName}`);
  process.exit(2);
}

const context = {
  'function-name': `${modName}.${funcName}`,
  timeout: funcTimeout,
  runtime: process.env.FUNC_RUNTIME || 'nodejs20',
  'memory-limit': process.env.FUNC_MEMORY_LIMIT,
};

const calls = { total: 0, failures: 0, timeouts: 0 };
const utf8 = new TextDecoder('utf-8', { fatal: true });

function eventData(req) {
  const raw = Buffer.isBuffer(req.body) ? req.body : Buffer.alloc(0);
  const type = (req.get('content-type') || '').split(';')[0].trim().toLowerCase();
  if (type === 'application/json') {
    return raw.length ? JSON.parse(raw.toString('utf-8')) : null; // throws SyntaxError
  }
  try {
    return utf8.decode(raw);
  } catch (e) {
    return raw;
  }
}

const app = express();
app.disable('x-powered-by');
// Every body raw, whatever its type (Kubeless used body-parser's raw parser the same way).
app.use(express.raw({ type: () => true, limit: bodyLimit }));

app.get('/healthz', (req, res) => res.status(200).send('OK'));

app.get('/metrics', (req, res) => {
  res.type('text/plain; version=0.0.4');
  res.send(Object.keys(calls).sort().map((k) => `runtime_${k} ${calls[k]}\n`).join(''));
});

app.all(/.*/, async (req, res) => {
  calls.total += 1;
  let data;
  try {
    data = eventData(req);
  } catch (e) {
    res.status(400).send(`invalid JSON body: ${e.message}`);
    return;
  }
  const event = {
    data,
    'event-id': req.get('event-id'),
    'event-type': req.get('event-type'),
    'event-time': req.get('event-time'),
    'event-namespace': req.get('event-namespace'),
    extensions: { request: req, response: res },
  };
  let timer;
  const timeout = new Promise((resolve) => {
    timer = setTimeout(() => resolve({ timeout: true }), funcTimeout * 1000);
  });
  const call = (async () => ({ value: await func(event, context) }))()
    .catch((error) => ({ error }));
  const outcome = await Promise.race([call, timeout]);
  clearTimeout(timer);
  if (res.headersSent || res.destroyed || req.socket.destroyed) {
    return; // the handler answered (or dropped the connection) itself
  }
  if (outcome.timeout) {
    calls.timeouts += 1;
    if (exitAfterTimeout) {
      res.on('finish', () => {
        console.log('exiting after a 408 (EXIT_AFTER_TIMEOUT)');
        process.exit(0);
      });
    }
    res.status(408).send('Timeout while processing the function');
  } else if (outcome.error !== undefined) {
    calls.failures += 1;
    const err = outcome.error;
    res.status(500).send(err instanceof Error ? `${err.name}: ${err.message}` : String(err));
  } else if (outcome.value === undefined || outcome.value === null) {
    res.end();
  } else if (typeof outcome.value === 'string' || Buffer.isBuffer(outcome.value)) {
    res.send(outcome.value);
  } else {
    res.json(outcome.value);
  }
});

// Large header blocks (many record headers) must reach the handler, not die on node's
// default 16 KiB limit.
const server = http.createServer({ maxHeaderSize: 1024 * 1024 }, app);
server.keepAliveTimeout = 65 * 1000;
server.listen({ host: '127.0.0.1', port: funcPort }, () => {
  console.log(`listening on 127.0.0.1:${server.address().port}`);
});

function stop() {
  server.close(() => {
    console.log('stopped');
    process.exit(0);
  });
  server.closeAllConnections();
  setTimeout(() => process.exit(0), 2000).unref();
}
process.on('SIGTERM', stop);
process.on('SIGINT', stop);
