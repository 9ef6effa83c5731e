/* Exposition text: counters per topic, cumulative histogram buckets, escaped labels. */
#include "../../core/tests/kt_test.h"
#include "../metrics.h"

#include <stdio.h>
#include <stdlib.h>

/* With kafka.zookeeper: its metrics, and not ready before a broker was discovered. */
static void test_zookeeper(void) {
        char *topics[] = {"a"};
        kt_config_t conf = {0};
        kt_metrics_t *km;
        char *text;

        conf.handler = "m.f";
        conf.topics = topics;
        conf.topic_cnt = 1;
        conf.zookeeper = "zk:2181";
        if (!(km = kt_metrics_new(&conf))) {
                KT_CHECK(0, "new");
                return;
        }
        kt_metrics_group_joined_set(km, 1);
        kt_metrics_runtime_up_set(km, 1);
        /* By default readiness is the loop and the runtime: no broker yet is still ready. */
        KT_CHECK(kt_metrics_ready(km), "not ready by default with no ZooKeeper broker");
        kt_metrics_readiness_kafka_set(km, 1);
        KT_CHECK(!kt_metrics_ready(km), "ready before any ZooKeeper update");
        kt_metrics_zookeeper_set(km, 1, 0, 2, 0);
        KT_CHECK(!kt_metrics_ready(km), "ready with no broker discovered");
        kt_metrics_zookeeper_set(km, 0, 0, 3, 1);
        KT_CHECK(kt_metrics_ready(km), "not ready with a broker discovered");
        kt_metrics_zookeeper_set(km, 1, 2, 3, 1);
        text = kt_metrics_format(km, NULL);
        KT_CHECK(text != NULL, "format");
        if (text) {
                static const char *const want[] = {
                    "# TYPE ktrigger_zookeeper_connected gauge\nktrigger_zookeeper_connected 1\n",
                    "# TYPE ktrigger_zookeeper_brokers gauge\nktrigger_zookeeper_brokers 2\n",
                    "# TYPE ktrigger_zookeeper_bad_registrations_total counter\n"
                    "ktrigger_zookeeper_bad_registrations_total 3\n",
                };
                for (size_t i = 0; i < sizeof(want) / sizeof(want[0]); i++)
                        KT_CHECK(strstr(text, want[i]) != NULL, "missing: %s", want[i]);
        }
        free(text);
        kt_metrics_destroy(km);
}

/* /readyz: what the pod can serve by default, Kafka too with metrics.ready_requires_kafka;
 * the body names every failing condition (?verbose: all of them). */
static void test_readiness(void) {
        static const struct {
                int runtime_up, joined, zk, zk_found, kafka_required, verbose;
                int want_ready;
                const char *want[4];
                const char *unwanted[3];
        } cases[] = {
            {1, 1, 0, 0, 0, 0, 1, {"OK\n"}, {"[", "zookeeper"}},
            {1, 0, 0, 0, 0, 0, 1, {"OK\n"}, {"kafka"}},
            {1,
             0,
             0,
             0,
             0,
             1,
             1,
             {"[+]loop ok\n", "[+]runtime ok\n",
              "[-]kafka_group failed (not required): not in the consumer group",
              "readyz check passed\n"},
             {"zookeeper"}},
            {0,
             1,
             0,
             0,
             0,
             0,
             0,
             {"[-]runtime failed: the runtime does not accept connections\n",
              "readyz check failed\n"},
             {"[+]", "kafka_group"}},
            {0,
             0,
             1,
             0,
             0,
             0,
             0,
             {"[-]runtime failed: ", "[-]kafka_group failed (not required): ",
              "[-]zookeeper failed (not required): no broker discovered"},
             {"[+]"}},
            {1,
             0,
             0,
             0,
             1,
             0,
             0,
             {"[-]kafka_group failed: not in", "readyz check failed\n"},
             {"[+]", "runtime", "not required"}},
            {1, 1, 1, 0, 1, 0, 0, {"[-]zookeeper failed: no broker"}, {"kafka_group"}},
            {1, 1, 1, 1, 1, 1, 1, {"[+]kafka_group ok\n", "[+]zookeeper ok\n"}, {"failed"}},
            {1, 1, 1, 1, 1, 0, 1, {"OK\n"}, {"["}},
        };
        char *topics[] = {"a"};

        for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
                kt_config_t conf = {0};
                kt_metrics_t *km;
                char *body;
                int ready = -1;

                conf.handler = "m.f";
                conf.topics = topics;
                conf.topic_cnt = 1;
                conf.zookeeper = cases[i].zk ? "zk:2181" : NULL;
                conf.metrics_ready_kafka = cases[i].kafka_required;
                if (!(km = kt_metrics_new(&conf))) {
                        KT_CHECK(0, "new");
                        return;
                }
                kt_metrics_runtime_up_set(km, cases[i].runtime_up);
                kt_metrics_group_joined_set(km, cases[i].joined);
                if (cases[i].zk)
                        kt_metrics_zookeeper_set(km, 1, cases[i].zk_found, 0, cases[i].zk_found);
                KT_CHECK(kt_metrics_ready(km) == cases[i].want_ready, "case %zu: ready %d", i,
                         kt_metrics_ready(km));
                body = kt_metrics_ready_report(km, cases[i].verbose, &ready, NULL);
                KT_CHECK(body != NULL, "case %zu: report", i);
                KT_CHECK(ready == cases[i].want_ready, "case %zu: report says ready %d", i, ready);
                for (size_t w = 0; body && w < 4 && cases[i].want[w]; w++)
                        KT_CHECK(strstr(body, cases[i].want[w]) != NULL,
                                 "case %zu: missing \"%s\" in:\n%s", i, cases[i].want[w], body);
                for (size_t w = 0; body && w < 3 && cases[i].unwanted[w]; w++)
                        KT_CHECK(strstr(body, cases[i].unwanted[w]) == NULL,
                                 "case %zu: unwanted \"%s\" in:\n%s", i, cases[i].unwanted[w],
                                 body);
                free(body);
                body = kt_metrics_format(km, NULL);
                if (body) {
                        int kafka_ok = cases[i].joined && (!cases[i].zk || cases[i].zk_found);
                        KT_CHECK(strstr(body, kafka_ok ? "\nktrigger_kafka_ready 1\n"
                                                       : "\nktrigger_kafka_ready 0\n") != NULL,
                                 "case %zu: ktrigger_kafka_ready", i);
                }
                free(body);
                kt_metrics_destroy(km);
        }
}

/** Prometheus' histogram_quantile(q) over topic \p topic's function_duration_seconds buckets
 *  in \p text (linear interpolation inside the bucket the rank falls in); -1 if none. */
static double histogram_quantile(const char *text, const char *topic, double q) {
        char want[128];
        double le[64], cum[64], lo = 0, below = 0, rank;
        size_t n = 0;
        const char *p = text;

        snprintf(want, sizeof(want), "topic=\"%s\",le=\"", topic);
        while ((p = strstr(p, "function_duration_seconds_bucket{")) && n < 64) {
                const char *l = strstr(p, want), *eol = strchr(p, '\n');
                char *end;

                if (!l || !eol || l > eol) {
                        p = eol ? eol : p + 1;
                        continue;
                }
                l += strlen(want);
                le[n] = !strncmp(l, "+Inf", 4) ? 1e300 : strtod(l, &end);
                cum[n++] = strtod(strstr(l, "} ") + 2, NULL);
                p = eol;
        }
        if (n < 2 || cum[n - 1] <= 0)
                return -1;
        rank = q * cum[n - 1];
        for (size_t b = 0; b < n - 1; b++) {
                if (cum[b] >= rank)
                        return lo + (le[b] - lo) * (rank - below) / (cum[b] - below);
                lo = le[b];
                below = cum[b];
        }
        return le[n - 2]; /* in +Inf: the highest finite bound, as Prometheus does */
}

/* function_duration_seconds: the p95 that Prometheus reads from the buckets is within a third
 * of the true one wherever functions usually answer (10 ms .. 1 s). */
static void test_duration_buckets(void) {
        static const double latencies[] = {0.012, 0.02, 0.033, 0.047, 0.058, 0.071, 0.089,
                                           0.14,  0.21, 0.33,  0.45,  0.58,  0.9};
        char *topics[] = {"t"};

        for (size_t i = 0; i < sizeof(latencies) / sizeof(latencies[0]); i++) {
                kt_config_t conf = {0};
                kt_metrics_t *km;
                char *text;
                double p95, truth, err;

                conf.handler = "m.f";
                conf.topics = topics;
                conf.topic_cnt = 1;
                if (!(km = kt_metrics_new(&conf))) {
                        KT_CHECK(0, "new");
                        return;
                }
                /* 100 calls within +-3 % of the latency, evenly spread. */
                for (int c = 0; c < 100; c++)
                        kt_metrics_call_observe(km, 0, latencies[i] * (0.97 + 0.06 * c / 99.0), 0);
                truth = latencies[i] * (0.97 + 0.06 * 94.05 / 99.0);
                text = kt_metrics_format(km, NULL);
                p95 = text ? histogram_quantile(text, "t", 0.95) : -1;
                err = (p95 - truth) / truth;
                KT_CHECK(p95 > 0 && err < 0.34 && err > -0.34,
                         "latency %g s: histogram p95 %.4f s for a true %.4f s (%+.0f %%)",
                         latencies[i], p95, truth, err * 100);
                free(text);
                kt_metrics_destroy(km);
        }
}

int main(void) {
        char *topics[] = {"a", "b"};
        kt_config_t conf = {0};
        kt_metrics_t *km;
        char *text;

        conf.handler = "mod.fn\"x";
        conf.topics = topics;
        conf.topic_cnt = 2;
        snprintf(conf.hash, sizeof(conf.hash), "00000000000000aa");
        km = kt_metrics_new(&conf);
        KT_CHECK(km != NULL, "new");
        if (!km)
                return kt_test_done("test_metrics");
        kt_metrics_call_observe(km, 0, 0.003, 0);
        kt_metrics_call_observe(km, 0, 0.2, 1);
        kt_metrics_call_observe(km, 0, 500, 0);
        kt_metrics_call_observe(km, 1, 0.001, 0);
        /* curl's own re-sends: calls and failures, never durations. */
        kt_metrics_call_resends_add(km, 1, 2);
        kt_metrics_call_resends_add(km, 1, 0);
        kt_metrics_call_resends_add(km, (size_t)-1, 1); /* no topic: only the total */
        kt_metrics_gauges_set(km, 3, 4, 5);
        /* A reload adds a topic: a new index; known topics keep theirs. */
        KT_CHECK(kt_metrics_topic_index(km, "b") == 1, "known topic");
        KT_CHECK(kt_metrics_topic_index(km, "c") == 2, "new topic");
        kt_metrics_call_observe(km, 2, 0.001, 0);
        kt_metrics_call_observe(km, (size_t)-1, 0.001, 0); /* no room: ignored */
        kt_metrics_reload(km, KT_METRICS_RELOAD_APPLIED, "00000000000000bb");
        kt_metrics_reload(km, KT_METRICS_RELOAD_INVALID, NULL);
        kt_metrics_reload(km, KT_METRICS_RELOAD_INVALID, NULL);
        text = kt_metrics_format(km, NULL);
        KT_CHECK(text != NULL, "format");
        if (text) {
                static const char *const want[] = {
                    "function_calls_total{function=\"mod.fn\\\"x\",topic=\"a\"} 3\n",
                    "function_calls_total{function=\"mod.fn\\\"x\",topic=\"b\"} 3\n",
                    "function_failures_total{function=\"mod.fn\\\"x\",topic=\"a\"} 1\n",
                    "function_failures_total{function=\"mod.fn\\\"x\",topic=\"b\"} 2\n",
                    "function_duration_seconds_count{function=\"mod.fn\\\"x\",topic=\"b\"} 1\n",
                    "ktrigger_call_resends_total 3\n",
                    "function_duration_seconds_bucket{function=\"mod.fn\\\"x\",topic=\"a\",le=\"0."
                    "001\"} 0\n",
                    "function_duration_seconds_bucket{function=\"mod.fn\\\"x\",topic=\"a\",le=\"0."
                    "005\"} 1\n",
                    "function_duration_seconds_bucket{function=\"mod.fn\\\"x\",topic=\"a\",le=\"0."
                    "25\"} 2\n",
                    "function_duration_seconds_bucket{function=\"mod.fn\\\"x\",topic=\"a\",le="
                    "\"180\"} 2\n",
                    "function_duration_seconds_bucket{function=\"mod.fn\\\"x\",topic=\"a\",le=\"+"
                    "Inf\"} 3\n",
                    "function_duration_seconds_count{function=\"mod.fn\\\"x\",topic=\"a\"} 3\n",
                    "function_duration_seconds_sum{function=\"mod.fn\\\"x\",topic=\"a\"} "
                    "500.203000\n",
                    "function_duration_seconds_bucket{function=\"mod.fn\\\"x\",topic=\"b\",le=\"0."
                    "001\"} 1\n",
                    "ktrigger_in_flight 3\n",
                    "ktrigger_assigned_partitions 4\n",
                    "ktrigger_buffered_records 5\n",
                    "# TYPE function_duration_seconds histogram\n",
                    "function_calls_total{function=\"mod.fn\\\"x\",topic=\"c\"} 1\n",
                    "ktrigger_config_info{hash=\"00000000000000bb\"} 1\n",
                    "ktrigger_config_reloads_total{result=\"applied\"} 1\n",
                    "ktrigger_config_reloads_total{result=\"unchanged\"} 0\n",
                    "ktrigger_config_reloads_total{result=\"invalid\"} 2\n",
                };
                for (size_t i = 0; i < sizeof(want) / sizeof(want[0]); i++)
                        KT_CHECK(strstr(text, want[i]) != NULL, "missing: %s", want[i]);
        }
        KT_CHECK(kt_metrics_healthy(km), "fresh loop is healthy");
        KT_CHECK(!text || !strstr(text, "ktrigger_zookeeper"), "zookeeper metrics without it");
        free(text);
        kt_metrics_destroy(km);
        kt_metrics_destroy(NULL);
        test_zookeeper();
        test_readiness();
        test_duration_buckets();
        return kt_test_done("test_metrics");
}
