/**
 * @file metrics.h
 * @brief Counters and histograms bumped by the loop thread with relaxed atomics, formatted as
 *        Prometheus text only when scraped; /metrics, /healthz and /readyz served by
 *        libmicrohttpd's own thread, which only reads atomics (and /proc/self for the
 *        process_* metrics).
 */
#ifndef KT_METRICS_H
#define KT_METRICS_H

#include "../config/config.h"
#include "../core/core.h"

#include <stddef.h>
#include <stdint.h>

typedef struct kt_metrics kt_metrics_t;

/** A loop that has not ticked for this long is reported unhealthy by /healthz. */
#define KT_METRICS_HEALTHZ_STALL_MS 30000

/**
 * @brief Create the metrics (labelled with the handler and each configured topic, copied).
 * @returns NULL on allocation failure. \p conf must outlive the metrics server: it gives the
 *          listen address (metrics.listen applies at start only).
 */
kt_metrics_t *kt_metrics_new(const kt_config_t *conf);

/** @brief Stop the server if running and free. NULL is a no-op. */
void kt_metrics_destroy(kt_metrics_t *km);

/**
 * @brief Serve /metrics and /healthz on conf->metrics_host:metrics_port.
 * @returns KT_OK, or an error with the reason in \p errstr.
 */
kt_err_t kt_metrics_server_start(kt_metrics_t *km, char *errstr, size_t errstr_size);

/**
 * @brief The index of \p topic's call metrics, added if new (a reload may add topics).
 * @returns the index, or (size_t)-1 when KT_METRICS_SPARE_TOPICS new topics were used up.
 * @remark @locality loop thread (the only writer); the HTTP thread sees published ones.
 */
size_t kt_metrics_topic_index(kt_metrics_t *km, const char *topic);

/** @brief Count one function call of topic \p topic_idx (from kt_metrics_topic_index(); -1 is
 *         ignored) that took \p seconds. */
void kt_metrics_call_observe(kt_metrics_t *km, size_t topic_idx, double seconds, int failed);

/**
 * @brief Count \p n more calls of topic \p topic_idx: requests libcurl sent again by itself,
 *        on a fresh connection, after a reused keep-alive one died before any answer. Each
 *        reached the runtime (function_calls_total, and function_failures_total: it got no
 *        answer) but has no duration of its own (not in function_duration_seconds), and counts
 *        in ktrigger_call_resends_total.
 */
void kt_metrics_call_resends_add(kt_metrics_t *km, size_t topic_idx, int n);

/** How a call ended, for ktrigger_calls_total{outcome}. */
typedef enum kt_call_outcome {
        KT_CALL_SUCCESS,
        KT_CALL_HTTP_4XX,
        KT_CALL_HTTP_5XX,
        KT_CALL_HTTP_OTHER,
        KT_CALL_TIMEOUT,
        KT_CALL_CONNECT_ERROR,
        KT_CALL_TRANSPORT_ERROR,
        KT_CALL__CNT
} kt_call_outcome_t;

/** @brief Count one call by how it ended. */
void kt_metrics_outcome_inc(kt_metrics_t *km, kt_call_outcome_t outcome);

/** @brief Count one retry scheduled. */
void kt_metrics_retry_inc(kt_metrics_t *km);

/** @brief Count a record written to the dead-letter topic. */
void kt_metrics_dead_letter_inc(kt_metrics_t *km);

/** @brief Count a reply written to the reply topic. */
void kt_metrics_reply_inc(kt_metrics_t *km);

/** @brief Count Kafka refusing a reply (or, \p dead_letter, a dead letter), \p permanent
 *         (for good) or not: ktrigger_produce_failures_total{kind,error}. */
void kt_metrics_produce_failure_inc(kt_metrics_t *km, int dead_letter, int permanent);

/** @brief Count a record skipped after its retries (dispatch.on_failure = "skip"). */
void kt_metrics_skip_inc(kt_metrics_t *km);

/** @brief A batch request of \p records records was sent (ktrigger_batch_records). */
void kt_metrics_batch_observe(kt_metrics_t *km, size_t records);

/** @brief Count record headers (and keys) that could not be forwarded. */
void kt_metrics_headers_dropped_add(kt_metrics_t *km, int n);

/** @brief Count a record whose traceparent/tracestate headers were not valid W3C trace
 *         context and were not propagated. */
void kt_metrics_trace_invalid_inc(kt_metrics_t *km);

/** @brief Count a record whose request libcurl could not build (no call was made). */
void kt_metrics_request_unbuildable_inc(kt_metrics_t *km);

/** @brief Report whether the runtime answers (1) or nothing listens (0). */
void kt_metrics_runtime_up_set(kt_metrics_t *km, int up);

/** @brief Report whether the consumer is in the group with an assignment (possibly empty). */
void kt_metrics_group_joined_set(kt_metrics_t *km, int joined);

/** @brief Set the consumer's counters: rebalances by type, commits, commit failures, errors,
 *  fetcher wake-ups. */
void kt_metrics_consumer_set(kt_metrics_t *km, uint64_t assigns, uint64_t revokes, uint64_t losts,
                             uint64_t commits, uint64_t commit_failures, uint64_t kafka_errors,
                             uint64_t fetch_wakeups);

/**
 * @brief Replace the per-partition consumer lag samples.
 * @param lines Prometheus sample lines `ktrigger_consumer_lag{...} N\n`, copied.
 * @remark The HTTP thread reads it under a lock: this is a hand-over, not shared state.
 */
void kt_metrics_lag_set(kt_metrics_t *km, const char *lines);

/**
 * @brief The delivery contract's counters: records skipped because a previous owner finished
 *        them (its commit's completed-offset map), partitions whose oldest unfinished record
 *        has failed at least once (blocked on it), and how long the longest of those has been.
 */
/** @brief Set how often ktrigger added the bootstrap brokers again to each client
 *  (kt_rebootstrap_t). */
void kt_metrics_rebootstraps_set(kt_metrics_t *km, uint64_t consumer, uint64_t producer);

void kt_metrics_delivery_set(kt_metrics_t *km, uint64_t already_done, int blocked,
                             double blocked_max_s);

/** @brief Set the number of partitions paused now. */
void kt_metrics_paused_set(kt_metrics_t *km, int paused);

/** @brief Replace the `ktrigger_kafka_errors_total{code=...}` sample lines (copied). */
void kt_metrics_errors_set(kt_metrics_t *km, const char *lines);

/** Outcome of a configuration reload, for ktrigger_config_reloads_total{result}. */
typedef enum kt_metrics_reload_result {
        KT_METRICS_RELOAD_APPLIED,
        KT_METRICS_RELOAD_UNCHANGED,
        KT_METRICS_RELOAD_INVALID
} kt_metrics_reload_result_t;

/** @brief Count a reload and, unless it was invalid, label ktrigger_config_info with \p hash. */
void kt_metrics_reload(kt_metrics_t *km, kt_metrics_reload_result_t result, const char *hash);

/**
 * @brief Report ZooKeeper broker discovery (kafka.zookeeper): session connected, brokers known
 *        from it now, bad registrations so far, and whether any broker was discovered yet
 *        (until then ktrigger_kafka_ready is 0 and, with metrics.ready_requires_kafka,
 *        /readyz is not ready).
 */
void kt_metrics_zookeeper_set(kt_metrics_t *km, int connected, int brokers,
                              uint64_t bad_registrations, int discovered);

/** @brief Discovery is configured (\p on: not ready until a broker is discovered) or not,
 *         after a reload re-joined with other kafka.* settings. */
void kt_metrics_zookeeper_enable(kt_metrics_t *km, int on);

/** @brief Whether /readyz also requires Kafka (metrics.ready_requires_kafka): the group joined
 *         and, with kafka.zookeeper, a broker discovered. */
void kt_metrics_readiness_kafka_set(kt_metrics_t *km, int required);

/** @returns non-zero when /readyz should answer 200: the loop alive and the runtime up (what
 *  the pod can serve) and, with metrics.ready_requires_kafka, the Kafka conditions too. */
int kt_metrics_ready(kt_metrics_t *km);

/**
 * @brief The /readyz body: "OK\n" when ready and not \p verbose; otherwise one line per
 *        condition (\p verbose: all; else the failing ones), `[+]name ok` or
 *        `[-]name failed: reason`, `(not required)` for a failing one readiness does not
 *        include, then `readyz check passed` or `readyz check failed`.
 * @param readyp set to kt_metrics_ready()'s answer for the same snapshot.
 * @returns a new string (caller frees), NULL on allocation failure.
 * @remark Thread-safe: reads atomics only.
 */
char *kt_metrics_ready_report(kt_metrics_t *km, int verbose, int *readyp, size_t *lenp);

/** @brief Record that the loop is alive (called every loop iteration). */
void kt_metrics_heartbeat(kt_metrics_t *km);

/** @brief Set the gauges sampled by the loop. */
void kt_metrics_gauges_set(kt_metrics_t *km, int in_flight, int assigned_partitions,
                           size_t buffered);

/**
 * @brief Format the Prometheus text exposition.
 * @returns a new NUL-terminated string (caller frees) or NULL on allocation failure.
 * @remark Thread-safe: reads atomics only.
 */
char *kt_metrics_format(kt_metrics_t *km, size_t *lenp);

/** @returns non-zero if the loop ticked within KT_METRICS_HEALTHZ_STALL_MS. */
int kt_metrics_healthy(kt_metrics_t *km);

#endif /* KT_METRICS_H */
