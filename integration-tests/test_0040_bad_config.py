"""Bad configuration is refused at start-up with exit status 78 (EX_CONFIG) and a message
naming the key (`file:line: key: reason` when the key has a line, else `key: reason`), both
when starting and with --check-config; a good file passes --check-config.  ktrigger never
dies from a signal on any of these.  No broker is needed: nothing here may connect."""

import json
import os
import re
import subprocess
import time

import pytest

import kthelpers as kt

EX_CONFIG = 78


@pytest.fixture(autouse=True)
def need_binary():
    if not kt.ktrigger_bin().exists():
        pytest.fail('ktrigger binary %s not found (build it, or set KTRIGGER_BIN)'
                    % kt.ktrigger_bin())


def good_config():
    # Brokers nobody listens on: validation must not connect.
    return kt.base_config('127.0.0.1:9', ['kt-config-topic'], 18080, kt.free_port(),
                          group_id='kt-config-group')


def drop(conf, section, key):
    del conf[section][key]
    return conf


def setv(conf, section, key, value):
    conf[section][key] = value
    return conf


# (id, build the config dict, [(key, needle marking its line or None)])
CASES = [
    ('missing-topics', lambda: drop(good_config(), 'kafka', 'topics'),
     [('kafka.topics', None)]),
    ('missing-handler', lambda: drop(good_config(), 'function', 'handler'),
     [('function.handler', None)]),
    ('bad-port', lambda: setv(good_config(), 'runtime', 'port', 70000),
     [('runtime.port', 'port = 70000')]),
    ('bad-start-from', lambda: setv(good_config(), 'kafka', 'start_from', 'middle'),
     [('kafka.start_from', 'start_from = "middle"')]),
    ('two-errors', lambda: setv(setv(good_config(), 'kafka', 'start_from', 'middle'),
                                'runtime', 'port', 0),
     [('kafka.start_from', 'start_from = "middle"'), ('runtime.port', 'port = 0')]),
]

MODES = [('start', ()), ('check-config', ('--check-config',))]


def assert_config_exit(proc, what):
    assert proc.returncode >= 0, '%s: killed by signal %d\n%s' % (
        what, -proc.returncode, proc.stderr[-2000:])
    assert proc.returncode == EX_CONFIG, '%s: exit %d, expected %d\nstderr:\n%s' % (
        what, proc.returncode, EX_CONFIG, proc.stderr[-2000:])


@pytest.mark.parametrize('mode,args', MODES, ids=[m for m, _ in MODES])
@pytest.mark.parametrize('case,build,errors', CASES, ids=[c[0] for c in CASES])
def test_bad_config_exits_78(tmp_path, case, build, errors, mode, args):
    text = kt.render_config(build())
    path = tmp_path / 'ktrigger.conf'
    path.write_text(text)
    proc = kt.run_ktrigger(path, *args)
    assert_config_exit(proc, case)
    for key, needle in errors:
        if needle is None:
            # `key: reason`, possibly prefixed by `file:` or `file:line:`
            pattern = r'(^|: )%s: \S' % re.escape(key)
        else:
            pattern = r'%s:%d: %s: \S' % (re.escape(str(path)), kt.line_of(text, needle),
                                          re.escape(key))
        assert re.search(pattern, proc.stderr, re.M), (
            '%s: no line matching %r in stderr:\n%s' % (case, pattern, proc.stderr))


@pytest.mark.parametrize('mode,args', MODES, ids=[m for m, _ in MODES])
def test_unreadable_config_path(tmp_path, mode, args):
    path = tmp_path / 'does-not-exist.conf'
    proc = kt.run_ktrigger(path, *args)
    assert_config_exit(proc, 'missing file')
    assert str(path) in proc.stderr, proc.stderr


@pytest.mark.parametrize('mode,args', MODES, ids=[m for m, _ in MODES])
def test_syntax_error_names_file_and_line(tmp_path, mode, args):
    text = kt.render_config(good_config())
    text = text.replace('timeout_s = 180;', 'timeout_s = = 180;')
    path = tmp_path / 'ktrigger.conf'
    path.write_text(text)
    proc = kt.run_ktrigger(path, *args)
    assert_config_exit(proc, 'syntax error')
    pattern = r'%s:%d: ' % (re.escape(str(path)), kt.line_of(text, 'timeout_s = = 180;'))
    assert re.search(pattern, proc.stderr), (pattern, proc.stderr)


def test_check_config_accepts_good_file(tmp_path):
    path = tmp_path / 'ktrigger.conf'
    path.write_text(kt.render_config(good_config()))
    proc = kt.run_ktrigger(path, '--check-config')
    assert proc.returncode == 0, 'exit %d\nstderr:\n%s' % (proc.returncode, proc.stderr)


# ---------------------------------------------------------------------------------------------
# Bad input never kills, hangs or fools ktrigger (issue 13): each of these made libconfig exit
# 2, blocked on a FIFO, read a directory as an empty secret, wrapped an integer or took 28 s.

def _add_props(text, props):
    """Add ("name", "value") pairs to kafka.properties in rendered text."""
    pairs = ''.join(',\n    ("%s", "%s")' % kv for kv in props)
    return text.replace('("fetch.wait.max.ms", "10")', '("fetch.wait.max.ms", "10")' + pairs)


def _fifo(tmp_path):
    path = tmp_path / 'fifo'
    os.mkfifo(path)
    return path


def _dir(tmp_path):
    path = tmp_path / 'a-dir'
    path.mkdir()
    return path


def _empty(tmp_path):
    path = tmp_path / 'empty-secret'
    path.write_text('\n')
    return path


# (id, make the text from (good text, tmp_path), needle marking the line, key, reason regex)
FILE_CASES = [
    ('include-directory', lambda t, p: t + '@include "%s"\n' % _dir(p),
     '@include', '@include', r'cannot read "[^"]*": it is a directory'),
    ('include-fifo', lambda t, p: t + '@include "%s"\n' % _fifo(p),
     '@include', '@include', r'cannot read "[^"]*": it is a FIFO'),
    ('secret-fifo', lambda t, p: _add_props(t, [('sasl.password', '${file:%s}' % _fifo(p))]),
     'sasl.password', 'kafka.properties', r'cannot read \S+fifo: it is a FIFO'),
    ('secret-directory',
     lambda t, p: _add_props(t, [('sasl.password', '${file:%s}' % _dir(p))]),
     'sasl.password', 'kafka.properties', r'cannot read \S+a-dir: it is a directory'),
    ('secret-empty', lambda t, p: _add_props(t, [('sasl.password', '${file:%s}' % _empty(p))]),
     'sasl.password', 'kafka.properties', r'\S+empty-secret is empty'),
    ('int-beyond-32-bits',
     lambda t, p: t.replace('drain_timeout_ms = 10000;',
                            'drain_timeout_ms = 10000;\n  max_in_flight = 4294967360;'),
     'max_in_flight', 'dispatch.max_in_flight', r'4294967360 is outside 1\.\.10000'),
    ('handler-empty-function',
     lambda t, p: t.replace('handler = "%s"' % kt.HANDLER, 'handler = "mod."'),
     'handler = "mod."', 'function.handler', r"'mod\.' is not module\.function"),
    ('handler-blank',
     lambda t, p: t.replace('handler = "%s"' % kt.HANDLER, 'handler = "my mod.fn"'),
     'handler = "my mod.fn"', 'function.handler', r"'my mod\.fn' is not module\.function"),
]


def run_bounded(path, *args, env=None, timeout=20):
    try:
        return kt.run_ktrigger(path, *args, env=env, timeout=timeout)
    except subprocess.TimeoutExpired:
        pytest.fail('ktrigger %s on %s did not finish within %d s (hung)' % (
            ' '.join(args) or '(start)', path, timeout))


def assert_no_sanitizer_report(proc):
    for marker in ('AddressSanitizer', 'LeakSanitizer', 'runtime error:'):
        assert marker not in proc.stderr, proc.stderr[-3000:]


@pytest.mark.parametrize('mode,args', MODES, ids=[m for m, _ in MODES])
@pytest.mark.parametrize('case,make,needle,key,reason', FILE_CASES, ids=[c[0] for c in FILE_CASES])
def test_unreadable_input_is_a_config_error(tmp_path, case, make, needle, key, reason, mode,
                                            args):
    text = make(kt.render_config(good_config()), tmp_path)
    path = tmp_path / 'ktrigger.conf'
    path.write_text(text)
    proc = run_bounded(path, *args)
    print('%s %s: exit %d\n%s' % (case, mode, proc.returncode, proc.stderr))
    assert_config_exit(proc, case)
    pattern = r'^%s:%d: %s: %s' % (re.escape(str(path)), kt.line_of(text, needle),
                                   re.escape(key), reason)
    assert re.search(pattern, proc.stderr, re.M), (pattern, proc.stderr)
    assert_no_sanitizer_report(proc)


# (id, environment, the one error expected: regex)
ENV_CASES = [
    ('FUNC_HANDLER=mod.', {'FUNC_HANDLER': 'mod.'},
     r"^FUNC_HANDLER: function\.handler: 'mod\.' is not module\.function"),
    ('FUNC_HANDLER=my mod.fn', {'FUNC_HANDLER': 'my mod.fn'},
     r"^FUNC_HANDLER: function\.handler: 'my mod\.fn' is not module\.function"),
    ('KAFKA_BROKERS=kafka:notaport', {'KAFKA_BROKERS': 'kafka:notaport'},
     r"^KAFKA_BROKERS: kafka\.brokers: 'kafka:notaport' is not host:port"),
    # No handler in the file: as in a Kubeless pod, the environment is all there is.
    ('FUNC_HANDLER=handler without MOD_NAME', {'FUNC_HANDLER': 'handler'},
     r"^FUNC_HANDLER: function\.handler: 'handler' is not module\.function and MOD_NAME is "
     r"not set$"),
]


@pytest.mark.parametrize('mode,args', MODES, ids=[m for m, _ in MODES])
@pytest.mark.parametrize('case,env,want', ENV_CASES, ids=[c[0] for c in ENV_CASES])
def test_kubeless_env_rough_edges(tmp_path, case, env, want, mode, args):
    conf = good_config()
    if 'MOD_NAME' not in env and '.' not in env.get('FUNC_HANDLER', '.'):
        del conf['function']
    path = tmp_path / 'ktrigger.conf'
    path.write_text(kt.render_config(conf))
    proc = run_bounded(path, *args, env=env)
    print('%s %s: exit %d\n%s' % (case, mode, proc.returncode, proc.stderr))
    assert_config_exit(proc, case)
    errors = [line for line in proc.stderr.splitlines() if not line.startswith('ktrigger: ')]
    assert len(errors) == 1, 'exactly one error expected, got:\n%s' % proc.stderr
    assert re.search(want, errors[0]), (want, errors[0])


def test_metrics_listen_port_only_means_every_interface(tmp_path):
    """`metrics.listen = ":PORT"` (Go's and Prometheus' form) passes --check-config and
    listens on every IPv4 interface (127.0.0.1 among them)."""
    conf = good_config()
    port = kt.free_port()
    conf['metrics']['listen'] = ':%d' % port
    path = tmp_path / 'ktrigger.conf'
    path.write_text(kt.render_config(conf))
    proc = run_bounded(path, '--check-config')
    assert proc.returncode == 0, proc.stderr
    printed = run_bounded(path, '--print-config')
    assert 'metrics.listen = ":%d"' % port in printed.stdout, printed.stdout
    ktr = kt.spawn_ktrigger(tmp_path, conf)
    try:
        ktr.wait_healthy(20)
    finally:
        assert ktr.stop() == 0


def test_eight_mib_string_is_checked_quickly(tmp_path):
    """libconfig reading a file itself rescans a long token at every 8 KiB: an 8 MiB string
    took 28 s. ktrigger reads the file and parses it from memory."""
    conf = good_config()
    conf['kafka']['group_id'] = 'g' * (8 << 20)
    path = tmp_path / 'ktrigger.conf'
    path.write_text(kt.render_config(conf))
    started = time.monotonic()
    proc = run_bounded(path, '--check-config', timeout=30)
    took = time.monotonic() - started
    print('8 MiB string: exit %d in %.2f s' % (proc.returncode, took))
    assert proc.returncode == 0, proc.stderr[-2000:]
    # 0.5 s (ASan build, load 12 on 2 cores); the bound leaves room for a loaded machine.
    assert took < 12, '--check-config of an 8 MiB string took %.1f s' % took


def test_startup_errors_in_json_mode_are_json_lines(tmp_path):
    conf = setv(good_config(), 'runtime', 'port', 0)
    conf['log'] = {'level': 'info', 'format': 'json'}
    text = kt.render_config(conf)
    path = tmp_path / 'ktrigger.conf'
    path.write_text(text)
    proc = run_bounded(path)
    assert_config_exit(proc, 'json start-up')
    lines = proc.stderr.splitlines()
    assert lines, 'no output'
    messages = []
    for line in lines:
        try:
            obj = json.loads(line)
        except ValueError:
            pytest.fail('not a JSON line: %r\nstderr:\n%s' % (line, proc.stderr))
        assert obj['level'] == 'ERROR' and obj['facility'] == 'CONFIG', obj
        messages.append(obj['message'])
    want = '%s:%d: runtime.port: 0 is outside 1..65535' % (path, kt.line_of(text, 'port = 0'))
    assert want in messages, messages
