/* Adding the bootstrap brokers again (consumer_rebootstrap.c): when the statistics say a
 * client is stranded, how soon, how often, with which list; and that the statistics of the
 * librdkafka linked here name brokers the way the guard reads them (no network: the bootstrap
 * broker is a closed port). */
#define _POSIX_C_SOURCE 200809L
#include "../../core/tests/kt_test.h"
#include "../consumer.h"

#include <cjson/cJSON.h>
#include <stdlib.h>
#include <string.h>

/* Shapes of librdkafka's "brokers" statistics object. */
#define HEALTHY                                                                                    \
        "{\"127.0.0.1:9092/bootstrap\":{\"source\":\"configured\",\"state\":\"UP\"},"              \
        "\"GroupCoordinator\":{\"source\":\"logical\",\"state\":\"UP\"}}"
#define LEARNED_DOWN "{\"localhost:9092/1\":{\"source\":\"learned\",\"state\":\"DOWN\"}}"
#define STRANDED                                                                                   \
        "{\"GroupCoordinator\":{\"source\":\"logical\",\"state\":\"DOWN\"},"                       \
        "\":0/internal\":{\"source\":\"internal\",\"state\":\"UP\"}}"
#define EMPTY      "{}"
#define NO_SOURCE  "{\"x:1/1\":{\"state\":\"DOWN\"}}"
#define NOT_OBJECT "[]"

/** One statistics report at \p t ms; \p want: the list the guard must return, NULL for none. */
typedef struct {
        const char *brokers;
        int64_t t;
        const char *want;
} step_t;

static void run(const char *name, const char *bootstrap, const step_t *steps, size_t n,
                uint64_t want_count) {
        kt_rebootstrap_t *rb = kt_rebootstrap_new("consumer", bootstrap);

        KT_CHECK(rb != NULL, "%s: new", name);
        if (!rb)
                return;
        for (size_t i = 0; i < n; i++) {
                cJSON *j = cJSON_Parse(steps[i].brokers);
                const char *got = kt_rebootstrap_check(rb, j, steps[i].t);
                if (steps[i].want)
                        KT_CHECK(got && !strcmp(got, steps[i].want), "%s: step %zu: got %s", name,
                                 i, got ? got : "(none)");
                else
                        KT_CHECK(!got, "%s: step %zu: re-added %s too early or needlessly", name, i,
                                 got);
                cJSON_Delete(j);
        }
        KT_CHECK(kt_rebootstrap_count(rb) == want_count, "%s: count %llu, want %llu", name,
                 (unsigned long long)kt_rebootstrap_count(rb), (unsigned long long)want_count);
        kt_rebootstrap_destroy(rb);
}

#define RUN(name, bootstrap, count, ...)                                                           \
        do {                                                                                       \
                const step_t s_[] = {__VA_ARGS__};                                                 \
                run(name, bootstrap, s_, sizeof(s_) / sizeof(s_[0]), count);                       \
        } while (0)

#define B "k1:9092,k2:9092"

static void decisions(void) {
        RUN("healthy never", B, 0, {HEALTHY, 1000, NULL}, {LEARNED_DOWN, 60000, NULL},
            {HEALTHY, 600000, NULL});
        /* Stranded: first seen at 5 s, not before 10 s more, then at most every 30 s. */
        RUN("stranded", B, 3, {HEALTHY, 0, NULL}, {STRANDED, 5000, NULL}, {STRANDED, 10000, NULL},
            {STRANDED, 14999, NULL}, {STRANDED, 15000, B}, {STRANDED, 20000, NULL},
            {STRANDED, 44999, NULL}, {STRANDED, 45000, B}, {EMPTY, 75000, B});
        /* A short stranding (a working re-bootstrap) is left alone, and the clock restarts. */
        RUN("short gaps", B, 0, {STRANDED, 0, NULL}, {STRANDED, 9999, NULL}, {HEALTHY, 10000, NULL},
            {STRANDED, 12000, NULL}, {STRANDED, 21000, NULL}, {LEARNED_DOWN, 23000, NULL},
            {STRANDED, 30000, NULL});
        /* After a rescue and a recovery, a new stranding waits its own 10 s, not the 30 s. */
        RUN("again later", B, 2, {STRANDED, 0, NULL}, {STRANDED, 10000, B}, {HEALTHY, 15000, NULL},
            {STRANDED, 50000, NULL}, {STRANDED, 59999, NULL}, {STRANDED, 60000, B});
        /* Unknown shapes are trusted to be fine: never a re-add on a guess. */
        RUN("unknown shapes", B, 0, {NO_SOURCE, 0, NULL}, {NO_SOURCE, 60000, NULL},
            {NOT_OBJECT, 70000, NULL}, {NOT_OBJECT, 90000, NULL});
        /* ZooKeeper only: nothing to add until a broker was remembered. */
        RUN("empty list", "", 0, {STRANDED, 0, NULL}, {STRANDED, 60000, NULL});
}

static void lists(void) {
        kt_rebootstrap_t *rb = kt_rebootstrap_new("producer", "");
        cJSON *j = cJSON_Parse(STRANDED);
        char big[KT_REBOOTSTRAP_MAX_BYTES + 2];
        const char *got;

        KT_CHECK(rb && j, "new");
        if (!rb || !j)
                goto out;
        KT_CHECK(!kt_rebootstrap_remember(rb, "zk1:9092"), "remember");
        KT_CHECK(!kt_rebootstrap_remember(rb, "zk2:9092,zk1:9092,,zk3:9092"), "remember a list");
        KT_CHECK(!kt_rebootstrap_remember(rb, "zk1:909"), "a prefix is another broker");
        KT_CHECK(!kt_rebootstrap_check(rb, j, 0), "first stranded report");
        got = kt_rebootstrap_check(rb, j, 10000);
        KT_CHECK_STR(got, "zk1:9092,zk2:9092,zk3:9092,zk1:909");
        memset(big, 'h', sizeof(big) - 1);
        big[sizeof(big) - 1] = '\0';
        KT_CHECK(kt_rebootstrap_remember(rb, big) == -1, "over the cap is refused");
        got = kt_rebootstrap_check(rb, j, 40000);
        KT_CHECK_STR(got, "zk1:9092,zk2:9092,zk3:9092,zk1:909");
        KT_CHECK(kt_rebootstrap_count(NULL) == 0, "NULL counts 0");
        kt_rebootstrap_destroy(NULL);
out:
        cJSON_Delete(j);
        kt_rebootstrap_destroy(rb);
}

static int stats_seen;

/** The linked librdkafka's own statistics: its bootstrap broker is "configured", so a client
 *  that has one is never taken for stranded. */
static int stats_cb(rd_kafka_t *rk, char *json, size_t len, void *opaque) {
        kt_rebootstrap_t *rb = opaque;
        cJSON *root = cJSON_ParseWithLength(json, len);
        const cJSON *brokers = cJSON_GetObjectItemCaseSensitive(root, "brokers"), *b;
        int configured = 0, sources = 0, n = 0;

        (void)rk;
        cJSON_ArrayForEach(b, brokers) {
                const cJSON *src = cJSON_GetObjectItemCaseSensitive(b, "source");
                n++;
                sources += cJSON_IsString(src);
                configured += cJSON_IsString(src) && !strcmp(src->valuestring, "configured");
        }
        KT_CHECK(n > 0 && sources == n, "every broker names its source (%d of %d)", sources, n);
        KT_CHECK(configured == 1, "the bootstrap broker is configured (%d)", configured);
        KT_CHECK(!kt_rebootstrap_check(rb, brokers, 0) && !kt_rebootstrap_check(rb, brokers, 60000),
                 "a client with its bootstrap broker is not stranded");
        stats_seen++;
        cJSON_Delete(root);
        return 0;
}

static void real_statistics(void) {
        char err[512];
        rd_kafka_conf_t *conf = rd_kafka_conf_new();
        kt_rebootstrap_t *rb = kt_rebootstrap_new("producer", "127.0.0.1:1");
        rd_kafka_t *rk;

        rd_kafka_conf_set(conf, "bootstrap.servers", "127.0.0.1:1", err, sizeof(err));
        rd_kafka_conf_set(conf, "statistics.interval.ms", "100", err, sizeof(err));
        rd_kafka_conf_set(conf, "log_level", "0", err, sizeof(err));
        rd_kafka_conf_set_opaque(conf, rb);
        rd_kafka_conf_set_stats_cb(conf, stats_cb);
        rk = rd_kafka_new(RD_KAFKA_PRODUCER, conf, err, sizeof(err));
        KT_CHECK(rk != NULL, "rd_kafka_new: %s", err);
        if (!rk) {
                rd_kafka_conf_destroy(conf);
                kt_rebootstrap_destroy(rb);
                return;
        }
        for (int i = 0; i < 100 && stats_seen < 2; i++)
                rd_kafka_poll(rk, 50);
        KT_CHECK(stats_seen >= 2, "statistics arrived %d times in 5 s", stats_seen);
        rd_kafka_destroy(rk);
        kt_rebootstrap_destroy(rb);
}

int main(void) {
        decisions();
        lists();
        real_statistics();
        return kt_test_done("test_rebootstrap");
}
