#!/usr/bin/python3
"""Profiles ktrigger and the bare forwarder on the same topic (bench/README.md, "Where the CPU
per record goes").

    profile.py --tool perf|callgrind|strace [--records N] [--partitions P] [--ordering none] [--out DIR]
               [--event-headers] [--batch N]

Uses bench.py's broker (KT_KAFKA_DIR, default /tmp/ktrigger-kafka-bench; left running with
--keep-broker) and its nginx `return 200`. Fills a fresh topic with N records of 100 B (1 MB
producer batches), then runs the bare forwarder and ktrigger one after the other, each with a
fresh group, under `perf record` (cpu-clock samples, whole process, all threads) or
`valgrind --tool=callgrind` (instructions, all threads) or `strace -f -c` (system calls),
until N calls completed, then SIGTERM.
Prints `perf report --sort dso,symbol` / `callgrind_annotate --inclusive=yes` heads and writes
the raw data to DIR. Divide by N for per-record costs. --event-headers: the bare forwarder sends
ktrigger's event header lines too (bare_forwarder --event-headers). --batch N: ktrigger with
dispatch.batch.max_records = N (max_wait_ms 0), and no bare forwarder (it has no batches).
"""
import argparse
import os
import signal
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import bench  # noqa: E402


def tool_prefix(tool, out):
    if tool == 'perf':
        return ['perf', 'record', '-q', '-F', '1999', '-o', out, '--']
    if tool == 'strace':
        return ['strace', '-f', '-c', '-o', out]
    return ['valgrind', '-q', '--tool=callgrind', f'--callgrind-out-file={out}']


def wait_stop(proc, done, what, timeout):
    try:
        bench.wait_for(lambda: proc.poll() is not None or done(), timeout, what, 0.05)
    finally:
        # strace detaches on SIGTERM and leaves its tracee running: stop the tracee (its child).
        kids = subprocess.run(['pgrep', '-P', str(proc.pid)], stdout=subprocess.PIPE,
                              text=True).stdout.split()
        if proc.args[0] == 'strace' and kids:
            os.kill(int(kids[0]), signal.SIGTERM)
            proc.wait(120)
        bench.stop_pid(proc, 120)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument('--tool', choices=('perf', 'callgrind', 'strace'), required=True)
    ap.add_argument('--records', type=int, default=200_000)
    ap.add_argument('--partitions', type=int, default=8)
    ap.add_argument('--ordering', default='none')
    ap.add_argument('--out', default=None)
    ap.add_argument('--keep-broker', action='store_true')
    ap.add_argument('--event-headers', action='store_true',
                    help="the bare forwarder sends ktrigger's event header lines too")
    ap.add_argument('--batch', type=int, default=0,
                    help='ktrigger with dispatch.batch.max_records = N; no bare forwarder')
    args = ap.parse_args()
    out = args.out or tempfile.mkdtemp(prefix='ktrigger-profile-')
    os.makedirs(out, exist_ok=True)
    timeout = 600 if args.tool == 'callgrind' else 180
    kafka = nginx = None
    try:
        kafka = bench.Kafka()
        nginx = bench.Nginx(out)
        url = f'http://127.0.0.1:{nginx.fast}/'
        topic = f'profile-p{args.partitions}-{args.records}-{int(time.time())}'
        kafka.create_topic(topic, args.partitions)
        kafka.produce_bulk(topic, args.records, 100)
        stamp = int(time.time())

        # The bare forwarder: its own "done" line says N calls completed.
        if not args.batch:
            data = os.path.join(out, f'bare.{args.tool}')
            bout = os.path.join(out, 'bare.out')
            props = ((['--event-headers'] if args.event_headers else []) +
                     [f'{k}={v}' for k, v in bench.KTRIGGER_FETCH_DEFAULTS + bench.KAFKA_PROPS])
            with open(bout, 'w') as f:
                proc = subprocess.Popen(tool_prefix(args.tool, data) +
                                        [bench.BARE_FORWARDER, kafka.bootstrap, topic,
                                         f'profile-bare-{stamp}', url, str(bench.MAX_IN_FLIGHT),
                                         str(args.records)] + props, stdout=f,
                                        stderr=subprocess.STDOUT)
            wait_stop(proc, lambda: 'done ' in open(bout).read(), 'bare forwarder', timeout)
            bench.log(f'bare forwarder: {open(bout).read().strip()}')

        # ktrigger with bench.py's configuration.
        data_kt = os.path.join(out, f'ktrigger.{args.tool}')
        mport = bench.free_port()
        conf = os.path.join(out, 'ktrigger.conf')
        with open(conf, 'w') as f:
            f.write(bench.render_config(kafka.bootstrap, topic, f'profile-kt-{stamp}',
                                        nginx.fast, mport, args.ordering,
                                        batch=(args.batch, 0) if args.batch else None))
        with open(os.path.join(out, 'ktrigger.log'), 'w') as f:
            proc = subprocess.Popen(tool_prefix(args.tool, data_kt) +
                                    [bench.KTRIGGER, '--config', conf], stdout=f,
                                    stderr=subprocess.STDOUT)
        wait_stop(proc, lambda: (bench.Ktrigger.calls(None, mport) or 0) >= args.records,
                  'ktrigger', timeout)
        bench.log(f'ktrigger exited {proc.returncode}')
    finally:
        if nginx:
            nginx.stop()
        if kafka and not args.keep_broker:
            kafka.stop()

    profiled = [('ktrigger', data_kt)] if args.batch else [('bare forwarder', data),
                                                           ('ktrigger', data_kt)]
    for name, path in profiled:
        print(f'\n===== {name}: {args.records:,} records, {path}')
        if args.tool == 'strace':
            cmd = ['cat', path]
        elif args.tool == 'perf':
            cmd = ['perf', 'report', '-i', path, '--stdio', '--sort', 'dso,symbol',
                   '--percent-limit', '0.7']
        else:
            cmd = ['callgrind_annotate', '--inclusive=yes', path]
        rep = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                             text=True).stdout
        print('\n'.join(line for line in rep.splitlines()[:70] if not line.startswith('#')
                        or 'Samples' in line or 'Event count' in line))


if __name__ == '__main__':
    main()
