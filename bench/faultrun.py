#!/usr/bin/env python3
"""The fault run issue 12 was filed from, on a real broker, with duplicates counted per event.

Not a test (not part of make check): a standalone script that prints, per ordering, how many
records that had already got a 2xx were delivered again during each event of a fixed sequence,
what the delivery contract (README, "records delivered again") allows for that event, and a
verdict; plus lost records, per-key order, the replicas' exit statuses and their WARN/ERROR
line counts. See bench/README.md ("Fault run").

  /usr/bin/python3 bench/faultrun.py [--ordering partition|key|none|all] [--records 40000]
      [--partitions 12] [--replicas 3] [--ktrigger PATH] [--keep DIR] [--json OUT]

It starts its own broker (integration-tests/kafka/kafka.sh with KT_KAFKA_DIR in a temp dir of
its own) and stops it at the end, also on failure or Ctrl-C; its own runtimes (the Python
recorder, one record file per runtime process) and ktrigger replicas (one group per ordering).

Exit status 0 only if no clean event re-delivered a record, nothing was lost and per-key order
held (key and partition orderings).
"""

import argparse
import bisect
import collections
import copy
import json
import os
import re
import shutil
import signal
import sys
import tempfile
import time
import uuid
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / 'integration-tests'))

import kthelpers as kt  # noqa: E402
from confluent_kafka.admin import AdminClient  # noqa: E402

KEYS = 200
SESSION_MS = 8000
COMMIT_MS = 1000
DELAY_MS = 2
# How far before a kill -9 (or a broker pause) a finished record may still be uncommitted: the
# periodic commit's interval plus the time its answer takes on this loaded machine.
COMMIT_SLACK_S = 1.0
# A runtime killed with SIGKILL may have written a call's line (just before its answer) and
# died before the answer left: such a call got no 2xx, and calling it again is no duplicate.
RUNTIME_CUT_S = 0.5

LOG_LEVEL_RE = re.compile(r'^\d{4}-\d\d-\d\dT[\d:.]+Z (WARN|ERROR)\b')


def log(msg):
    print('[%s] %s' % (time.strftime('%H:%M:%S'), msg), flush=True)


class Rec:
    __slots__ = ('inc', 'partition', 'offset', 'key', 'body', 'time', 'done', 'failed',
                 'status')


class Incarnation:
    """One runtime process (its own record file) beside one ktrigger replica."""

    def __init__(self, ident, replica, path):
        self.id, self.replica, self.path = ident, replica, path
        self.started, self.killed = time.time(), None
        self.pos, self.buf, self.calls, self.ok = 0, b'', [], 0

    def poll(self):
        try:
            with open(self.path, 'rb') as f:
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
            r = Rec()
            r.inc = self
            _, r.partition, r.offset = kt.parse_event_id(d['headers']['event-id'])
            r.key = d['headers'].get('event-key')
            r.body, r.time, r.done = d['body'], d['time'], d.get('done', d['time'])
            r.failed, r.status = bool(d.get('failed')), d.get('status')
            self.calls.append(r)
            if not r.failed:
                self.ok += 1


class Replica:
    def __init__(self, name):
        self.name = name
        self.kt = None
        self.runtime = None
        self.incs = []
        self.conf = None
        self.state = 'running'  # running, stopping (SIGTERM sent), exited, killed
        self.how = None  # how it was stopped: sigterm, kill9
        self.rc = None
        self.stop_sent = None
        self.exited = None

    def reap(self):
        if self.rc is None and self.kt is not None and self.kt.proc.poll() is not None:
            self.rc = self.kt.proc.returncode
            self.exited = time.time()
            if self.state in ('running', 'stopping'):
                self.state = 'exited'
        return self.rc


class Run:
    def __init__(self, args, kafka, bootstrap, ordering, workdir):
        self.args, self.kafka, self.bootstrap, self.ordering = args, kafka, bootstrap, ordering
        self.dir = workdir / ordering
        self.dir.mkdir(parents=True, exist_ok=True)
        uid = uuid.uuid4().hex[:8]
        self.topic = 'faultrun-%s-%s' % (ordering, uid)
        self.group = 'faultrun-group-%s-%s' % (ordering, uid)
        self.P = args.partitions
        self.produced = {}  # (partition, offset) -> (value, key, i)
        self.next_i = 0
        self.replicas = []
        self.events = []
        self.windows = []  # (label, start, end)
        self.names = iter('ABCDEFGHIJKLMNOPQRSTUVWXYZ')

    # ------------------------------------------------------------------ processes

    def incs(self):
        return [i for r in self.replicas for i in r.incs]

    def poll_calls(self):
        for i in self.incs():
            i.poll()

    def ok_total(self):
        self.poll_calls()
        return sum(i.ok for i in self.incs())

    def new_runtime(self, rep, port=None):
        n = len(rep.incs)
        path = self.dir / ('records-%s.%d.jsonl' % (rep.name, n))
        inc = Incarnation('%s.rt%d' % (rep.name, n), rep, path)
        rep.runtime = kt.start_runtime(self.dir, path, port=port, delay_ms=DELAY_MS,
                                       name='runtime-%s.%d' % (rep.name, n))
        inc.started = time.time()
        rep.incs.append(inc)
        return rep.runtime

    def config(self, runtime_port, metrics_port):
        conf = kt.base_config(self.bootstrap, [self.topic], runtime_port, metrics_port,
                              group_id=self.group,
                              properties={'session.timeout.ms': str(SESSION_MS),
                                          'heartbeat.interval.ms': '500',
                                          'auto.commit.interval.ms': str(COMMIT_MS)})
        conf['dispatch'].update({'ordering': self.ordering, 'max_in_flight': 16,
                                 'partition_buffer_records': 200,
                                 'drain_timeout_ms': 15000})
        return conf

    def start_replica(self):
        rep = Replica(next(self.names))
        rt = self.new_runtime(rep)
        rep.conf = self.config(rt.port, kt.free_port())
        rep.kt = kt.spawn_ktrigger(self.dir, rep.conf, name='ktrigger-%s' % rep.name)
        self.replicas.append(rep)
        rep.kt.wait_healthy(60)
        log('%s: replica %s up (ktrigger pid %d, runtime pid %d port %d)'
            % (self.ordering, rep.name, rep.kt.pid, rt.proc.pid, rt.port))
        return rep

    def live(self):
        for r in self.replicas:
            r.reap()
        return [r for r in self.replicas if r.state == 'running']

    def sigterm(self, rep):
        rep.state, rep.how, rep.stop_sent = 'stopping', 'sigterm', time.time()
        rep.kt.proc.send_signal(signal.SIGTERM)
        log('%s: SIGTERM to %s (pid %d)' % (self.ordering, rep.name, rep.kt.pid))

    def wait_exit(self, rep, timeout):
        try:
            rep.kt.proc.wait(timeout)
        except Exception:
            log('%s: %s did not exit within %ss of SIGTERM: SIGKILL' % (
                self.ordering, rep.name, timeout))
            rep.how = 'sigterm (timed out, killed)'
            rep.kt.proc.kill()
            rep.kt.proc.wait()
        rep.reap()
        self.stop_runtime(rep)
        log('%s: %s exited with %s, %.1f s after its signal' % (
            self.ordering, rep.name, rep.rc, rep.exited - rep.stop_sent))

    def stop_runtime(self, rep):
        if rep.runtime is not None and rep.runtime.proc.poll() is None:
            kt.stop_process(rep.runtime.proc, 10)

    # ------------------------------------------------------------------ records

    def produce(self, n):
        n = min(n, self.args.records - self.next_i)
        if n <= 0:
            return 0
        recs = []
        for i in range(self.next_i, self.next_i + n):
            k = i % KEYS
            recs.append((k % self.P, 'r%06d' % i, 'k%03d' % k))
        out = self.kafka.produce(self.topic, recs, timeout=120)
        for i, p in zip(range(self.next_i, self.next_i + n), out):
            self.produced[(p.partition, p.offset)] = (p.value, p.key, i)
        self.next_i += n
        return n

    def burst(self, weight=1):
        n = self.produce(weight * self.burst_size)
        if n:
            log('%s: produced %d (%d of %d)' % (self.ordering, n, self.next_i,
                                                 self.args.records))

    # ------------------------------------------------------------------ settling

    def assigned(self, reps):
        """Partitions each replica owns ({name: n}), None if one does not answer."""
        out = {}
        for r in reps:
            try:
                out[r.name] = int(kt.metric_sum(r.kt.metrics(),
                                                'ktrigger_assigned_partitions') or 0)
            except AssertionError:
                return None
        return out

    def settle(self, timeout=240, steady=3.0):
        """Wait until every stopping replica has exited, the live ones own every partition
        together and keep delivering (while records are left) for `steady` seconds."""
        deadline = time.monotonic() + timeout
        for r in [r for r in self.replicas if r.state == 'stopping']:
            self.wait_exit(r, max(5, deadline - time.monotonic()))
        state = {}

        def stable():
            live = self.live()
            a = self.assigned(live)
            state['assigned'] = a
            # every partition owned, and by every live replica some (a new member got its
            # share: before its first rebalance the others still own everything)
            return a is not None and sum(a.values()) == self.P and all(a.values())

        kt.wait_for(stable, max(5, deadline - time.monotonic()), 'every partition assigned',
                    interval=0.25, describe=lambda: state)
        t_ok = time.monotonic()
        before = self.ok_total()
        while time.monotonic() - t_ok < steady:
            time.sleep(0.25)
        # still stable, and still moving if anything is left to deliver
        kt.wait_for(stable, max(5, deadline - time.monotonic()), 'every partition assigned',
                    interval=0.25, describe=lambda: state)
        after = self.ok_total()
        if after == before and after < len(self.produced) - 50:
            kt.wait_for(lambda: self.ok_total() > after, max(5, deadline - time.monotonic()),
                        'deliveries going on after the event')
        return time.time()

    def event(self, n, label, kind, fn, weight=1, **info):
        self.burst(weight)
        # the burst is flowing before the event
        start_ok = self.ok_total()
        kt.wait_for(lambda: self.ok_total() > start_ok + 100 or
                    self.ok_total() >= len(self.produced), 60, 'records flowing')
        ev = {'n': n, 'label': label, 'kind': kind, 'start': time.time()}
        ev.update(info)
        log('%s: event %s: %s' % (self.ordering, n, label))
        self.events.append(ev)
        fn(ev)
        return ev

    # ------------------------------------------------------------------ the sequence

    def run(self):
        t0 = time.time()
        self.kafka.create_topic(self.topic, self.P)
        # ten shares: one up front, one before each event, two before the kill -9 and the
        # broker pause (they last longest)
        self.burst_size = max(100, self.args.records // 10)
        self.produce(self.args.records - 9 * self.burst_size)
        log('%s: topic %s, group %s, produced %d up front' % (
            self.ordering, self.topic, self.group, self.next_i))
        self.run_start = time.time()
        base = [self.start_replica() for _ in range(self.args.replicas)]
        self.start_settled = self.settle()
        marks = []

        def mark(ev, settled):
            ev['settle'] = settled
            marks.append(ev)

        # (1) scale-up
        ev = self.event('1', 'scale-up (new replica joins)', 'clean',
                        lambda ev: ev.update(replica=self.start_replica().name))
        mark(ev, self.settle())

        # (2) SIGTERM of a replica; (2b) its replacement joins
        victim = base[0]

        def sigterm(ev):
            ev['replica'] = victim.name
            self.sigterm(victim)
            self.wait_exit(victim, 120)
        ev = self.event('2', 'SIGTERM of %s' % victim.name, 'clean', sigterm)
        mark(ev, self.settle())
        ev = self.event('2b', 'replacement joins', 'clean',
                        lambda ev: ev.update(replica=self.start_replica().name))
        mark(ev, self.settle())

        # (3) SIGHUP re-join: a kafka.* property changes, metrics.listen stays
        rej = base[1 % len(base)]

        def sighup(ev):
            ev['replica'] = rej.name
            conf = copy.deepcopy(rej.conf)
            conf['kafka']['properties']['fetch.wait.max.ms'] = '20'
            rej.conf = conf
            joins = rej.kt.log().count('KAFKA: joining group')
            rej.kt.config_path.write_text(kt.render_config(conf))
            os.kill(rej.kt.pid, signal.SIGHUP)
            log('%s: SIGHUP to %s (pid %d)' % (self.ordering, rej.name, rej.kt.pid))
            kt.wait_for(lambda: rej.kt.log().count('KAFKA: joining group') > joins, 60,
                        'the re-join of %s' % rej.name)
        ev = self.event('3', 'SIGHUP re-join of %s' % rej.name, 'clean', sighup)
        mark(ev, self.settle())

        # (4) kill -9, (5) SIGTERM of another and (6) a new member, both in the dead
        # member's session timeout
        live = self.live()
        dead = [r for r in live if r is not rej][0]
        term = [r for r in live if r not in (rej, dead)][0]

        def kill9(ev):
            ev['replica'] = dead.name
            dead.state, dead.how, dead.stop_sent = 'killed', 'kill9', time.time()
            dead.kt.proc.send_signal(signal.SIGKILL)
            dead.kt.proc.wait(10)
            dead.reap()
            ev['kill_time'] = dead.stop_sent
            log('%s: kill -9 of %s (pid %d)' % (self.ordering, dead.name, dead.kt.pid))
        ev4 = self.event('4', 'kill -9 of %s' % dead.name, 'kill9', kill9, weight=2)
        time.sleep(1.0)
        ev5 = {'n': '5', 'label': 'SIGTERM of %s in the kill -9 window' % term.name,
               'kind': 'clean', 'start': time.time(), 'replica': term.name}
        self.events.append(ev5)
        self.sigterm(term)
        time.sleep(1.0)
        ev6 = {'n': '6', 'label': 'new replica joins in the kill -9 window (revoke)',
               'kind': 'clean', 'start': time.time()}
        self.events.append(ev6)
        ev6['replica'] = self.start_replica().name
        s = self.settle()
        self.stop_runtime(dead)
        for e in (ev4, ev5, ev6):
            e['settle'] = s
        ev4['compound'] = True
        marks.append(ev4)

        # (7) runtime kill: SIGKILL a replica's runtime, a new one on its port after 2 s
        live = self.live()
        rrep = [r for r in live if r is not rej][0]

        def rtkill(ev):
            ev['replica'] = rrep.name
            port = rrep.runtime.port
            inc = rrep.incs[-1]
            inc.killed = time.time()
            rrep.runtime.proc.send_signal(signal.SIGKILL)
            rrep.runtime.proc.wait(10)
            ev['kill_time'], ev['inc'] = inc.killed, inc.id
            log('%s: SIGKILL of %s runtime (port %d)' % (self.ordering, rrep.name, port))
            time.sleep(2.0)
            self.new_runtime(rrep, port=port)
        ev = self.event('7', 'runtime kill on %s' % rrep.name, 'runtime', rtkill)
        mark(ev, self.settle())

        # (8) broker pause ~10 s
        def pause(ev):
            expected = self.kafka.pause_broker()
            ev['paused'] = time.time()
            log('%s: broker paused' % self.ordering)
            time.sleep(10)
            ev['resume_start'] = time.time()
            self.kafka.resume_broker(expected, timeout=180)
            ev['resumed'] = time.time()
            log('%s: broker resumed (%.1f s down)' % (self.ordering,
                                                     ev['resumed'] - ev['paused']))
        ev = self.event('8', 'broker pause ~10 s', 'pause', pause, weight=2)
        mark(ev, self.settle(timeout=300))

        # the rest, then the final clean stop of every replica
        while self.next_i < self.args.records:
            self.burst()
        end = self.kafka.end_offsets(self.topic)
        kt.wait_for(lambda: self.kafka.committed(self.group, self.topic) == end, 600,
                    'committed == end offsets', interval=1.0,
                    describe=lambda: '%d of %d delivered' % (self.ok_total(),
                                                             len(self.produced)))
        fin = {'n': 'end', 'label': 'final SIGTERM of every replica', 'kind': 'clean',
               'start': time.time()}
        self.events.append(fin)
        for r in self.live():
            self.sigterm(r)
        for r in [r for r in self.replicas if r.state == 'stopping']:
            self.wait_exit(r, 120)
        fin['settle'] = time.time()
        marks.append(fin)
        final_committed = self.kafka.committed(self.group, self.topic)
        for r in self.replicas:
            self.stop_runtime(r)
        self.poll_calls()
        self.took = time.time() - t0
        return self.analyse(marks, final_committed == end)

    # ------------------------------------------------------------------ analysis

    def analyse(self, marks, committed_to_end):
        ok = collections.defaultdict(list)
        for inc in self.incs():
            for c in inc.calls:
                if not c.failed:
                    ok[(c.partition, c.offset)].append(c)
        dups = []  # (duplicate call, first call)
        for calls in ok.values():
            calls.sort(key=lambda c: c.time)
            dups.extend((c, calls[0]) for c in calls[1:])

        # windows: startup, each event to its settle point, steady gaps between
        rows = collections.OrderedDict()
        windows = []
        prev = self.run_start
        byn = {e['n']: e for e in self.events}

        def row(key, label, kind, ev=None):
            rows[key] = {'event': key, 'label': label, 'kind': kind, 'duplicates': 0,
                         'allowed': 0, 'unexplained': 0, 'ev': ev, 'examples': [],
                         'pairs': collections.Counter()}

        row('start', 'start of %d replicas' % self.args.replicas, 'clean')
        row('steady', 'steady running between events', 'clean')
        windows.append(('start', self.run_start, self.start_settled))
        prev = self.start_settled
        for ev in marks:
            windows.append(('steady', prev, ev['start']))
            windows.append((ev['n'], ev['start'], ev['settle']))
            prev = ev['settle']
            if ev.get('compound'):
                for n in ('4', '5', '6'):
                    e = byn[n]
                    row(n, e['label'], e['kind'], e)
            else:
                row(ev['n'], ev['label'], ev['kind'], ev)
        windows.append(('steady', prev, float('inf')))

        for d, first in dups:
            key = next((w for w, a, b in windows if a <= d.time < b), 'steady')
            if key == '4':  # the kill -9 window: by who delivered the record first
                if first.inc.replica.name == byn['4']['replica']:
                    key = '4'
                elif first.inc.replica.name == byn['5']['replica']:
                    key = '5'
                else:
                    key = '6'
            r = rows[key]
            r['duplicates'] += 1
            r['pairs']['%s -> %s' % (first.inc.id, d.inc.id)] += 1
            allowed = False
            ev = r['ev']
            if r['kind'] == 'kill9':
                allowed = (first.inc.replica.name == ev['replica'] and
                           first.done >= ev['kill_time'] - COMMIT_MS / 1000 - COMMIT_SLACK_S)
            elif r['kind'] == 'runtime':
                allowed = (first.inc.id == ev['inc'] and
                           ev['kill_time'] - RUNTIME_CUT_S <= first.done <= ev['kill_time'])
            elif r['kind'] == 'pause':
                allowed = (ev['start'] - COMMIT_MS / 1000 - COMMIT_SLACK_S <= first.done <=
                           ev['resumed'] + COMMIT_SLACK_S)
            if allowed:
                r['allowed'] += 1
            else:
                r['unexplained'] += 1
                if len(r['examples']) < 5:
                    r['examples'].append('%d/%d %s first by %s at %.3f (+%.3f s), again by %s '
                                         'at %.3f (+%.3f s)' % (
                                             d.partition, d.offset, d.body, first.inc.id,
                                             first.done, first.done - self.run_start,
                                             d.inc.id, d.time, d.time - self.run_start))

        # the load each event ran under: first deliveries finished in its window
        firsts_done = sorted(calls[0].done for calls in ok.values())
        for r in rows.values():
            ev = r['ev']
            if ev is not None:
                r['load'] = (bisect.bisect_left(firsts_done, ev['settle']) -
                             bisect.bisect_left(firsts_done, ev['start']))
            else:
                r['load'] = None

        # what each event may re-deliver, as a number
        for r in rows.values():
            ev = r['ev']
            if r['kind'] == 'clean':
                r['expected'] = '0'
                r['verdict'] = 'ok' if r['duplicates'] == 0 else 'FAIL'
                continue
            if r['kind'] == 'kill9':
                lo = ev['kill_time'] - COMMIT_MS / 1000 - COMMIT_SLACK_S
                bound = sum(1 for i in self.incs() if i.replica.name == ev['replica']
                            for c in i.calls if not c.failed and c.done >= lo)
                r['expected'] = ('<= %d (in flight + finished in the last %.1f s)'
                                 % (bound, COMMIT_MS / 1000 + COMMIT_SLACK_S))
            elif r['kind'] == 'runtime':
                inc = next(i for i in self.incs() if i.id == ev['inc'])
                bound = sum(1 for c in inc.calls if not c.failed and
                            ev['kill_time'] - RUNTIME_CUT_S <= c.done <= ev['kill_time'])
                r['expected'] = ('0 (+ <= %d written but cut by the kill: no 2xx)' % bound)
            else:
                lo = ev['start'] - COMMIT_MS / 1000 - COMMIT_SLACK_S
                bound = sum(1 for i in self.incs() for c in i.calls if not c.failed and
                            lo <= c.done <= ev['resumed'] + COMMIT_SLACK_S)
                r['expected'] = ('<= %d (finished from %.1f s before the pause to resume)'
                                 % (bound, COMMIT_MS / 1000 + COMMIT_SLACK_S))
            r['bound'] = bound
            r['verdict'] = 'ok' if r['unexplained'] == 0 else 'FAIL'

        produced = set(self.produced)
        lost = produced - set(ok)
        # per-key order of first deliveries (arrival time) in key and partition orderings
        order_violations = None
        order_examples = []
        if self.ordering in ('key', 'partition'):
            order_violations = 0
            firsts = collections.defaultdict(list)
            for (p, o), calls in ok.items():
                firsts[calls[0].key].append((calls[0].time, o, p))
            for key, seq in firsts.items():
                seq.sort()
                for a, b in zip(seq, seq[1:]):
                    if b[1] < a[1]:
                        order_violations += 1
                        if len(order_examples) < 5:
                            order_examples.append('key %s: %d/%d at %.3f before %d/%d at %.3f'
                                                  % (key, b[2], b[1], b[0], a[2], a[1], a[0]))
        reps = []
        warn_kinds = collections.Counter()
        for r in self.replicas:
            text = Path(r.kt.log_path).read_bytes().decode('utf-8', 'replace')
            levels = collections.Counter(m.group(1) for m in
                                         map(LOG_LEVEL_RE.match, text.splitlines()) if m)
            for line in text.splitlines():
                if LOG_LEVEL_RE.match(line):
                    warn_kinds[re.sub(r'\d+', 'N', line.split(' ', 1)[1])[:150]] += 1
            reps.append({'replica': r.name, 'stopped_by': r.how or '?', 'exit': r.rc,
                         'exit_ok': (r.rc == 0) if r.how == 'sigterm' else (
                             r.rc == -9 if r.how == 'kill9' else False),
                         'warn': levels.get('WARN', 0), 'error': levels.get('ERROR', 0),
                         'delivered': sum(i.ok for i in r.incs),
                         'log': str(r.kt.log_path)})
        clean_dups = sum(r['duplicates'] for r in rows.values() if r['kind'] == 'clean')
        unexplained = sum(r['unexplained'] for r in rows.values())
        result = {
            'ordering': self.ordering, 'topic': self.topic, 'group': self.group,
            'records': len(produced), 'partitions': self.P, 'replicas': self.args.replicas,
            'events': [{k: v for k, v in r.items() if k != 'ev'} for r in rows.values()],
            'duplicates': len(dups), 'clean_duplicates': clean_dups,
            'unexplained_duplicates': unexplained,
            'lost': len(lost), 'lost_examples': sorted(lost)[:5],
            'order_violations': order_violations, 'order_examples': order_examples,
            'committed_to_end': committed_to_end,
            'replica_status': reps,
            'log_lines': [{'count': n, 'line': k} for k, n in warn_kinds.most_common(12)],
            'took_s': round(self.took, 1),
            'dir': str(self.dir),
        }
        result['pass'] = (clean_dups == 0 and not lost and not order_violations)
        return result


def print_result(res):
    print()
    print('== ordering %s: %d records, %d partitions, %d replicas, %.0f s (%s)' % (
        res['ordering'], res['records'], res['partitions'], res['replicas'], res['took_s'],
        res['dir']))
    fmt = '%-6s %-48s %6s %6s  %-62s %s'
    print(fmt % ('event', '', 'load', 'dups', 'allowed / expected', 'verdict'))
    for r in res['events']:
        print(fmt % (r['event'], r['label'][:48], '' if r['load'] is None else r['load'],
                     r['duplicates'], r['expected'][:62],
                     r['verdict'] + ('' if not r['unexplained'] or r['kind'] == 'clean'
                                     else ' (%d outside the bound)' % r['unexplained'])))
        if r['duplicates']:
            print('        first delivered by -> again by: %s' % ', '.join(
                '%s: %d' % kv for kv in sorted(r['pairs'].items(), key=lambda kv: -kv[1])))
        for x in r['examples']:
            print('        e.g. %s' % x)
    print('total duplicates %d (clean events %d, outside any bound %d); lost %d%s; '
          'order violations %s%s; committed to the end: %s' % (
              res['duplicates'], res['clean_duplicates'], res['unexplained_duplicates'],
              res['lost'], (' e.g. %s' % res['lost_examples']) if res['lost'] else '',
              'n/a (ordering none)' if res['order_violations'] is None
              else res['order_violations'],
              (' e.g. %s' % res['order_examples']) if res['order_examples'] else '',
              res['committed_to_end']))
    for r in res['replica_status']:
        print('  replica %s: stopped by %-8s exit %-4s %-4s delivered %6d  WARN %d ERROR %d  %s'
              % (r['replica'], r['stopped_by'], r['exit'], 'ok' if r['exit_ok'] else 'BAD',
                 r['delivered'], r['warn'], r['error'], r['log']))
    print('  WARN/ERROR lines of all replicas, by kind (numbers as N):')
    for x in res['log_lines']:
        print('    %5d %s' % (x['count'], x['line']))
    print('verdict: %s' % ('PASS' if res['pass'] else 'FAIL'))


def main():
    ap = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    ap.add_argument('--ordering', default='all', choices=('partition', 'key', 'none', 'all'))
    ap.add_argument('--records', type=int, default=40000)
    ap.add_argument('--partitions', type=int, default=12)
    ap.add_argument('--replicas', type=int, default=3)
    ap.add_argument('--ktrigger', default=str(REPO / 'ktrigger'))
    ap.add_argument('--keep', help='keep logs and record files in this directory')
    ap.add_argument('--json', help='write the results as JSON to this file')
    args = ap.parse_args()
    if args.replicas < 3:
        ap.error('--replicas must be at least 3 (the sequence stops two and kills one)')
    os.environ['KTRIGGER_BIN'] = str(Path(args.ktrigger).resolve())
    if not Path(os.environ['KTRIGGER_BIN']).exists():
        ap.error('no ktrigger binary at %s' % args.ktrigger)
    scratch = Path(tempfile.mkdtemp(prefix='faultrun-'))
    workdir = Path(args.keep).resolve() if args.keep else scratch / 'work'
    workdir.mkdir(parents=True, exist_ok=True)
    # our own broker, never the tests' (kthelpers.kafka_sh passes this environment on)
    os.environ['KT_KAFKA_DIR'] = str(scratch / 'kafka')
    orderings = ('partition', 'key', 'none') if args.ordering == 'all' else (args.ordering,)

    def on_term(signum, frame):
        raise KeyboardInterrupt()
    signal.signal(signal.SIGTERM, on_term)

    runs, results = [], []
    broker = False
    try:
        st = kt.kafka_sh('start', 600)
        if st.returncode != 0:
            sys.exit('kafka.sh start failed (%d):\n%s' % (st.returncode, st.stderr[-3000:]))
        broker = True
        bootstrap = st.stdout.strip().splitlines()[-1]
        log('broker %s (KT_KAFKA_DIR=%s); ktrigger %s; logs in %s'
            % (bootstrap, os.environ['KT_KAFKA_DIR'], os.environ['KTRIGGER_BIN'], workdir))
        kafka = kt.Kafka(bootstrap, AdminClient({'bootstrap.servers': bootstrap}))
        kafka.wait_for_leaders(timeout=120)
        for o in orderings:
            run = Run(args, kafka, bootstrap, o, workdir)
            runs.append(run)
            res = run.run()
            results.append(res)
            print_result(res)
            if args.json:
                Path(args.json).write_text(json.dumps(results, indent=1, default=str))
        kafka.close()
    finally:
        for run in runs:
            for r in run.replicas:
                if r.kt is not None and r.kt.proc.poll() is None:
                    kt.stop_process(r.kt.proc, 60)
                if r.runtime is not None and r.runtime.proc.poll() is None:
                    kt.stop_process(r.runtime.proc, 10)
        if broker:
            if args.keep:
                for f in ('broker.log', 'stdout.log'):
                    if (scratch / 'kafka' / f).exists():
                        shutil.copy(scratch / 'kafka' / f, workdir / ('kafka-' + f))
            kt.kafka_sh('stop', 300)
        shutil.rmtree(scratch, ignore_errors=True)
    if len(results) > 1:
        print()
        print('summary: ' + '; '.join('%s %s (dups %d, clean %d, lost %d, order %s)' % (
            r['ordering'], 'PASS' if r['pass'] else 'FAIL', r['duplicates'],
            r['clean_duplicates'], r['lost'], r['order_violations']) for r in results))
    sys.exit(0 if results and all(r['pass'] for r in results) else 1)


if __name__ == '__main__':
    main()
