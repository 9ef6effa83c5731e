"""Broker discovery through a real ZooKeeper (kafka.zookeeper, no kafka.brokers): ktrigger
reads Kafka's broker registrations under <chroot>/brokers/ids, bootstraps from the real KRaft
broker registered there, and delivers every record exactly once; garbage and unusable
registrations are skipped and counted while it stays up and not ready; a broker registered
later is picked up through the watch; ZooKeeper being down at start (and gone and back empty
later) is waited out."""

import subprocess
import time
import uuid

import kthelpers as kt

PARTITIONS = 2
RECORDS = 200


def chroot(tag):
    return '/t0300%s-%s' % (tag, uuid.uuid4().hex[:8])


def register_broker(zk, root, bootstrap):
    """Register the test broker as id 1 under root, as Kafka would (ephemeral)."""
    zk.create(root + '/brokers/ids/1', kt.broker_registration(bootstrap), ephemeral=True,
              makepath=True)


def zk_conf(config, runtime_port, zookeeper):
    """The test config with brokers from ZooKeeper only."""
    conf = config(runtime_port)
    del conf['kafka']['brokers']
    conf['kafka']['zookeeper'] = zookeeper
    # /readyz including Kafka (not the default): "no broker discovered" is then not-ready.
    conf['metrics']['ready_requires_kafka'] = True
    return conf


def readyz(ktr):
    return kt.http_get('http://127.0.0.1:%d/readyz' % ktr.metrics_port)[0]


def zk_metrics(ktr):
    m = ktr.metrics()
    return {k: kt.metric_sum(m, 'ktrigger_zookeeper_' + k)
            for k in ('connected', 'brokers', 'bad_registrations_total')}


def produce(kafka, names, tag):
    kafka.create_topic(names.topic, PARTITIONS)
    return kafka.produce(names.topic, [(i % PARTITIONS, '%s %d' % (tag, i))
                                       for i in range(RECORDS)])


def assert_all_delivered(kafka, names, rt, produced, what):
    kt.wait_for(lambda: len(rt.delivered()) >= len(produced), 60, what,
                describe=lambda: len(rt.delivered()))
    end = kafka.end_offsets(names.topic)
    kt.wait_for(lambda: kafka.committed(names.group, names.topic) == end, 30,
                'committed == end offsets', describe=lambda: kafka.committed(names.group,
                                                                             names.topic))
    time.sleep(0.5)  # nothing more may arrive
    kt.assert_exactly_once_in_order(rt.calls(), kt.expected_by_partition(produced), PARTITIONS,
                                    what)


def test_discovers_the_broker_from_its_registration(kafka, kafka_bootstrap, names, config,
                                                    zookeeper, runtime_factory,
                                                    ktrigger_factory):
    root = chroot('a')
    register_broker(zookeeper.client(), root, kafka_bootstrap)
    produced = produce(kafka, names, 'a')
    rt = runtime_factory()
    ktr = ktrigger_factory(zk_conf(config, rt.port, zookeeper.address + root))

    assert_all_delivered(kafka, names, rt, produced, 'records via the discovered broker')
    assert zk_metrics(ktr) == {'connected': 1, 'brokers': 1, 'bad_registrations_total': 0}
    kt.wait_for(lambda: readyz(ktr) == 200, 10, 'ready')
    if kt.shutil.which('promtool'):
        text = kt.http_get('http://127.0.0.1:%d/metrics' % ktr.metrics_port)[1]
        check = subprocess.run(['promtool', 'check', 'metrics'], input=text.encode(),
                               capture_output=True)
        assert check.returncode == 0, check.stdout + check.stderr
    assert ktr.stop() == 0
    log = ktr.log()
    assert 'broker 1 at %s (from ZooKeeper' % kafka_bootstrap in log, log
    assert 'registration skipped' not in log


def test_garbage_is_survived_and_a_later_broker_picked_up(kafka, kafka_bootstrap, names,
                                                          config, zookeeper, runtime_factory,
                                                          ktrigger_factory):
    root = chroot('b')
    ids = root + '/brokers/ids'
    zk = zookeeper.client()
    zk.create(ids + '/7', b'not json', ephemeral=True, makepath=True)
    # A broker with only an SSL listener: no endpoint for our PLAINTEXT.
    zk.create(ids + '/8', kt.broker_registration(
        '127.0.0.1:1', endpoints=['SSL://127.0.0.1:1'], protocol_map={'SSL': 'SSL'}),
        ephemeral=True)
    zk.create(ids + '/not-an-id', b'{}', ephemeral=True)
    produced = produce(kafka, names, 'b')
    rt = runtime_factory()
    ktr = ktrigger_factory(zk_conf(config, rt.port, zookeeper.address + root))

    kt.wait_for(lambda: zk_metrics(ktr)['bad_registrations_total'] == 3, 20,
                '3 bad registrations counted', describe=lambda: zk_metrics(ktr))
    time.sleep(2)
    ktr.assert_running()
    assert zk_metrics(ktr) == {'connected': 1, 'brokers': 0, 'bad_registrations_total': 3}
    assert readyz(ktr) == 503
    assert kt.metric_sum(ktr.metrics(), 'ktrigger_kafka_ready') == 0
    assert '[-]zookeeper failed: no broker discovered' in kt.http_get(
        'http://127.0.0.1:%d/readyz' % ktr.metrics_port)[1]
    assert rt.calls() == []

    # The real broker registers later: the child watch picks it up.
    zk.create(ids + '/1', kt.broker_registration(kafka_bootstrap), ephemeral=True)
    assert_all_delivered(kafka, names, rt, produced, 'records via the later broker')
    kt.wait_for(lambda: readyz(ktr) == 200, 10, 'ready once a broker is discovered')
    # Re-listing did not count the same garbage again; a new version of it counts once.
    assert zk_metrics(ktr) == {'connected': 1, 'brokers': 1, 'bad_registrations_total': 3}
    zk.set(ids + '/7', b'{"endpoints": 5}')
    kt.wait_for(lambda: zk_metrics(ktr)['bad_registrations_total'] == 4, 10,
                'the changed garbage counted', describe=lambda: zk_metrics(ktr))
    # The broker unregistering is seen too (librdkafka keeps using what it learned).
    zk.delete(ids + '/1')
    kt.wait_for(lambda: zk_metrics(ktr)['brokers'] == 0, 10, 'the unregistered broker')
    assert readyz(ktr) == 200
    assert ktr.stop() == 0
    log = ktr.log()
    assert log.count('registration skipped') == 4, log
    assert 'brokers/ids/7: registration skipped: not JSON' in log
    assert 'brokers/ids/8: registration skipped: no endpoint with security protocol PLAINTEXT' \
        in log
    assert 'brokers/ids/not-an-id: registration skipped: not a broker id' in log


def test_zookeeper_down_at_start_and_back_empty(kafka, kafka_bootstrap, names, config,
                                                zookeeper_factory, runtime_factory,
                                                ktrigger_factory):
    root = chroot('c')
    port = kt.free_port()
    produced = produce(kafka, names, 'c')
    rt = runtime_factory()
    ktr = ktrigger_factory(zk_conf(config, rt.port, '127.0.0.1:%d%s' % (port, root)))

    # Nothing listens: it keeps trying, says so once, stays up and not ready.
    kt.wait_for(lambda: 'not reachable after' in ktr.log(), 15, 'the unreachable warning')
    time.sleep(3)
    ktr.assert_running()
    assert readyz(ktr) == 503
    assert zk_metrics(ktr) == {'connected': 0, 'brokers': 0, 'bad_registrations_total': 0}
    assert ktr.log().count('not reachable after') == 1, ktr.log()
    assert rt.calls() == []

    # ZooKeeper comes up (without /brokers/ids), then the broker registers.
    zks = zookeeper_factory(port)
    kt.wait_for(lambda: zk_metrics(ktr)['connected'] == 1, 30, 'connected to ZooKeeper',
                describe=lambda: zk_metrics(ktr))
    register_broker(zks.client(), root, kafka_bootstrap)
    assert_all_delivered(kafka, names, rt, produced, 'records once ZooKeeper is up')
    kt.wait_for(lambda: readyz(ktr) == 200, 10, 'ready')

    # ZooKeeper goes away: Kafka does not need it, records still flow.
    zks.stop()
    kt.wait_for(lambda: zk_metrics(ktr)['connected'] == 0, 30, 'connection loss seen')
    more = kafka.produce(names.topic, [(i % PARTITIONS, 'c more %d' % i) for i in range(20)])
    kt.wait_for(lambda: len(rt.delivered()) == RECORDS + len(more), 30, 'records without ZK')
    assert readyz(ktr) == 200
    # Back, empty (its data is gone): the old session expired, a new one finds no broker.
    zks.start(port)
    kt.wait_for(lambda: zk_metrics(ktr)['connected'] == 1, 60, 'a new session',
                describe=lambda: zk_metrics(ktr))
    kt.wait_for(lambda: zk_metrics(ktr)['brokers'] == 0, 10, 'no broker registered now')
    register_broker(zks.client(), root, kafka_bootstrap)
    kt.wait_for(lambda: zk_metrics(ktr)['brokers'] == 1, 20, 'the broker registered again')
    assert ktr.stop() == 0
    log = ktr.log()
    assert 'connected to ZooKeeper 127.0.0.1:%d%s' % (port, root) in log, log
    assert ('session expired: starting a new one' in log
            or 'giving the session up for a new one' in log), log


def test_reload_rejoin_discovers_again(kafka, kafka_bootstrap, names, config, zookeeper,
                                       runtime_factory, ktrigger_factory):
    """A reload that re-joins (here: another topic) makes a new consumer, which has no broker
    but the ones discovery gives it: discovery must start again with it."""
    root = chroot('r')
    register_broker(zookeeper.client(), root, kafka_bootstrap)
    produced = produce(kafka, names, 'r')
    rt = runtime_factory()
    conf = zk_conf(config, rt.port, zookeeper.address + root)
    ktr = ktrigger_factory(conf)
    assert_all_delivered(kafka, names, rt, produced, 'records before the reload')

    other = names.topic + '-2'
    kafka.create_topic(other, 1)
    conf['kafka']['topics'] = [other]
    ktr.config_path.write_text(kt.render_config(conf))
    ktr.proc.send_signal(kt.signal.SIGHUP)
    kt.wait_for(lambda: 're-joining the group' in ktr.log(), 20, 'the re-join')
    more = kafka.produce(other, [(0, 'after %d' % i) for i in range(20)])
    kt.wait_for(lambda: len([c for c in rt.calls() if c.topic == other]) >= len(more), 60,
                'records of the new topic through the re-discovered broker',
                describe=lambda: kt.tail(ktr.log_path, 10))
    assert zk_metrics(ktr)['brokers'] == 1
    kt.wait_for(lambda: readyz(ktr) == 200, 10, 'ready after the re-join')
    assert ktr.stop() == 0
