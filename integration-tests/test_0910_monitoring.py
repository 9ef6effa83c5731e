"""The monitoring that deploy/ ships, checked against the real thing:

- deploy/prometheus/ktrigger.rules.yml passes `promtool check rules`, its unit tests
  (ktrigger.rules.test.yml) pass `promtool test rules`, and those tests can fail: with any one
  alert's expression replaced by one that never fires, they fail.
- deploy/kubernetes/monitoring/prometheusrule.yaml carries exactly those groups.
- Every metric the alerts and the Grafana dashboard (deploy/grafana/ktrigger-dashboard.json)
  name is in the README's metrics table (or is named as another exporter's), and every
  ktrigger metric an alert fires on has a dashboard panel.
- A real Prometheus (Debian's) loads the rules and scrapes a real ktrigger fed by the real
  broker (some records failing and dead-lettered) and a second one whose topic does not exist
  (never in its group: ktrigger_kafka_ready 0, its runtime up): every dashboard expression and
  every metric selector of every alert returns data, every alert expression is valid PromQL
  that the server evaluates without error, and the alerts the scenario provokes (dead letters,
  failure ratio; Kafka not ready and no partitions for the second function only) return their
  series. Each query and its result is printed.
"""

import copy
import json
import re
import shutil
import subprocess
import sys
import urllib.parse
from pathlib import Path

import pytest
import yaml

import kthelpers as kt

REPO = Path(__file__).resolve().parent.parent
RULES = REPO / 'deploy' / 'prometheus' / 'ktrigger.rules.yml'
RULES_TEST = REPO / 'deploy' / 'prometheus' / 'ktrigger.rules.test.yml'
PROMETHEUS_RULE = REPO / 'deploy' / 'kubernetes' / 'monitoring' / 'prometheusrule.yaml'
DASHBOARD = REPO / 'deploy' / 'grafana' / 'ktrigger-dashboard.json'

# Metrics the alerts use that ktrigger does not export, and who does.
EXTERNAL = {'kube_pod_container_status_ready': 'kube-state-metrics',
            'up': 'Prometheus (one per scrape target)'}
# The labels the Prometheus Operator's PodMonitor gives a ktrigger target (podTargetLabels:
# app.kubernetes.io/name); the test's static target gets the same ones, plus the pod label
# `function` (the function's name) as a labelmap of pod labels would add it: the target label
# ktrigger's own `function` (the handler) collides with.
TARGET_LABELS = {'namespace': 'kt-monitoring', 'pod': 'hello-7c9d-x1', 'container': 'ktrigger',
                 'app_kubernetes_io_name': 'hello', 'function': 'hello'}
# A second function's replica, subscribed to a topic that does not exist: never in its group.
ORPHAN_LABELS = dict(TARGET_LABELS, pod='orphan-5f6d-y2', app_kubernetes_io_name='orphan',
                     function='orphan')
PODMONITOR = REPO / 'deploy' / 'kubernetes' / 'monitoring' / 'podmonitor.yaml'


def podmonitor_honor_labels():
    """honorLabels of the PodMonitor's ktrigger endpoint: the scrape below uses the same."""
    pm = yaml.safe_load(PODMONITOR.read_text())
    [ep] = [e for e in pm['spec']['podMetricsEndpoints'] if e['port'] == 'kt-metrics']
    return bool(ep.get('honorLabels', False))
# Grafana's variables as the dashboard's "All" would set them.
GRAFANA_VARS = {'$namespace': '.*', '$pod': '.*', '$function': '.+',
                '$__rate_interval': '1m', '$__range': '5m'}
# PromQL words that look like metric names.
PROMQL_WORDS = {'sum', 'max', 'min', 'avg', 'count', 'by', 'without', 'rate', 'increase',
                'delta', 'deriv', 'clamp_min', 'clamp_max', 'histogram_quantile', 'and', 'or',
                'unless', 'on', 'ignoring', 'group_left', 'group_right', 'le', 'vector',
                'label_values', 'bool', 'offset'}


def promtool():
    tool = shutil.which('promtool')
    if not tool:
        pytest.fail('promtool not installed (Debian package prometheus, scripts/install-deps)')
    return tool


def rules():
    return yaml.safe_load(RULES.read_text())


def alerts():
    return [r for g in rules()['groups'] for r in g['rules'] if 'alert' in r]


def dashboard_exprs():
    dash = json.loads(DASHBOARD.read_text())
    out = []
    for p in dash['panels']:
        for t in p.get('targets', []):
            out.append(('%s / %s' % (p['title'], t['refId']), t['expr']))
    return out


def dashboard_variables():
    """[(name, selector, label)] of the dashboard's label_values(selector, label) variables."""
    dash = json.loads(DASHBOARD.read_text())
    out = []
    for v in dash['templating']['list']:
        if v['type'] != 'query':
            continue
        m = re.fullmatch(r'label_values\((.*), *([a-z_]+)\)', v['query']['query'])
        assert m, 'variable %s: %r is not label_values(selector, label)' % (
            v['name'], v['query']['query'])
        out.append((v['name'], m.group(1), m.group(2)))
    return out


def grafana_expand(expr):
    for k in sorted(GRAFANA_VARS, key=len, reverse=True):
        expr = expr.replace(k, GRAFANA_VARS[k])
    assert '$' not in expr, 'unknown Grafana variable in %r' % expr
    return expr


def selectors(expr):
    """[(metric name, selector text)] of a PromQL expression: every identifier outside label
    matchers, ranges, strings and grouping clauses that is not a function or keyword."""
    text = re.sub(r'\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)', '', expr)
    token = re.compile(r'"(?:[^"\\]|\\.)*"|\[[^\]]*\]|\{[^}]*\}|'
                       r'([a-zA-Z_:][a-zA-Z0-9_:]*)(\s*\{[^}]*\})?(\s*\()?')
    out = []
    for m in token.finditer(text):
        name, matchers, call = m.groups()
        if not name or call or name in PROMQL_WORDS:
            continue
        out.append((name, name + (matchers or '').strip()))
    return out


def readme_metrics():
    text = (REPO / 'README.md').read_text()
    table = text.split('## Metrics', 1)[1].split('\n## ', 1)[0]
    names = set(re.findall(r'^\| `([a-z_:]+)`', table, re.M))
    for n in list(names):
        if re.search(r'^\| `%s` \| histogram' % n, table, re.M):
            names |= {n + '_bucket', n + '_sum', n + '_count'}
    return names


# --------------------------------------------------------------------------- offline

def test_promtool_checks_and_unit_tests_the_rules():
    tool = promtool()
    proc = subprocess.run([tool, 'check', 'rules', str(RULES)], capture_output=True, text=True)
    print(proc.stdout, proc.stderr)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert 'SUCCESS: %d rules found' % len(alerts()) in proc.stdout
    proc = subprocess.run([tool, 'test', 'rules', RULES_TEST.name], cwd=RULES_TEST.parent,
                          capture_output=True, text=True)
    print(proc.stdout, proc.stderr)
    assert proc.returncode == 0 and 'SUCCESS' in proc.stdout, proc.stdout + proc.stderr


def test_every_alert_has_a_unit_test_that_can_fail(tmp_path):
    """Each alert in turn replaced by one that never fires: promtool test rules must fail."""
    tool = promtool()
    tests = yaml.safe_load(RULES_TEST.read_text())
    tested = {a['alertname'] for t in tests['tests'] for a in t.get('alert_rule_test', [])
              if a.get('exp_alerts')}
    names = [a['alert'] for a in alerts()]
    assert sorted(tested) == sorted(names), 'alerts without a firing unit test: %s' % (
        sorted(set(names) - tested))
    shutil.copy(RULES_TEST, tmp_path / RULES_TEST.name)
    for name in names:
        mutated = copy.deepcopy(rules())
        for g in mutated['groups']:
            for r in g['rules']:
                if r.get('alert') == name:
                    r['expr'] = 'vector(1) == 0'
        (tmp_path / RULES.name).write_text(yaml.safe_dump(mutated, sort_keys=False))
        proc = subprocess.run([tool, 'test', 'rules', RULES_TEST.name], cwd=tmp_path,
                              capture_output=True, text=True)
        assert proc.returncode != 0, '%s never firing still passes promtool test rules' % name
        assert name in proc.stdout + proc.stderr, proc.stdout
        print('%s never firing: promtool test rules fails (exit %d)' % (name, proc.returncode))


def test_prometheusrule_carries_the_rules_file():
    pr = yaml.safe_load(PROMETHEUS_RULE.read_text())
    assert pr['apiVersion'] == 'monitoring.coreos.com/v1' and pr['kind'] == 'PrometheusRule'
    assert pr['spec'] == rules(), 'prometheusrule.yaml differs from %s: run make manifests' % (
        RULES.relative_to(REPO))


def test_alert_and_dashboard_metrics_are_ktriggers():
    known = readme_metrics()
    assert {'ktrigger_consumer_lag', 'ktrigger_partitions_blocked',
            'ktrigger_partition_blocked_seconds_max', 'function_duration_seconds_bucket'} <= known
    source = '\n'.join(p.read_text() for p in (REPO / 'metrics').glob('*.c'))
    exprs = [(a['alert'], a['expr']) for a in alerts()] + dashboard_exprs()
    exprs += [('variable ' + name, sel) for name, sel, _ in dashboard_variables()]
    used = set()
    for where, expr in exprs:
        for name, _ in selectors(grafana_expand(expr) if '$' in expr else expr):
            used.add(name)
            if name in EXTERNAL:
                continue
            assert name in known, '%s: %s is not in the README metrics table' % (where, name)
            base = re.sub(r'_(bucket|sum|count)$', '', name)
            assert base in source, '%s: %s is not exported by metrics/' % (where, name)
    print('metrics used:', sorted(used))
    assert len(used) >= 20, used


def test_what_an_alert_watches_is_on_the_dashboard():
    """Every ktrigger metric an alert fires on has a dashboard panel, so whoever is paged can
    see its history (kube-state-metrics' and Prometheus' own series excepted)."""
    shown = {name for _, expr in dashboard_exprs() for name, _ in selectors(grafana_expand(expr))}
    missing = {}
    for a in alerts():
        for name, _ in selectors(a['expr']):
            if name not in EXTERNAL and name not in shown:
                missing.setdefault(name, []).append(a['alert'])
    print('on the dashboard:', sorted(shown))
    assert not missing, 'alerted on but on no dashboard panel: %s' % missing


# --------------------------------------------------------------------------- real Prometheus

class Prometheus:
    def __init__(self, tmp_path, targets):
        """targets: [(metrics port, target labels)]"""
        self.port = kt.free_port()
        rules_copy = tmp_path / 'ktrigger.rules.yml'
        shutil.copy(RULES, rules_copy)
        static = [{'targets': ['127.0.0.1:%d' % port], 'labels': labels}
                  for port, labels in targets]
        conf = {'global': {'scrape_interval': '1s', 'evaluation_interval': '1s'},
                'rule_files': [str(rules_copy)],
                'scrape_configs': [{'job_name': 'ktrigger',
                                    'honor_labels': podmonitor_honor_labels(),
                                    'static_configs': static}]}
        (tmp_path / 'prometheus.yml').write_text(yaml.safe_dump(conf))
        self.log_path = tmp_path / 'prometheus.log'
        with open(self.log_path, 'wb') as log:
            self.proc = subprocess.Popen(
                ['prometheus', '--config.file=%s' % (tmp_path / 'prometheus.yml'),
                 '--storage.tsdb.path=%s' % (tmp_path / 'tsdb'),
                 '--web.listen-address=127.0.0.1:%d' % self.port],
                stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)

    def api(self, path, **params):
        url = 'http://127.0.0.1:%d/api/v1/%s?%s' % (self.port, path,
                                                     urllib.parse.urlencode(params))
        code, body = kt.http_get(url, timeout=5)
        if code is None:
            return None
        doc = json.loads(body)
        assert doc['status'] == 'success', '%s: %s' % (path, doc)
        return doc['data']

    def query(self, q):
        data = self.api('query', query=q)
        return None if data is None else data['result']

    def stop(self):
        kt.stop_process(self.proc, 10)


def show(result):
    return [('{%s}' % ', '.join('%s="%s"' % kv for kv in sorted(r['metric'].items())),
             r['value'][1]) for r in result]


def test_dashboard_and_alert_expressions_against_real_prometheus(
        kafka, names, config, runtime_factory, ktrigger_factory, tmp_path, capsys):
    """The queries and their results go to the test log whether or not pytest captures
    output (and to prometheus-queries.log beside the test's other logs)."""
    lines = []

    def print(*args):  # noqa: A001 - shadows print for this test only
        lines.append(' '.join(str(a) for a in args))

    if not shutil.which('prometheus'):
        pytest.fail('prometheus not installed (Debian package prometheus, scripts/install-deps)')
    dlq = names.topic + '-dlq'
    kafka.create_topic(names.topic, 2)
    kafka.create_topic(dlq, 1)
    n, failing = 200, ['bad %d' % i for i in range(0, 200, 8)]
    records = [(i % 2, 'bad %d' % i if 'bad %d' % i in failing else 'ok %d' % i)
               for i in range(n)]
    rt = runtime_factory(fail_bodies=failing)
    conf = config(rt.port)
    conf['dispatch'].update({'on_failure': 'dead-letter', 'dead_letter_topic': dlq,
                             'retry': {'initial_backoff_ms': 10, 'max_backoff_ms': 20,
                                       'max_attempts': 2}})
    conf['kafka']['properties'] = {'fetch.wait.max.ms': '10', 'statistics.interval.ms': '1000',
                                   'auto.commit.interval.ms': '200'}
    ktr = ktrigger_factory(conf)
    # Same runtime (it answers, so only Kafka keeps this one out), its own group, no topic.
    orphan = ktrigger_factory(config(rt.port, topics=[names.topic + '-missing'],
                                     group_id=names.group + '-orphan'))
    prom = Prometheus(tmp_path, [(ktr.metrics_port, TARGET_LABELS),
                                 (orphan.metrics_port, ORPHAN_LABELS)])

    def total(q):
        r = prom.query(q)
        return float(r[0]['value'][1]) if r else None
    try:
        kt.wait_for(lambda: total('count(up{job="ktrigger"} == 1)') == 2, 60,
                    'Prometheus up and scraping both', interval=0.5)
        kafka.produce(names.topic, records)
        calls = n + len(failing)  # every failing record is called twice, then dead-lettered
        kt.wait_for(lambda: total('sum(function_calls_total{topic="%s"})' % names.topic)
                    == calls, 90, 'Prometheus sees %d calls' % calls, interval=0.5,
                    describe=lambda: total('sum(function_calls_total)'))
        kt.wait_for(lambda: total('sum(ktrigger_dead_lettered_total)') == len(failing), 30,
                    'Prometheus sees %d dead letters' % len(failing), interval=0.5,
                    describe=lambda: total('sum(ktrigger_dead_lettered_total)'))
        kt.wait_for(lambda: total('count(ktrigger_consumer_lag)') == 2, 30,
                    'lag series of both partitions', interval=0.5)
        kt.wait_for(lambda: total('sum(ktrigger_commits_total)'), 30, 'a commit', interval=0.5)
        # Kafka's state as Prometheus sees it: hello in its group, orphan not (its runtime up).
        ready = 'ktrigger_kafka_ready{pod="%s"}'
        kt.wait_for(lambda: total(ready % TARGET_LABELS['pod']) == 1, 30, 'hello Kafka-ready',
                    interval=0.5)
        assert total(ready % ORPHAN_LABELS['pod']) == 0, prom.query(ready % '.+')
        assert total('ktrigger_runtime_up{pod="%s"}' % ORPHAN_LABELS['pod']) == 1

        failures = []
        for where, expr in dashboard_exprs():
            q = grafana_expand(expr)
            try:
                kt.wait_for(lambda: prom.query(q), 20, q, interval=0.5)
            except kt.Timeout:
                failures.append('%s: %s returned no data' % (where, q))
            print('dashboard %s\n  %s\n  -> %s' % (where, q, show(prom.query(q) or [])))

        for name, sel, label in dashboard_variables():
            q = 'count by (%s) (%s)' % (label, grafana_expand(sel))
            result = prom.query(q) or []
            print('variable %s\n  %s\n  -> %s' % (name, q, show(result)))
            if not [r for r in result if r['metric'].get(label)]:
                failures.append('variable %s: no %s values from %s' % (name, label, sel))

        fired, checked = {}, {}
        for a in alerts():
            expr = a['expr']
            result = prom.query(expr)
            assert result is not None, '%s: not answered' % a['alert']
            fired[a['alert']] = result
            print('alert %s\n  %s\n  -> %s' % (a['alert'], expr, show(result)))
            for name, sel in selectors(expr):
                if name == 'kube_pod_container_status_ready':
                    print('  selector %s: exported by %s, not checkable here'
                          % (sel, EXTERNAL[name]))
                    continue
                r = prom.query(sel)
                checked.setdefault(a['alert'], []).append(sel)
                print('  selector %s -> %d series' % (sel, len(r or [])))
                if not r:
                    failures.append('%s: selector %s returned no data' % (a['alert'], sel))
        assert not failures, '\n'.join(failures)
        assert checked.get('KtriggerKafkaNotReady') == ['ktrigger_kafka_ready',
                                                        'ktrigger_runtime_up'], checked
        # ktrigger's `function` label (the handler) survives the target label of that name.
        series = [r['metric'] for r in prom.query('function_calls_total') or []]
        print('function_calls_total series: %s' % series)
        assert series and all(m.get('function') == kt.HANDLER for m in series), series
        assert not any('exported_function' in m for m in series), (
            'ktrigger\'s function label was renamed exported_function: %s' % series)
        # What the scenario provokes: dead letters, and 50 of 225 calls failing (22 %).
        for name in ('KtriggerDeadLettersProduced', 'KtriggerFunctionFailureRatio'):
            assert fired[name], '%s: its expression returned nothing' % name
        assert fired['KtriggerFunctionFailureRatio'][0]['metric']['function'] == kt.HANDLER
        for name in ('KtriggerRuntimeDown', 'KtriggerCommitFailures', 'KtriggerScrapeDown'):
            assert not fired[name], '%s fires on a healthy ktrigger: %s' % (name, fired[name])
        # The replica out of its group, and only it (the healthy one is in its group).
        assert [r['metric'] for r in fired['KtriggerKafkaNotReady']] == [
            {'namespace': ORPHAN_LABELS['namespace'], 'pod': ORPHAN_LABELS['pod']}], (
            fired['KtriggerKafkaNotReady'])
        assert [r['metric'] for r in fired['KtriggerNoPartitionsAssigned']] == [
            {'namespace': ORPHAN_LABELS['namespace'], 'app_kubernetes_io_name': 'orphan'}], (
            fired['KtriggerNoPartitionsAssigned'])

        # The server loaded every rule and evaluates it without error.
        def evaluated():
            groups = prom.api('rules')['groups']
            rs = [r for g in groups for r in g['rules']]
            return rs if len(rs) == len(alerts()) and all(r.get('lastEvaluation', '').
                                                          startswith('2') for r in rs) else None
        rs = kt.wait_for(evaluated, 20, 'rules evaluated', interval=0.5) or evaluated()
        for r in rs:
            print('rule %s: health %s, state %s' % (r['name'], r['health'], r.get('state')))
            assert r['health'] == 'ok', r
        # A rule's state is that of its last evaluation (every 1 s), which may have seen fewer
        # samples than the queries above: wait for the evaluation that sees them.
        def states():
            return {r['name']: r.get('state')
                    for g in prom.api('rules')['groups'] for r in g['rules']}

        def expected_states():
            st = states()
            return (st.get('KtriggerDeadLettersProduced') == 'firing'
                    and st.get('KtriggerKafkaNotReady') == 'pending')  # for: 5m
        kt.wait_for(expected_states, 20, 'dead-letter alert firing, Kafka-not-ready pending',
                    interval=0.5, describe=states)
    finally:
        prom.stop()
        (tmp_path / 'prometheus-queries.log').write_text('\n'.join(lines) + '\n')
        with capsys.disabled():
            sys.stdout.write('\n' + '\n'.join(lines) + '\n')
    assert ktr.stop() == 0
    assert orphan.stop() == 0
