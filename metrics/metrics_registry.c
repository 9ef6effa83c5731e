/* The metric values and their Prometheus text format. */
#define _POSIX_C_SOURCE 200809L
#include "metrics_int.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/*
 * Seconds, from millisecond functions up to the 180 s default timeout. Between 10 ms and 1 s,
 * where most functions answer, neighbouring bounds are at most a third apart, so a quantile
 * that histogram_quantile() interpolates inside a bucket is off by at most that much (with
 * 50 and 100 ms neighbours a true 58 ms p95 read 89 ms). Coarser outside. Every earlier bound
 * (and the Prometheus client defaults) is kept, so existing le="..." queries still work.
 */
static const double kt_metrics_buckets[] = {
    0.001, 0.0025, 0.005, 0.0075, 0.01, 0.0125, 0.015, 0.02, 0.025, 0.03, 0.04, 0.05,
    0.06,  0.075,  0.1,   0.125,  0.15, 0.2,    0.25,  0.3,  0.4,   0.5,  0.6,  0.75,
    1,     1.5,    2,     2.5,    5,    7.5,    10,    30,   60,    120,  180};
_Static_assert(sizeof(kt_metrics_buckets) / sizeof(kt_metrics_buckets[0]) == BUCKET_CNT,
               "bucket count");
/* Records per batch request, up to dispatch.batch.max_records' maximum. */
static const unsigned kt_metrics_batch_buckets[] = {1,   2,   5,   10,   20,   50,
                                                    100, 200, 500, 1000, 2000, 10000};
_Static_assert(sizeof(kt_metrics_batch_buckets) / sizeof(kt_metrics_batch_buckets[0]) ==
                   KT_METRICS_BATCH_BUCKET_CNT,
               "batch bucket count");

kt_metrics_t *kt_metrics_new(const kt_config_t *conf) {
        kt_metrics_t *km = calloc(1, sizeof(*km));

        if (!km)
                return NULL;
        km->conf = conf;
        km->topic_cap = conf->topic_cnt + KT_METRICS_SPARE_TOPICS;
        if (!(km->topics = calloc(km->topic_cap, sizeof(*km->topics))) ||
            !(km->topic_names = calloc(km->topic_cap, sizeof(*km->topic_names))) ||
            !(km->handler = strdup(conf->handler))) {
                free(km->topics);
                free(km->topic_names);
                free(km);
                return NULL;
        }
        pthread_mutex_init(&km->lines_lock, NULL);
        snprintf(km->config_hash, sizeof(km->config_hash), "%s", conf->hash);
        for (size_t i = 0; i < conf->topic_cnt; i++)
                if (kt_metrics_topic_index(km, conf->topics[i]) == (size_t)-1) {
                        kt_metrics_destroy(km);
                        return NULL;
                }
        atomic_store(&km->heartbeat_ms, kt_now_ms());
        atomic_store(&km->runtime_up, 1);
        atomic_store(&km->zk_on, conf->zookeeper != NULL);
        atomic_store(&km->zk_waiting, conf->zookeeper != NULL);
        atomic_store(&km->ready_kafka, conf->metrics_ready_kafka);
        return km;
}

void kt_metrics_destroy(kt_metrics_t *km) {
        if (!km)
                return;
        kt_metrics_server_stop(km);
        pthread_mutex_destroy(&km->lines_lock);
        free(km->lag_lines);
        free(km->error_lines);
        for (size_t i = 0; i < km->topic_cap; i++)
                free(km->topic_names[i]);
        free(km->topic_names);
        free(km->handler);
        free(km->topics);
        free(km);
}

size_t kt_metrics_topic_index(kt_metrics_t *km, const char *topic) {
        size_t cnt = atomic_load_explicit(&km->topic_cnt, memory_order_relaxed);

        for (size_t i = 0; i < cnt; i++)
                if (!strcmp(km->topic_names[i], topic))
                        return i;
        if (cnt == km->topic_cap || !(km->topic_names[cnt] = strdup(topic)))
                return (size_t)-1;
        /* Publish the name before the count: the HTTP thread reads [0, count). */
        atomic_store_explicit(&km->topic_cnt, cnt + 1, memory_order_release);
        return cnt;
}

void kt_metrics_reload(kt_metrics_t *km, kt_metrics_reload_result_t result, const char *hash) {
        atomic_fetch_add_explicit(&km->reloads[result], 1, memory_order_relaxed);
        if (result == KT_METRICS_RELOAD_INVALID)
                return;
        pthread_mutex_lock(&km->lines_lock);
        snprintf(km->config_hash, sizeof(km->config_hash), "%s", hash);
        pthread_mutex_unlock(&km->lines_lock);
}

#define INC(field, n) atomic_fetch_add_explicit(&(field), (n), memory_order_relaxed)
#define GET(field)    atomic_load_explicit(&(field), memory_order_relaxed)
#define SET(field, v) atomic_store_explicit(&(field), (v), memory_order_relaxed)

void kt_metrics_call_observe(kt_metrics_t *km, size_t topic_idx, double seconds, int failed) {
        topic_metrics_t *t;

        if (topic_idx >= km->topic_cap)
                return;
        t = &km->topics[topic_idx];
        size_t b;

        for (b = 0; b < BUCKET_CNT && seconds > kt_metrics_buckets[b]; b++)
                ;
        INC(t->calls, 1);
        if (failed)
                INC(t->failures, 1);
        INC(t->bucket[b], 1);
        INC(t->sum_us, (uint64_t)(seconds * 1e6));
}

void kt_metrics_call_resends_add(kt_metrics_t *km, size_t topic_idx, int n) {
        if (n <= 0)
                return;
        INC(km->resends, (uint64_t)n);
        if (topic_idx >= km->topic_cap)
                return;
        INC(km->topics[topic_idx].calls, (uint64_t)n);
        INC(km->topics[topic_idx].failures, (uint64_t)n);
}

void kt_metrics_outcome_inc(kt_metrics_t *km, kt_call_outcome_t outcome) {
        INC(km->outcomes[outcome], 1);
}

void kt_metrics_retry_inc(kt_metrics_t *km) {
        INC(km->retries, 1);
}

void kt_metrics_dead_letter_inc(kt_metrics_t *km) {
        INC(km->dead_lettered, 1);
}

void kt_metrics_reply_inc(kt_metrics_t *km) {
        INC(km->replies, 1);
}

void kt_metrics_produce_failure_inc(kt_metrics_t *km, int dead_letter, int permanent) {
        INC(km->produce_failures[!!dead_letter][!!permanent], 1);
}

void kt_metrics_skip_inc(kt_metrics_t *km) {
        INC(km->skipped, 1);
}

void kt_metrics_batch_observe(kt_metrics_t *km, size_t records) {
        size_t b;

        for (b = 0; b < KT_METRICS_BATCH_BUCKET_CNT && records > kt_metrics_batch_buckets[b]; b++)
                ;
        INC(km->batch_bucket[b], 1);
        INC(km->batch_sum, (uint64_t)records);
}

void kt_metrics_headers_dropped_add(kt_metrics_t *km, int n) {
        INC(km->headers_dropped, (uint64_t)n);
}

void kt_metrics_trace_invalid_inc(kt_metrics_t *km) {
        INC(km->trace_invalid, 1);
}

void kt_metrics_request_unbuildable_inc(kt_metrics_t *km) {
        INC(km->unbuildable, 1);
}

void kt_metrics_runtime_up_set(kt_metrics_t *km, int up) {
        SET(km->runtime_up, up);
}

void kt_metrics_group_joined_set(kt_metrics_t *km, int joined) {
        SET(km->group_joined, joined);
}

void kt_metrics_zookeeper_set(kt_metrics_t *km, int connected, int brokers,
                              uint64_t bad_registrations, int discovered) {
        SET(km->zk_connected, connected);
        SET(km->zk_brokers, brokers);
        SET(km->zk_bad, bad_registrations);
        SET(km->zk_waiting, !discovered);
}

void kt_metrics_zookeeper_enable(kt_metrics_t *km, int on) {
        SET(km->zk_on, on);
        SET(km->zk_waiting, on);
        if (!on) {
                SET(km->zk_connected, 0);
                SET(km->zk_brokers, 0);
        }
}

void kt_metrics_readiness_kafka_set(kt_metrics_t *km, int required) {
        SET(km->ready_kafka, !!required);
}

/*
 * Readiness is about what the pod can serve: a sidecar that is not ready takes the runtime's
 * own port out of its Service too, so by default a Kafka problem (a topic missing, the group
 * not joined, brokers down) does not make it not-ready; it shows in ktrigger_kafka_ready and
 * `/readyz?verbose`. metrics.ready_requires_kafka puts the Kafka conditions back in.
 */
enum { COND_LOOP, COND_RUNTIME, COND_KAFKA_GROUP, COND_ZOOKEEPER, COND__CNT };

typedef struct ready_cond {
        const char *name;
        const char *why; /**< said when it fails */
        int ok;
        int required;
        int shown; /**< ZooKeeper only with kafka.zookeeper */
} ready_cond_t;

static int ready_eval(kt_metrics_t *km, ready_cond_t c[COND__CNT]) {
        int kafka = GET(km->ready_kafka), zk = GET(km->zk_on), ready = 1;

        c[COND_LOOP] = (ready_cond_t){"loop", "the event loop has not run for 30 s",
                                      kt_metrics_healthy(km), 1, 1};
        c[COND_RUNTIME] = (ready_cond_t){"runtime", "the runtime does not accept connections",
                                         GET(km->runtime_up) != 0, 1, 1};
        c[COND_KAFKA_GROUP] = (ready_cond_t){
            "kafka_group",
            "not in the consumer group (joining, no assignment yet, or every broker down)",
            GET(km->group_joined) != 0, kafka, 1};
        c[COND_ZOOKEEPER] =
            (ready_cond_t){"zookeeper", "no broker discovered through ZooKeeper yet",
                           !zk || !GET(km->zk_waiting), kafka && zk, zk};
        for (int i = 0; i < COND__CNT; i++)
                if (c[i].required && !c[i].ok)
                        ready = 0;
        return ready;
}

int kt_metrics_ready(kt_metrics_t *km) {
        ready_cond_t c[COND__CNT];

        return ready_eval(km, c);
}

char *kt_metrics_ready_report(kt_metrics_t *km, int verbose, int *readyp, size_t *lenp) {
        ready_cond_t c[COND__CNT];
        int ready = ready_eval(km, c);
        char *buf = NULL;
        size_t len = 0;
        FILE *f;

        *readyp = ready;
        if (!(f = open_memstream(&buf, &len)))
                return NULL;
        if (ready && !verbose)
                fputs("OK\n", f);
        else {
                for (int i = 0; i < COND__CNT; i++) {
                        if (!c[i].shown || (!verbose && c[i].ok))
                                continue;
                        if (c[i].ok)
                                fprintf(f, "[+]%s ok\n", c[i].name);
                        else
                                fprintf(f, "[-]%s failed%s: %s\n", c[i].name,
                                        c[i].required ? "" : " (not required)", c[i].why);
                }
                fputs(ready ? "readyz check passed\n" : "readyz check failed\n", f);
        }
        if (fclose(f)) {
                free(buf);
                return NULL;
        }
        if (lenp)
                *lenp = len;
        return buf;
}

/** ktrigger_kafka_ready: the Kafka conditions, whether readiness includes them or not. */
static int kafka_ready(kt_metrics_t *km) {
        return GET(km->group_joined) && !(GET(km->zk_on) && GET(km->zk_waiting));
}

void kt_metrics_consumer_set(kt_metrics_t *km, uint64_t assigns, uint64_t revokes, uint64_t losts,
                             uint64_t commits, uint64_t commit_failures, uint64_t kafka_errors,
                             uint64_t fetch_wakeups) {
        SET(km->assigns, assigns);
        SET(km->revokes, revokes);
        SET(km->losts, losts);
        SET(km->commits, commits);
        SET(km->commit_failures, commit_failures);
        SET(km->kafka_errors, kafka_errors);
        SET(km->fetch_wakeups, fetch_wakeups);
}

void kt_metrics_rebootstraps_set(kt_metrics_t *km, uint64_t consumer, uint64_t producer) {
        SET(km->rebootstraps[0], consumer);
        SET(km->rebootstraps[1], producer);
}

void kt_metrics_delivery_set(kt_metrics_t *km, uint64_t already_done, int blocked,
                             double blocked_max_s) {
        SET(km->already_done, already_done);
        SET(km->blocked, blocked);
        SET(km->blocked_max_ms, (int64_t)(blocked_max_s * 1000.0));
}

void kt_metrics_paused_set(kt_metrics_t *km, int paused) {
        SET(km->paused, paused);
}

/** Hand over a copy of \p lines to *\p slot, read by the HTTP thread under lines_lock. */
static void lines_swap(kt_metrics_t *km, char **slot, const char *lines) {
        char *copy = lines ? strdup(lines) : NULL, *old;

        pthread_mutex_lock(&km->lines_lock);
        old = *slot;
        *slot = copy;
        pthread_mutex_unlock(&km->lines_lock);
        free(old);
}

void kt_metrics_errors_set(kt_metrics_t *km, const char *lines) {
        lines_swap(km, &km->error_lines, lines);
}

void kt_metrics_lag_set(kt_metrics_t *km, const char *lines) {
        lines_swap(km, &km->lag_lines, lines);
}

void kt_metrics_heartbeat(kt_metrics_t *km) {
        SET(km->heartbeat_ms, kt_now_ms());
}

int kt_metrics_healthy(kt_metrics_t *km) {
        return kt_now_ms() - GET(km->heartbeat_ms) < KT_METRICS_HEALTHZ_STALL_MS;
}

void kt_metrics_gauges_set(kt_metrics_t *km, int in_flight, int assigned_partitions,
                           size_t buffered) {
        SET(km->in_flight, in_flight);
        SET(km->assigned, assigned_partitions);
        SET(km->buffered, (uint64_t)buffered);
}

/** Label values are escaped as the exposition format requires. */
static void put_label(FILE *f, const char *v) {
        for (; *v; v++) {
                if (*v == '\\')
                        fputs("\\\\", f);
                else if (*v == '"')
                        fputs("\\\"", f);
                else if (*v == '\n')
                        fputs("\\n", f);
                else
                        fputc(*v, f);
        }
}

static void put_labels(FILE *f, const char *handler, const char *topic) {
        fputs("function=\"", f);
        put_label(f, handler);
        fputs("\",topic=\"", f);
        put_label(f, topic);
        fputc('"', f);
}

char *kt_metrics_format(kt_metrics_t *km, size_t *lenp) {
        size_t topic_cnt = atomic_load_explicit(&km->topic_cnt, memory_order_acquire);
        char *buf = NULL;
        size_t len = 0;
        FILE *f = open_memstream(&buf, &len);

        if (!f)
                return NULL;

        fputs("# HELP function_calls_total Number of calls to the function.\n"
              "# TYPE function_calls_total counter\n",
              f);
        for (size_t i = 0; i < topic_cnt; i++) {
                fputs("function_calls_total{", f);
                put_labels(f, km->handler, km->topic_names[i]);
                fprintf(f, "} %llu\n", (unsigned long long)GET(km->topics[i].calls));
        }
        fputs("# HELP function_failures_total Number of calls that did not answer 2xx.\n"
              "# TYPE function_failures_total counter\n",
              f);
        for (size_t i = 0; i < topic_cnt; i++) {
                fputs("function_failures_total{", f);
                put_labels(f, km->handler, km->topic_names[i]);
                fprintf(f, "} %llu\n", (unsigned long long)GET(km->topics[i].failures));
        }
        fputs("# HELP function_duration_seconds Duration of function calls in seconds.\n"
              "# TYPE function_duration_seconds histogram\n",
              f);
        for (size_t i = 0; i < topic_cnt; i++) {
                const topic_metrics_t *t = &km->topics[i];
                uint64_t cum = 0;

                for (size_t b = 0; b <= BUCKET_CNT; b++) {
                        cum += GET(t->bucket[b]);
                        fputs("function_duration_seconds_bucket{", f);
                        put_labels(f, km->handler, km->topic_names[i]);
                        if (b < BUCKET_CNT)
                                fprintf(f, ",le=\"%g\"} %llu\n", kt_metrics_buckets[b],
                                        (unsigned long long)cum);
                        else
                                fprintf(f, ",le=\"+Inf\"} %llu\n", (unsigned long long)cum);
                }
                fputs("function_duration_seconds_sum{", f);
                put_labels(f, km->handler, km->topic_names[i]);
                fprintf(f, "} %.6f\n", (double)GET(t->sum_us) / 1e6);
                fputs("function_duration_seconds_count{", f);
                put_labels(f, km->handler, km->topic_names[i]);
                fprintf(f, "} %llu\n", (unsigned long long)cum);
        }
        fprintf(f,
                "# HELP ktrigger_retries_total Calls scheduled again after a failure.\n"
                "# TYPE ktrigger_retries_total counter\n"
                "ktrigger_retries_total %llu\n"
                "# HELP ktrigger_call_resends_total Requests libcurl sent again on a fresh "
                "connection after a reused one died before any answer.\n"
                "# TYPE ktrigger_call_resends_total counter\n"
                "ktrigger_call_resends_total %llu\n"
                "# HELP ktrigger_dead_lettered_total Records written to the dead-letter topic.\n"
                "# TYPE ktrigger_dead_lettered_total counter\n"
                "ktrigger_dead_lettered_total %llu\n"
                "# HELP ktrigger_replies_total Function answers written to the reply topic.\n"
                "# TYPE ktrigger_replies_total counter\n"
                "ktrigger_replies_total %llu\n"
                "# HELP ktrigger_skipped_total Records skipped after their retries.\n"
                "# TYPE ktrigger_skipped_total counter\n"
                "ktrigger_skipped_total %llu\n"
                "# HELP ktrigger_record_headers_dropped_total Record headers not forwarded "
                "(not an HTTP token, too big, or over the request's header cap).\n"
                "# TYPE ktrigger_record_headers_dropped_total counter\n"
                "ktrigger_record_headers_dropped_total %llu\n"
                "# HELP ktrigger_trace_context_invalid_total Records whose traceparent or "
                "tracestate header was not valid W3C trace context (not propagated).\n"
                "# TYPE ktrigger_trace_context_invalid_total counter\n"
                "ktrigger_trace_context_invalid_total %llu\n"
                "# HELP ktrigger_requests_unbuildable_total Records whose HTTP request could not "
                "be built (no call made; dispatch.on_failure applied).\n"
                "# TYPE ktrigger_requests_unbuildable_total counter\n"
                "ktrigger_requests_unbuildable_total %llu\n"
                "# HELP ktrigger_runtime_up Whether the function runtime accepts connections.\n"
                "# TYPE ktrigger_runtime_up gauge\n"
                "ktrigger_runtime_up %d\n"
                "# HELP ktrigger_kafka_ready Whether the consumer is in its group (and, with "
                "kafka.zookeeper, a broker was discovered).\n"
                "# TYPE ktrigger_kafka_ready gauge\n"
                "ktrigger_kafka_ready %d\n"
                "# HELP ktrigger_in_flight Calls to the function in flight.\n"
                "# TYPE ktrigger_in_flight gauge\n"
                "ktrigger_in_flight %d\n"
                "# HELP ktrigger_assigned_partitions Partitions assigned to this replica.\n"
                "# TYPE ktrigger_assigned_partitions gauge\n"
                "ktrigger_assigned_partitions %d\n"
                "# HELP ktrigger_buffered_records Records held by ktrigger, not yet done.\n"
                "# TYPE ktrigger_buffered_records gauge\n"
                "ktrigger_buffered_records %llu\n"
                "# HELP ktrigger_build_info Build information.\n"
                "# TYPE ktrigger_build_info gauge\n"
                "ktrigger_build_info{version=\"%s\"} 1\n",
                (unsigned long long)GET(km->retries), (unsigned long long)GET(km->resends),
                (unsigned long long)GET(km->dead_lettered), (unsigned long long)GET(km->replies),
                (unsigned long long)GET(km->skipped), (unsigned long long)GET(km->headers_dropped),
                (unsigned long long)GET(km->trace_invalid),
                (unsigned long long)GET(km->unbuildable), GET(km->runtime_up), kafka_ready(km),
                GET(km->in_flight), GET(km->assigned), (unsigned long long)GET(km->buffered),
                KT_VERSION);
        {
                uint64_t cum = 0;
                fputs("# HELP ktrigger_batch_records Records per batch request "
                      "(dispatch.batch.max_records > 1).\n"
                      "# TYPE ktrigger_batch_records histogram\n",
                      f);
                for (size_t b = 0; b <= KT_METRICS_BATCH_BUCKET_CNT; b++) {
                        cum += GET(km->batch_bucket[b]);
                        if (b < KT_METRICS_BATCH_BUCKET_CNT)
                                fprintf(f, "ktrigger_batch_records_bucket{le=\"%u\"} %llu\n",
                                        kt_metrics_batch_buckets[b], (unsigned long long)cum);
                        else
                                fprintf(f, "ktrigger_batch_records_bucket{le=\"+Inf\"} %llu\n",
                                        (unsigned long long)cum);
                }
                fprintf(f, "ktrigger_batch_records_sum %llu\nktrigger_batch_records_count %llu\n",
                        (unsigned long long)GET(km->batch_sum), (unsigned long long)cum);
        }
        fputs("# HELP ktrigger_produce_failures_total Replies and dead letters Kafka refused, "
              "for good (permanent) or not (transient).\n"
              "# TYPE ktrigger_produce_failures_total counter\n",
              f);
        for (int d = 0; d < 2; d++)
                for (int perm = 0; perm < 2; perm++)
                        fprintf(f,
                                "ktrigger_produce_failures_total{kind=\"%s\",error=\"%s\"} %llu\n",
                                d ? "dead_letter" : "reply", perm ? "permanent" : "transient",
                                (unsigned long long)GET(km->produce_failures[d][perm]));
        {
                static const char *const names[KT_CALL__CNT] = {
                    "success", "http_4xx",      "http_5xx",       "http_other",
                    "timeout", "connect_error", "transport_error"};
                fputs("# HELP ktrigger_calls_total Calls to the runtime by how they ended.\n"
                      "# TYPE ktrigger_calls_total counter\n",
                      f);
                for (int o = 0; o < KT_CALL__CNT; o++)
                        fprintf(f, "ktrigger_calls_total{outcome=\"%s\"} %llu\n", names[o],
                                (unsigned long long)GET(km->outcomes[o]));
        }
        if (GET(km->zk_on))
                fprintf(f,
                        "# HELP ktrigger_zookeeper_connected Whether the ZooKeeper session used "
                        "for broker discovery is connected.\n"
                        "# TYPE ktrigger_zookeeper_connected gauge\n"
                        "ktrigger_zookeeper_connected %d\n"
                        "# HELP ktrigger_zookeeper_brokers Brokers registered in ZooKeeper with "
                        "a usable endpoint.\n"
                        "# TYPE ktrigger_zookeeper_brokers gauge\n"
                        "ktrigger_zookeeper_brokers %d\n"
                        "# HELP ktrigger_zookeeper_bad_registrations_total Broker registrations "
                        "skipped (malformed, or no endpoint for the protocol/listener).\n"
                        "# TYPE ktrigger_zookeeper_bad_registrations_total counter\n"
                        "ktrigger_zookeeper_bad_registrations_total %llu\n",
                        GET(km->zk_connected), GET(km->zk_brokers),
                        (unsigned long long)GET(km->zk_bad));
        fprintf(
            f,
            "# HELP ktrigger_rebalances_total Rebalance events by type.\n"
            "# TYPE ktrigger_rebalances_total counter\n"
            "ktrigger_rebalances_total{type=\"assign\"} %llu\n"
            "ktrigger_rebalances_total{type=\"revoke\"} %llu\n"
            "ktrigger_rebalances_total{type=\"lost\"} %llu\n"
            "# HELP ktrigger_commits_total Offset commits that succeeded.\n"
            "# TYPE ktrigger_commits_total counter\n"
            "ktrigger_commits_total %llu\n"
            "# HELP ktrigger_commit_failures_total Offset commits that failed.\n"
            "# TYPE ktrigger_commit_failures_total counter\n"
            "ktrigger_commit_failures_total %llu\n"
            "# HELP ktrigger_kafka_errors_all_total Errors reported by librdkafka.\n"
            "# TYPE ktrigger_kafka_errors_all_total counter\n"
            "ktrigger_kafka_errors_all_total %llu\n"
            "# HELP ktrigger_fetch_wakeups_total Seeks made to wake a partition's fetcher "
            "after its prefetch went over its bounds.\n"
            "# TYPE ktrigger_fetch_wakeups_total counter\n"
            "ktrigger_fetch_wakeups_total %llu\n"
            "# HELP ktrigger_kafka_rebootstraps_total Times ktrigger added the bootstrap "
            "brokers again because librdkafka had no broker left to connect to.\n"
            "# TYPE ktrigger_kafka_rebootstraps_total counter\n"
            "ktrigger_kafka_rebootstraps_total{client=\"consumer\"} %llu\n"
            "ktrigger_kafka_rebootstraps_total{client=\"producer\"} %llu\n"
            "# HELP ktrigger_records_already_done_total Records not called because a "
            "previous owner of their partition finished them (commit metadata).\n"
            "# TYPE ktrigger_records_already_done_total counter\n"
            "ktrigger_records_already_done_total %llu\n"
            "# HELP ktrigger_partitions_blocked Partitions whose oldest unfinished record "
            "has failed at least once (a call, or writing its reply or dead letter): "
            "nothing behind it is committed.\n"
            "# TYPE ktrigger_partitions_blocked gauge\n"
            "ktrigger_partitions_blocked %d\n"
            "# HELP ktrigger_partition_blocked_seconds_max How long the longest-blocked "
            "partition has been blocked on one record.\n"
            "# TYPE ktrigger_partition_blocked_seconds_max gauge\n"
            "ktrigger_partition_blocked_seconds_max %.3f\n"
            "# HELP ktrigger_paused_partitions Partitions paused (runtime down, draining).\n"
            "# TYPE ktrigger_paused_partitions gauge\n"
            "ktrigger_paused_partitions %d\n"
            "# HELP ktrigger_consumer_lag Records behind the end of the partition "
            "(librdkafka statistics, every 5 s).\n"
            "# TYPE ktrigger_consumer_lag gauge\n",
            (unsigned long long)GET(km->assigns), (unsigned long long)GET(km->revokes),
            (unsigned long long)GET(km->losts), (unsigned long long)GET(km->commits),
            (unsigned long long)GET(km->commit_failures), (unsigned long long)GET(km->kafka_errors),
            (unsigned long long)GET(km->fetch_wakeups),
            (unsigned long long)GET(km->rebootstraps[0]),
            (unsigned long long)GET(km->rebootstraps[1]), (unsigned long long)GET(km->already_done),
            GET(km->blocked), (double)GET(km->blocked_max_ms) / 1000.0, GET(km->paused));
        pthread_mutex_lock(&km->lines_lock);
        if (km->lag_lines)
                fputs(km->lag_lines, f);
        fputs("# HELP ktrigger_kafka_errors_total Errors reported by librdkafka, by code.\n"
              "# TYPE ktrigger_kafka_errors_total counter\n",
              f);
        if (km->error_lines)
                fputs(km->error_lines, f);
        fprintf(f,
                "# HELP ktrigger_config_info The running configuration (hash of its settings, "
                "secrets excluded).\n"
                "# TYPE ktrigger_config_info gauge\n"
                "ktrigger_config_info{hash=\"%s\"} 1\n",
                km->config_hash);
        pthread_mutex_unlock(&km->lines_lock);
        fprintf(f,
                "# HELP ktrigger_config_reloads_total Configuration reloads (SIGHUP) by result.\n"
                "# TYPE ktrigger_config_reloads_total counter\n"
                "ktrigger_config_reloads_total{result=\"applied\"} %llu\n"
                "ktrigger_config_reloads_total{result=\"unchanged\"} %llu\n"
                "ktrigger_config_reloads_total{result=\"invalid\"} %llu\n",
                (unsigned long long)GET(km->reloads[KT_METRICS_RELOAD_APPLIED]),
                (unsigned long long)GET(km->reloads[KT_METRICS_RELOAD_UNCHANGED]),
                (unsigned long long)GET(km->reloads[KT_METRICS_RELOAD_INVALID]));
        kt_metrics_process_format(f);
        if (fclose(f)) {
                free(buf);
                return NULL;
        }
        if (lenp)
                *lenp = len;
        return buf;
}
