/*
 * The read path of consumer_group.c against librdkafka's in-process mock cluster (loopback
 * only): a wake-up names its partition, so records arriving one by one on one partition of
 * many make the consumer read that partition's queue, not every partition's.
 * KT_TEST_VERBOSE=1 prints the consumer's info logs.
 */
#define _GNU_SOURCE
#include "../../core/tests/kt_test.h"
#include "../consumer_lifecycle.h"

#include <librdkafka/rdkafka_mock.h>
#include <poll.h>
#include <stdlib.h>
#include <string.h>

#define NPART 32 /* partitions of the topic */
#define NREC  20 /* records produced, one at a time, to partition 0 */

static const char *bootstraps;
static int delivered[NREC];
static int delivered_cnt, out_of_order;

static void hook_record(void *opaque, kt_record_t *rec) {
        (void)opaque;
        if (rec->part->partition != 0 || rec->offset < 0 || rec->offset >= NREC) {
                out_of_order++;
                return;
        }
        if (rec->offset != delivered_cnt)
                out_of_order++;
        delivered[rec->offset]++;
        delivered_cnt++;
}

/** Serve the consumer as the loop does until \p *counter reaches \p want or \p timeout_ms. */
static int pump(kt_consumer_t *kc, const int *counter, int want, int timeout_ms) {
        int64_t end = kt_now_ms() + timeout_ms;

        for (;;) {
                struct pollfd fd = {kt_consumer_wakeup_fd(kc), POLLIN, 0};
                while (kt_consumer_poll(kc, 100))
                        ;
                if (*counter >= want)
                        return 1;
                if (kt_now_ms() >= end)
                        return 0;
                poll(&fd, 1, 20);
        }
}

static int assigned;

static void test_one_busy_partition_of_many(void) {
        char *sets[] = {"function.handler=test.wakeup", "kafka.topics=wakeup", NULL,
                        "kafka.group_id=wakeup",
                        "kafka.properties=session.timeout.ms=6000;heartbeat.interval.ms=500;"
                        "statistics.interval.ms=0;fetch.wait.max.ms=10"};
        kt_consumer_hooks_t hooks = {NULL, hook_record, NULL};
        char brokers[256], err[4096];
        rd_kafka_conf_t *pconf = rd_kafka_conf_new();
        kt_config_t *conf;
        kt_consumer_t *kc = NULL;
        rd_kafka_t *prod = NULL;
        uint64_t reads0, reads;

        snprintf(brokers, sizeof(brokers), "kafka.brokers=%s", bootstraps);
        sets[2] = brokers;
        conf = kt_config_load_with(NULL, sets, sizeof(sets) / sizeof(sets[0]), err, sizeof(err));
        KT_CHECK(conf != NULL, "config: %s", err);
        if (!conf)
                goto out;
        kc = kt_consumer_new(conf, &hooks, err, sizeof(err));
        KT_CHECK(kc != NULL, "consumer: %s", err);
        rd_kafka_conf_set(pconf, "bootstrap.servers", bootstraps, err, sizeof(err));
        rd_kafka_conf_set(pconf, "linger.ms", "0", err, sizeof(err));
        prod = rd_kafka_new(RD_KAFKA_PRODUCER, pconf, err, sizeof(err));
        pconf = NULL;
        KT_CHECK(prod != NULL, "producer: %s", err);
        if (!kc || !prod)
                goto out;
        {
                int64_t end = kt_now_ms() + 30000;
                while ((assigned = kt_consumer_assigned_cnt(kc)) < NPART && kt_now_ms() < end)
                        pump(kc, &assigned, NPART + 1, 100);
        }
        KT_CHECK(kt_consumer_assigned_cnt(kc) == NPART, "assigned %d of %d partitions",
                 kt_consumer_assigned_cnt(kc), NPART);
        pump(kc, &delivered_cnt, 1, 500); /* the reads that follow the assignment */
        reads0 = kt_consumer_stats(kc)->partition_reads;

        for (int i = 0; i < NREC; i++) {
                char val[32];
                snprintf(val, sizeof(val), "r%d", i);
                rd_kafka_producev(prod, RD_KAFKA_V_TOPIC("wakeup"), RD_KAFKA_V_PARTITION(0),
                                  RD_KAFKA_V_VALUE(val, strlen(val)),
                                  RD_KAFKA_V_MSGFLAGS(RD_KAFKA_MSG_F_COPY), RD_KAFKA_V_END);
                rd_kafka_flush(prod, 5000);
                KT_CHECK(pump(kc, &delivered_cnt, i + 1, 10000), "record %d not delivered", i);
        }
        reads = kt_consumer_stats(kc)->partition_reads - reads0;
        KT_CHECK(delivered_cnt == NREC && !out_of_order, "%d delivered, %d out of order",
                 delivered_cnt, out_of_order);
        /* Each record is one wake-up naming partition 0 (a few may share one, and a read may
         * come back empty once); reading every partition per wake-up would be NREC * NPART. */
        printf("test_wakeup: %d records on 1 of %d partitions: %llu partition reads\n", NREC, NPART,
               (unsigned long long)reads);
        KT_CHECK(reads >= 1 && reads <= 3 * NREC, "%llu partition reads for %d wake-ups",
                 (unsigned long long)reads, NREC);
out:
        if (prod)
                rd_kafka_destroy(prod);
        if (pconf)
                rd_kafka_conf_destroy(pconf);
        kt_consumer_destroy(kc);
        kt_config_destroy(conf);
}

int main(void) {
        char err[512];
        rd_kafka_conf_t *conf = rd_kafka_conf_new();
        const char *v = getenv("KT_TEST_VERBOSE");
        rd_kafka_mock_cluster_t *mc;
        rd_kafka_t *mock_rk;

        kt_log_level_set(v && *v == '1' ? KT_LOG_INFO : KT_LOG_WARNING);
        rd_kafka_conf_set(conf, "log_level", "0", err, sizeof(err));
        mock_rk = rd_kafka_new(RD_KAFKA_PRODUCER, conf, err, sizeof(err));
        KT_CHECK(mock_rk != NULL, "mock handle: %s", err);
        if (!mock_rk)
                return kt_test_done("test_wakeup");
        mc = rd_kafka_mock_cluster_new(mock_rk, 1);
        KT_CHECK(mc != NULL, "mock cluster");
        if (mc) {
                bootstraps = rd_kafka_mock_cluster_bootstraps(mc);
                KT_CHECK(rd_kafka_mock_topic_create(mc, "wakeup", NPART, 1) == 0, "topic");
                test_one_busy_partition_of_many();
                rd_kafka_mock_cluster_destroy(mc);
        }
        rd_kafka_destroy(mock_rk);
        return kt_test_done("test_wakeup");
}
