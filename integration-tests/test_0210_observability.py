"""Observability: the readiness gate at start, /readyz (what the pod can serve; Kafka only with
metrics.ready_requires_kafka), a real Prometheus server scraping ktrigger (PromQL sees the calls
and the lag going back to 0), promtool accepting the exposition, and JSON logs that are one
JSON object per line."""

import json
import subprocess
import time
import urllib.parse

import pytest

import kthelpers as kt


def status(ktr, path):
    return kt.http_get('http://127.0.0.1:%d%s' % (ktr.metrics_port, path))[0]


def get(ktr, path):
    return kt.http_get('http://127.0.0.1:%d%s' % (ktr.metrics_port, path))


def test_waits_for_runtime_before_joining(kafka, names, config, runtime_factory,
                                          ktrigger_factory, tmp_path):
    kafka.create_topic(names.topic, 2)
    port = kt.free_port()
    ktr = ktrigger_factory(config(port))  # nothing listens on port yet
    kt.wait_for(lambda: 'waiting for the runtime' in ktr.log(), 10, 'the wait to be logged')
    assert status(ktr, '/healthz') == 200
    assert status(ktr, '/readyz') == 503
    time.sleep(1)
    assert 'joining group' not in ktr.log(), 'joined before the runtime answered'
    assert kafka.committed(names.group, names.topic) == {0: None, 1: None}

    produced = kafka.produce(names.topic, [(i % 2, 'gate %d' % i) for i in range(20)])
    rt = runtime_factory(port=port)
    kt.wait_for(lambda: status(ktr, '/readyz') == 200, 20, '/readyz 200 once the runtime answers')
    kt.wait_for(lambda: len(rt.calls()) >= 20, 20, 'records delivered')
    assert ktr.stop() == 0
    assert sorted(c.body for c in rt.calls()) == sorted(r.value for r in produced)


def test_kafka_problem_keeps_the_pod_ready(kafka, names, config, runtime_factory,
                                          ktrigger_factory):
    """A topic that does not exist: the consumer never gets into its group. The pod can still
    serve its runtime, so /readyz is 200 (the runtime's port stays in the Service); the Kafka
    problem is in ktrigger_kafka_ready and /readyz?verbose. With metrics.ready_requires_kafka
    (here switched on by a reload) it is 503 naming the failing condition, until the topic
    exists and the group is joined."""
    rt = runtime_factory()
    conf = config(rt.port, properties={'topic.metadata.refresh.interval.ms': '1000'})
    ktr = ktrigger_factory(conf)  # names.topic is not created
    kt.wait_for(lambda: 'joining group' in ktr.log(), 20,
                'the subscription', describe=lambda: kt.tail(ktr.log_path, 10))
    kt.wait_for(lambda: status(ktr, '/readyz') == 200, 10, '/readyz 200 without the topic',
                describe=lambda: repr(get(ktr, '/readyz')))
    time.sleep(2)  # what is tested: it stays ready while Kafka cannot serve the subscription
    code, body = get(ktr, '/readyz?verbose')
    assert code == 200, body
    assert '[+]loop ok\n' in body and '[+]runtime ok\n' in body, body
    assert '[-]kafka_group failed (not required): not in the consumer group' in body, body
    assert body.endswith('readyz check passed\n'), body
    assert get(ktr, '/readyz') == (200, 'OK\n')
    samples = ktr.metrics()
    assert kt.metric_sum(samples, 'ktrigger_kafka_ready') == 0
    assert kt.metric_sum(samples, 'ktrigger_runtime_up') == 1

    # The old behaviour, by a reload (it applies at once): not ready, and the body says why.
    conf['metrics']['ready_requires_kafka'] = True
    ktr.config_path.write_text(kt.render_config(conf))
    ktr.proc.send_signal(kt.signal.SIGHUP)
    kt.wait_for(lambda: status(ktr, '/readyz') == 503, 10, '/readyz 503 with Kafka required',
                describe=lambda: repr(get(ktr, '/readyz')))
    code, body = get(ktr, '/readyz')
    assert '[-]kafka_group failed: not in the consumer group' in body, body
    assert 'runtime' not in body and body.endswith('readyz check failed\n'), body

    kafka.create_topic(names.topic, 1)
    produced = kafka.produce(names.topic, [(0, 'late topic %d' % i) for i in range(5)])
    kt.wait_for(lambda: len(rt.calls()) >= 5, 60, 'records once the topic exists',
                describe=lambda: repr(get(ktr, '/readyz?verbose')))
    kt.wait_for(lambda: status(ktr, '/readyz') == 200, 10, '/readyz 200 once joined')
    code, body = get(ktr, '/readyz?verbose')
    assert '[+]kafka_group ok\n' in body, body
    assert kt.metric_sum(ktr.metrics(), 'ktrigger_kafka_ready') == 1
    assert ktr.stop() == 0
    assert sorted(c.body for c in rt.calls()) == sorted(r.value for r in produced)


def test_prometheus_scrapes_ktrigger(kafka, names, config, runtime_factory, ktrigger_factory,
                                     tmp_path):
    if not kt.shutil.which('prometheus') or not kt.shutil.which('promtool'):
        pytest.skip('prometheus not installed (scripts/install-deps)')
    kafka.create_topic(names.topic, 3)
    n = 600
    kafka.produce(names.topic, [(i % 3, 'prom %d' % i) for i in range(n)])
    rt = runtime_factory(fail_bodies=['prom 7'])
    conf = config(rt.port)
    conf['dispatch'].update({'on_failure': 'skip', 'retry': {'initial_backoff_ms': 10,
                                                             'max_backoff_ms': 20,
                                                             'max_attempts': 2}})
    conf['kafka']['properties'] = {'fetch.wait.max.ms': '10', 'statistics.interval.ms': '1000',
                                   'auto.commit.interval.ms': '200'}
    conf['log']['format'] = 'json'
    t_spawn = time.time()
    ktr = ktrigger_factory(conf)

    # promtool accepts the exposition.
    text = kt.http_get('http://127.0.0.1:%d/metrics' % ktr.metrics_port)[1]
    check = subprocess.run(['promtool', 'check', 'metrics'], input=text.encode(),
                           capture_output=True)
    assert check.returncode == 0, check.stdout + check.stderr

    prom_port = kt.free_port()
    (tmp_path / 'prometheus.yml').write_text(
        'global: {scrape_interval: 1s, evaluation_interval: 1s}\n'
        'scrape_configs:\n'
        '  - job_name: ktrigger\n'
        '    static_configs: [{targets: ["127.0.0.1:%d"]}]\n'
        # As a pod-label relabelling gives it: the Kubeless pod label function="hello" on the
        # target; honor_labels decides whose `function` wins (README: scraping both).
        '  - job_name: pods\n'
        '    static_configs: [{targets: ["127.0.0.1:%d"], labels: {function: hello}}]\n'
        '  - job_name: pods-honor\n'
        '    honor_labels: true\n'
        '    static_configs: [{targets: ["127.0.0.1:%d"], labels: {function: hello}}]\n'
        % (ktr.metrics_port, ktr.metrics_port, ktr.metrics_port))
    with open(tmp_path / 'prometheus.log', 'wb') as log:
        prom = subprocess.Popen(['prometheus', '--config.file=%s' % (tmp_path / 'prometheus.yml'),
                                 '--storage.tsdb.path=%s' % (tmp_path / 'tsdb'),
                                 '--web.listen-address=127.0.0.1:%d' % prom_port],
                                stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
    try:
        def query(q):
            url = 'http://127.0.0.1:%d/api/v1/query?query=%s' % (prom_port,
                                                                 urllib.parse.quote(q))
            code, body = kt.http_get(url)
            if code != 200:
                return None
            res = json.loads(body)['data']['result']
            return float(res[0]['value'][1]) if res else None

        sel = '{job="ktrigger",topic="%s"}' % names.topic
        kt.wait_for(lambda: query('sum(function_calls_total%s)' % sel) == n + 1, 60,
                    'PromQL: %d calls (one record failed twice, then skipped)' % (n + 1),
                    interval=0.5, describe=lambda: query('sum(function_calls_total%s)' % sel))
        assert query('sum(function_failures_total%s)' % sel) == 2
        assert query('ktrigger_skipped_total{job="ktrigger"}') == 1
        kt.wait_for(lambda: query('sum(ktrigger_consumer_lag%s)' % sel) == 0, 30,
                    'PromQL: lag back to 0', interval=0.5,
                    describe=lambda: query('sum(ktrigger_consumer_lag%s)' % sel))
        assert query('count(ktrigger_consumer_lag%s)' % sel) == 3, 'one lag series per partition'
        assert query('ktrigger_rebalances_total{job="ktrigger",type="assign"}') >= 1
        assert query('ktrigger_commits_total{job="ktrigger"}') >= 1
        assert query('up{job="ktrigger"}') == 1
        # honor_labels false: ktrigger's label is renamed; true: it wins over the target's.
        topic = 'topic="%s"' % names.topic
        pods = 'function_calls_total{job="pods",function="hello",exported_function="%s",%s}'
        kt.wait_for(lambda: query('sum(%s)' % pods % (kt.HANDLER, topic)) == n + 1, 30,
                    'exported_function under the pod label', interval=0.5)
        honor = 'function_calls_total{job="pods-honor",function="%s",%s}'
        kt.wait_for(lambda: query('sum(%s)' % honor % (kt.HANDLER, topic)) == n + 1, 30,
                    "ktrigger's function label with honor_labels", interval=0.5)
        assert query('count(function_calls_total{job="pods-honor",exported_function!=""})') \
            is None
        # The standard process collector's series.
        assert query('process_resident_memory_bytes{job="ktrigger"}') > 1e6
        assert query('process_virtual_memory_bytes{job="ktrigger"}') > 1e6
        assert query('process_cpu_seconds_total{job="ktrigger"}') > 0
        assert query('process_open_fds{job="ktrigger"}') >= 10
        assert query('process_max_fds{job="ktrigger"}') >= 1024
        started = query('process_start_time_seconds{job="ktrigger"}')
        assert t_spawn - 2 <= started <= t_spawn + 10, (started, t_spawn)
    finally:
        kt.stop_process(prom, 10)
    assert ktr.stop() == 0

    # log.format = "json": every line one JSON object.
    lines = [l for l in ktr.log().splitlines() if l.strip()]
    assert lines
    for line in lines:
        obj = json.loads(line)
        assert set(obj) == {'time', 'level', 'facility', 'message'}, obj
    assert any(o['facility'] == 'KAFKA' and 'assigned' in o['message']
               for o in map(json.loads, lines))
