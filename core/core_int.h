/**
 * @file core_int.h
 * @brief The loop's own state, shared by the files of core/ that drive it: core_loop.c (the
 *        event loop and the loop's life), core_record.c (a record's life: calls, retries,
 *        replies, dead letters), core_health.c (the runtime being down) and core_reload.c
 *        (SIGHUP). Nothing outside core/ includes it.
 *
 * @locality every function here runs on the loop thread.
 */
#ifndef KT_CORE_INT_H
#define KT_CORE_INT_H

#include "core.h"

#include "../config/config.h"
#include "../consumer/consumer.h"
#include "../dispatch/dispatch.h"
#include "../metrics/metrics.h"

#include <stdint.h>

/** Kafka events served per iteration before curl gets its turn. */
#define KT_LOOP_KAFKA_BUDGET 1000
/** Longest sleep: bounds how stale the health heartbeat can get. */
#define KT_LOOP_MAX_WAIT_MS 1000
/** Runtime health probes back off from the first to the second. */
#define KT_PROBE_MIN_MS 100
#define KT_PROBE_MAX_MS 5000
/** Waiting at start for a runtime that does not answer: a WARN after this long, and again
 *  at most this often. */
#define KT_RUNTIME_WAIT_WARN_MS       10000
#define KT_RUNTIME_WAIT_WARN_EVERY_MS 60000
/** After an allocation failure in the dispatch path, start nothing for this long. */
#define KT_NOMEM_PAUSE_MS 100

/**
 * The loop's life. One transition function (loop_state_set) logs every change.
 *
 *   RUNNING --SIGHUP needing a re-join--> REJOIN_DRAIN --drained--> REJOIN_COMMIT --> RUNNING
 *      |                                      |  (new consumer)          |
 *      +--SIGTERM/SIGINT--> SHUTDOWN_DRAIN <--+ --drained--> SHUTDOWN_COMMIT <-+--> STOPPED
 *
 * *_DRAIN: fetching is held (every partition paused), the buffered records keep being
 * started, retried and finished until none is left that is not done, the drain deadline
 * (dispatch.drain_timeout_ms) passes, or the runtime is down (nothing could finish).
 * "drained": the rest is released (calls cancelled: never committed) and one commit of all
 * partitions, with the completed-offset map, starts. *_COMMIT: nothing starts; the commit is
 * tried again while the group refuses it (a rebalance in progress) until the deadline (at
 * least KT_COMMIT_MIN_WAIT_MS after the drain; kt_consumer_commit_wait_step). A commit that never
 * completes is a WARN saying how many finished records may come again; a shutdown still exits 0.
 */
typedef enum kt_loop_state {
        KT_LOOP_RUNNING,
        KT_LOOP_REJOIN_DRAIN,
        KT_LOOP_REJOIN_COMMIT,
        KT_LOOP_SHUTDOWN_DRAIN,
        KT_LOOP_SHUTDOWN_COMMIT,
        KT_LOOP_STOPPED
} kt_loop_state_t;

/** The partitions' blocked gauges are recomputed at most this often (a scan of them all). */
#define KT_LOOP_METRICS_SCAN_MS 1000
/** Replies and dead letters still in flight at a re-join or exit are waited for this long, in
 *  flushes of KT_LOOP_FLUSH_STEP_MS with a heartbeat between them. */
#define KT_LOOP_FLUSH_MS      5000
#define KT_LOOP_FLUSH_STEP_MS 100
/** Closing (leaving the group, flushing the producer, destroying both: each bounded on its
 *  own) that has not finished this long after it began is taken as hung and the process
 *  exits (see kt_watchdog_arm): KT_CONSUMER_CLOSE_MS to leave, KT_LOOP_FLUSH_MS to flush, and
 *  60 s for librdkafka's destroy, which waits up to session.timeout.ms (45 s by default) for
 *  requests still out. */
#define KT_LOOP_CLOSE_WATCHDOG_MS (KT_CONSUMER_CLOSE_MS + KT_LOOP_FLUSH_MS + 60000)

/** The loop's own fds it sleeps on (kt_loop_wait), besides curl's sockets. */
typedef enum kt_loop_fd {
        KT_LOOP_FD_KAFKA,   /**< the consumer's wake-up fd */
        KT_LOOP_FD_SIGNAL,  /**< the signalfd */
        KT_LOOP_FD_PRODUCE, /**< the producer's wake-up fd */
        KT_LOOP_FD_ZK,      /**< ZooKeeper discovery's wake-up fd */
        KT_LOOP_FD_RELOAD,  /**< a reload's child's pipe */
        KT_LOOP_FD_CNT
} kt_loop_fd_t;

typedef struct kt_loop {
        kt_loop_state_t state;
        kt_config_t *conf;
        kt_config_t **confp; /**< the caller's pointer: updated on reload */
        kt_consumer_hooks_t hooks;
        size_t *topic_map; /**< conf->topics index -> metrics topic index */
        int reload_asked;
        kt_config_reader_t *reader;    /**< a reload being read (SIGHUP), NULL if none */
        kt_config_t *rejoin_conf;      /**< REJOIN_*: the configuration to join with */
        int64_t drain_deadline_ms;     /**< *_DRAIN and *_COMMIT: when to give up waiting */
        kt_commit_wait_t final_commit; /**< *_COMMIT: the commit waited for */
        int final_committed;           /**< and it completed (the close watchdog's status) */
        int64_t metrics_scan_at_ms;    /**< the next scan of the partitions for the metrics */
        int metrics_blocked;           /**< and what the last one found: blocked partitions, */
        double metrics_blocked_s;      /**< the longest blocked, seconds */
        int64_t nomem_until_ms;        /**< start no call before (an allocation failed) */
        kt_event_t *ke;                /**< the event core everything below sleeps on */
        kt_consumer_t *kc;
        kt_dispatch_t *kd;
        kt_metrics_t *km;
        kt_sched_t *ks;
        kt_produce_t *kp; /**< NULL unless on_failure = dead-letter or a reply_topic is set */
        kt_zk_t *zk;      /**< NULL unless kafka.zookeeper is set */
        int sigfd;
        int fds[KT_LOOP_FD_CNT]; /**< the loop's own fds now in the event core, -1: none */
        int64_t next_due_ms;     /**< earliest timer (retry or probe), INT64_MAX if none */
        int runtime_down;
        int probing;
        int64_t probe_at_ms;
        int probe_backoff_ms;
        /* batching (dispatch.batch.max_records > 1), see core_record.c */
        kt_dispatch_batch_t batch_body; /**< the batch body being built */
        kt_record_t **batch_cand;       /**< its records, in the order added */
        size_t batch_cand_cap;
} kt_loop_t;

/** A reply or dead letter in flight. The record may be dropped (revoked) before Kafka answers;
 *  then rec is NULLed and the report is ignored. */
typedef struct ticket {
        kt_record_t *rec;
        char *reply; /**< the reply librdkafka borrows (owned here until the report), or NULL */
} ticket_t;

/* ---------------------------------------------------------------- core_loop.c */

/** @brief Wake the loop no later than \p at_ms (kt_now_ms). */
void kt_loop_wake_at(kt_loop_t *kl, int64_t at_ms);

/**
 * @brief Register the loop's own fds as they are now with the event core (\p joined: all of
 *        them; 0, waiting for the runtime before joining: the signalfd and a reload's pipe only,
 *        nothing else is served then) and sleep on it, at most \p timeout_ms (negative: 0,
 *        never "no limit").
 */
void kt_loop_wait(kt_loop_t *kl, int timeout_ms, int joined);

/** @brief Take the loop's own fds out of the event core: call before closing any of them (a
 *         new fd may get the number); the next kt_loop_wait() registers what is there then. */
void kt_loop_fds_forget(kt_loop_t *kl);

/** @brief The one transition function of the loop's life (see kt_loop_state_t). */
void kt_loop_state_set(kt_loop_t *kl, kt_loop_state_t st);

/** @returns 1 if a stop signal arrived (SIGHUP sets reload_asked). */
int kt_loop_signals_read(kt_loop_t *kl);

/** kt_zk_broker_cb: a broker found in ZooKeeper becomes a bootstrap broker of both clients. */
void kt_loop_zk_broker(void *opaque, const char *hostport);

/** @brief Leave the group and flush the producer, keeping the health heartbeat going (each is
 *         bounded); then destroy both (kl->kc, kl->kp NULL). */
void kt_loop_kafka_close(kt_loop_t *kl);

/* ---------------------------------------------------------------- core_record.c: a record's
 * life (calls, retries, replies, dead letters), driven by the loop */

/** @brief Start what may start now; recompute when the loop must wake up next. */
void kt_loop_dispatch_ready(kt_loop_t *kl);

/** kt_dispatch_done_cb: a call finished. */
void kt_loop_call_done(void *opaque, const kt_dispatch_result_t *res, void *cbarg);

/** kt_produce_done_cb: Kafka answered for a reply or dead letter. */
void kt_loop_produced(void *opaque, rd_kafka_resp_err_t err, void *cbarg);

/** kt_consumer_hooks_t.release: cancel a released partition's calls, forget its records. */
void kt_loop_partition_release(void *opaque, kt_partition_t *p, int lost);

/** kt_consumer_hooks_t.record: a record was buffered. */
void kt_loop_record_add(void *opaque, kt_record_t *rec);

/** @brief Serve the reply/dead-letter producer's delivery reports. */
void kt_loop_produce_poll(kt_loop_t *kl);

/** @brief Free the batch building storage (at the end). */
void kt_loop_batch_free(kt_loop_t *kl);

/* ---------------------------------------------------------------- core_health.c */

/** @brief The runtime refuses connections: hold every partition, probe with back-off. */
void kt_loop_runtime_down_enter(kt_loop_t *kl);

/** kt_dispatch_probe_cb: a health probe answered. */
void kt_loop_probe_done(int up, void *cbarg);

/** @brief Before joining: wait until the runtime answers. @returns 0, 1 if asked to stop. */
int kt_loop_runtime_wait(kt_loop_t *kl);

/* ---------------------------------------------------------------- core_reload.c */

/** @brief SIGHUP: start reading the configuration again (in a child process). */
void kt_loop_reload(kt_loop_t *kl);

/** @brief Serve the reload being read, if any: apply it once read, or log why not.
 *  @returns 1 if a new configuration was applied (or a re-join with it is waiting). */
int kt_loop_reload_poll(kt_loop_t *kl);

/** @brief REJOIN_COMMIT is over: leave, join again. @returns 0, -1 if no consumer at all. */
int kt_loop_rejoin(kt_loop_t *kl);

/** @brief Map the configuration's topics to their metrics. @returns 0, -1 out of memory. */
int kt_loop_topic_map_build(kt_loop_t *kl);

/** @brief Make the producer if \p c needs one. @returns 0, or -1 with \p errstr. */
int kt_loop_producer_build(kt_loop_t *kl, const kt_config_t *c, char *errstr, size_t errstr_size);

/** @brief Make the consumer and its ZooKeeper discovery. @returns 0, or -1 with \p errstr. */
int kt_loop_consumer_build(kt_loop_t *kl, const kt_config_t *c, char *errstr, size_t errstr_size);

/** @brief Log \p text line by line at \p level. */
void kt_loop_log_lines(int level, const char *prefix, const char *text);

#endif /* KT_CORE_INT_H */
