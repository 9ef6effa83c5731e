/**
 * @file consumer.h
 * @brief Kafka in: the group member, assigned partitions with their bounded record buffers,
 *        pause/resume, the offset tracker that stores only finished offsets, and broker
 *        discovery through ZooKeeper.
 *
 * @locality every function here runs on the loop thread.
 */
#ifndef KT_CONSUMER_H
#define KT_CONSUMER_H

#include "../config/config.h"
#include "../core/core.h"

#include <librdkafka/rdkafka.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

typedef enum kt_record_state {
        KT_REC_QUEUED,     /**< buffered, not yet sent */
        KT_REC_IN_FLIGHT,  /**< a call is running */
        KT_REC_RETRY_WAIT, /**< failed, waiting for its retry time */
        KT_REC_PRODUCING,  /**< its reply or dead letter is being produced, waiting for the ack
                                (or for its time to be written again) */
        KT_REC_DONE        /**< finished: its offset may be committed */
} kt_record_state_t;

struct kt_record;

/**
 * @brief Move \p rec to \p to: the only writer of rec->state. Keeps the counters that are a
 *        function of the state (its partition's in_flight and producing). A transition not in
 *        the table (consumer_record.c) is a bug: logged once, counters kept, and under the
 *        sanitizers it aborts.
 * @remark A record is born QUEUED (buffered by the consumer) and made DONE only by
 *         kt_consumer_record_done(); the loop makes every other transition (back to QUEUED
 *         included: runtime down, behind a failed lane record, released).
 */
void kt_consumer_record_state_set(struct kt_record *rec, kt_record_state_t to);

/** @returns non-zero if \p from -> \p to is in the record state table. */
int kt_consumer_record_state_legal(kt_record_state_t from, kt_record_state_t to);

/* The record and the partition are opaque outside the lifecycle module: their fields,
 * the lanes and the offset tracker are in consumer_lifecycle.h. */
typedef struct kt_record kt_record_t;
typedef struct kt_partition kt_partition_t;

/**
 * The life of an assigned partition. It moves only through part_state_set()
 * (consumer_group.c), which keeps the paused flag and counters that depend on it:
 *
 *   ACTIVE --revoke--> DRAINING --drained or drain deadline--> RELEASED --committed--> (gone)
 *      \____________________lost, or consumer closing____________^
 *
 * DRAINING: fetching is paused, nothing new is read, but its buffered records keep being
 * started and retried until every one is done (drain means done, in every ordering) or the
 * drain deadline passes. RELEASED: the loop cancelled what was still running (those records
 * are not done: never committed); it waits only for the final commit, then is freed.
 */
typedef enum kt_partition_state {
        KT_PART_ACTIVE,
        KT_PART_DRAINING,
        KT_PART_RELEASED
} kt_partition_state_t;

/** Counters the consumer keeps for the metrics (read by the loop). */
typedef struct kt_consumer_stats {
        uint64_t assigns, revokes, losts; /**< rebalance callbacks */
        uint64_t commits, commit_failures;
        uint64_t already_done; /**< records skipped: finished by a previous owner (offset map) */
        uint64_t kafka_errors;
        int lag_updated; /**< partitions' lag changed since the loop last looked; it clears it */
        /** Errors by librdkafka error code (the first KT_MAX_ERROR_CODES distinct ones). */
        struct {
                int code;
                uint64_t count;
        } errors[16];
        int error_codes;
        int errors_updated;     /**< the loop clears it */
        int paused;             /**< partitions paused now */
        uint64_t fetch_wakeups; /**< seeks made to wake a fetcher over its prefetch bounds */
        uint64_t rebootstraps;  /**< bootstrap brokers added again (kt_rebootstrap_t) */
        /* the read path */
        uint64_t partition_reads; /**< partition queues read (tests: reads follow wake-ups) */
} kt_consumer_stats_t;

typedef struct kt_consumer kt_consumer_t;

/** Calls the consumer makes into the loop. */
typedef struct kt_consumer_hooks {
        /**
         * \p p is being released (its drain ended, or it was lost, or the consumer closes):
         * the hook must cancel whatever of its records is still running and forget them in
         * the scheduler. Its records stay in the tracker (not done ones are never committed)
         * until the partition is freed. Called once per partition, before it is RELEASED.
         */
        void (*release)(void *opaque, kt_partition_t *p, int lost);
        /** A record was buffered. */
        void (*record)(void *opaque, kt_record_t *rec);
        void *opaque;
} kt_consumer_hooks_t;

/**
 * @brief Create the group member and subscribe to the configured topics.
 * @returns NULL on failure with the reason in \p errstr.
 * @remark \p conf must outlive the consumer.
 */
kt_consumer_t *kt_consumer_new(const kt_config_t *conf, const kt_consumer_hooks_t *hooks,
                               char *errstr, size_t errstr_size);

/**
 * @brief Switch to a reloaded \p conf whose kafka.* settings and dispatch.ordering are those
 *        of the running one (others need a new consumer): buffer bounds, drain timeout.
 * @remark Partitions' topic names are re-pointed into \p conf, which must outlive them.
 */
void kt_consumer_conf_set(kt_consumer_t *kc, const kt_config_t *conf);

/** Leaving the group takes at most this long (kt_consumer_close). */
#define KT_CONSUMER_CLOSE_MS 10000
/** kt_consumer_close() calls its beat at least this often. */
#define KT_CONSUMER_CLOSE_POLL_MS 100

/**
 * @brief Leave the group without a blocking close: hand back what is assigned (revokes are
 *        handed back at once, uncommitted: commit before), send the LeaveGroup, serving the
 *        consumer's events in waits of KT_CONSUMER_CLOSE_POLL_MS and calling \p beat
 *        (may be NULL) between them, for at most KT_CONSUMER_CLOSE_MS; then destroy the
 *        librdkafka handle (which waits for the requests still out) on a thread of its own
 *        while \p beat keeps being called. Commits nothing. A second call is a no-op; the
 *        consumer can then only be destroyed.
 * @returns 0 once closed, -1 if the close failed or did not finish in time.
 * @locality loop thread
 */
int kt_consumer_close(kt_consumer_t *kc, void (*beat)(void *opaque), void *opaque);

/** @returns what a kt_consumer_close() running now waits for (static text, for the close
 *  watchdog's ERROR), NULL when none runs. @locality any thread */
const char *kt_consumer_close_stage(void);

/** @brief Leave the group (kt_consumer_close() unless called before; commits nothing) and free
 *         everything. NULL is a no-op. */
void kt_consumer_destroy(kt_consumer_t *kc);

/** @returns a file descriptor that becomes readable when Kafka has events for the loop. */
int kt_consumer_wakeup_fd(const kt_consumer_t *kc);

/**
 * @brief Serve Kafka events and buffer records into the partitions that have room (a full
 *        partition's queue is left unread until it has room again); send the periodic
 *        commit when it is due (kt_consumer_commit_due).
 * @param max consumer-queue events served per call, at most.
 * @returns non-zero if more may be waiting already (poll again before sleeping).
 */
int kt_consumer_poll(kt_consumer_t *kc, int max);

/** @returns non-zero (once) if a full partition got room since: poll before sleeping. */
int kt_consumer_more(kt_consumer_t *kc);

/**
 * @brief Partitions blocked on one record: assigned (not released) ones whose oldest
 *        unfinished record has failed at least once and not succeeded since.
 * @param cntp receives their number; \p longest_msp how long the longest of them has been
 *        blocked at \p now_ms (kt_now_ms() time), 0 if none.
 * @remark A scan of every partition: call it at a bounded rate.
 */
void kt_consumer_blocked(kt_consumer_t *kc, int64_t now_ms, int *cntp, int64_t *longest_msp);

/** @brief Write a ktrigger_consumer_lag sample line to \p f for each assigned partition whose
 *         lag is known (librdkafka's statistics). */
void kt_consumer_lag_write(kt_consumer_t *kc, FILE *f);

/**
 * @brief Mark \p rec done; store the offset up to which its partition is finished and resume
 *        the partition when its buffer has drained. \p rec may be freed by this call.
 */
void kt_consumer_record_done(kt_consumer_t *kc, kt_record_t *rec);

/** @returns the consumer's counters (the loop may clear lag_updated). */
kt_consumer_stats_t *kt_consumer_stats(kt_consumer_t *kc);

/**
 * @brief Hold (pause) every partition, e.g. while the runtime is down, or release them:
 *        partitions whose buffer is full stay paused until it drains.
 */
void kt_consumer_hold(kt_consumer_t *kc, int hold);

/**
 * @brief Drive the pending revoke (partitions DRAINING): once each is drained (no record
 *        left that is not done), or the drain deadline passed, or \p runtime_down and no
 *        record of them is PRODUCING (what is left needs the runtime, which is down: waiting
 *        would only hold the group's rebalance), release them (hook), commit
 *        (asynchronously; a refused commit is tried again until the deadline), then hand
 *        them back to the group.
 * @returns the kt_now_ms() time it wants to be called again, INT64_MAX if none pending.
 */
int64_t kt_consumer_revoke_step(kt_consumer_t *kc, int runtime_down);

/** @returns records PRODUCING (a reply or dead letter out) of partitions not RELEASED: they
 *           need Kafka, not the runtime, to be done. */
size_t kt_consumer_producing(const kt_consumer_t *kc);

/** @returns records of DRAINING partitions that are not done yet (0 if no revoke pends). */
size_t kt_consumer_draining(const kt_consumer_t *kc);

/** @returns records not done yet of partitions not RELEASED (0: a drain of all is over). */
size_t kt_consumer_undone(const kt_consumer_t *kc);

/** @brief Release every partition (hook), e.g. at the end of a shutdown or re-join drain. */
void kt_consumer_release_all(kt_consumer_t *kc);

/**
 * @brief Start an asynchronous commit of every partition's done offset, with the offsets
 *        finished above it in the commit metadata (a completed-offset map), unless one is in
 *        flight (then another follows it). The result arrives through kt_consumer_poll().
 * @returns the sequence number of the commit that will cover everything done now.
 */
uint64_t kt_consumer_commit_start(kt_consumer_t *kc);

/** Where the commit with sequence number \p seq stands. */
typedef enum kt_commit_status {
        KT_COMMIT_PENDING, /**< started or waiting to start */
        KT_COMMIT_DONE,    /**< it (or a later one) succeeded */
        KT_COMMIT_FAILED   /**< it failed (a later one may still succeed: start again) */
} kt_commit_status_t;

/** @returns non-zero if a failed commit may be tried again now: it did not fail because the
 *  group was re-joining, or the group has handed out an assignment since. */
int kt_consumer_commit_retry_ready(const kt_consumer_t *kc);

/** @returns the status of commit \p seq, with the error of a failed one in \p errp. */
kt_commit_status_t kt_consumer_commit_status(const kt_consumer_t *kc, uint64_t seq,
                                             rd_kafka_resp_err_t *errp);

/** Shortest pause before a refused commit that is waited for is started again. */
#define KT_COMMIT_RETRY_MS 250
/** A commit that is waited for is waited for at least this long. */
#define KT_COMMIT_MIN_WAIT_MS 2000

/** A commit waited for (the one that ends a revoke's drain, a shutdown or a re-join): started
 *  again while the group refuses it, until a deadline. Plain data, kept by the waiter. */
typedef struct kt_commit_wait {
        uint64_t seq;     /**< the commit waited for (kt_consumer_commit_start), 0: none */
        int64_t deadline; /**< kt_now_ms(): given up then */
        int64_t retry_at; /**< a refused commit is not started again before */
} kt_commit_wait_t;

/** @brief Start the commit of everything done now (kt_consumer_commit_start) and wait for it
 *         until \p deadline, at least KT_COMMIT_MIN_WAIT_MS from now. */
void kt_consumer_commit_wait_start(kt_consumer_t *kc, kt_commit_wait_t *cw, int64_t deadline);

/**
 * @brief Drive \p cw: a commit refused (e.g. while the group rebalances) is started again, no
 *        sooner than KT_COMMIT_RETRY_MS after the last try, once kt_consumer_commit_retry_ready().
 * @returns KT_COMMIT_DONE; KT_COMMIT_PENDING: call again no later than \p *wake_atp; or
 *          KT_COMMIT_FAILED: the deadline passed, with the last refusal in \p *errp
 *          (RD_KAFKA_RESP_ERR_NO_ERROR: no answer came in time).
 */
kt_commit_status_t kt_consumer_commit_wait_step(kt_consumer_t *kc, kt_commit_wait_t *cw,
                                                int64_t *wake_atp, rd_kafka_resp_err_t *errp);

/** @returns when the next periodic commit is due (kt_now_ms(); auto.commit.interval.ms apart,
 *  sent by kt_consumer_poll()), INT64_MAX if periodic commits are off (interval 0). */
int64_t kt_consumer_commit_due(const kt_consumer_t *kc);

/** @returns records finished since the last successful commit covered them (an upper bound of
 *  what a new owner would deliver again if no further commit succeeds). */
uint64_t kt_consumer_uncommitted_done(const kt_consumer_t *kc);

/** @returns non-zero once librdkafka reported a fatal error (the loop must stop). */
int kt_consumer_fatal(const kt_consumer_t *kc);

/** @returns non-zero once the member got an assignment (possibly empty), did not lose it, and
 *  the brokers are reachable. */
int kt_consumer_joined(const kt_consumer_t *kc);

/** @returns the number of assigned partitions. */
int kt_consumer_assigned_cnt(const kt_consumer_t *kc);

/** @returns the number of records buffered in all partitions (queued, in flight or waiting). */
size_t kt_consumer_buffered(const kt_consumer_t *kc);

/**
 * @brief Add bootstrap brokers at run time (rd_kafka_brokers_add), e.g. found in ZooKeeper.
 * @param brokers comma-separated host:port ([addr]:port for IPv6).
 * @returns the number of brokers librdkafka added (0 if it knew them all already).
 */
int kt_consumer_brokers_add(kt_consumer_t *kc, const char *brokers);

/**
 * Adding the bootstrap brokers again when librdkafka has stranded a client (DESIGN block in
 * consumer_rebootstrap.c): 2.10 and later can decommission every broker and never re-bootstrap.
 * Used by the consumer and the producer, each with its own, on the loop thread.
 */
typedef struct kt_rebootstrap kt_rebootstrap_t;
struct cJSON;

/** A client with no broker for this long is stranded: its list is added again. */
#define KT_REBOOTSTRAP_AFTER_MS 10000
/** While it stays stranded, the list is added again at most this often. */
#define KT_REBOOTSTRAP_EVERY_MS 30000
/** Cap of the list (bootstrap.servers plus brokers added at run time). */
#define KT_REBOOTSTRAP_MAX_BYTES 65536

/**
 * @brief A guard for one client whose bootstrap.servers is \p bootstrap (copied).
 * @param client "consumer" or "producer" (a static string, for the log).
 * @returns NULL if out of memory.
 */
kt_rebootstrap_t *kt_rebootstrap_new(const char *client, const char *bootstrap);

/** @brief Free \p rb; NULL is a no-op. */
void kt_rebootstrap_destroy(kt_rebootstrap_t *rb);

/**
 * @brief Remember brokers added at run time (comma-separated), so a re-add includes them.
 * @returns 0, or -1 (with a WARN) if the list would grow over KT_REBOOTSTRAP_MAX_BYTES: what
 *          did not fit is not kept.
 */
int kt_rebootstrap_remember(kt_rebootstrap_t *rb, const char *brokers);

/**
 * @brief Look at one statistics report's "brokers" object (cJSON) taken at \p now_ms.
 * @returns the comma-separated list the caller must give rd_kafka_brokers_add() now (owned by
 *          \p rb, valid until its next call), or NULL. Logs a WARN when it returns a list, an
 *          INFO when the client has a broker again after that.
 */
const char *kt_rebootstrap_check(kt_rebootstrap_t *rb, const struct cJSON *brokers, int64_t now_ms);

/** @brief Times the list was added again (ktrigger_kafka_rebootstraps_total); 0 for NULL. */
uint64_t kt_rebootstrap_count(const kt_rebootstrap_t *rb);

/* ---------------------------------------------------------------- ZooKeeper (consumer_zk.c) */

/** The largest broker registration znode read; a bigger one is a bad registration. */
#define KT_ZK_MAX_ZNODE_BYTES 65536

/** Room for one "host:port" (or "[addr]:port") taken from a registration. */
#define KT_ZK_HOSTPORT_SIZE 300

typedef struct kt_zk kt_zk_t;

/** Called on the loop thread with each broker endpoint newly found in ZooKeeper. */
typedef void(kt_zk_broker_cb)(void *opaque, const char *hostport);

/** What discovery has seen so far (for the metrics and readiness). */
typedef struct kt_zk_stats {
        int connected;              /**< a ZooKeeper session is connected now */
        int brokers;                /**< registrations with a usable endpoint now */
        int discovered;             /**< at least one endpoint was handed over, ever */
        uint64_t bad_registrations; /**< znodes skipped (each version counted once) */
} kt_zk_stats_t;

/**
 * @brief Start discovering brokers from conf->zookeeper (`host:port[,host:port][/chroot]`):
 *        the children of /brokers/ids are watched, each registration read and watched, and the
 *        endpoint matching kafka.zookeeper_listener, or else the security.protocol of
 *        kafka.properties (default PLAINTEXT), handed to \p cb once per new endpoint.
 *
 * ZooKeeper being unreachable is not an error: the session is retried with back-off and
 * logged once per state change.
 * @returns NULL on failure (out of memory, no pipe) with the reason in \p errstr.
 * @remark \p conf must outlive it. Its ZooKeeper threads only queue what they get; all work
 *         happens in kt_consumer_zk_poll().
 */
kt_zk_t *kt_consumer_zk_new(const kt_config_t *conf, kt_zk_broker_cb *cb, void *opaque,
                            char *errstr, size_t errstr_size);

/**
 * @brief Switch to a reloaded \p conf with the same kafka.* settings (a change of those makes
 *        a new discovery). @locality loop thread.
 */
void kt_consumer_zk_conf_set(kt_zk_t *zk, const kt_config_t *conf);

/** @brief Close the ZooKeeper session (joining its threads) and free. NULL is a no-op. */
void kt_consumer_zk_destroy(kt_zk_t *zk);

/** @returns a file descriptor that becomes readable when ZooKeeper handed something over. */
int kt_consumer_zk_wakeup_fd(const kt_zk_t *zk);

/**
 * @brief Serve what the ZooKeeper threads handed over (session changes, children lists,
 *        registrations): parse, dedup, re-arm watches, call the broker callback; (re)start
 *        the session when due.
 * @returns the kt_now_ms() time by which it wants to be polled again, INT64_MAX if only
 *          the wake-up fd matters.
 */
int64_t kt_consumer_zk_poll(kt_zk_t *zk);

/** @returns the discovery counters. */
const kt_zk_stats_t *kt_consumer_zk_stats(const kt_zk_t *zk);

/**
 * @brief Resolve the hosts of a ZooKeeper connect string (`host:port,...[/chroot]`, a host may
 *        be `[v6]`) into the same string of numeric addresses in \p out: every address of each
 *        host, as the ZooKeeper client would take them, as `addr:port` (no brackets).
 * @returns KT_OK, or KT_ERR_INVALID with the reason in \p errstr (no port, no host resolves,
 *          over \p size).
 * @remark Blocks for as long as DNS takes: called on a thread of its own (see consumer_zk.c).
 */
kt_err_t kt_consumer_zk_connect_resolve(const char *connect, char *out, size_t size, char *errstr,
                                        size_t errstr_size);

/**
 * @brief Pick the endpoint of one Kafka broker registration (the JSON of /brokers/ids/<id>).
 *
 * With \p listener (non-NULL, non-empty): the endpoint of that listener name. Else the first
 * endpoint whose listener maps (listener_security_protocol_map; without a map the name is the
 * protocol) to \p protocol (NULL: PLAINTEXT); names compare case-insensitively. Registrations
 * without endpoints (version 1) give host and port, for PLAINTEXT only.
 * @param hostport receives "host:port" or "[addr]:port", NUL-terminated.
 * @returns KT_OK, or KT_ERR_INVALID with the reason in \p errstr (input over
 *          KT_ZK_MAX_ZNODE_BYTES, not JSON, wrong types, no matching endpoint, bad host or port).
 * @remark Pure: no I/O, any thread.
 */
kt_err_t kt_consumer_zk_broker_parse(const char *json, size_t len, const char *protocol,
                                     const char *listener, char *hostport, size_t size,
                                     char *errstr, size_t errstr_size);

/* ------------------------------------------------ completed-offset map (consumer_offsetmap.c) */

/**
 * The completed-offset map travels in a commit's metadata: the offsets finished above the
 * committed (contiguous) offset, so that a new owner of the partition skips them. Text, at
 * most KT_OFFSETMAP_MAX_BYTES; the format is described at the top of consumer_offsetmap.c.
 */

/** The longest blob encoded or decoded (a longer one is not ours). The broker's own cap is
 *  offset.metadata.max.bytes (4096 by default): callers pass a size under it. */
#define KT_OFFSETMAP_MAX_BYTES 65536

/** The most offsets one map lists; the encoder lists a prefix of at most this many, the
 *  decoder refuses a map that claims more. */
#define KT_OFFSETMAP_MAX_OFFSETS 1000000

/** A decoded map: which offsets above its commit offset were done. Opaque. */
typedef struct kt_offsetmap kt_offsetmap_t;

/**
 * @brief Encode the offsets done above \p commit_offset as a NUL-terminated, printable-ASCII
 *        blob that fits in \p size bytes (NUL included).
 *
 * If not all of \p done fits (in \p size, KT_OFFSETMAP_MAX_BYTES or KT_OFFSETMAP_MAX_OFFSETS),
 * the lowest offsets are listed: a prefix, possibly ending inside a run of consecutive ones.
 * @param commit_offset the offset committed with the blob (>= 0).
 * @param done offsets finished, strictly increasing, each > \p commit_offset; may be NULL if
 *        \p done_cnt is 0.
 * @param lenp receives strlen(buf) (0: nothing is listed, commit without metadata).
 * @param coveredp receives the offset up to which the blob is complete: every offset in
 *        (commit_offset, *coveredp] is listed iff it is in \p done; it is the highest offset
 *        listed, \p commit_offset if none is. The blob lists nothing above it, so
 *        `done_cnt && *coveredp < done[done_cnt - 1]` means it was cut. May be NULL.
 * @returns KT_OK, or KT_ERR_INVALID if the arguments break the rules above (buf NULL,
 *          size 0, commit_offset < 0, done not increasing or not above commit_offset); then
 *          buf is "" if size allows and nothing is listed.
 * @remark Pure: no I/O, no allocation, any thread.
 */
kt_err_t kt_consumer_offsetmap_encode(int64_t commit_offset, const int64_t *done, size_t done_cnt,
                                      char *buf, size_t size, size_t *lenp, int64_t *coveredp);

/**
 * @brief Decode the blob committed with \p commit_offset.
 *
 * Strict: a blob that does not follow the format exactly (other version, other commit offset,
 * bad characters, bad checksum, cut, numbers overflowing or not minimal, offsets above
 * INT64_MAX, a count that is not what the body lists, more than KT_OFFSETMAP_MAX_OFFSETS
 * offsets, longer than KT_OFFSETMAP_MAX_BYTES) is refused as a whole, never half-trusted.
 * Memory: at most 16 bytes per run listed (worst case ~3 MB for a KT_OFFSETMAP_MAX_BYTES
 * bitset of alternating bits, ~200 KB for a 4000-byte one).
 * @param len bytes of \p blob, without a terminator (one trailing NUL is tolerated).
 * @param mapp receives the map (NULL if \p blob is NULL or empty: no map, not an error;
 *        NULL on error too).
 * @returns KT_OK, KT_ERR_INVALID with the reason in \p errstr, or KT_ERR_NOMEM.
 * @remark The caller owns *mapp (kt_consumer_offsetmap_destroy). Pure, any thread.
 */
kt_err_t kt_consumer_offsetmap_decode(const char *blob, size_t len, int64_t commit_offset,
                                      kt_offsetmap_t **mapp, char *errstr, size_t errstr_size);

/** @returns non-zero if \p om lists \p offset as done (0 for a NULL map). O(log runs). */
int kt_consumer_offsetmap_done(const kt_offsetmap_t *om, int64_t offset);

/**
 * @returns the lowest offset >= \p offset that \p om lists, -1 if none (or NULL): to walk the
 *          map, e.g. to list again, in the next commit's map, the inherited offsets not yet
 *          fetched (otherwise a second hand-over before they are reached would redo them).
 */
int64_t kt_consumer_offsetmap_next(const kt_offsetmap_t *om, int64_t offset);

/** @returns the highest offset \p om lists, -1 if none (or NULL): past it the map is of no
 *  more use and can be destroyed. */
int64_t kt_consumer_offsetmap_last(const kt_offsetmap_t *om);

/** @returns the number of offsets \p om lists (0 for NULL). */
size_t kt_consumer_offsetmap_cnt(const kt_offsetmap_t *om);

/** @brief Free \p om. NULL is a no-op. */
void kt_consumer_offsetmap_destroy(kt_offsetmap_t *om);

#endif /* KT_CONSUMER_H */
