#!/usr/bin/env python3
"""How often a broker restart strands ktrigger for good, measured on a real broker.

Not a test (not part of make check): a standalone script that pauses and resumes its own
broker K times (`kafka.sh pause`/`resume`) while N ktrigger instances, each in its own group
beside its own runtime, consume records that keep flowing, and counts per cycle the instances
that are not back within a bound (stranded), how long the others took, and whether ktrigger's
re-bootstrap guard fired (its WARN "adding the bootstrap brokers again" and
ktrigger_kafka_rebootstraps_total). Made for librdkafka 2.14.2 (README, librdkafka: a KRaft
broker's restart can leave a client with no broker at all, for good), to show the stall rate
with and without the guard. See bench/README.md ("Stall run").

  /usr/bin/python3 bench/stallrun.py [--cycles 10] [--instances 6] [--down-s 3]
      [--back-timeout 90] [--rate 300] [--shared-topic] [--ktrigger PATH] [--keep DIR]
      [--json OUT]

It starts its own broker (integration-tests/kafka/kafka.sh with KT_KAFKA_DIR in a temp dir of
its own, so on a port of its own, never the tests' broker) and stops it at the end, also on
failure, Ctrl-C or SIGTERM; its own runtimes (the Python recorder, one record file each), its
own ktrigger instances and its own producer; it stops only those, by pid.

An instance is back after a resume once its /metrics says ktrigger_kafka_ready 1 and its
runtime has received a record produced after the resume. A stranded instance is left running:
if it comes back later, the cycle in which it did is noted.

Exit status 0 only if no instance stayed stranded for good (back by the end of the run), no
ktrigger exited, and every acknowledged record reached a call of every group reading its topic.
"""

import argparse
import calendar
import collections
import json
import os
import re
import shutil
import signal
import statistics
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / 'integration-tests'))

import kthelpers as kt  # noqa: E402
from confluent_kafka import Producer  # noqa: E402
from confluent_kafka.admin import AdminClient  # noqa: E402

PARTITIONS = 4
SESSION_MS = 8000
COMMIT_MS = 1000
DELAY_MS = 2
# What made the race show (README, librdkafka): a fast reconnect back-off, and statistics
# (the guard reads them) every second.
FAST_PROPS = {'reconnect.backoff.ms': '10', 'reconnect.backoff.max.ms': '100',
              'statistics.interval.ms': '1000'}
GUARD_WARN = 'adding the bootstrap brokers again'
REBOOTSTRAPS = 'ktrigger_kafka_rebootstraps_total'
POLL_S = 0.2

LOG_LINE_RE = re.compile(r'^(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d)\.(\d{3})Z (WARN|ERROR)\b')


def log(msg):
    print('[%s] %s' % (time.strftime('%H:%M:%S'), msg), flush=True)


def median(xs):
    return statistics.median(xs) if xs else None


def fmt_s(x):
    return '-' if x is None else '%.1f' % x


# --------------------------------------------------------------------------- the producer

class Feed(threading.Thread):
    """Keeps `rate` records a second flowing in total, round robin over the topics (and over
    each topic's partitions), values s000000000, s000000001, ... (the sequence number, one
    counter for all topics). librdkafka 2.0.2 (confluent_kafka's): it never drops its
    configured broker, so it is not stranded itself."""

    def __init__(self, bootstrap, topics, rate):
        super().__init__(name='feed', daemon=True)
        self.topics, self.rate = list(topics), rate
        self.lock = threading.Lock()
        self.next_seq = 0
        self.acked = {}  # seq -> topic
        self.failed = collections.Counter()  # error name -> n
        self.stopping = threading.Event()
        self.error = None
        self.producer = Producer({'bootstrap.servers': bootstrap, 'enable.idempotence': True,
                                  'acks': 'all', 'linger.ms': 5,
                                  # records made during an outage wait for the broker
                                  'message.timeout.ms': 900000,
                                  'reconnect.backoff.max.ms': 1000,
                                  # its connection errors in every outage are no news
                                  'log_level': 2})

    def seq(self):
        """The sequence number the next record will get."""
        with self.lock:
            return self.next_seq

    def acked_by_topic(self):
        with self.lock:
            out = collections.defaultdict(set)
            for s, t in self.acked.items():
                out[t].add(s)
            return out

    def _cb(self, seq, topic):
        def cb(err, msg):
            with self.lock:
                if err is not None:
                    self.failed[err.name()] += 1
                else:
                    self.acked[seq] = topic
        return cb

    def run(self):
        try:
            t0 = time.monotonic()
            made = 0
            n = len(self.topics)
            while not self.stopping.is_set():
                due = int((time.monotonic() - t0) * self.rate) - made
                for _ in range(max(0, min(due, 1000))):
                    with self.lock:
                        seq = self.next_seq
                        self.next_seq += 1
                    topic = self.topics[seq % n]
                    part = (seq // n) % PARTITIONS
                    while True:
                        try:
                            self.producer.produce(topic, value='s%09d' % seq, partition=part,
                                                  on_delivery=self._cb(seq, topic))
                            break
                        except BufferError:
                            self.producer.poll(0.05)
                    made += 1
                self.producer.poll(0.02)
        except Exception as e:  # reported by the main thread
            self.error = repr(e)

    def stop(self, timeout):
        """Stop producing, wait for the answers to what is in flight; returns how many got
        none."""
        self.stopping.set()
        self.join(10)
        return self.producer.flush(timeout)


# --------------------------------------------------------------------------- an instance

class Instance:
    """One ktrigger (its own group) beside its own recorder runtime."""

    def __init__(self, name, topic, group):
        self.name, self.topic, self.group = name, topic, group
        self.kt = self.runtime = None
        self.rec_path = None
        self.pos, self.buf = 0, b''
        self.seqs = set()  # delivered (2xx) sequence numbers
        self.calls = self.failed_calls = self.dups = 0
        self.max_seq = -1  # of any call received
        self.stranded = None  # {'cycle', 'at'} while stranded
        self.strandings = []  # every stranding: {'cycle', 'back_cycle', 'back_s', 'guard'}
        self.rc = None

    def alive(self):
        if self.rc is None and self.kt is not None and self.kt.proc.poll() is not None:
            self.rc = self.kt.proc.returncode
            log('%s: ktrigger pid %d EXITED with %s' % (self.name, self.kt.pid, self.rc))
        return self.rc is None

    def poll(self):
        try:
            with open(self.rec_path, 'rb') as f:
                f.seek(self.pos)
                data = f.read()
        except FileNotFoundError:
            return
        self.pos += len(data)
        lines = (self.buf + data).split(b'\n')
        self.buf = lines[-1]
        for line in lines[:-1]:
            if not line:
                continue
            d = json.loads(line)
            seq = int(d['body'][1:])
            self.calls += 1
            self.max_seq = max(self.max_seq, seq)
            if d.get('failed'):
                self.failed_calls += 1
            elif seq in self.seqs:
                self.dups += 1
            else:
                self.seqs.add(seq)

    def metrics(self):
        """Parsed /metrics, None if it does not answer."""
        status, body = kt.http_get('http://127.0.0.1:%d/metrics' % self.kt.metrics_port,
                                   timeout=1.0)
        if status != 200:
            return None
        try:
            return kt.parse_metrics(body)
        except AssertionError:
            return None

    def ready(self):
        m = self.metrics()
        return m is not None and kt.metric_sum(m, 'ktrigger_kafka_ready') == 1

    def rebootstraps(self):
        """{client: n} from /metrics (0 where the series is absent, as on a binary without
        the guard); None if /metrics does not answer."""
        m = self.metrics()
        if m is None:
            return None
        return {c: int(kt.metric_sum(m, REBOOTSTRAPS, client=c) or 0)
                for c in ('consumer', 'producer')}

    def is_back(self, threshold):
        """Ready and a record produced at or after seq `threshold` received."""
        self.poll()
        return self.max_seq >= threshold and self.ready()

    def log_lines(self):
        try:
            return Path(self.kt.log_path).read_bytes().decode('utf-8', 'replace').splitlines()
        except OSError:
            return []

    def guard_warns(self):
        """Times (epoch s) of the guard's WARN lines."""
        out = []
        for line in self.log_lines():
            if GUARD_WARN in line:
                m = LOG_LINE_RE.match(line)
                if m and m.group(3) == 'WARN':
                    out.append(calendar.timegm(time.strptime(m.group(1), '%Y-%m-%dT%H:%M:%S'))
                               + int(m.group(2)) / 1000)
        return out


# --------------------------------------------------------------------------- the run

class Run:
    def __init__(self, args, kafka, bootstrap, workdir):
        self.args, self.kafka, self.bootstrap, self.dir = args, kafka, bootstrap, workdir
        self.uid = uuid.uuid4().hex[:8]
        self.instances = []
        self.cycles = []
        self.feed = None
        self.threshold = 0  # seq of the first record produced after the last resume
        self.resumed_at = None  # time.time() of the last resume
        self.cycle_no = 0

    def config(self, inst, runtime_port, metrics_port):
        props = {'session.timeout.ms': str(SESSION_MS), 'heartbeat.interval.ms': '500',
                 'auto.commit.interval.ms': str(COMMIT_MS)}
        props.update(FAST_PROPS)
        conf = kt.base_config(self.bootstrap, [inst.topic], runtime_port, metrics_port,
                              group_id=inst.group, properties=props)
        conf['dispatch'].update({'max_in_flight': 16, 'partition_buffer_records': 200,
                                 'drain_timeout_ms': 15000})
        return conf

    def start_instance(self, n, topic):
        inst = Instance('i%d' % n, topic, 'stallrun-%s-g%d' % (self.uid, n))
        inst.rec_path = self.dir / ('records-%s.jsonl' % inst.name)
        inst.runtime = kt.start_runtime(self.dir, inst.rec_path, delay_ms=DELAY_MS,
                                        name='runtime-%s' % inst.name)
        conf = self.config(inst, inst.runtime.port, kt.free_port())
        inst.kt = kt.spawn_ktrigger(self.dir, conf, name='ktrigger-%s' % inst.name)
        self.instances.append(inst)
        inst.kt.wait_healthy(60)
        log('%s: ktrigger pid %d (metrics %d), runtime pid %d (port %d), topic %s, group %s'
            % (inst.name, inst.kt.pid, inst.kt.metrics_port, inst.runtime.proc.pid,
               inst.runtime.port, topic, inst.group))
        return inst

    def check_feed(self):
        if self.feed.error:
            raise RuntimeError('the producer failed: %s' % self.feed.error)

    def check_stranded(self, now):
        """A stranded instance back (against the last resume): note it. Returns those."""
        out = []
        for inst in self.instances:
            if inst.stranded is None or not inst.alive():
                continue
            if inst.is_back(self.threshold):
                s = inst.strandings[-1]
                s['back_cycle'] = self.cycle_no if self.cycle_no <= self.args.cycles else 'end'
                s['back_s'] = round(now - self.resumed_at, 1)
                s['back_after_stranding_s'] = round(now - inst.stranded['resumed_at'], 1)
                s['guard'] = any(inst.stranded['paused_at'] <= w <= now + 1
                                 for w in inst.guard_warns())
                inst.stranded = None
                log('%s: BACK after being stranded in cycle %s (%.1f s after the resume of '
                    'cycle %s, %.1f s after that of cycle %s)' % (
                        inst.name, s['cycle'], s['back_s'], s['back_cycle'],
                        s['back_after_stranding_s'], s['cycle']))
                out.append(inst)
        return out

    def sleep_polling(self, seconds):
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            self.check_feed()
            self.check_stranded(time.time())
            time.sleep(min(0.5, max(0, end - time.monotonic())))

    def start(self):
        topics = []
        if self.args.shared_topic:
            topics = ['stallrun-%s' % self.uid]
        else:
            topics = ['stallrun-%s-t%d' % (self.uid, n) for n in range(1, self.args.instances + 1)]
        for t in topics:
            self.kafka.create_topic(t, PARTITIONS)
        self.feed = Feed(self.bootstrap, topics, self.args.rate)
        self.feed.start()
        log('producing %d records/s over %d topic(s) of %d partitions' % (
            self.args.rate, len(topics), PARTITIONS))
        for n in range(1, self.args.instances + 1):
            self.start_instance(n, topics[0] if self.args.shared_topic else topics[n - 1])
        # every one in its group and delivering before the first pause
        t = time.time()
        self.threshold, self.resumed_at = self.feed.seq(), t
        kt.wait_for(lambda: all(i.is_back(self.threshold) for i in self.instances), 120,
                    'every instance ready and delivering', interval=POLL_S,
                    describe=lambda: {i.name: (i.max_seq, i.ready()) for i in self.instances})
        log('every instance ready and delivering (%.1f s)' % (time.time() - t))

    def cycle(self, c):
        row = {'cycle': c, 'instances': {}}
        self.sleep_polling(self.args.gap_s)
        warns0 = {i.name: len(i.guard_warns()) for i in self.instances}
        rb0 = {i.name: i.rebootstraps() for i in self.instances}
        row['pause_start'] = t_pause = time.time()
        expected = self.kafka.pause_broker()
        row['paused'] = t_paused = time.time()
        log('cycle %d: broker paused (kafka.sh pause took %.1f s)' % (c, t_paused - t_pause))
        self.sleep_polling(self.args.down_s)
        t_res = time.time()
        self.kafka.resume_broker(expected, timeout=180)
        row['resumed'] = t_back = time.time()
        self.threshold, self.resumed_at = self.feed.seq(), t_back
        self.cycle_no = c
        row['pause_s'] = round(t_paused - t_pause, 1)
        row['down_s'] = round(t_res - t_paused, 1)
        row['resume_s'] = round(t_back - t_res, 1)
        log('cycle %d: broker serving again (kafka.sh resume took %.1f s, %.1f s since the '
            'pause); waiting for the instances (records from s%09d on)' % (
                c, t_back - t_res, t_back - t_pause, self.threshold))
        earlier = {i.name for i in self.instances if i.stranded is not None}
        waiting = [i for i in self.instances if i.stranded is None and i.alive()]
        back = {}
        deadline = t_back + self.args.back_timeout
        while True:
            now = time.time()
            for inst in list(waiting):
                if inst.is_back(self.threshold):
                    back[inst.name] = round(time.time() - t_back, 1)
                    waiting.remove(inst)
            came = self.check_stranded(now)
            for inst in came:
                back[inst.name] = round(now - t_back, 1)
            waiting = [i for i in waiting if i.alive()]
            if not waiting or now >= deadline:
                break
            self.check_feed()
            time.sleep(POLL_S)
        stranded_now = []
        for inst in waiting:
            inst.stranded = {'cycle': c, 'resumed_at': t_back, 'paused_at': t_pause}
            inst.strandings.append({'cycle': c, 'back_cycle': None, 'back_s': None,
                                    'guard': False})
            stranded_now.append(inst.name)
            log('cycle %d: %s STRANDED: not back %d s after the resume (ready %s, last record '
                'received s%09d); left running' % (c, inst.name, self.args.back_timeout,
                                                    inst.ready(), inst.max_seq))
        for inst in self.instances:
            w = inst.guard_warns()
            rb = inst.rebootstraps()
            d = {'warns': len(w) - warns0[inst.name]}
            if inst.name in back:  # the guard's WARN from the pause to being back
                d['guard'] = any(t_pause <= x <= t_back + back[inst.name] + 1 for x in w)
            if rb is not None and rb0[inst.name] is not None:
                d['rebootstraps'] = {k: rb[k] - rb0[inst.name][k] for k in rb}
            else:
                d['rebootstraps'] = None
            if not inst.alive():
                d['state'] = 'exited (%s)' % inst.rc
            elif inst.name in stranded_now:
                d['state'] = 'stranded'
            elif inst.name in earlier and inst.name not in back:
                d['state'] = 'still stranded'
            elif inst.name in earlier:
                d['state'] = 'came back'
                d['back_s'] = back[inst.name]
            else:
                d['state'] = 'back'
                d['back_s'] = back[inst.name]
            row['instances'][inst.name] = d
        times = [d['back_s'] for d in row['instances'].values() if d.get('back_s') is not None]
        row['back'] = len(times)
        row['stranded'] = stranded_now
        row['still_stranded'] = [n for n, d in row['instances'].items()
                                 if d['state'] == 'still stranded']
        row['came_back'] = [n for n, d in row['instances'].items() if d['state'] == 'came back']
        row['median_back_s'] = median(times)
        row['max_back_s'] = max(times) if times else None
        row['guard_warns'] = sum(d['warns'] for d in row['instances'].values())
        row['rebootstraps'] = sum(sum(d['rebootstraps'].values())
                                  for d in row['instances'].values() if d['rebootstraps'])
        log('cycle %d: %d of %d back (median %s s, max %s s); stranded now %s; still stranded '
            '%s; guard WARNs %d' % (c, len(times), len(self.instances),
                                    fmt_s(row['median_back_s']), fmt_s(row['max_back_s']),
                                    stranded_now or '-', row['still_stranded'] or '-',
                                    row['guard_warns']))
        self.cycles.append(row)
        return row

    def finish(self):
        """Stop producing; wait (bounded) until every acknowledged record reached its groups."""
        self.cycle_no = self.args.cycles + 1
        left = self.feed.stop(120)
        acked = self.feed.acked_by_topic()
        log('producer stopped: %d records acknowledged, %d failed, %d unanswered' % (
            sum(len(s) for s in acked.values()), sum(self.feed.failed.values()), left))

        def missing():
            out = {}
            for i in self.instances:
                i.poll()
                out[i.name] = len(acked[i.topic] - i.seqs)
            return out
        state = {}

        def done():
            self.check_stranded(time.time())
            state['missing'] = missing()
            return not any(state['missing'].values())
        try:
            kt.wait_for(done, self.args.drain_timeout, 'every record delivered', interval=1.0,
                        describe=lambda: state.get('missing'))
            log('every acknowledged record delivered')
        except kt.Timeout as e:
            log('NOT everything delivered: %s' % e)
        return acked, left

    def stop_all(self):
        """SIGTERM every ktrigger, then every runtime (ours, by pid); SIGKILL after 60 s."""
        for inst in self.instances:
            if inst.kt is not None and inst.kt.proc.poll() is None:
                inst.kt.proc.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + 60
        for inst in self.instances:
            if inst.kt is not None:
                try:
                    inst.kt.proc.wait(max(1, deadline - time.monotonic()))
                except Exception:
                    log('%s: ktrigger pid %d ignored SIGTERM for 60 s: SIGKILL' % (
                        inst.name, inst.kt.pid))
                    inst.kt.proc.kill()
                    inst.kt.proc.wait()
        for inst in self.instances:
            if inst.runtime is not None and inst.runtime.proc.poll() is None:
                kt.stop_process(inst.runtime.proc, 10)

    def analyse(self, acked, unanswered):
        cycles = self.cycles
        ic = sum(len(r['instances']) for r in cycles)
        times = [d['back_s'] for r in cycles for d in r['instances'].values()
                 if d['state'] == 'back']
        strandings = [dict(s, instance=i.name) for i in self.instances for s in i.strandings]
        for s in strandings:
            s.pop('resumed_at', None)
        for_good = [i.name for i in self.instances if i.stranded is not None]
        # rescued by the guard: an instance-cycle back in time with its WARN logged between
        # the pause and being back, or a stranding that ended with one logged since its pause
        guard_fired = [(n, r['cycle']) for r in cycles for n, d in r['instances'].items()
                       if d['warns']]
        rescued = [(n, r['cycle']) for r in cycles for n, d in r['instances'].items()
                   if d['state'] == 'back' and d.get('guard')]
        rescued += [(s['instance'], s['cycle']) for s in strandings if s.get('guard')]
        inst = []
        lost_total = 0
        warn_kinds = collections.Counter()
        for i in self.instances:
            i.poll()
            lost = sorted(acked[i.topic] - i.seqs)
            lost_total += len(lost)
            lines = i.log_lines()
            levels = collections.Counter()
            for line in lines:
                m = LOG_LINE_RE.match(line)
                if m:
                    levels[m.group(3)] += 1
                    warn_kinds[re.sub(r'\d+', 'N', line.split(' ', 1)[1])[:150]] += 1
            inst.append({'instance': i.name, 'topic': i.topic, 'group': i.group,
                         'calls': i.calls, 'delivered': len(i.seqs), 'duplicates': i.dups,
                         'failed_calls': i.failed_calls, 'lost': len(lost),
                         'lost_examples': ['s%09d' % s for s in lost[:5]],
                         'stranded_for_good': i.name in for_good,
                         'guard_warns': len(i.guard_warns()),
                         'rebootstraps': i.rebootstraps() if i.alive() else None,
                         'exit': i.rc, 'warn': levels.get('WARN', 0),
                         'error': levels.get('ERROR', 0), 'log': str(i.kt.log_path)})
        rb = collections.Counter()
        for x in inst:
            rb.update(x['rebootstraps'] or {})
        exited = [i.name for i in self.instances if i.rc is not None]
        res = {
            'ktrigger': os.environ['KTRIGGER_BIN'], 'cycles': self.args.cycles,
            'instances': self.args.instances, 'down_s': self.args.down_s,
            'back_timeout_s': self.args.back_timeout, 'rate': self.args.rate,
            'shared_topic': self.args.shared_topic, 'properties': FAST_PROPS,
            'instance_cycles': ic, 'back_in_time': len(times),
            'median_back_s': median(times), 'max_back_s': max(times) if times else None,
            'stranded': len(strandings), 'strandings': strandings,
            'stranded_for_good': for_good,
            'guard_fired': len(guard_fired), 'rescued_by_guard': len(rescued),
            'rebootstraps': {'consumer': rb.get('consumer', 0), 'producer': rb.get('producer', 0)},
            'produced': sum(len(s) for s in acked.values()),
            'produce_failed': dict(self.feed.failed), 'produce_unanswered': unanswered,
            'lost': lost_total, 'exited': exited,
            'per_cycle': [{k: v for k, v in r.items()} for r in cycles],
            'per_instance': inst,
            'log_lines': [{'count': n, 'line': k} for k, n in warn_kinds.most_common(12)],
            'dir': str(self.dir),
        }
        res['pass'] = not for_good and not lost_total and not exited
        return res


def print_result(res):
    print()
    print('== stall run: %d cycles x %d instances, down %.0f s, back within %.0f s, %d rec/s, '
          '%s' % (res['cycles'], res['instances'], res['down_s'], res['back_timeout_s'],
                  res['rate'], res['ktrigger']))
    fmt = '%-5s %7s %6s %8s %6s  %-14s %-14s %-14s %6s %6s %6s %6s'
    print(fmt % ('cycle', 'pause_s', 'down_s', 'resume_s', 'back', 'stranded', 'still',
                 'came back', 'med_s', 'max_s', 'guardW', 'rebtst'))
    for r in res['per_cycle']:
        print(fmt % (r['cycle'], r['pause_s'], r['down_s'], r['resume_s'],
                     '%d/%d' % (r['back'], len(r['instances'])),
                     ','.join(r['stranded']) or '-', ','.join(r['still_stranded']) or '-',
                     ','.join(r['came_back']) or '-', fmt_s(r['median_back_s']),
                     fmt_s(r['max_back_s']), r['guard_warns'], r['rebootstraps']))
    for x in res['per_instance']:
        print('  %s: delivered %6d calls %6d dups %4d lost %5d  guard WARN %d  rebootstraps %s  '
              'WARN %d ERROR %d  exit %s%s  %s' % (
                  x['instance'], x['delivered'], x['calls'], x['duplicates'], x['lost'],
                  x['guard_warns'], x['rebootstraps'], x['warn'], x['error'], x['exit'],
                  '  STRANDED FOR GOOD' if x['stranded_for_good'] else '', x['log']))
    print('  WARN/ERROR lines of all instances, by kind (numbers as N):')
    for x in res['log_lines']:
        print('    %5d %s' % (x['count'], x['line']))
    print()
    print('summary')
    print('  instance-cycles:      %d (%d instances x %d cycles)' % (
        res['instance_cycles'], res['instances'], res['cycles']))
    print('  back within %.0f s:    %d; seconds to be back after the resume: median %s, max %s'
          % (res['back_timeout_s'], res['back_in_time'], fmt_s(res['median_back_s']),
             fmt_s(res['max_back_s'])))
    print('  stranded:             %d%s' % (res['stranded'], (' (%s)' % '; '.join(
        '%s in cycle %s%s' % (s['instance'], s['cycle'],
                              ', back in cycle %s (%s s after that resume)' % (
                                  s['back_cycle'], s['back_s'])
                              if s['back_cycle'] is not None else ', never back')
        for s in res['strandings'])) if res['strandings'] else ''))
    print('  stranded for good:    %d%s' % (len(res['stranded_for_good']),
                                             (' (%s)' % ', '.join(res['stranded_for_good']))
                                             if res['stranded_for_good'] else ''))
    print('  rescued by the guard: %d (back after its WARN "%s"; instance-cycles with one: %d); '
          '%s consumer %d, producer %d' % (res['rescued_by_guard'], GUARD_WARN,
                                            res['guard_fired'], REBOOTSTRAPS,
                                            res['rebootstraps']['consumer'],
                                            res['rebootstraps']['producer']))
    print('  records:              %d produced (failed %s, unanswered %d), lost %d%s' % (
        res['produced'], sum(res['produce_failed'].values()), res['produce_unanswered'],
        res['lost'], ' (%s)' % ', '.join('%s %d' % (x['instance'], x['lost'])
                                         for x in res['per_instance'] if x['lost'])
        if res['lost'] else ''))
    if res['exited']:
        print('  ktrigger exited:      %s' % ', '.join(res['exited']))
    print('verdict: %s' % ('PASS' if res['pass'] else 'FAIL'))


def main():
    ap = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    ap.add_argument('--cycles', type=int, default=10)
    ap.add_argument('--instances', type=int, default=6)
    ap.add_argument('--down-s', type=float, default=3.0,
                    help='seconds between kafka.sh pause returning and kafka.sh resume')
    ap.add_argument('--back-timeout', type=float, default=90.0,
                    help='seconds after the resume an instance may take to be back')
    ap.add_argument('--gap-s', type=float, default=2.0,
                    help='seconds of steady running before each pause')
    ap.add_argument('--rate', type=int, default=300, help='records a second, in total')
    ap.add_argument('--drain-timeout', type=float, default=120.0,
                    help='seconds to wait at the end for every record to be delivered')
    ap.add_argument('--shared-topic', action='store_true',
                    help='one topic read by every group (default: a topic per instance)')
    ap.add_argument('--ktrigger', default='./ktrigger')
    ap.add_argument('--keep', help='keep logs and record files in this directory')
    ap.add_argument('--json', help='write the summary as JSON to this file')
    args = ap.parse_args()
    if args.cycles < 1 or args.instances < 1:
        ap.error('--cycles and --instances must be at least 1')
    os.environ['KTRIGGER_BIN'] = str(Path(args.ktrigger).resolve())
    if not Path(os.environ['KTRIGGER_BIN']).exists():
        ap.error('no ktrigger binary at %s' % args.ktrigger)
    scratch = Path(tempfile.mkdtemp(prefix='stallrun-'))
    workdir = Path(args.keep).resolve() if args.keep else scratch / 'work'
    workdir.mkdir(parents=True, exist_ok=True)
    # our own broker, never the tests' (kthelpers.kafka_sh passes this environment on); kafka.sh
    # picks free ports at start and keeps them across pause/resume
    os.environ['KT_KAFKA_DIR'] = str(scratch / 'kafka')

    def on_term(signum, frame):
        raise KeyboardInterrupt()
    signal.signal(signal.SIGTERM, on_term)

    run, res = None, None
    broker = False
    try:
        st = kt.kafka_sh('start', 600)
        if st.returncode != 0:
            sys.exit('kafka.sh start failed (%d):\n%s' % (st.returncode, st.stderr[-3000:]))
        if 'already running' in st.stderr:  # a fresh KT_KAFKA_DIR: cannot be; not ours
            sys.exit('kafka.sh found a broker already running in %s' % os.environ['KT_KAFKA_DIR'])
        broker = True
        bootstrap = st.stdout.strip().splitlines()[-1]
        pid = (scratch / 'kafka' / 'pid').read_text().strip()
        log('broker %s pid %s (KT_KAFKA_DIR=%s); ktrigger %s; logs in %s'
            % (bootstrap, pid, os.environ['KT_KAFKA_DIR'], os.environ['KTRIGGER_BIN'],
               workdir))
        kafka = kt.Kafka(bootstrap, AdminClient({'bootstrap.servers': bootstrap,
                                                 'log_level': 2}))
        kafka.wait_for_leaders(timeout=120)
        run = Run(args, kafka, bootstrap, workdir)
        run.start()
        for c in range(1, args.cycles + 1):
            run.cycle(c)
        acked, unanswered = run.finish()
        res = run.analyse(acked, unanswered)
        run.stop_all()
        for x in res['per_instance']:
            x['exit'] = next(i.kt.proc.returncode for i in run.instances
                             if i.name == x['instance'])
        print_result(res)
        if args.json:
            Path(args.json).write_text(json.dumps(res, indent=1, default=str))
        kafka.close()
    finally:
        if run is not None:
            if run.feed is not None and run.feed.is_alive():
                run.feed.stopping.set()
            run.stop_all()
        if broker:
            if args.keep:
                for f in ('broker.log', 'stdout.log'):
                    if (scratch / 'kafka' / f).exists():
                        shutil.copy(scratch / 'kafka' / f, workdir / ('kafka-' + f))
            kt.kafka_sh('stop', 300)
        shutil.rmtree(scratch, ignore_errors=True)
    sys.exit(0 if res is not None and res['pass'] else 1)


if __name__ == '__main__':
    main()
