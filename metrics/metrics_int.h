/* Internal to metrics/: the registry shared by metrics_registry.c and metrics_http.c. */
#ifndef KT_METRICS_INT_H
#define KT_METRICS_INT_H

#include "metrics.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdint.h>

struct MHD_Daemon;

#define BUCKET_CNT                  35 /* kt_metrics_buckets[] in metrics_registry.c */
#define KT_METRICS_BATCH_BUCKET_CNT 12 /* kt_metrics_batch_buckets[] */

typedef struct topic_metrics {
        _Atomic uint64_t calls;
        _Atomic uint64_t failures;
        _Atomic uint64_t bucket[BUCKET_CNT + 1]; /**< per bucket, last = +Inf; not cumulative */
        _Atomic uint64_t sum_us;
} topic_metrics_t;

/** Topics that may appear by reloads beyond the ones configured at start. */
#define KT_METRICS_SPARE_TOPICS 64

struct kt_metrics {
        const kt_config_t *conf; /**< the start-up configuration: server address only */
        char *handler;           /**< label, copied at start */
        char **topic_names;      /**< labels; [0, topic_cnt) published, append-only */
        topic_metrics_t *topics;
        size_t topic_cap;
        _Atomic size_t topic_cnt;
        _Atomic uint64_t reloads[3]; /**< by kt_metrics_reload_result_t */
        char config_hash[17];        /**< under lines_lock */
        _Atomic uint64_t retries;
        _Atomic uint64_t resends; /**< requests curl sent again on a fresh connection */
        _Atomic uint64_t outcomes[KT_CALL__CNT];
        _Atomic uint64_t dead_lettered;
        _Atomic uint64_t skipped;
        _Atomic uint64_t batch_bucket[KT_METRICS_BATCH_BUCKET_CNT + 1]; /**< last = +Inf */
        _Atomic uint64_t batch_sum;
        _Atomic uint64_t replies;
        _Atomic uint64_t produce_failures[2][2]; /**< [dead letter][permanent] */
        _Atomic uint64_t headers_dropped;
        _Atomic uint64_t trace_invalid;
        _Atomic uint64_t unbuildable;
        _Atomic int runtime_up;
        _Atomic int group_joined;
        _Atomic int64_t heartbeat_ms;
        _Atomic int in_flight;
        _Atomic int assigned;
        _Atomic uint64_t buffered;
        _Atomic uint64_t assigns, revokes, losts, commits, commit_failures, kafka_errors;
        _Atomic uint64_t fetch_wakeups;
        _Atomic uint64_t rebootstraps[2]; /**< [0] consumer, [1] producer */
        _Atomic uint64_t already_done;
        _Atomic int blocked;
        _Atomic int64_t blocked_max_ms;
        pthread_mutex_t lines_lock;
        char *lag_lines;   /**< under lines_lock */
        char *error_lines; /**< under lines_lock */
        _Atomic int paused;
        _Atomic int zk_on; /**< discovery configured (kafka.zookeeper) */
        _Atomic int zk_connected;
        _Atomic int zk_brokers;
        _Atomic int zk_waiting; /**< kafka.zookeeper set and no broker discovered yet */
        _Atomic uint64_t zk_bad;
        _Atomic int ready_kafka; /**< metrics.ready_requires_kafka: /readyz includes Kafka */
        struct MHD_Daemon *server;
};

/** The fields of /proc/self/stat the process metrics use (metrics_process.c). */
typedef struct kt_metrics_proc_stat {
        unsigned long long utime_ticks, stime_ticks; /**< CPU time, clock ticks */
        unsigned long long start_ticks;              /**< start after boot, clock ticks */
        unsigned long long vsize_bytes;
        unsigned long long rss_pages;
} kt_metrics_proc_stat_t;

/** @brief Parse a /proc/<pid>/stat line into \p st. @returns 0, or -1 if malformed. */
int kt_metrics_proc_stat_parse(const char *text, kt_metrics_proc_stat_t *st);

/** @brief Write the process_* metrics (client_golang's process collector: CPU, memory, fds,
 *         start time) to \p f; a metric whose source cannot be read is left out.
 *  @remark Reads /proc/self and getrlimit() now: call it at scrape time. */
void kt_metrics_process_format(FILE *f);

/** @brief Stop the HTTP server if it runs (metrics_http.c). */
void kt_metrics_server_stop(kt_metrics_t *km);

#endif /* KT_METRICS_INT_H */
