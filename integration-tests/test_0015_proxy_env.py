"""A proxy in the environment (common in corporate clusters) must not be used for the calls to
the runtime beside ktrigger: with http_proxy pointing at a port where nothing listens, every
record still reaches the runtime."""

import kthelpers as kt


def test_proxy_variables_are_ignored(kafka, names, config, runtime_factory, ktrigger_factory):
    kafka.create_topic(names.topic, 1)
    rt = runtime_factory()
    dead = 'http://127.0.0.1:%d' % kt.free_port()
    env = {'http_proxy': dead, 'HTTP_PROXY': dead, 'https_proxy': dead, 'ALL_PROXY': dead}
    ktr = ktrigger_factory(config(rt.port), env=env)
    produced = kafka.produce(names.topic, [(0, 'through no proxy %d' % i) for i in range(10)])
    kt.wait_for(lambda: len(rt.delivered()) >= 10, 60, '10 calls',
                describe=lambda: kt.tail(ktr.log_path, 10))
    kt.assert_exactly_once_in_order(rt.calls(), kt.expected_by_partition(produced), 1,
                                    'records with a proxy in the environment')
    assert ktr.stop() == 0
