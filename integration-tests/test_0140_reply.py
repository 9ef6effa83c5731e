"""Reply topic: a function's 2xx answer with a body is produced to dispatch.reply_topic with
the record's key, the response Content-Type and correlation headers, before the record's offset
is committed."""

import kthelpers as kt

PARTITIONS = 2
N = 30


def test_reply_topic(kafka, kafka_bootstrap, names, config, runtime_factory, ktrigger_factory):
    replies = names.topic + '-replies'
    kafka.create_topic(names.topic, PARTITIONS)
    kafka.create_topic(replies, 1)
    produced = kafka.produce(names.topic, [(i % PARTITIONS, 'ask %d' % i, b'key-%d' % i)
                                           for i in range(N)])
    rt = runtime_factory(reply_body='{"answer": 42}')
    conf = config(rt.port)
    conf['dispatch']['reply_topic'] = replies
    ktr = ktrigger_factory(conf)
    end = kafka.end_offsets(names.topic)
    kt.wait_for(lambda: kafka.committed(names.group, names.topic) == end, 60,
                'committed == end offsets')
    assert kt.metric_sum(ktr.metrics(), 'ktrigger_replies_total') == N
    assert ktr.stop() == 0

    got = kt.read_topic(kafka_bootstrap, replies, 1, names.group + '-reader')
    assert len(got) == N, 'one reply per record: %d' % len(got)
    by_key = {k: (v, h) for k, v, h in got}
    for r in produced:
        v, h = by_key[r.key]
        assert v == b'{"answer": 42}'
        assert h['content-type'].startswith(b'application/json'), h
        assert h['ktrigger-original-topic'] == names.topic.encode()
        assert h['ktrigger-original-partition'] == str(r.partition).encode()
        assert h['ktrigger-original-offset'] == str(r.offset).encode()
        assert h['ktrigger-function'] == kt.HANDLER.encode()
