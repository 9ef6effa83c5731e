#!/usr/bin/python3
"""ktrigger benchmarks, with ceilings measured in the same run (see bench/README.md).

    bench.py --quick | --full [--out bench/results/latest.json] [--only NAME-SUBSTRING]

Starts its own Kafka broker (integration-tests/kafka/kafka.sh with KT_KAFKA_DIR, default
/tmp/ktrigger-kafka-bench), nginx (fast and 5 ms runtimes) and a Python latency sink, runs the
scenarios, prints a table and writes JSON. Reports numbers only: it never fails on speed.
"""
import argparse
import json
import os
import platform
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request

from confluent_kafka import Consumer, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
KAFKA_SH = os.path.join(ROOT, 'integration-tests', 'kafka', 'kafka.sh')
KTRIGGER = os.environ.get('KTRIGGER_BIN', os.path.join(ROOT, 'ktrigger'))
#: The per-record ceiling run beside ktrigger (bench/bare_forwarder.c, built by make bench).
BARE_FORWARDER = os.environ.get('BARE_FORWARDER_BIN',
                                os.path.join(ROOT, 'build', 'release', 'bench', 'bare_forwarder'))
KAFKA_DIR = os.environ.get('KT_KAFKA_DIR', '/tmp/ktrigger-kafka-bench')
CLK_TCK = os.sysconf('SC_CLK_TCK')
MAX_IN_FLIGHT = 64
#: A throughput run that has not committed everything by then reports the rate it reached.
SCENARIO_TIMEOUT_S = 120
KEYS = 1000
HANDLER = 'bench.handler'
# Benchmark-only overrides of ktrigger's defaults (everything else, prefetch bounds included, is
# ktrigger's default): commit often so "committed == end" is seen soon after the last call.
KAFKA_PROPS = [('fetch.wait.max.ms', '10'), ('auto.commit.interval.ms', '100')]
#: ktrigger's own prefetch and fetch defaults (consumer/consumer_group.c, kt_consumer_new), given
#: to the bare forwarder too so that both fetch the same way.
KTRIGGER_FETCH_DEFAULTS = [('queued.max.messages.kbytes', '512'), ('queued.min.messages', '1000'),
                           ('fetch.message.max.bytes', '65536'), ('fetch.max.bytes', '1048576')]
#: How the topic is produced. '1MB': librdkafka's default batch.size (1,000,000 bytes) with
#: linger 50 ms, so 100 B records land in ~8,700-record batches; '16KiB': Java's default
#: batch.size (16384) with linger.ms 5, the common case (issue 15: memory with lag).
PRODUCERS = {
    '1MB': {'batch.size': 1000000, 'linger.ms': 50},
    '16KiB': {'batch.size': 16384, 'linger.ms': 5},
}

#: name, partitions, value_bytes, ordering, runtime ('fast' | 'delay5' | 'sink'),
#: records per mode (quick, full); 0 = not run in that mode. kind: 'throughput' | 'latency'.
#: batch: (dispatch.batch.max_records, dispatch.batch.max_wait_ms), batched delivery (issue 15);
#: absent = one request per record. per_record_baseline: each run also runs ktrigger without
#: batches on the same topic, right before, for ratio_vs_per_record. bare: False skips the bare
#: forwarder (a per-record ceiling; at 5 ms a call it would take longer than the scenario).
SCENARIOS = [
    # The headline targets.
    # event_headers: the bare forwarder runs a second time sending ktrigger's event headers.
    dict(name='p8-100B-none-fast', partitions=8, value_bytes=100, ordering='none', runtime='fast',
         records=(100_000, 1_000_000), event_headers=True),
    # The peak-RSS scenario again, with the topic written in Java-default 16 KiB batches.
    dict(name='p8-100B-none-fast-b16KiB', partitions=8, value_bytes=100, ordering='none',
         runtime='fast', records=(0, 1_000_000), producer='16KiB'),
    dict(name='p8-100B-key-fast', partitions=8, value_bytes=100, ordering='key', runtime='fast',
         records=(100_000, 300_000), event_headers=True),
    dict(name='p8-100B-partition-fast', partitions=8, value_bytes=100, ordering='partition',
         runtime='fast', records=(0, 300_000)),
    dict(name='p1-100B-partition-fast', partitions=1, value_bytes=100, ordering='partition',
         runtime='fast', records=(20_000, 40_000)),
    dict(name='p1-100B-none-fast', partitions=1, value_bytes=100, ordering='none', runtime='fast',
         records=(0, 40_000)),
    dict(name='p8-10KiB-none-fast', partitions=8, value_bytes=10240, ordering='none',
         runtime='fast', records=(20_000, 60_000)),
    dict(name='p8-10KiB-key-fast', partitions=8, value_bytes=10240, ordering='key',
         runtime='fast', records=(0, 60_000)),
    dict(name='p8-10KiB-partition-fast', partitions=8, value_bytes=10240, ordering='partition',
         runtime='fast', records=(0, 60_000)),
    dict(name='p1-10KiB-partition-fast', partitions=1, value_bytes=10240, ordering='partition',
         runtime='fast', records=(0, 30_000)),
    dict(name='p8-100B-key-5ms', partitions=8, value_bytes=100, ordering='key', runtime='delay5',
         records=(40_000, 80_000)),
    dict(name='p8-100B-none-5ms', partitions=8, value_bytes=100, ordering='none',
         runtime='delay5', records=(0, 80_000)),
    dict(name='p8-100B-partition-5ms', partitions=8, value_bytes=100, ordering='partition',
         runtime='delay5', records=(0, 12_000)),
    dict(name='p1-100B-partition-5ms', partitions=1, value_bytes=100, ordering='partition',
         runtime='delay5', records=(0, 1_500)),
    dict(name='p8-10KiB-key-5ms', partitions=8, value_bytes=10240, ordering='key',
         runtime='delay5', records=(0, 40_000)),
    # Batched delivery (issue 15), on the same topics as the per-record scenarios above (a topic
    # is shared when partitions, value size, record count and producer match).
    dict(name='p8-100B-none-fast-batch100', partitions=8, value_bytes=100, ordering='none',
         runtime='fast', records=(100_000, 1_000_000), batch=(100, 0), per_record_baseline=True),
    dict(name='p8-100B-key-fast-batch100', partitions=8, value_bytes=100, ordering='key',
         runtime='fast', records=(0, 300_000), batch=(100, 0), per_record_baseline=True),
    dict(name='p8-100B-key-5ms-batch100', partitions=8, value_bytes=100, ordering='key',
         runtime='delay5', records=(100_000, 300_000), batch=(100, 0), bare=False),
    # Latency at a fixed offered rate: records = rate x seconds.
    dict(name='latency-p8-100B-key-1000/s', partitions=8, value_bytes=100, ordering='key',
         runtime='sink', kind='latency', rate=1000, seconds=(10, 30)),
    dict(name='latency-p8-100B-partition-1000/s', partitions=8, value_bytes=100,
         ordering='partition', runtime='sink', kind='latency', rate=1000, seconds=(0, 30)),
    dict(name='latency-p1-100B-partition-1000/s', partitions=1, value_bytes=100,
         ordering='partition', runtime='sink', kind='latency', rate=1000, seconds=(0, 30)),
    dict(name='latency-p8-100B-key-1000/s-batch100-wait5', partitions=8, value_bytes=100,
         ordering='key', runtime='sink', kind='latency', rate=1000, seconds=(10, 30),
         batch=(100, 5)),
]


def log(msg):
    print(f'bench: {msg}', file=sys.stderr, flush=True)


def free_port():
    s = socket.socket()
    s.bind(('127.0.0.1', 0))
    port = s.getsockname()[1]
    s.close()
    return port


def http_get(url, timeout=2.0):
    try:
        with urllib.request.urlopen(url, timeout=timeout) as r:
            return r.status, r.read().decode()
    except OSError:
        return None, ''


def wait_for(cond, timeout, what, interval=0.05):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        v = cond()
        if v:
            return v
        time.sleep(interval)
    raise RuntimeError(f'timed out after {timeout}s waiting for {what}')


def stop_pid(proc, timeout=30):
    """Stops one process we started, by its pid: SIGTERM, then SIGKILL."""
    if proc is None or proc.poll() is not None:
        return
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def proc_cpu_s(pid):
    with open(f'/proc/{pid}/stat') as f:
        fields = f.read().rsplit(')', 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK   # utime, stime


def proc_hwm_mib(pid):
    with open(f'/proc/{pid}/status') as f:
        for line in f:
            if line.startswith('VmHWM:'):
                return int(line.split()[1]) / 1024
    return None


def median(xs):
    xs = [x for x in xs if x is not None]
    return statistics.median(xs) if xs else None


# ----------------------------------------------------------------------------- services

class Kafka:
    def __init__(self):
        env = dict(os.environ, KT_KAFKA_DIR=KAFKA_DIR)
        self.env = env
        out = subprocess.run([KAFKA_SH, 'start'], env=env, check=True, stdout=subprocess.PIPE,
                             text=True).stdout
        self.bootstrap = out.strip().splitlines()[-1]
        self.admin = AdminClient({'bootstrap.servers': self.bootstrap})

    def stop(self):
        subprocess.run([KAFKA_SH, 'stop'], env=self.env, check=False, stdout=subprocess.DEVNULL)

    def create_topic(self, topic, partitions):
        fs = self.admin.create_topics([NewTopic(topic, partitions, 1)])
        for f in fs.values():
            f.result(30)
        wait_for(lambda: topic in self.admin.list_topics(timeout=5).topics and
                 len(self.admin.list_topics(topic, timeout=5).topics[topic].partitions) ==
                 partitions, 30, f'topic {topic}')

    def produce_bulk(self, topic, records, value_bytes, producer='1MB'):
        """Fills topic; returns the producer's batch statistics (librdkafka's per-topic
        batchsize / batchcnt windows, weighted by batch count)."""
        windows = []

        def on_stats(js):
            t = json.loads(js).get('topics', {}).get(topic)
            if t and t['batchcnt']['cnt']:
                windows.append((t['batchcnt']['cnt'], t['batchsize']['avg'],
                                t['batchsize']['max'], t['batchcnt']['avg'],
                                t['batchcnt']['max']))
        p = Producer(dict({'bootstrap.servers': self.bootstrap, 'batch.num.messages': 10000,
                           'queue.buffering.max.messages': 1000000,
                           'queue.buffering.max.kbytes': 1048576, 'acks': 1,
                           'statistics.interval.ms': 500, 'stats_cb': on_stats},
                          **PRODUCERS[producer]))
        value = b'x' * value_bytes
        keys = [b'k%03d' % i for i in range(KEYS)]
        for i in range(records):
            while True:
                try:
                    p.produce(topic, value, keys[i % KEYS])
                    break
                except BufferError:
                    p.poll(0.05)
            if i % 10000 == 0:
                p.poll(0)
        if p.flush(120) != 0:
            raise RuntimeError(f'produce to {topic}: undelivered records')
        time.sleep(0.6)   # one more statistics window for the last batches
        p.poll(0)
        n = sum(w[0] for w in windows)
        return {'producer': producer, 'producer_batch_size': PRODUCERS[producer]['batch.size'],
                'producer_linger_ms': PRODUCERS[producer]['linger.ms'],
                'producer_batch_bytes_avg': sum(w[0] * w[1] for w in windows) / n if n else None,
                'producer_batch_bytes_max': max((w[2] for w in windows), default=None),
                'producer_batch_records_avg': sum(w[0] * w[3] for w in windows) / n if n else None,
                'producer_batch_records_max': max((w[4] for w in windows), default=None)}

    def consumer(self, group):
        return Consumer({'bootstrap.servers': self.bootstrap, 'group.id': group,
                         'enable.auto.commit': False})

    def end_offsets(self, c, topic, partitions):
        return [c.get_watermark_offsets(TopicPartition(topic, p), timeout=10)[1]
                for p in range(partitions)]

    def committed(self, c, topic, partitions):
        tps = c.committed([TopicPartition(topic, p) for p in range(partitions)], timeout=10)
        return [tp.offset for tp in tps]


NGINX_CONF = """\
load_module /usr/lib/nginx/modules/ngx_http_echo_module.so;
worker_processes 1;
daemon off;
pid {d}/nginx.pid;
error_log {d}/error.log warn;
events {{ worker_connections 4096; }}
http {{
  access_log off;
  client_body_temp_path {d}/body; proxy_temp_path {d}/proxy; fastcgi_temp_path {d}/fcgi;
  uwsgi_temp_path {d}/uwsgi; scgi_temp_path {d}/scgi;
  # The default 1000 requests per keep-alive connection would make clients reconnect.
  keepalive_requests 1000000000;
  keepalive_timeout 600s;
  client_max_body_size 16m;
  client_body_buffer_size 64k;
  # Fast runtime: answer at once.
  server {{ listen 127.0.0.1:{fast}; location / {{ return 200; }} }}
  # 5 ms runtime: the echo module's non-blocking timer, then 200 with an empty body.
  server {{ listen 127.0.0.1:{slow}; location / {{ echo_sleep 0.005; echo_status 200; echo ""; }} }}
}}
"""


class Nginx:
    def __init__(self, workdir):
        self.dir = os.path.join(workdir, 'nginx')
        os.makedirs(self.dir, exist_ok=True)
        self.fast, self.slow = free_port(), free_port()
        conf = os.path.join(self.dir, 'nginx.conf')
        with open(conf, 'w') as f:
            f.write(NGINX_CONF.format(d=self.dir, fast=self.fast, slow=self.slow))
        self.proc = subprocess.Popen(['nginx', '-p', self.dir, '-c', conf],
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wait_for(lambda: http_get(f'http://127.0.0.1:{self.fast}/')[0] == 200 and
                 http_get(f'http://127.0.0.1:{self.slow}/')[0] == 200, 10, 'nginx')
        kids = subprocess.run(['pgrep', '-P', str(self.proc.pid)], stdout=subprocess.PIPE,
                              text=True).stdout.split()
        self.worker = int(kids[0]) if kids else None

    def cpu_s(self):
        return proc_cpu_s(self.worker) if self.worker else None

    def stop(self):
        # SIGQUIT is nginx's graceful stop; the master reaps its worker.
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGQUIT)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


class Sink:
    def __init__(self, workdir):
        self.port = free_port()
        self.log = open(os.path.join(workdir, 'sink.log'), 'w')
        self.proc = subprocess.Popen([sys.executable, os.path.join(HERE, 'sink.py'),
                                      str(self.port)], stdout=self.log, stderr=self.log)
        wait_for(lambda: http_get(f'http://127.0.0.1:{self.port}/healthz')[0] == 200, 10,
                 'latency sink')

    def stats(self):
        return json.loads(http_get(f'http://127.0.0.1:{self.port}/stats')[1])

    def reset(self):
        http_get(f'http://127.0.0.1:{self.port}/reset')

    def stop(self):
        stop_pid(self.proc, 5)
        self.log.close()


# ----------------------------------------------------------------------------- ceilings

def kcat_ceiling(bootstrap, topic, records):
    t0 = time.monotonic()
    subprocess.run(['kcat', '-C', '-b', bootstrap, '-t', topic, '-o', 'beginning', '-e', '-q',
                    '-f', '%o\\n'], check=True, stdout=subprocess.DEVNULL)
    return records / (time.monotonic() - t0)


def post_lua(workdir, value_bytes):
    """A wrk script POSTing a body of value_bytes with headers shaped like ktrigger's."""
    path = os.path.join(workdir, f'post-{value_bytes}.lua')
    with open(path, 'w') as f:
        f.write(f'''wrk.method = "POST"
wrk.body = string.rep("x", {value_bytes})
wrk.headers["Content-Type"] = "text/plain; charset=utf-8"
wrk.headers["event-id"] = "bench-topic/3/123456"
wrk.headers["event-time"] = "2024-01-01T00:00:00.000Z"
wrk.headers["event-timestamp-type"] = "create"
wrk.headers["event-type"] = "text/plain; charset=utf-8"
wrk.headers["event-namespace"] = "kafkatriggers.kubeless.io"
wrk.headers["event-topic"] = "bench-topic"
wrk.headers["event-partition"] = "3"
wrk.headers["event-offset"] = "123456"
wrk.headers["event-key"] = "k123"
''')
    return path


def wrk_ceiling(url, conns, lua, seconds):
    out = subprocess.run(['wrk', '-t1', f'-c{conns}', f'-d{seconds}s', '-s', lua, url],
                         check=True, stdout=subprocess.PIPE, text=True).stdout
    m = re.search(r'Requests/sec:\s+([0-9.]+)', out)
    errs = re.search(r'Non-2xx or 3xx responses: (\d+)', out)
    if errs:
        log(f'wrk {url}: {errs.group(1)} non-2xx answers')
    return float(m.group(1)) if m else None


# ----------------------------------------------------------------------------- ktrigger

#: --dispatch: settings appended to every ktrigger's dispatch block (e.g. buffer sizes).
DISPATCH_EXTRA = ''


def render_config(bootstrap, topic, group, port, metrics_port, ordering, batch=None):
    props = ',\n    '.join(f'("{k}", "{v}")' for k, v in KAFKA_PROPS)
    batch_conf = (f' batch = {{ max_records = {batch[0]}; max_wait_ms = {batch[1]}; }};'
                  if batch else '')
    return f'''function = {{ handler = "{HANDLER}"; }};
kafka = {{
  brokers = "{bootstrap}";
  topics = [ "{topic}" ];
  group_id = "{group}";
  start_from = "earliest";
  properties = (
    {props}
  );
}};
runtime = {{ host = "127.0.0.1"; port = {port}; path = "/"; }};
dispatch = {{ ordering = "{ordering}"; max_in_flight = {MAX_IN_FLIGHT};{batch_conf} {DISPATCH_EXTRA} }};
metrics = {{ listen = "127.0.0.1:{metrics_port}"; }};
log = {{ level = "warning"; }};
'''


class Ktrigger:
    def __init__(self, workdir, name, conf_text):
        self.metrics_port = None
        self.conf = os.path.join(workdir, f'{name}.conf')
        with open(self.conf, 'w') as f:
            f.write(conf_text)
        self.logf = open(os.path.join(workdir, f'{name}.log'), 'w')
        env = {k: v for k, v in os.environ.items()
               if not k.startswith(('FUNC_', 'TOPIC_NAME', 'KAFKA_', 'KUBELESS_', 'KTRIGGER_'))}
        self.t_start = time.monotonic()
        self.proc = subprocess.Popen([KTRIGGER, '--config', self.conf], stdout=self.logf,
                                     stderr=self.logf, env=env)

    def calls(self, metrics_port):
        status, text = http_get(f'http://127.0.0.1:{metrics_port}/metrics', 1.0)
        if status != 200:
            return None
        n = 0
        for line in text.splitlines():
            if line.startswith('function_calls_total{'):
                n += int(float(line.rsplit(' ', 1)[1]))
        return n

    def batch_requests(self, metrics_port):
        """(records, requests) of the ktrigger_batch_records histogram, or None without it."""
        status, text = http_get(f'http://127.0.0.1:{metrics_port}/metrics', 1.0)
        got = {}
        for line in text.splitlines() if status == 200 else []:
            for part in ('sum', 'count'):
                if line.startswith(f'ktrigger_batch_records_{part}'):
                    got[part] = got.get(part, 0) + float(line.rsplit(' ', 1)[1])
        return (got['sum'], got['count']) if 'count' in got else None

    def alive(self):
        return self.proc.poll() is None

    def stop(self):
        stop_pid(self.proc, 40)
        self.logf.close()


def run_throughput(kafka, workdir, sc, topic, records, url, run_no, batch=None):
    tag = 'batch' if batch else 'single'
    group = f'bench-{sc["name"]}-{tag}-{run_no}-{int(time.time() * 1000)}'.replace('/', '_')
    mport = free_port()
    port = int(url.rsplit(':', 1)[1].split('/')[0])
    kt = Ktrigger(workdir, f'{sc["name"].replace("/", "_")}-{tag}-{run_no}',
                  render_config(kafka.bootstrap, topic, group, port, mport, sc['ordering'],
                                batch))
    c = kafka.consumer(group)
    try:
        end = kafka.end_offsets(c, topic, sc['partitions'])
        assert sum(end) == records, (end, records)
        t_first = None
        deadline = time.monotonic() + SCENARIO_TIMEOUT_S
        complete = True
        while time.monotonic() < deadline:
            if not kt.alive():
                raise RuntimeError(f'ktrigger exited {kt.proc.returncode}: see {kt.logf.name}')
            n = kt.calls(mport)
            now = time.monotonic()
            if t_first is None and n:
                t_first = now
            if n is not None and n >= records:
                break
            time.sleep(0.02)
        t_calls = time.monotonic()
        committed = kafka.committed(c, topic, sc['partitions'])
        while time.monotonic() < deadline:
            committed = kafka.committed(c, topic, sc['partitions'])
            if committed == end:
                break
            time.sleep(0.02)
        else:
            # Too slow to finish in time: report the rate of what was committed, marked.
            complete = False
            log(f'{sc["name"]}: not done after {SCENARIO_TIMEOUT_S}s: '
                f'{sum(max(o, 0) for o in committed):,} of {records:,} committed')
            records = sum(max(o, 0) for o in committed)
            t_first = t_first or kt.t_start
        t_done = time.monotonic()
        cpu = proc_cpu_s(kt.proc.pid)
        rss = proc_hwm_mib(kt.proc.pid)
        hist = kt.batch_requests(mport)
    finally:
        c.close()
        kt.stop()
    return {
        'complete': complete,
        # Records per request, as ktrigger's ktrigger_batch_records histogram saw them.
        'batch_records_mean': hist[0] / hist[1] if hist and hist[1] else None,
        'requests_per_s': (hist[1] / (t_done - t_first) if hist and hist[1] else None),
        'records_per_s': records / (t_done - t_first),
        'records_per_s_from_start': records / (t_done - kt.t_start),
        'calls_per_s': records / max(t_calls - t_first, 1e-6),
        'seconds': t_done - t_first,
        'join_s': t_first - kt.t_start,
        'peak_rss_mib': rss,
        'cpu_s_per_million': cpu / records * 1e6,
        'cpu_us_per_record': cpu / records * 1e6,
    }


def run_bare_forwarder(kafka, workdir, sc, topic, records, url, run_no, conns,
                       event_headers=False):
    """The bare forwarder on the same topic with a fresh group and ktrigger's fetch settings
    (with `event_headers`, also the header lines of ktrigger's event contract on every call:
    its results are then named bare_forwarder_event_headers_*).
    Its rate is records / (first call -> every call completed and the group's committed
    offsets equal the end offsets), both seen by polling every 20 ms as for ktrigger: it stores
    offsets as records are polled (enable.auto.offset.store), so commits alone could run ahead
    of its last (at most `conns`) calls."""
    kind = 'bare-eh' if event_headers else 'bare'
    group = f'bench-{kind}-{sc["name"]}-{run_no}-{int(time.time() * 1000)}'.replace('/', '_')
    out_path = os.path.join(workdir, f'{kind}-{sc["name"].replace("/", "_")}-{run_no}.out')
    props = ((['--event-headers'] if event_headers else []) +
             [f'{k}={v}' for k, v in KTRIGGER_FETCH_DEFAULTS + KAFKA_PROPS])
    outf = open(out_path, 'w')
    t_start = time.monotonic()
    proc = subprocess.Popen([BARE_FORWARDER, kafka.bootstrap, topic, group, url, str(conns),
                             str(records)] + props, stdout=outf, stderr=subprocess.STDOUT)
    c = kafka.consumer(group)

    def seen(word):
        with open(out_path) as f:
            return any(line.startswith(word + ' ') for line in f)
    try:
        end = kafka.end_offsets(c, topic, sc['partitions'])
        t_first = None
        deadline = time.monotonic() + SCENARIO_TIMEOUT_S
        complete = True
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                raise RuntimeError(f'bare_forwarder exited {proc.returncode}: see {out_path}')
            now = time.monotonic()
            if t_first is None and seen('first'):
                t_first = now
            if seen('done'):
                break
            time.sleep(0.02)
        committed = kafka.committed(c, topic, sc['partitions'])
        while time.monotonic() < deadline:
            committed = kafka.committed(c, topic, sc['partitions'])
            if committed == end:
                break
            time.sleep(0.02)
        else:
            complete = False
            log(f'{sc["name"]}: bare forwarder not done after {SCENARIO_TIMEOUT_S}s: '
                f'{sum(max(o, 0) for o in committed):,} of {records:,} committed')
            records = sum(max(o, 0) for o in committed)
            t_first = t_first or t_start
        t_done = time.monotonic()
        cpu = proc_cpu_s(proc.pid)
        rss = proc_hwm_mib(proc.pid)
    finally:
        c.close()
        stop_pid(proc, 40)
        outf.close()
    errors = None
    with open(out_path) as f:
        for line in f:
            m = re.match(r'exit calls=(\d+) errors=(\d+)', line)
            if m:
                errors = int(m.group(2))
    if errors:
        log(f'{sc["name"]}: bare forwarder: {errors} failed calls (see {out_path})')
    res = {
        'bare_forwarder_complete': complete,
        'ceiling_bare_forwarder_records_per_s': records / (t_done - t_first),
        'bare_forwarder_join_s': t_first - t_start,
        'bare_forwarder_peak_rss_mib': rss,
        'bare_forwarder_cpu_us_per_record': cpu / records * 1e6,
        'bare_forwarder_errors': errors,
    }
    if event_headers:
        res = {k.replace('bare_forwarder', 'bare_forwarder_event_headers'): v
               for k, v in res.items()}
    return res


def merge_bare_runs(runs):
    """One scenario's bare forwarder runs (run_bare_forwarder's dicts) as one: complete if
    every run was, errors summed, peak RSS the max, the rest the median."""
    out = {}
    for k in runs[0]:
        out[k] = (all(r[k] for r in runs) if k.endswith('_complete') else
                  sum(r[k] or 0 for r in runs) if k.endswith('_errors') else
                  max(r[k] for r in runs) if k.endswith('_peak_rss_mib') else
                  median([r[k] for r in runs]))
    return out


def run_latency(kafka, workdir, sc, topic, sink, rate, seconds, run_no):
    group = f'bench-{sc["name"]}-{run_no}-{int(time.time() * 1000)}'.replace('/', '_')
    mport = free_port()
    kt = Ktrigger(workdir, f'{sc["name"].replace("/", "_")}-{run_no}',
                  render_config(kafka.bootstrap, topic, group, sink.port, mport, sc['ordering'],
                                sc.get('batch')))
    records = rate * seconds
    floor = None
    try:
        # Joined and assigned (/readyz is about the runtime; ?verbose shows the group too).
        # Then a short settle so the first fetches run.
        wait_for(lambda: '[+]kafka_group ok' in http_get(
            f'http://127.0.0.1:{mport}/readyz?verbose')[1], 60, 'ktrigger in its group')
        time.sleep(1.0)
        # Kafka's own produce-to-consume latency, read alongside by a plain consumer: the floor
        # under ours. Started first so that it has joined before timing starts.
        floor_out = os.path.join(workdir, f'floor-{group}.json')
        floor_ready = floor_out + '.ready'
        floor = subprocess.Popen([sys.executable, os.path.join(HERE, 'consumer_latency.py'),
                                  kafka.bootstrap, topic, str(records), str(time.time_ns()),
                                  floor_out, floor_ready] +
                                 [f'{k}={v}' for k, v in KAFKA_PROPS if k.startswith('fetch.')])
        # Warm the whole path before timing anything: the producer's first records wait for its
        # metadata and broker connection (one such start-up put 0.4 s on the first ~600 records
        # and was reported as ktrigger's p99).
        p = Producer({'bootstrap.servers': kafka.bootstrap, 'linger.ms': 0, 'acks': 1})
        p.produce(topic, b'warm-up', b'warm-up')
        p.flush(30)
        wait_for(lambda: (kt.calls(mport) or 0) >= 1, 30, 'warm-up record called')
        wait_for(lambda: os.path.exists(floor_ready), 30, 'latency floor consumer')
        base = kt.calls(mport) or 0
        sink.reset()
        pad = b'x' * max(0, sc['value_bytes'] - 19)
        keys = [b'k%03d' % i for i in range(KEYS)]
        t0 = time.monotonic()
        cpu0 = proc_cpu_s(kt.proc.pid)
        for i in range(records):
            due = t0 + i / rate
            delay = due - time.monotonic()
            if delay > 0:
                time.sleep(delay)
            p.produce(topic, b'%019d' % time.time_ns() + pad, keys[i % KEYS])
            p.poll(0)
        p.flush(30)
        del p
        wait_for(lambda: (kt.calls(mport) or 0) - base >= records, 60, 'latency records called')
        cpu = proc_cpu_s(kt.proc.pid) - cpu0
        rss = proc_hwm_mib(kt.proc.pid)
        hist = kt.batch_requests(mport)
        st = sink.stats()
        try:
            floor.wait(60)
            with open(floor_out) as f:
                fl = json.load(f)
        except (subprocess.TimeoutExpired, OSError, ValueError):
            fl = {}
    finally:
        kt.stop()
        stop_pid(floor, 5)
    return {'offered_per_s': rate, 'records_per_s': rate, 'p50_ms': st['p50_ms'],
            'p99_ms': st['p99_ms'], 'p999_ms': st['p999_ms'], 'max_ms': st['max_ms'],
            'samples': st['count'], 'peak_rss_mib': rss, 'cpu_s_per_million': cpu / records * 1e6,
            'kafka_p50_ms': fl.get('p50_ms'), 'kafka_p99_ms': fl.get('p99_ms'),
            'kafka_p999_ms': fl.get('p999_ms'), 'kafka_max_ms': fl.get('max_ms'),
            'kafka_samples': fl.get('count'),
            'batch_records_mean': hist[0] / hist[1] if hist and hist[1] else None,
            'sink_batch_requests': st.get('batch_requests')}


# ----------------------------------------------------------------------------- main

def machine_info(nginx_version):
    def first_line(cmd):
        try:
            return subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                  text=True).stdout.strip().splitlines()[0]
        except (OSError, IndexError):
            return None
    cpu = None
    with open('/proc/cpuinfo') as f:
        for line in f:
            if line.startswith('model name'):
                cpu = line.split(':', 1)[1].strip()
                break
    jars = os.listdir(os.path.join(ROOT, 'integration-tests', 'kafka', 'libs')) \
        if os.path.isdir(os.path.join(ROOT, 'integration-tests', 'kafka', 'libs')) else []
    kafka_jar = next((j for j in jars if re.match(r'kafka_[0-9.]+-[0-9.]+\.jar$', j)), None)
    version = first_line([KTRIGGER, '--version']) or ''
    return {
        'hostname': platform.node(), 'cpus': os.cpu_count(), 'cpu_model': cpu,
        'affinity': sorted(os.sched_getaffinity(0)), 'kernel': platform.release(),
        'loadavg_at_start': os.getloadavg(),
        'ktrigger': version or None,
        # What ktrigger runs with (its --version line), not the -dev packages: the default
        # build links librdkafka 2.14.2 statically while Debian's is 2.0.2.
        'librdkafka': (linked_version(version, r'librdkafka ([0-9][^,) ]*)') or
                       first_line(['pkg-config', '--modversion', 'rdkafka'])),
        'libcurl': (linked_version(version, r'libcurl/([0-9][^ ,)]*)') or
                    first_line(['pkg-config', '--modversion', 'libcurl'])),
        'nginx': nginx_version, 'wrk': first_line(['wrk', '-v']),
        'kafka': kafka_jar, 'kcat': first_line(['kcat', '-V']),
        'cpu_placement': 'not pinned: ktrigger, nginx, wrk, kcat and the broker share all CPUs',
    }


def linked_version(version_line, pattern):
    m = re.search(pattern, version_line)
    return m.group(1) if m else None


def fmt(v, nd=0):
    if v is None:
        return '-'
    if isinstance(v, float):
        return f'{v:,.{nd}f}'
    return str(v)


def print_table(scenarios):
    cols = [('scenario', 'name', 0), ('records', 'records', 0), ('rec/s', 'records_per_s', 0),
            ('wrk/s', 'ceiling_wrk_req_per_s', 0), ('vs wrk', 'ratio_vs_wrk', 2),
            ('kcat/s', 'ceiling_kafka_records_per_s', 0),
            ('bare/s', 'ceiling_bare_forwarder_records_per_s', 0),
            ('vs bare', 'ratio_vs_bare_forwarder', 2),
            ('bare+h/s', 'ceiling_bare_forwarder_event_headers_records_per_s', 0),
            ('vs bare+h', 'ratio_vs_bare_forwarder_event_headers', 2),
            ('batch', 'batch_records_mean', 1),
            ('vs 1/req', 'ratio_vs_per_record', 2), ('p50ms', 'p50_ms', 2),
            ('p99ms', 'p99_ms', 2), ('p999ms', 'p999_ms', 2), ('kafka p99', 'kafka_p99_ms', 2),
            ('RSS MiB', 'peak_rss_mib', 1), ('bare MiB', 'bare_forwarder_peak_rss_mib', 1),
            ('us/rec', 'cpu_us_per_record', 1),
            ('bare us/rec', 'bare_forwarder_cpu_us_per_record', 1),
            ('bare+h us/rec', 'bare_forwarder_event_headers_cpu_us_per_record', 1)]
    rows = [[h for h, _, _ in cols]]
    for s in scenarios:
        rows.append([fmt(s.get(k), nd) for _, k, nd in cols])
    widths = [max(len(r[i]) for r in rows) for i in range(len(cols))]
    for j, r in enumerate(rows):
        print('  '.join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in
                        enumerate(zip(r, widths))))
        if j == 0:
            print('  '.join('-' * w for w in widths))


# librdkafka's fetch op per record as malloc holds it, and what the process holds without lag
# (code, libraries, stacks), both for the librdkafka ktrigger links (2.14.2): README.md
# "Memory with lag". (2.0.2: 296 B, measured with massif, and ~14 MiB.)
FETCH_OP_BYTES = 320
BASE_RSS_MIB = 17


def lag_rss_formula_mib(s):
    """Peak RSS with lag, from README.md: partitions x (the largest producer batch + one
    fetch op per record of it) + the base."""
    batch = s['producer_batch_bytes_max'] + s['producer_batch_records_max'] * FETCH_OP_BYTES
    return s['partitions'] * batch / 2 ** 20 + BASE_RSS_MIB


def targets(scenarios):
    by = {s['name']: s for s in scenarios}
    out = []

    def add(what, name, value, goal, ok):
        out.append({'target': what, 'scenario': name, 'value': value, 'goal': goal,
                    'met': None if value is None else ok})
    for n in ('p8-100B-none-fast', 'p8-100B-key-fast'):
        s = by.get(n)
        if s:
            add('>= 35,000 records/s', n, s['records_per_s'], 35000,
                s['records_per_s'] >= 35000)
            add('>= 0.35 of wrk', n, s['ratio_vs_wrk'], 0.35, (s['ratio_vs_wrk'] or 0) >= 0.35)
    # Issue 15, per record: against the bare forwarder (what the dependencies reach, same run).
    for n in ('p8-100B-none-fast', 'p8-100B-key-fast'):
        s = by.get(n)
        if s and s.get('ratio_vs_bare_forwarder') is not None:
            add('>= 0.9 of the bare forwarder rec/s', n, s['ratio_vs_bare_forwarder'], 0.9,
                s['ratio_vs_bare_forwarder'] >= 0.9)
        if s and s.get('bare_forwarder_cpu_us_per_record'):
            cpu = s['cpu_us_per_record'] / s['bare_forwarder_cpu_us_per_record']
            add("<= 1.15x the bare forwarder's CPU/record", n, cpu, 1.15, cpu <= 1.15)
    s = by.get('p1-100B-partition-fast')
    if s:
        add('>= 0.8 of wrk -c1', s['name'], s['ratio_vs_wrk'], 0.8,
            (s['ratio_vs_wrk'] or 0) >= 0.8)
    s = by.get('p8-100B-key-5ms')
    if s:
        goal = MAX_IN_FLIGHT / 0.005
        add('>= 0.8 of max_in_flight/5ms', s['name'], s['records_per_s'] / goal, 0.8,
            s['records_per_s'] / goal >= 0.8)
        add('>= 0.9 of wrk (5 ms)', s['name'], s['ratio_vs_wrk'], 0.9,
            (s['ratio_vs_wrk'] or 0) >= 0.9)
    for s in scenarios:
        if s.get('p99_ms') is not None:
            add('p99 <= 10 ms at 1,000/s', s['name'], s['p99_ms'], 10, s['p99_ms'] <= 10)
        if (s.get('p99_ms') is not None and s.get('kafka_p99_ms') is not None
                and not s.get('batch_max_records')):
            goal = s['kafka_p99_ms'] + 1
            add('p99 <= Kafka p99 + 1 ms', s['name'], s['p99_ms'], goal, s['p99_ms'] <= goal)
    # Memory with 1,000,000 records of lag (full mode): Java-sized producer batches, and the
    # bench's 1 MB ones against the formula in README.md ("Memory with lag").
    s = by.get('p8-100B-none-fast-b16KiB')
    if s and s['records'] >= 1_000_000:
        add('peak RSS <= 24 MiB (1,000,000 lag, 16 KiB batches)', s['name'], s['peak_rss_mib'],
            24, s['peak_rss_mib'] <= 24)
    s = by.get('p8-100B-none-fast')
    if s and s['records'] >= 1_000_000 and s.get('producer_batch_bytes_max'):
        formula = lag_rss_formula_mib(s)
        off = s['peak_rss_mib'] / formula - 1
        add(f'peak RSS within 10 % of the formula (1 MB batches, {formula:.1f} MiB)',
            s['name'], off, 0.1, abs(off) <= 0.1)
    # Batched delivery (issue 15).
    for s in scenarios:
        if not s.get('batch_max_records'):
            continue
        if s.get('ratio_vs_per_record') is not None:
            add('>= 5x own per-record rec/s (batched)', s['name'], s['ratio_vs_per_record'], 5,
                s['ratio_vs_per_record'] >= 5)
            add('>= 250,000 records/s (batched)', s['name'], s['records_per_s'], 250000,
                s['records_per_s'] >= 250000)
            add('<= 3 us CPU per record (batched)', s['name'], s['cpu_us_per_record'], 3,
                s['cpu_us_per_record'] <= 3)
        if s['runtime_delay_ms'] == 5 and s.get('ratio_vs_wrk_x_batch') is not None:
            add('>= 0.8 of wrk x batch (5 ms, batched)', s['name'], s['ratio_vs_wrk_x_batch'],
                0.8, s['ratio_vs_wrk_x_batch'] >= 0.8)
        if s.get('p99_ms') is not None and s.get('kafka_p99_ms') is not None:
            goal = s['kafka_p99_ms'] + s['batch_max_wait_ms'] + 1
            add('p99 <= Kafka p99 + max_wait_ms + 1 ms', s['name'], s['p99_ms'], goal,
                s['p99_ms'] <= goal)
    worst = max((s for s in scenarios if s.get('peak_rss_mib')), key=lambda s: s['peak_rss_mib'],
                default=None)
    if worst:
        add('peak RSS <= 40 MiB (worst scenario)', worst['name'], worst['peak_rss_mib'], 40,
            worst['peak_rss_mib'] <= 40)
    return out


def main():
    ap = argparse.ArgumentParser()
    mode = ap.add_mutually_exclusive_group()
    mode.add_argument('--quick', action='store_true')
    mode.add_argument('--full', action='store_true')
    ap.add_argument('--runs', type=int, help='runs per scenario (default: quick 1, full 2)')
    ap.add_argument('--only', help='run the scenarios whose name contains this')
    # latest.json is committed from whole full runs (README.md): anything less writes beside it.
    ap.add_argument('--out', default=None,
                    help='default: results/latest.json for --full without --only, '
                         'else results/partial.json')
    ap.add_argument('--keep-broker', action='store_true', help='leave the broker running')
    ap.add_argument('--no-bare-forwarder', action='store_true',
                    help='skip the bare forwarder ceiling (bench/bare_forwarder.c)')
    ap.add_argument('--dispatch', default='',
                    help='settings added to every ktrigger\'s dispatch block, e.g. '
                         '"partition_buffer_records = 3000;" (never a whole run\'s latest.json)')
    args = ap.parse_args()
    global DISPATCH_EXTRA
    DISPATCH_EXTRA = args.dispatch
    if args.out is None:
        whole = args.full and not args.only and not args.dispatch
        args.out = os.path.join(HERE, 'results', 'latest.json' if whole else 'partial.json')
    idx = 1 if args.full else 0
    runs = args.runs or (2 if args.full else 1)
    wrk_s = 5 if args.full else 3

    todo = []
    for sc in SCENARIOS:
        if args.only and args.only not in sc['name']:
            continue
        if sc.get('kind') == 'latency':
            if sc['seconds'][idx]:
                todo.append(dict(sc, seconds=sc['seconds'][idx]))
        elif sc['records'][idx]:
            todo.append(dict(sc, records=sc['records'][idx]))
    if not os.access(KTRIGGER, os.X_OK):
        sys.exit(f'bench: {KTRIGGER} not built: run make')
    bare = not args.no_bare_forwarder
    if bare and not os.access(BARE_FORWARDER, os.X_OK):
        sys.exit(f'bench: {BARE_FORWARDER} not built: run make bare-forwarder '
                 '(or --no-bare-forwarder)')
    for tool in ('nginx', 'wrk', 'kcat'):
        if not shutil.which(tool):
            sys.exit(f'bench: {tool} not found: run scripts/install-deps')

    workdir = tempfile.mkdtemp(prefix='ktrigger-bench-')
    log(f'work dir {workdir}; {len(todo)} scenarios, {runs} run(s) each')
    kafka = nginx = sink = None
    results = []
    try:
        kafka = Kafka()
        nginx = Nginx(workdir)
        nginx_version = subprocess.run(['nginx', '-v'], stderr=subprocess.PIPE,
                                       text=True).stderr.strip()
        machine = machine_info(nginx_version)
        topics = {}
        for sc in todo:
            producer = sc.get('producer', '1MB')
            key = (sc['partitions'], sc['value_bytes'],
                   sc['records'] if sc.get('kind') != 'latency' else f'lat-{sc["name"]}',
                   producer)
            if key not in topics:
                name = (f'bench-p{sc["partitions"]}-v{sc["value_bytes"]}-'
                        f'{key[2]}-b{producer}-{int(time.time())}').replace('/', '_')
                kafka.create_topic(name, sc['partitions'])
                pstats = {}
                if sc.get('kind') != 'latency':
                    t0 = time.monotonic()
                    pstats = kafka.produce_bulk(name, sc['records'], sc['value_bytes'], producer)
                    log(f'produced {sc["records"]:,} x {sc["value_bytes"]} B to {name} in '
                        f'{time.monotonic() - t0:.1f}s; batches: ' +
                        ', '.join(f'{k}={v:.6g}' if isinstance(v, float) else f'{k}={v}'
                                  for k, v in pstats.items()))
                topics[key] = (name, pstats)
            sc['topic'], sc['producer_stats'] = topics[key]

        for sc in todo:
            lat = sc.get('kind') == 'latency'
            if lat and sink is None:
                sink = Sink(workdir)
            url = {'fast': f'http://127.0.0.1:{nginx.fast}/',
                   'delay5': f'http://127.0.0.1:{nginx.slow}/',
                   'sink': f'http://127.0.0.1:{sink.port}/' if sink else None}[sc['runtime']]
            conns = sc['partitions'] if sc['ordering'] == 'partition' else MAX_IN_FLIGHT
            conns = min(conns, MAX_IN_FLIGHT)
            lua = post_lua(workdir, sc['value_bytes'])
            records = sc['rate'] * sc['seconds'] if lat else sc['records']
            log(f'{sc["name"]}: {records:,} records, wrk -c{conns}')
            wrk, kc, got, bf, bfe, single = [], [], [], [], [], []
            for r in range(runs):
                wrk.append(wrk_ceiling(url, conns, lua, wrk_s))
                if not lat:
                    kc.append(kcat_ceiling(kafka.bootstrap, sc['topic'], records))
                if not lat and bare and sc.get('bare', True):
                    bf.append(run_bare_forwarder(kafka, workdir, sc, sc['topic'], records, url,
                                                 r, conns))
                if not lat and bare and sc.get('event_headers'):
                    bfe.append(run_bare_forwarder(kafka, workdir, sc, sc['topic'], records, url,
                                                  r, conns, event_headers=True))
                ng0 = nginx.cpu_s()
                if lat:
                    # A topic per run: a new group starts from the earliest offset, and the
                    # records of an earlier run would be delivered (and timed) again.
                    topic = f'{sc["topic"]}-run{r}'
                    kafka.create_topic(topic, sc['partitions'])
                    res = run_latency(kafka, workdir, sc, topic, sink, sc['rate'],
                                      sc['seconds'], r)
                else:
                    if sc.get('per_record_baseline'):
                        # ktrigger itself without batches, on the same topic, in the same run.
                        single.append(run_throughput(kafka, workdir, sc, sc['topic'], records,
                                                     url, r))
                        log(f'  run {r + 1} per record: '
                            f'{single[-1]["records_per_s"]:.0f} rec/s, '
                            f'{single[-1]["cpu_us_per_record"]:.1f} us/record')
                        ng0 = nginx.cpu_s()
                    res = run_throughput(kafka, workdir, sc, sc['topic'], records, url, r,
                                         sc.get('batch'))
                if sc['runtime'] != 'sink' and ng0 is not None:
                    res['runtime_cpu_s_per_million'] = (nginx.cpu_s() - ng0) / records * 1e6
                got.append(res)
                log(f'  run {r + 1}: ' + ', '.join(f'{k}={v:.4g}' if isinstance(v, float)
                                                   else f'{k}={v}' for k, v in res.items()))
                log(f'  ceilings: wrk {wrk[-1]:.0f}/s' +
                    (f', kcat {kc[-1]:.0f}/s' if kc else '') +
                    (f', bare forwarder {bf[-1]["ceiling_bare_forwarder_records_per_s"]:.0f}/s '
                     f'at {bf[-1]["bare_forwarder_cpu_us_per_record"]:.1f} us/record, '
                     f'{bf[-1]["bare_forwarder_peak_rss_mib"]:.1f} MiB' if bf else '') +
                    (f', with event headers '
                     f'{bfe[-1]["ceiling_bare_forwarder_event_headers_records_per_s"]:.0f}/s at '
                     f'{bfe[-1]["bare_forwarder_event_headers_cpu_us_per_record"]:.1f} us/record'
                     if bfe else ''))
            out = {
                'name': sc['name'], 'kind': sc.get('kind', 'throughput'),
                'partitions': sc['partitions'], 'value_bytes': sc['value_bytes'],
                'ordering': sc['ordering'], 'max_in_flight': MAX_IN_FLIGHT,
                'runtime': {'fast': 'nginx return 200', 'delay5': 'nginx echo_sleep 5 ms',
                            'sink': 'python asyncio sink (bench/sink.py)'}[sc['runtime']],
                'runtime_delay_ms': 5 if sc['runtime'] == 'delay5' else 0,
                'records': records, 'runs': len(got), 'wrk_connections': conns,
                'ceiling_wrk_req_per_s': median(wrk),
                'ceiling_kafka_records_per_s': median(kc),
                # dispatch.batch.max_records / max_wait_ms; null: one request per record.
                'batch_max_records': sc['batch'][0] if sc.get('batch') else None,
                'batch_max_wait_ms': sc['batch'][1] if sc.get('batch') else None,
            }
            out.update(sc.get('producer_stats') or {})
            if bf:
                out.update(merge_bare_runs(bf))
                out['bare_forwarder_concurrency'] = conns
            for k in got[0]:
                if k == 'complete':
                    out[k] = all(g[k] for g in got)
                else:
                    out[k] = median([g[k] for g in got])
            out['ratio_vs_wrk'] = (out['records_per_s'] / out['ceiling_wrk_req_per_s']
                                   if out['ceiling_wrk_req_per_s'] else None)
            out['ratio_vs_kafka'] = (out['records_per_s'] / out['ceiling_kafka_records_per_s']
                                     if out['ceiling_kafka_records_per_s'] else None)
            if bf:
                out['ratio_vs_bare_forwarder'] = (
                    out['records_per_s'] / out['ceiling_bare_forwarder_records_per_s']
                    if out['ceiling_bare_forwarder_records_per_s'] else None)
                out['per_run_bare_forwarder'] = bf
            if bfe:
                out.update(merge_bare_runs(bfe))
                ceil = out['ceiling_bare_forwarder_event_headers_records_per_s']
                out['ratio_vs_bare_forwarder_event_headers'] = (out['records_per_s'] / ceil
                                                                if ceil else None)
                out['per_run_bare_forwarder_event_headers'] = bfe
            if sc['runtime'] == 'delay5':
                out['ratio_vs_in_flight_over_delay'] = out['records_per_s'] / (
                    min(conns, MAX_IN_FLIGHT) / 0.005)
            if sc.get('batch') and sc['runtime'] == 'delay5':
                # The runtime's own request ceiling (wrk, same run) x records per request.
                out['ratio_vs_wrk_x_batch'] = (
                    out['records_per_s'] / (out['ceiling_wrk_req_per_s'] * sc['batch'][0])
                    if out['ceiling_wrk_req_per_s'] else None)
            if lat and out.get('p99_ms') is not None and out.get('kafka_p99_ms') is not None:
                # What ktrigger adds over Kafka's own floor, percentile by percentile.
                out['p50_over_kafka_ms'] = out['p50_ms'] - out['kafka_p50_ms']
                out['p99_over_kafka_ms'] = out['p99_ms'] - out['kafka_p99_ms']
            if single:
                out['per_record_records_per_s'] = median([g['records_per_s'] for g in single])
                out['per_record_cpu_us_per_record'] = median([g['cpu_us_per_record']
                                                              for g in single])
                out['per_record_peak_rss_mib'] = max(g['peak_rss_mib'] for g in single)
                out['per_record_complete'] = all(g['complete'] for g in single)
                out['ratio_vs_per_record'] = (out['records_per_s'] /
                                              out['per_record_records_per_s'])
                out['per_run_per_record'] = single
            out['per_run'] = got
            out['peak_rss_mib'] = max(g['peak_rss_mib'] for g in got)
            results.append(out)
    finally:
        if sink:
            sink.stop()
        if nginx:
            nginx.stop()
        if kafka and not args.keep_broker:
            kafka.stop()

    doc = {'machine': machine, 'mode': 'full' if args.full else 'quick',
           'runs_per_scenario': runs, 'kafka_properties': dict(KAFKA_PROPS),
           'dispatch_extra': DISPATCH_EXTRA,
           'scenarios': results, 'targets': targets(results)}
    os.makedirs(os.path.dirname(args.out), exist_ok=True)
    tmp = args.out + '.tmp'
    with open(tmp, 'w') as f:
        json.dump(doc, f, indent=2)
        f.write('\n')
    os.replace(tmp, args.out)
    print()
    print(f'ktrigger benchmarks ({doc["mode"]}, median of {runs} run(s); '
          f'{machine["cpus"]} CPUs, load {machine["loadavg_at_start"][0]:.2f} at start; '
          'rec/s = records / (first call -> committed == end offsets))')
    print_table(results)
    print()
    for t in doc['targets']:
        v = t['value']
        state = {True: 'met', False: 'MISSED', None: 'n/a'}[t['met']]
        print(f'  {state:6}  {t["target"]:38} {t["scenario"]:34} '
              f'{fmt(v, 2) if isinstance(v, float) else v}')
    print(f'\nwritten {args.out}; logs in {workdir}')
    shutil.rmtree(os.path.join(workdir, 'nginx', 'body'), ignore_errors=True)


if __name__ == '__main__':
    main()
