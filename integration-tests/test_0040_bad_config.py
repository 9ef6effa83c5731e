"""Bad configuration is refused at start-up with exit status 78 (EX_CONFIG) and a message
naming the key (`file:line: key: reason` when the key has a line, else `key: reason`), both
when starting and with --check-config; a good file passes --check-config.  ktrigger never
dies from a signal on any of these.  No broker is needed: nothing here may connect."""

import re

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
