"""ZooKeeper sessions and host names (real ZooKeeper, zookeeper/zk.sh):

- after a ZooKeeper session expires and ktrigger starts a new one, the brokers it already knew
  are watched on the new session: a registration changed afterwards is seen (here: it turns
  to garbage and is counted as a bad registration);
- the ZooKeeper hosts are resolved off the loop: while the name resolution of
  kafka.zookeeper hangs (an LD_PRELOAD shim holds getaddrinfo() for one name until a gate file
  exists), records keep flowing through the brokers of kafka.brokers; once it answers, the
  session starts and the broker is discovered."""

import os
import signal
import subprocess
import uuid

import kthelpers as kt

SLOW_NAME = 'kt-slow-dns.test'

SHIM = r'''
#define _GNU_SOURCE
#include <dlfcn.h>
#include <netdb.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/* getaddrinfo() of SLOW_NAME waits until the file $KT_DNS_GATE exists, then resolves
 * 127.0.0.1: a DNS server that does not answer, for as long as the test wants. */
int getaddrinfo(const char *node, const char *service, const struct addrinfo *hints,
                struct addrinfo **res) {
        static int (*real)(const char *, const char *, const struct addrinfo *,
                           struct addrinfo **);
        const char *gate = getenv("KT_DNS_GATE");

        if (!real)
                real = (int (*)(const char *, const char *, const struct addrinfo *,
                                struct addrinfo **))dlsym(RTLD_NEXT, "getaddrinfo");
        if (node && gate && !strcmp(node, "%s")) {
                while (access(gate, F_OK) != 0)
                        usleep(50000);
                node = "127.0.0.1";
        }
        return real(node, service, hints, res);
}
''' % SLOW_NAME


def chroot(tag):
    return '/t0305%s-%s' % (tag, uuid.uuid4().hex[:8])


def zk_metrics(ktr):
    m = ktr.metrics()
    return {k: kt.metric_sum(m, 'ktrigger_zookeeper_' + k)
            for k in ('connected', 'brokers', 'bad_registrations_total')}


def server_expired_a_session(server):
    """The server's own log says it expired a session (this server has no other client that
    could: the test's kazoo client keeps pinging)."""
    return 'Expiring session' in (server.state_dir / 'zk.log').read_text(errors='replace')


def test_known_brokers_are_watched_again_on_a_new_session(kafka, kafka_bootstrap, names,
                                                          config, zookeeper_factory,
                                                          runtime_factory, ktrigger_factory):
    server = zookeeper_factory()  # its own server: its log tells whose session expired
    root = chroot('a')
    ids = root + '/brokers/ids'
    zk = server.client()
    zk.create(ids + '/1', kt.broker_registration(kafka_bootstrap), ephemeral=True,
              makepath=True)
    kafka.create_topic(names.topic, 1)
    rt = runtime_factory()
    conf = config(rt.port)
    del conf['kafka']['brokers']
    conf['kafka']['zookeeper'] = server.address + root
    ktr = ktrigger_factory(conf)
    kt.wait_for(lambda: zk_metrics(ktr) == {'connected': 1, 'brokers': 1,
                                            'bad_registrations_total': 0}, 30,
                'the broker discovered', describe=lambda: zk_metrics(ktr))
    assert not server_expired_a_session(server)

    # Stopped past its ZooKeeper session timeout (10 s): the server expires the session, and
    # ktrigger, running again, is told so and starts a new one.
    os.kill(ktr.pid, signal.SIGSTOP)
    try:
        kt.wait_for(lambda: server_expired_a_session(server), 40,
                    "the server expiring ktrigger's session", interval=0.5)
    finally:
        os.kill(ktr.pid, signal.SIGCONT)
    kt.wait_for(lambda: 'session expired: starting a new one' in ktr.log() or
                'giving the session up for a new one' in ktr.log(), 30,
                'ktrigger replacing its expired session')
    kt.wait_for(lambda: ktr.log().count('ZooKeeper %s: watching' % (server.address + root)) >= 2
                and zk_metrics(ktr)['connected'] == 1, 30, 'a new session',
                describe=lambda: zk_metrics(ktr))

    # The registration changes on the new session: only a data watch set on it tells.
    zk.set(ids + '/1', b'not json any more')
    kt.wait_for(lambda: zk_metrics(ktr)['bad_registrations_total'] == 1, 20,
                'the changed registration seen through a watch of the new session',
                describe=lambda: zk_metrics(ktr))
    assert ktr.stop() == 0


def test_zookeeper_hosts_are_resolved_off_the_loop(kafka, kafka_bootstrap, names, config,
                                                   zookeeper, runtime_factory,
                                                   ktrigger_factory, tmp_path):
    shim_c = tmp_path / 'slowdns.c'
    shim = tmp_path / 'slowdns.so'
    shim_c.write_text(SHIM)
    subprocess.run(['cc', '-shared', '-fPIC', '-o', str(shim), str(shim_c), '-ldl'],
                   check=True)
    gate = tmp_path / 'dns-gate'
    root = chroot('b')
    zk = zookeeper.client()
    zk.create(root + '/brokers/ids/1', kt.broker_registration(kafka_bootstrap),
              ephemeral=True, makepath=True)
    kafka.create_topic(names.topic, 2)
    produced = kafka.produce(names.topic, [(i % 2, 'dns %d' % i) for i in range(50)])
    rt = runtime_factory()
    conf = config(rt.port)  # kafka.brokers as well: Kafka works without ZooKeeper
    port = zookeeper.address.rsplit(':', 1)[1]
    conf['kafka']['zookeeper'] = '%s:%s%s' % (SLOW_NAME, port, root)
    asan = os.environ.get('ASAN_OPTIONS', '')
    ktr = ktrigger_factory(conf, env={
        'LD_PRELOAD': str(shim), 'KT_DNS_GATE': str(gate),
        # the shim comes before the sanitizer runtime: tell ASan that is meant
        'ASAN_OPTIONS': (asan + ':' if asan else '') + 'verify_asan_link_order=0'})

    # The name does not resolve yet: the loop goes on, records flow.
    kt.wait_for(lambda: len(rt.calls()) >= len(produced), 60,
                'records delivered while the ZooKeeper name resolution hangs',
                describe=lambda: len(rt.calls()))
    assert zk_metrics(ktr)['connected'] == 0
    assert not gate.exists()
    kt.wait_for(lambda: 'its host names not resolved after 5000 ms: still waiting' in ktr.log(),
                20, 'a WARN about the slow resolution')

    gate.write_text('open')
    kt.wait_for(lambda: zk_metrics(ktr) == {'connected': 1, 'brokers': 1,
                                            'bad_registrations_total': 0}, 30,
                'the session once the name resolved', describe=lambda: zk_metrics(ktr))
    assert ktr.stop() == 0
    assert sorted(c.body for c in rt.calls()) == sorted(r.value for r in produced)
