"""Helpers for ktrigger's integration tests: Kafka (topics, producing, offsets), ZooKeeper
(servers, Kafka's broker registrations), the Kubeless-style runtimes (Python/Bottle, Node.js/Express, Ruby/Sinatra) running the recorder
handler, ktrigger itself (config file, process, metrics) and polling with a deadline.

Fixtures in conftest.py hand out instances of these classes; tests import the plain functions
(`wait_for`, `parse_event_id`, ...) from here.
"""

import base64
import calendar
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.request
from collections import defaultdict
from pathlib import Path

from confluent_kafka import Consumer, KafkaException, Producer, TopicPartition
from confluent_kafka.admin import NewTopic

import ktmetadata

REPO = Path(__file__).resolve().parent.parent
HERE = REPO / 'integration-tests'
KAFKA_SH = HERE / 'kafka' / 'kafka.sh'
ZK_SH = HERE / 'zookeeper' / 'zk.sh'
RUNTIME_PY = HERE / 'runtimes' / 'python' / 'kubeless.py'
HANDLERS_DIR = HERE / 'runtimes' / 'python' / 'handlers'
PYTHON = '/usr/bin/python3'  # Debian's: has bottle and confluent_kafka
NODE = shutil.which('node') or '/usr/bin/node'  # Express from Debian's node-express
RUBY = '/usr/bin/ruby'  # Sinatra and WEBrick from Debian's ruby-sinatra, ruby-webrick

# lang -> (argv of the runtime, directory of its handlers)
RUNTIMES = {
    'python': ([PYTHON, str(RUNTIME_PY)], HANDLERS_DIR),
    'node': ([NODE, str(HERE / 'runtimes' / 'node' / 'kubeless.js')],
             HERE / 'runtimes' / 'node' / 'handlers'),
    'ruby': ([RUBY, str(HERE / 'runtimes' / 'ruby' / 'kubeless.rb')],
             HERE / 'runtimes' / 'ruby' / 'handlers'),
}
LANGS = tuple(RUNTIMES)

# The recorder's behaviour variables (see runtimes/python/handlers/recorder.py); scrubbed from
# the environment a runtime is started with so only start_runtime's arguments decide.
RECORDER_ENV_VARS = ('FAIL_BODIES', 'FAIL_NTH', 'FAIL_KEYS', 'STATUS_BODIES', 'RETRY_AFTER',
                     'HANDLER_DELAY_MS', 'SLEEP_BODIES', 'DROP_BODIES', 'REPLY_BODY',
                     'REPLY_BYTES', 'MOD_ROOT_PATH', 'ARRIVAL_FILE', 'EXIT_AFTER_TIMEOUT',
                     'RETRY_TIMES', 'MALFORMED_NTH', 'EMPTY_ANSWER')

# Environment variables ktrigger reads on top of its config file (Kubeless names and its own);
# scrubbed from the environment ktrigger is started with so the file alone decides.
KTRIGGER_ENV_VARS = ('FUNC_HANDLER', 'MOD_NAME', 'TOPIC_NAME', 'KAFKA_BROKERS', 'FUNC_PORT',
                     'FUNC_TIMEOUT', 'KTRIGGER_METRICS_LISTEN')

HANDLER = 'recorder.handler'
NAMESPACE = 'kafkatriggers.kubeless.io'


def ktrigger_bin():
    return Path(os.environ.get('KTRIGGER_BIN', REPO / 'ktrigger'))


# --------------------------------------------------------------------------- polling

class Timeout(AssertionError):
    pass


def read_jsonl(path):
    """The JSON lines of a file another process is still appending to (a runtime's record
    files): each line is written with one write(), but a reader may see the first part of the
    last one, so only lines ended by a newline count. A missing file is no lines."""
    try:
        with open(path, encoding='utf-8') as f:
            data = f.read()
    except (FileNotFoundError, TypeError):
        return []
    return [json.loads(line) for line in data.split('\n')[:-1] if line]


def wait_for(cond, timeout, what, interval=0.05, describe=None):
    """Poll cond() until it returns a truthy value (returned) or timeout seconds pass.

    On timeout raise an AssertionError naming `what` and, if given, describe()'s text of the
    last state seen.
    """
    deadline = time.monotonic() + timeout
    while True:
        value = cond()
        if value:
            return value
        if time.monotonic() >= deadline:
            state = ''
            if describe is not None:
                try:
                    state = '; last state: %s' % describe()
                except Exception as e:  # the description must not hide the timeout
                    state = '; (describe failed: %r)' % e
            raise Timeout('timed out after %.1fs waiting for %s%s' % (timeout, what, state))
        time.sleep(interval)


def free_port():
    with socket.socket() as s:
        s.bind(('127.0.0.1', 0))
        return s.getsockname()[1]


def http_get(url, timeout=2.0):
    """GET url; returns (status, body text), or (None, error text) if it could not connect."""
    try:
        with urllib.request.urlopen(url, timeout=timeout) as r:
            return r.status, r.read().decode('utf-8', 'replace')
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode('utf-8', 'replace')
    except (urllib.error.URLError, OSError) as e:
        return None, str(e)


def sanitizer_report(path, limit=6000):
    """The first ThreadSanitizer report in a process log (text, at most limit chars), or None."""
    try:
        text = Path(path).read_bytes().decode('utf-8', 'replace')
    except OSError:
        return None
    start = text.find('WARNING: ThreadSanitizer:')
    if start < 0:
        return None
    start = text.rfind('==================', 0, start)
    return text[max(start, 0):][:limit]


def log_time(text, needle):
    """Wall-clock time (s since the epoch) of the first ktrigger text-log line containing
    needle, from its UTC timestamp (2026-12-02T03:03:53.814Z ...); None if there is none."""
    for line in text.splitlines():
        if needle in line:
            m = re.match(r'(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d)\.(\d{3})Z ', line)
            if m:
                whole = calendar.timegm(time.strptime(m.group(1), '%Y-%m-%dT%H:%M:%S'))
                return whole + int(m.group(2)) / 1000
    return None


def tail(path, lines=60):
    try:
        with open(path, 'rb') as f:
            data = f.read()
    except OSError as e:
        return '(cannot read %s: %s)' % (path, e)
    text = data.decode('utf-8', 'replace').splitlines()
    return '\n'.join(text[-lines:])


def stop_process(proc, timeout, sig=signal.SIGTERM):
    """Send sig to proc (by its pid) and wait; SIGKILL it if it outlives timeout.

    Returns (returncode, timed_out).
    """
    if proc.poll() is not None:
        return proc.returncode, False
    proc.send_signal(sig)
    try:
        return proc.wait(timeout=timeout), False
    except subprocess.TimeoutExpired:
        proc.kill()
        return proc.wait(), True


# --------------------------------------------------------------------------- Kafka

class Produced:
    """One produced record and where Kafka put it (timestamp: (type, ms) as Kafka has it)."""
    __slots__ = ('partition', 'offset', 'value', 'key', 'headers', 'timestamp')

    def __init__(self, partition, offset, value, key, headers=None, timestamp=None):
        self.partition, self.offset, self.value, self.key = partition, offset, value, key
        self.headers, self.timestamp = headers, timestamp

    def __repr__(self):
        return 'Produced(p=%d, o=%d, %r)' % (self.partition, self.offset, self.value)


def kafka_sh(cmd, timeout=90):
    """Run kafka/kafka.sh cmd (with this environment's KT_KAFKA_DIR); CompletedProcess."""
    return subprocess.run(['bash', str(KAFKA_SH), cmd], capture_output=True, text=True,
                          timeout=timeout)


class Kafka:
    """Topic creation, producing to explicit partitions, committed and end offsets, broker
    outages (pause/resume)."""

    def __init__(self, bootstrap, admin):
        self.bootstrap = bootstrap
        self.admin = admin
        self._consumers = {}

    def create_topic(self, topic, partitions, timeout=30, config=None):
        """Create topic (replication 1, topic-level `config` such as max.message.bytes) and
        wait until each of its partitions has a leader."""
        futures = self.admin.create_topics([NewTopic(topic, partitions, 1,
                                                     config=dict(config or {}))],
                                           operation_timeout=timeout)
        futures[topic].result(timeout)
        self.wait_for_leaders(topics=[topic], expected={topic: partitions}, timeout=timeout)

    def metadata(self, topics=None):
        """The broker's metadata as ktmetadata's plain data (all topics, or those listed;
        internal ones such as __consumer_offsets included); None if it did not answer."""
        try:
            if topics is not None and len(topics) == 1:
                md = self.admin.list_topics(topics[0], timeout=5)
            else:
                md = self.admin.list_topics(timeout=5)
        except KafkaException:
            return None
        return ktmetadata.from_confluent(md)

    def wait_for_leaders(self, topics=None, expected=None, timeout=60):
        """Poll metadata until every partition (of `topics`, else of every topic) has a
        leader and no error, and every topic of `expected` ({topic: partitions}) is listed
        with all its partitions: what a broker serves right after a start, a resume or a
        topic creation.  Returns the metadata."""
        state = {'why': 'no answer yet'}

        def serving():
            md = self.metadata(topics)
            if md is None:
                state['why'] = 'no metadata answer'
                return None
            state['why'] = ktmetadata.not_serving(md, expected, topics)
            return md if state['why'] is None else None

        what = 'leaders for every partition of %s' % (
            ', '.join(topics) if topics else 'every topic')
        return wait_for(serving, timeout, what, interval=0.1, describe=lambda: state['why'])

    def pause_broker(self):
        """kafka.sh pause (a broker outage); returns what resume_broker waits for again."""
        md = self.wait_for_leaders(timeout=30)
        r = kafka_sh('pause')
        assert r.returncode == 0, 'kafka.sh pause failed (%d): %s' % (r.returncode, r.stderr)
        return ktmetadata.expected_of(md)

    def resume_broker(self, expected=None, timeout=90):
        """kafka.sh resume, then wait (through this client) until every topic of `expected`
        (what pause_broker returned) is served with a leader for each partition."""
        r = kafka_sh('resume', timeout=timeout)
        assert r.returncode == 0, 'kafka.sh resume failed (%d): %s' % (r.returncode, r.stderr)
        self.wait_for_leaders(expected=expected, timeout=timeout)

    def produce(self, topic, records, timeout=60, producer_config=None):
        """Produce records in order.  A record is (partition, value), (partition, value, key)
        or a dict with 'partition', 'value' and optionally 'key', 'headers' (a list of
        (name, value) pairs; a value may be None) and 'timestamp' (ms).  A value or key of None
        is a null (a tombstone value).

        Returns a list of Produced, one per record in the same order, with the offset Kafka
        gave it.  Fails if any record was not acknowledged.
        """
        conf = {'bootstrap.servers': self.bootstrap, 'enable.idempotence': True,
                'acks': 'all', 'linger.ms': 5}
        conf.update(producer_config or {})
        producer = Producer(conf)
        recs = []
        for rec in records:
            if isinstance(rec, dict):
                recs.append(dict(rec))
            else:
                recs.append({'partition': rec[0], 'value': rec[1],
                             'key': rec[2] if len(rec) > 2 else None})
        results = [None] * len(recs)
        errors = []

        def on_delivery(index):
            def cb(err, msg):
                if err is not None:
                    errors.append((index, err))
                else:
                    r = recs[index]
                    results[index] = Produced(msg.partition(), msg.offset(), r['value'],
                                              r.get('key'), r.get('headers'),
                                              msg.timestamp())
            return cb

        for i, rec in enumerate(recs):
            kw = {'value': rec['value'], 'key': rec.get('key'), 'partition': rec['partition']}
            if rec.get('headers') is not None:
                kw['headers'] = list(rec['headers'])
            if rec.get('timestamp') is not None:
                kw['timestamp'] = rec['timestamp']
            while True:
                try:
                    producer.produce(topic, on_delivery=on_delivery(i), **kw)
                    break
                except BufferError:
                    producer.poll(0.1)
            producer.poll(0)
        left = producer.flush(timeout)
        assert left == 0, '%d records still unacknowledged after %ss' % (left, timeout)
        assert not errors, 'delivery errors: %s' % errors[:5]
        assert all(r is not None for r in results)
        return results

    def partitions(self, topic):
        """The topic's partition ids, once each has a leader."""
        md = self.wait_for_leaders(topics=[topic], timeout=30)
        return sorted(md['topics'][topic]['partitions'])

    def _consumer(self, group):
        c = self._consumers.get(group)
        if c is None:
            # Never subscribed: it only asks the coordinator, it never joins the group.
            c = Consumer({'bootstrap.servers': self.bootstrap, 'group.id': group,
                          'enable.auto.commit': False})
            self._consumers[group] = c
        return c

    # Answers a broker gives while it is still taking over after a restart or an outage: ask
    # again (a condition, not a sleep: each try is a real request).
    RETRIABLE = ('NOT_COORDINATOR', 'COORDINATOR_LOAD_IN_PROGRESS', 'COORDINATOR_NOT_AVAILABLE',
                 'NOT_LEADER_FOR_PARTITION', 'NOT_LEADER_OR_FOLLOWER', 'LEADER_NOT_AVAILABLE',
                 '_TRANSPORT', '_TIMED_OUT', 'REQUEST_TIMED_OUT')

    def _retrying(self, what, fn, timeout=30):
        deadline = time.monotonic() + timeout
        while True:
            try:
                return fn()
            except KafkaException as e:
                err = e.args[0] if e.args else None
                name = err.name() if hasattr(err, 'name') else str(err)
                if name not in self.RETRIABLE or time.monotonic() >= deadline:
                    raise
                time.sleep(0.2)

    def committed(self, group, topic, partitions=None):
        """The group's committed offset per partition ({partition: offset}, None if none)."""
        if partitions is None:
            partitions = self.partitions(topic)
        return self._retrying('committed', lambda: self._committed(group, topic, partitions))

    def _committed(self, group, topic, partitions):
        tps = self._consumer(group).committed([TopicPartition(topic, p) for p in partitions],
                                              timeout=10)
        out = {}
        for tp in tps:
            if tp.error is not None:
                raise KafkaException(tp.error)
            out[tp.partition] = tp.offset if tp.offset >= 0 else None
        return out

    def committed_metadata(self, group, topic, partition):
        """The metadata of the group's last commit of topic [partition], read from the
        broker's own record of it (__consumer_offsets: confluent_kafka 1.7 gives no commit
        metadata); None if no commit of it is there. Only OffsetCommit records of version
        0 to 4 are decoded; a later one fails the test."""
        md = self.admin.list_topics('__consumer_offsets', timeout=10).topics
        parts = len(md['__consumer_offsets'].partitions)
        h = 0
        for ch in group:
            h = (31 * h + ord(ch)) & 0xffffffff  # Java's String.hashCode (BMP names)
        h = h - (1 << 32) if h & 0x80000000 else h
        part = (0 if h == -(1 << 31) else abs(h)) % parts  # Kafka's Utils.abs
        c = self._consumer('kt-consumer-offsets-reader')
        tp = TopicPartition('__consumer_offsets', part)
        lo, hi = self._retrying('watermarks', lambda: c.get_watermark_offsets(
            tp, timeout=10, cached=False))
        if hi <= lo:
            return None
        c.assign([TopicPartition('__consumer_offsets', part, lo)])
        last, at = None, lo
        try:
            while at < hi:
                m = c.poll(5)
                assert m is not None, '__consumer_offsets [%d]: nothing read at %d of %d' % (
                    part, at, hi)
                assert m.error() is None, m.error()
                at = m.offset() + 1
                key = m.key()
                if not key or int.from_bytes(key[:2], 'big') > 1:
                    continue  # a group metadata record, not an offset commit
                glen = int.from_bytes(key[2:4], 'big')
                g = key[4:4 + glen].decode()
                tlen = int.from_bytes(key[4 + glen:6 + glen], 'big')
                t = key[6 + glen:6 + glen + tlen].decode()
                pnum = int.from_bytes(key[6 + glen + tlen:10 + glen + tlen], 'big', signed=True)
                if (g, t, pnum) != (group, topic, partition):
                    continue
                v = m.value()
                if v is None:
                    last = None  # a tombstone: the commit was deleted
                    continue
                ver = int.from_bytes(v[:2], 'big')
                pos = {0: 10, 1: 10, 2: 10, 3: 14, 4: 14}.get(ver)
                assert pos is not None, 'OffsetCommit value version %d' % ver
                if ver < 4:  # int16 length
                    mlen, pos = int.from_bytes(v[pos:pos + 2], 'big'), pos + 2
                else:  # v4 is flexible: a compact string (unsigned varint length + 1)
                    mlen = shift = 0
                    while True:
                        mlen |= (v[pos] & 0x7f) << shift
                        pos, shift = pos + 1, shift + 7
                        if not v[pos - 1] & 0x80:
                            break
                    mlen -= 1
                last = v[pos:pos + mlen].decode()
        finally:
            c.unassign()
        return last

    def end_offsets(self, topic, partitions=None):
        """The high watermark (offset of the last record + 1) per partition."""
        if partitions is None:
            partitions = self.partitions(topic)
        c = self._consumer('kt-watermarks')
        out = {}
        for p in partitions:
            wm = self._retrying('watermarks', lambda: c.get_watermark_offsets(
                TopicPartition(topic, p), timeout=10, cached=False))
            assert wm is not None, 'no watermarks for %s/%d' % (topic, p)
            out[p] = wm[1]
        return out

    def close(self):
        for c in self._consumers.values():
            c.close()
        self._consumers.clear()


# --------------------------------------------------------------------------- ZooKeeper

class ZooKeeper:
    """A standalone ZooKeeper server run by zookeeper/zk.sh with its own state directory."""

    def __init__(self, state_dir):
        self.state_dir = Path(state_dir)
        self.address = None  # host:port once started
        self._clients = []

    def _sh(self, *args, timeout=180):
        env = dict(os.environ, KT_ZK_DIR=str(self.state_dir))
        return subprocess.run(['bash', str(ZK_SH)] + [str(a) for a in args], env=env,
                              capture_output=True, text=True, timeout=timeout)

    def start(self, port=None):
        """Start a fresh server (empty data) on port (a free one if None); returns host:port."""
        r = self._sh('start', *([port] if port else []))
        assert r.returncode == 0, 'zk.sh start failed (%d):\n%s\n%s' % (
            r.returncode, r.stdout, r.stderr[-3000:])
        self.address = r.stdout.strip().splitlines()[-1]
        return self.address

    def stop(self):
        """Stop the server (its data is gone: a restart is a new, empty ensemble)."""
        for c in self._clients:
            try:
                c.stop()
                c.close()
            except Exception:  # the server may be gone already
                pass
        self._clients = []
        r = self._sh('stop', timeout=60)
        assert r.returncode == 0, r.stderr

    def client(self):
        """A connected kazoo client (stopped with the server or by the caller)."""
        from kazoo.client import KazooClient  # Debian's python3-kazoo
        c = KazooClient(hosts=self.address, timeout=10)
        c.start(timeout=30)
        self._clients.append(c)
        return c

    def log(self):
        return tail(self.state_dir / 'zk.log')


def broker_registration(bootstrap, version=5, endpoints=None, protocol_map=None):
    """Kafka's JSON for /brokers/ids/<id> (what a ZooKeeper-mode broker writes), as bytes.

    bootstrap: 'host:port' of the PLAINTEXT listener; endpoints/protocol_map replace the
    default ['PLAINTEXT://host:port'] and {'PLAINTEXT': 'PLAINTEXT'}.
    """
    host, port = bootstrap.rsplit(':', 1)
    reg = {'listener_security_protocol_map': protocol_map or {'PLAINTEXT': 'PLAINTEXT'},
           'endpoints': endpoints or ['PLAINTEXT://%s:%s' % (host, port)],
           'jmx_port': -1, 'features': {}, 'host': host, 'port': int(port),
           'timestamp': str(int(time.time() * 1000)), 'version': version}
    return json.dumps(reg).encode()


# --------------------------------------------------------------------------- runtime

def read_topic(bootstrap, topic, partitions, group):
    """Every record of topic (partitions 0..partitions-1) as (key, value, headers dict)."""
    c = Consumer({'bootstrap.servers': bootstrap, 'group.id': group, 'enable.auto.commit': False})
    out = []
    try:
        for p in range(partitions):
            lo, hi = c.get_watermark_offsets(TopicPartition(topic, p), timeout=10)
            if hi <= lo:
                continue
            c.assign([TopicPartition(topic, p, lo)])
            while True:
                m = c.poll(10)
                assert m is not None, 'timed out reading %s [%d]' % (topic, p)
                assert not m.error(), m.error()
                out.append((m.key(), m.value(), dict(m.headers() or [])))
                if m.offset() >= hi - 1:
                    break
    finally:
        c.close()
    return out


def parse_event_id(event_id):
    """'topic/partition/offset' -> (topic, partition, offset)."""
    topic, partition, offset = event_id.rsplit('/', 2)
    return topic, int(partition), int(offset)


class Call:
    """One call the recorder handler saw (one JSON line of its record file).

    body (str; undecodable bytes backslash-escaped), body_bytes (exact), headers ({lower-cased
    name: value}), header_list ([[name as sent, value], ...]), raw_headers (the header block
    exactly as received, bytes; Python and Ruby runtimes only, else None), time (arrival,
    epoch s), seq, concurrent, status (None: dropped), failed, topic/partition/offset (from
    event-id), key and record_headers (decoded from the event-key* and event-header* headers).
    """
    __slots__ = ('line', 'body', 'body_bytes', 'headers', 'header_list', 'raw_headers', 'time',
                 'failed', 'seq', 'concurrent', 'status', 'topic', 'partition', 'offset')

    def __init__(self, line):
        self.line = line
        self.body = line['body']
        b64 = line.get('body_b64')
        self.body_bytes = base64.b64decode(b64) if b64 is not None else self.body.encode()
        self.headers = line['headers']
        self.header_list = line.get('header_list')
        raw = line.get('raw_headers_b64')
        self.raw_headers = base64.b64decode(raw) if raw is not None else None
        self.time = line['time']
        self.failed = bool(line.get('failed'))
        self.seq = line.get('seq')
        self.concurrent = line.get('concurrent')
        self.status = line.get('status')
        eid = self.headers.get('event-id')
        if eid is not None:
            self.topic, self.partition, self.offset = parse_event_id(eid)
        else:
            self.topic = self.partition = self.offset = None

    @property
    def key(self):
        """The record key as bytes (base64-decoded if event-key-encoding: base64), or None."""
        key = self.headers.get('event-key')
        if key is None:
            return None
        if self.headers.get('event-key-encoding') == 'base64':
            return base64.b64decode(key, validate=True)
        return key.encode('utf-8')

    @property
    def record_headers(self):
        """The record headers as ktrigger forwarded them: [(name, value bytes), ...] in the
        order received, from event-header-<name> (value as sent) and event-headerb64-<name>
        (value base64-decoded)."""
        pairs = self.header_list
        if pairs is None:
            pairs = list(self.headers.items())
        out = []
        for name, value in pairs:
            lname = name.lower()
            if lname.startswith('event-headerb64-'):
                out.append((lname[len('event-headerb64-'):],
                            base64.b64decode(value, validate=True)))
            elif lname.startswith('event-header-'):
                out.append((lname[len('event-header-'):], value.encode('utf-8')))
        return out

    def __repr__(self):
        return 'Call(%s/%s/%s %r%s)' % (self.topic, self.partition, self.offset, self.body[:60],
                                        ' failed' if self.failed else '')


def max_concurrent(calls):
    """The most calls one runtime process had in progress at once (0 for no calls)."""
    return max((c.concurrent or 0 for c in calls), default=0)


class Runtime:
    """A Kubeless-style runtime (lang: python, node or ruby) running the recorder handler."""

    def __init__(self, proc, port, record_file, log_path, lang='python', arrival_file=None):
        self.proc, self.port, self.record_file, self.log_path = proc, port, record_file, log_path
        self.lang, self.arrival_file = lang, arrival_file

    @property
    def url(self):
        return 'http://127.0.0.1:%d/' % self.port

    def calls(self):
        """Every call recorded so far (all runtimes writing this file), in the order the
        lines were written (each just before its answer)."""
        return [Call(c) for c in read_jsonl(self.record_file)]

    def arrivals(self):
        """Every call that reached the handler ({'body', 'event-id', 'seq', 'time'} dicts, from
        ARRIVAL_FILE, written at arrival: also the calls the runtime's exit cut short)."""
        return read_jsonl(self.arrival_file)

    def delivered(self):
        """Successful calls only."""
        return [c for c in self.calls() if not c.failed]

    def stop(self, timeout=10):
        rc, timed_out = stop_process(self.proc, timeout)
        assert not timed_out, 'runtime pid %d ignored SIGTERM for %ss' % (self.proc.pid, timeout)
        return rc


def _csv(name, items):
    items = [str(x) for x in items]
    assert not any(',' in x for x in items), '%s: an item contains a comma: %r' % (name, items)
    return ','.join(items)


def _pairs(name, mapping):
    for body in mapping:
        assert ',' not in body, '%s: a body contains a comma: %r' % (name, body)
    return ','.join('%s=%d' % (body, int(v)) for body, v in mapping.items())


def start_runtime(tmp_path, record_file, port=None, fail_bodies=(), delay_ms=0,
                  func_timeout=None, name='runtime', startup_timeout=20, lang='python',
                  fail_nth=(), fail_keys=(), status_bodies=None, retry_after=None,
                  sleep_bodies=None, drop_bodies=(), reply_body=None, env=None,
                  arrival_file=None, exit_after_timeout=False):
    """Start a runtime of `lang` with the recorder handler writing to record_file; wait
    until its /healthz answers.  The behaviours map to the recorder's variables:
    fail_bodies -> FAIL_BODIES, fail_nth -> FAIL_NTH (call numbers), fail_keys -> FAIL_KEYS,
    status_bodies {body: status} -> STATUS_BODIES, retry_after (s) -> RETRY_AFTER,
    delay_ms -> HANDLER_DELAY_MS, sleep_bodies {body: ms} -> SLEEP_BODIES,
    drop_bodies -> DROP_BODIES, reply_body -> REPLY_BODY, arrival_file -> ARRIVAL_FILE;
    exit_after_timeout -> the runtime's EXIT_AFTER_TIMEOUT=1 (408, then the process exits);
    env: more variables.
    """
    assert lang in RUNTIMES, 'unknown runtime language %r' % lang
    argv, handlers_dir = RUNTIMES[lang]
    port = port or free_port()
    environ = {k: v for k, v in os.environ.items() if k not in RECORDER_ENV_VARS}
    environ.update({'MOD_NAME': 'recorder', 'FUNC_HANDLER': 'handler', 'FUNC_PORT': str(port),
                    'MOD_ROOT_PATH': str(handlers_dir), 'RECORD_FILE': str(record_file),
                    'FUNC_TIMEOUT': str(func_timeout or 180), 'PYTHONUNBUFFERED': '1'})
    behaviours = {
        'FAIL_BODIES': _csv('fail_bodies', fail_bodies) if fail_bodies else None,
        'FAIL_NTH': _csv('fail_nth', fail_nth) if fail_nth else None,
        'FAIL_KEYS': _csv('fail_keys', fail_keys) if fail_keys else None,
        'STATUS_BODIES': _pairs('status_bodies', status_bodies) if status_bodies else None,
        'RETRY_AFTER': str(retry_after) if retry_after is not None else None,
        'HANDLER_DELAY_MS': str(delay_ms) if delay_ms else None,
        'SLEEP_BODIES': _pairs('sleep_bodies', sleep_bodies) if sleep_bodies else None,
        'DROP_BODIES': _csv('drop_bodies', drop_bodies) if drop_bodies else None,
        'REPLY_BODY': reply_body,
        'ARRIVAL_FILE': str(arrival_file) if arrival_file else None,
        'EXIT_AFTER_TIMEOUT': '1' if exit_after_timeout else None,
    }
    environ.update({k: v for k, v in behaviours.items() if v is not None})
    environ.update(env or {})
    log_path = Path(tmp_path) / ('%s-%d.log' % (name, port))
    with open(log_path, 'ab') as log:
        proc = subprocess.Popen(argv, env=environ, stdout=log, stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL)
    rt = Runtime(proc, port, record_file, log_path, lang, arrival_file)

    def healthy():
        if proc.poll() is not None:
            raise AssertionError('%s runtime exited with %s during start-up:\n%s'
                                 % (lang, proc.returncode, tail(log_path)))
        return http_get('http://127.0.0.1:%d/healthz' % port, timeout=1)[0] == 200

    try:
        wait_for(healthy, startup_timeout, '%s runtime /healthz on port %d' % (lang, port))
    except BaseException:
        stop_process(proc, 5)
        raise
    return rt


# --------------------------------------------------------------------------- ktrigger

def _lc_string(s):
    return '"%s"' % s.replace('\\', '\\\\').replace('"', '\\"')


def _lc_value(v, indent):
    if isinstance(v, bool):
        return 'true' if v else 'false'
    if isinstance(v, int):
        return str(v)
    if isinstance(v, str):
        return _lc_string(v)
    if isinstance(v, list):
        return '[ %s ]' % ', '.join(_lc_value(x, indent) for x in v)
    if isinstance(v, dict):
        pad = '  ' * (indent + 1)
        inner = ''.join('%s%s = %s;\n' % (pad, k, _lc_value(x, indent + 1))
                        for k, x in v.items())
        return '{\n%s%s}' % (inner, '  ' * indent)
    raise TypeError('cannot render %r' % (v,))


def render_config(conf):
    """Render a nested dict as a libconfig file: dicts are groups, lists are arrays.

    kafka.properties and kafka.producer_properties (librdkafka property names contain dots,
    which libconfig names cannot) are rendered as lists of ("name", "value") pairs.
    """
    out = []
    lists = ('properties', 'producer_properties')
    for section, body in conf.items():
        if section == 'kafka' and isinstance(body, dict) and any(k in body for k in lists):
            body = dict(body)
            text = _lc_value({k: v for k, v in body.items() if k not in lists}, 0)[:-1]
            for name in (k for k in lists if k in body):
                pairs = ',\n'.join('    (%s, %s)' % (_lc_string(k), _lc_string(str(v)))
                                   for k, v in body[name].items())
                text += '  %s = (\n%s\n  );\n' % (name, pairs)
            out.append('%s = %s};\n' % (section, text))
        else:
            out.append('%s = %s;\n' % (section, _lc_value(body, 0)))
    return ''.join(out)


def line_of(text, needle):
    """1-based line number of the first line of text containing needle."""
    for n, line in enumerate(text.splitlines(), 1):
        if needle in line:
            return n
    raise AssertionError('%r not in config text' % needle)


def base_config(brokers, topics, runtime_port, metrics_port, group_id=None,
                start_from='earliest', properties=None):
    """The config the tests start from (a dict; edit it, then render_config())."""
    kafka = {'brokers': brokers, 'topics': list(topics)}
    if group_id is not None:
        kafka['group_id'] = group_id
    kafka['start_from'] = start_from
    props = {'fetch.wait.max.ms': '10'}
    props.update(properties or {})
    kafka['properties'] = props
    return {
        'function': {'handler': HANDLER},
        'kafka': kafka,
        'runtime': {'host': '127.0.0.1', 'port': runtime_port, 'path': '/', 'timeout_s': 180},
        'dispatch': {'drain_timeout_ms': 10000, 'partition_buffer_records': 1000,
                     'retry': {'initial_backoff_ms': 100, 'max_backoff_ms': 2000}},
        'metrics': {'listen': '127.0.0.1:%d' % metrics_port},
        'log': {'level': 'info'},
    }


# What `make` exports for sanitizer builds, for pytest run by hand: a TSan binary (ktrigger-tsan)
# without its suppressions reports librdkafka's uninstrumented frees as races (see the file).
SANITIZER_ENV = {
    'TSAN_OPTIONS': 'suppressions=%s:print_suppressions=0:second_deadlock_stack=1'
                    % (REPO / 'scripts' / 'tsan.supp'),
    'LSAN_OPTIONS': 'suppressions=%s:print_suppressions=0' % (REPO / 'scripts' / 'lsan.supp'),
}


def ktrigger_env(extra=None):
    env = {k: v for k, v in os.environ.items()
           if k not in KTRIGGER_ENV_VARS and not k.startswith('KTRIGGER_')}
    for k, v in SANITIZER_ENV.items():
        env.setdefault(k, v)
    env.update(extra or {})
    return env


def ktrigger_argv(config_path, *args):
    return [str(ktrigger_bin()), '-c', str(config_path)] + list(args)


def run_ktrigger(config_path, *args, env=None, timeout=15):
    """Run ktrigger to completion (for start-up failures); returns CompletedProcess (text)."""
    return subprocess.run(ktrigger_argv(config_path, *args), env=ktrigger_env(env),
                          stdin=subprocess.DEVNULL, capture_output=True, text=True,
                          timeout=timeout)


_METRIC_RE = re.compile(r'^([A-Za-z_:][A-Za-z0-9_:]*)(?:\{(.*)\})?\s+(\S+)(?:\s+\d+)?$')
_LABEL_RE = re.compile(r'([A-Za-z_][A-Za-z0-9_]*)="((?:[^"\\]|\\.)*)"')


def parse_metrics(text):
    """Prometheus text -> list of (name, {label: value}, float)."""
    samples = []
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith('#'):
            continue
        m = _METRIC_RE.match(line)
        if not m:
            raise AssertionError('malformed metrics line: %r' % line)
        labels = dict(_LABEL_RE.findall(m.group(2) or ''))
        samples.append((m.group(1), labels, float(m.group(3))))
    return samples


def metric_sum(samples, name, **labels):
    """Sum of the samples of `name` whose labels include `labels`; None if there is none."""
    found = [v for n, lb, v in samples
             if n == name and all(lb.get(k) == x for k, x in labels.items())]
    return sum(found) if found else None


class KTrigger:
    """A running ktrigger process."""

    def __init__(self, proc, config_path, log_path, metrics_port):
        self.proc, self.config_path = proc, config_path
        self.log_path, self.metrics_port = log_path, metrics_port

    @property
    def pid(self):
        return self.proc.pid

    def log(self):
        return tail(self.log_path, 10 ** 6)

    def metrics(self):
        status, body = http_get('http://127.0.0.1:%d/metrics' % self.metrics_port)
        assert status == 200, 'GET /metrics: %s %s' % (status, body[:200])
        return parse_metrics(body)

    def assert_running(self):
        if self.proc.poll() is not None:
            raise AssertionError('ktrigger exited with %s; log tail:\n%s'
                                 % (self.proc.returncode, tail(self.log_path)))

    def wait_healthy(self, timeout=20):
        """Wait until GET /healthz on the metrics listener answers 200."""
        def healthy():
            self.assert_running()
            status, _ = http_get('http://127.0.0.1:%d/healthz' % self.metrics_port, timeout=1)
            return status == 200

        wait_for(healthy, timeout, 'ktrigger /healthz on port %d' % self.metrics_port)

    def stop(self, timeout=30):
        """SIGTERM; returns the exit status (negative: killed by that signal)."""
        rc, timed_out = stop_process(self.proc, timeout)
        assert not timed_out, 'ktrigger pid %d did not exit within %ss of SIGTERM' % (
            self.pid, timeout)
        return rc


def spawn_ktrigger(tmp_path, conf, name='ktrigger', env=None, args=()):
    """Write conf (dict or libconfig text) to a new file and start ktrigger on it.

    Its stdout and stderr go to a new log file beside the config.  Does not wait.
    """
    tmp_path = Path(tmp_path)
    n = len(list(tmp_path.glob(name + '-*.conf')))
    config_path = tmp_path / ('%s-%d.conf' % (name, n))
    text = conf if isinstance(conf, str) else render_config(conf)
    config_path.write_text(text)
    metrics_port = int(re.search(r'listen = "[^"]*:(\d+)"', text).group(1))
    log_path = tmp_path / ('%s-%d.log' % (name, n))
    with open(log_path, 'ab') as log:
        proc = subprocess.Popen(ktrigger_argv(config_path, *args), env=ktrigger_env(env),
                                stdout=log, stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL)
    return KTrigger(proc, config_path, log_path, metrics_port)


# --------------------------------------------------------------------------- checks

def by_partition(calls):
    out = defaultdict(list)
    for c in calls:
        out[c.partition].append(c)
    return out


def expected_by_partition(produced):
    out = defaultdict(list)
    for r in produced:
        out[r.partition].append(r)
    return out


def assert_exactly_once_in_order(calls, expected, partitions, what, prefix=False):
    """Each partition's calls are exactly its expected records, once each, in offset order
    (with prefix=True: an in-order prefix of them)."""
    got = by_partition(calls)
    for p in range(partitions):
        have = [(c.offset, c.body) for c in got[p]]
        want = [(r.offset, r.value) for r in expected[p]]
        if prefix:
            want = want[:len(have)]
        assert have == want, 'partition %d: %s' % (p, what)


def count_by_partition(calls):
    out = defaultdict(int)
    for c in calls:
        out[c.partition] += 1
    return dict(out)


# --------------------------------------------------------------------------- raw headers

def produce_raw_headers(bootstrap, topic, partition, value, headers, timeout=30):
    """Produce one record whose header names are exact bytes (a NUL inside included), through
    librdkafka's C API: confluent_kafka passes names as C strings and would cut them.
    headers: [(name bytes, value bytes or None)]."""
    import ctypes
    lib = ctypes.CDLL('librdkafka.so.1')
    lib.rd_kafka_conf_new.restype = ctypes.c_void_p
    lib.rd_kafka_conf_set.argtypes = [ctypes.c_void_p, ctypes.c_char_p, ctypes.c_char_p,
                                      ctypes.c_char_p, ctypes.c_size_t]
    lib.rd_kafka_new.restype = ctypes.c_void_p
    lib.rd_kafka_new.argtypes = [ctypes.c_int, ctypes.c_void_p, ctypes.c_char_p,
                                 ctypes.c_size_t]
    lib.rd_kafka_headers_new.restype = ctypes.c_void_p
    lib.rd_kafka_headers_new.argtypes = [ctypes.c_size_t]
    lib.rd_kafka_header_add.argtypes = [ctypes.c_void_p, ctypes.c_char_p, ctypes.c_ssize_t,
                                        ctypes.c_char_p, ctypes.c_ssize_t]
    lib.rd_kafka_produceva.restype = ctypes.c_void_p
    lib.rd_kafka_produceva.argtypes = [ctypes.c_void_p, ctypes.c_void_p, ctypes.c_size_t]
    lib.rd_kafka_error_string.restype = ctypes.c_char_p
    lib.rd_kafka_error_string.argtypes = [ctypes.c_void_p]
    lib.rd_kafka_flush.argtypes = [ctypes.c_void_p, ctypes.c_int]
    lib.rd_kafka_destroy.argtypes = [ctypes.c_void_p]

    class Mem(ctypes.Structure):
        _fields_ = [('ptr', ctypes.c_void_p), ('size', ctypes.c_size_t)]

    class U(ctypes.Union):
        _fields_ = [('cstr', ctypes.c_char_p), ('i32', ctypes.c_int32), ('mem', Mem),
                    ('ptr', ctypes.c_void_p), ('_pad', ctypes.c_char * 64)]

    class VU(ctypes.Structure):
        _fields_ = [('vtype', ctypes.c_int), ('u', U)]

    errstr = ctypes.create_string_buffer(512)
    conf = lib.rd_kafka_conf_new()
    for k, v in (('bootstrap.servers', bootstrap), ('acks', 'all')):
        assert lib.rd_kafka_conf_set(conf, k.encode(), v.encode(), errstr, 512) == 0, errstr.value
    rk = lib.rd_kafka_new(0, conf, errstr, 512)  # RD_KAFKA_PRODUCER
    assert rk, errstr.value
    try:
        hdrs = lib.rd_kafka_headers_new(len(headers))
        for name, val in headers:
            lib.rd_kafka_header_add(hdrs, name, len(name), val, len(val) if val is not None else 0)
        buf = ctypes.create_string_buffer(value, len(value))
        vus = (VU * 4)()
        vus[0].vtype, vus[0].u.cstr = 1, topic.encode()  # RD_KAFKA_VTYPE_TOPIC
        vus[1].vtype, vus[1].u.i32 = 3, partition  # RD_KAFKA_VTYPE_PARTITION
        vus[2].vtype = 4  # RD_KAFKA_VTYPE_VALUE (copied: RD_KAFKA_MSG_F_COPY is the default)
        vus[2].u.mem.ptr, vus[2].u.mem.size = ctypes.cast(buf, ctypes.c_void_p), len(value)
        vus[3].vtype, vus[3].u.ptr = 10, hdrs  # RD_KAFKA_VTYPE_HEADERS (librdkafka owns it)
        err = lib.rd_kafka_produceva(rk, vus, 4)
        assert not err, lib.rd_kafka_error_string(err)
        assert lib.rd_kafka_flush(rk, timeout * 1000) == 0, 'not delivered in %ss' % timeout
    finally:
        lib.rd_kafka_destroy(rk)
