/*
 * DESIGN: the group member and its partitions.
 *
 * - librdkafka's high-level consumer joins the group (cooperative-sticky by default); every
 *   commit is ours (enable.auto.commit and enable.auto.offset.store are false). A partition's
 *   commit offset moves only when the tracker pops a done record (all earlier ones of its
 *   partition are done too): nothing is ever committed past a record in flight or waiting to
 *   retry.
 * - All events (records, rebalances, errors, librdkafka's own logs via log.queue) arrive on
 *   the one consumer queue, served by kt_consumer_poll() on the loop thread. The queue's
 *   io-event writes to a pipe when it goes from empty to non-empty; we drain the pipe first
 *   and then poll until the queue is empty (or the budget runs out and the caller knows to
 *   come back without sleeping), so a wake-up is never lost.
 * - Each assigned partition has its own librdkafka queue (not forwarded to the consumer
 *   queue), all waking the same pipe, and each wake-up names its queue: every queue writes a
 *   fixed-size frame (wake_t: topic index and partition; -1 for the consumer queue) when it
 *   goes from empty to non-empty, so a wake-up reads only the partitions it names (and those
 *   known to hold more: cut short by the batch size, or full and drained since), never all P
 *   of them. Frames are under PIPE_BUF, so written whole and never interleaved. A queue whose
 *   frame finds the pipe full loses it (librdkafka ignores the write error): a drain that read
 *   at least KT_WAKE_PIPE_MIN bytes (one page, the smallest pipe) may have found it full, and
 *   then reads every partition, as each wake-up once did.
 *   A partition's queue is read only while its buffer is under partition_buffer_records and
 *   partition_buffer_bytes; a full partition is simply not read, and librdkafka stops
 *   fetching it once its own prefetch (queued.min.messages,
 *   queued.max.messages.kbytes, per partition then) is full. Pausing was the first design:
 *   it made librdkafka drop the prefetched records and resume only on its ~1 s broker wake-up,
 *   which capped throughput at about partition_buffer_records per partition per second.
 *   Pause is still used while the runtime is down and for partitions being revoked. Pausing makes
 * librdkafka drop what it had prefetched for it and fetch again from the last record handed to us
 * on resume.
 * - Waking the fetcher. librdkafka 2.0.2 decides whether to fetch a partition only when its broker
 *   thread wakes up (an op, a response, or its 1 s timeout). Once a response has put a partition
 *   over its prefetch bounds, reading its queue down does not wake anything, and when every
 *   partition is over them (the normal state while we are the slower side) nothing is in flight
 *   either: the partition runs dry and waits up to 1 s. One producer batch alone (up to 1 MB)
 *   can be over the bounds. So each partition counts what it read since its queue was last seen
 *   empty; when the queue is empty again and that reached queued.min.messages or
 *   queued.max.messages.kbytes, we seek the partition to the offset after the last record we
 *   read. rd_kafka_seek() bumps the partition's version at once (a response still in flight is
 *   dropped, never handed to us) and wakes the broker thread, which fetches from that offset.
 *   The queue is empty, so nothing prefetched is thrown away; at worst a response in flight is
 *   fetched twice, at most once per queued.min.messages records. (librdkafka keeps one fetch in
 *   flight per broker: while another partition's long-poll fetch waits at the broker, the new
 *   fetch waits for it, at most fetch.wait.max.ms.) Bytes are counted as value + key, a little
 *   more than librdkafka counts, so we may wake a fetcher that was still fetching: harmless.
 * - On revoke the partitions stop taking records at once (DRAINING); the loop keeps polling
 *   and finishing their buffered records (see on_revoke), then they are RELEASED, committed
 *   with our own asynchronous commit (kt_consumer_commit_start) and handed back. On lost
 *   partitions nothing is committed.
 * - Commits are all ours (commit_send: rd_kafka_commit_queue, answered on the consumer queue,
 *   never a blocking rd_kafka_commit): each carries per partition the completed-offset map
 *   (consumer_offsetmap.c) of what finished above the committed offset, which librdkafka 2.0.2
 *   can send only with an explicit partition list. Two kinds: the commit that ends a drain
 *   (kt_consumer_commit_start, waited for and retried through kt_consumer_commit_wait_step),
 *   and the periodic one every auto.commit.interval.ms (commit_tick), sent only while the join
 *   state is steady (as librdkafka's own auto-commit would), no revoke pends and every
 *   partition is ACTIVE: a DRAINING or RELEASED partition is committed only by its drain's
 *   commit. A periodic commit can still meet a generation that changed after it left
 *   (ILLEGAL_GENERATION, REBALANCE_IN_PROGRESS): it is counted and simply sent again at the
 *   next interval. A new owner reads the maps with rd_kafka_committed() in the assign
 *   callback, before the partitions are fetched, and a record in its partition's map is done
 *   without a call.
 * - Our commits are sent only while librdkafka's join state lets them through (followed from
 *   its cgrp debug lines, join_state_follow): while our JoinGroup waits at the broker, which
 *   it does for up to session.timeout.ms after a member died, a commit would wait behind it
 *   and be refused with the old generation. The gate lags librdkafka by up to a loop pass, so
 *   a commit can still cross a re-join (test_lifecycle case 7). librdkafka before 2.10.0
 *   (Debian 12's 2.0.2, make LIBRDKAFKA=system) then drops the whole assignment as lost
 *   (librdkafka #4059); the 2.14.2 ktrigger links keeps it, and the re-join revokes and
 *   drains as usual. A partition handed back uncommitted all the same keeps its progress
 *   (carry_save), which is committed with the next commit once the group is stable again.
 */
#define _POSIX_C_SOURCE 200809L
#include "consumer_lifecycle.h"

#include <cjson/cJSON.h>
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#define FAC "KAFKA"

struct kt_consumer {
        const kt_config_t *conf;
        kt_consumer_hooks_t hooks;
        rd_kafka_t *rk;
        rd_kafka_queue_t *rkq;
        int wake[2]; /**< io-event pipe: [0] read by the loop, [1] written by librdkafka */
        kt_partition_t *parts; /**< assigned partitions */
        int part_cnt;
        kt_partition_t ***by_id; /**< [topic_idx][partition] -> partition, for O(1) lookup */
        int32_t *by_id_size;     /**< per topic */
        int fatal;
        int hold;         /**< every partition paused (runtime down) */
        int joined;       /**< holds an assignment (possibly empty) from the group */
        int closing;      /**< in consumer_close(): revokes finish at once, no commit */
        int more;         /**< a full partition got room: poll again without sleeping */
        int brokers_down; /**< librdkafka reported all brokers down; cleared when one is up */
        kt_rebootstrap_t *rebootstrap; /**< adds the bootstrap brokers again if stranded */
        kt_log_limits_t error_log;     /**< error_cb's lines: one per code per 10 s */
        size_t prefetch_msgs;  /**< librdkafka's queued.min.messages, for waking the fetcher */
        size_t prefetch_bytes; /**< and queued.max.messages.kbytes in bytes */
        size_t buffered;       /**< records in all trackers */
        /* The pending revoke: its partitions are DRAINING, then RELEASED (see revoke_step). A
         * second revoke while one pends joins it (same deadline). */
        rd_kafka_topic_partition_list_t *pending; /**< NULL if no revoke pends */
        int64_t pending_deadline;                 /**< drain (and commit) deadline, kt_now_ms */
        kt_commit_wait_t pending_commit;          /**< the commit it waits for; seq 0: draining */
        /* Our commits, asynchronous, one in flight at a time (see kt_consumer_commit_start
         * and commit_tick). */
        uint64_t commit_seq;            /**< the last commit started */
        uint64_t commit_ok_seq;         /**< the last one that succeeded */
        uint64_t commit_done_seq;       /**< the last one that finished, either way */
        rd_kafka_resp_err_t commit_err; /**< how commit_done_seq ended */
        int commit_inflight;
        int commit_periodic;        /**< the one in flight is periodic (commit_tick) */
        int commit_again;           /**< asked for while one was in flight: start one after it */
        int commit_fail_streak;     /**< periodic commits failed in a row (logged once a streak) */
        int64_t commit_interval_ms; /**< auto.commit.interval.ms: periodic commits, 0: none */
        int64_t commit_due_ms;      /**< the next periodic commit (kt_now_ms) */
        uint64_t done_cnt;          /**< records that became done, ever */
        uint64_t done_at_start;     /**< done_cnt when the commit in flight started */
        uint64_t done_committed;    /**< done_cnt covered by the last successful commit */
        uint64_t assigns_at_fail;   /**< stats.assigns when the last commit failed */
        int cooperative; /**< the rebalance protocol last known to be cooperative (cooperative()) */
        int join_safe;   /**< 1: the group join state lets a commit through, 0: a JoinGroup or
                              SyncGroup is in flight, -1: unknown (no cgrp debug line yet) */
        int join_steady; /**< the join state is `steady`: periodic commits may go */
        int metadata_off;    /**< the broker refused our metadata as too large (its
                                  offset.metadata.max.bytes is under KT_COMMIT_METADATA_BYTES):
                                  commits go on without the offset map */
        int64_t *md_offsets; /**< part_metadata()'s scratch, grown to need, reused */
        size_t md_offsets_size;
        int close_timed_out; /**< and did not see the group closed in time */
        int close_started;   /**< rd_kafka_consumer_close_queue() was called */
        int close_answered;  /**< and a rebalance callback since then called (un)assign */
        struct carry *carry; /**< see carry_save() */
        size_t carry_cnt, carry_size;
        kt_consumer_stats_t stats;
        /* The read path: partitions to read at the next kt_consumer_poll() (see DESIGN). */
        kt_partition_t *to_read; /**< partitions whose queue may hold records (p->more) */
        kt_partition_t *reading; /**< the part of that list kt_consumer_poll() is reading */
        int was_member;          /**< got an assignment once: on close it "left the group" */
};

/**
 * What a partition handed back without a successful final commit had finished (its commit
 * offset and offset map). A commit sent while the group re-joins waits at the broker behind
 * the JoinGroup and is then refused with the old generation (ILLEGAL_GENERATION), which
 * librdkafka takes as the assignment lost: the partitions are gone before we could commit.
 * Their progress is kept here and committed once the group is stable again (the next assign),
 * whoever owns them then: a commit never covers a record that is not done, so at worst the
 * new owner, if it read the old offset first, delivers again what we had finished. If one of
 * them comes back to us, its records below the carried offset or in its map are done.
 */
typedef struct carry {
        char *topic;
        int32_t partition;
        int64_t offset;
        char *md; /**< offset map blob, NULL if none */
        size_t md_len;
        uint64_t in_commit; /**< the commit that carries it, 0 if none yet */
} carry_t;

/** Partitions' progress kept at most (one entry per partition). */
#define KT_CARRY_MAX 4096

static carry_t *carry_find(kt_consumer_t *kc, const char *topic, int32_t partition) {
        for (size_t i = 0; i < kc->carry_cnt; i++)
                if (kc->carry[i].partition == partition && !strcmp(kc->carry[i].topic, topic))
                        return &kc->carry[i];
        return NULL;
}

static void carry_drop(kt_consumer_t *kc, carry_t *c) {
        free(c->topic);
        free(c->md);
        *c = kc->carry[--kc->carry_cnt];
}

/** What a queue writes to the wake-up pipe when it goes from empty to non-empty (see DESIGN). */
typedef struct wake {
        int32_t topic_idx; /**< in kt_config_t.topics; -1: the consumer queue */
        int32_t partition;
} wake_t;

/** A drain of the wake-up pipe that read this much may have found it full (see DESIGN). */
#define KT_WAKE_PIPE_MIN 4096

/** \p p's queue may hold records: read it at the next kt_consumer_poll(). */
static void read_list_add(kt_consumer_t *kc, kt_partition_t *p) {
        if (p->more)
                return;
        p->more = 1;
        p->read_next = kc->to_read;
        kc->to_read = p;
}

static void read_list_remove(kt_consumer_t *kc, kt_partition_t *p) {
        kt_partition_t **lists[] = {&kc->to_read, &kc->reading};

        for (size_t i = 0; i < sizeof(lists) / sizeof(lists[0]); i++)
                for (kt_partition_t **pp = lists[i]; *pp; pp = &(*pp)->read_next)
                        if (*pp == p) {
                                *pp = p->read_next;
                                break;
                        }
        p->more = 0;
}

/** Pause or resume one partition in librdkafka; no-op if already in that state. */
static void set_paused(kt_consumer_t *kc, kt_partition_t *p, int pause) {
        rd_kafka_topic_partition_list_t *l;
        rd_kafka_resp_err_t err;

        if (p->paused == pause)
                return;
        l = rd_kafka_topic_partition_list_new(1);
        rd_kafka_topic_partition_list_add(l, p->topic, p->partition);
        err = pause ? rd_kafka_pause_partitions(kc->rk, l) : rd_kafka_resume_partitions(kc->rk, l);
        rd_kafka_topic_partition_list_destroy(l);
        if (err)
                KT_WARN(FAC, "%s [%d]: cannot %s: %s", p->topic, p->partition,
                        pause ? "pause" : "resume", rd_kafka_err2str(err));
        else {
                p->paused = pause;
                kc->stats.paused += pause ? 1 : -1;
        }
}

/**
 * The one transition function of a partition's life (kt_partition_state_t): every pause and
 * hook that depends on the state happens here.
 */
static void part_state_set(kt_consumer_t *kc, kt_partition_t *p, kt_partition_state_t state,
                           int lost) {
        static const char *const names[] = {"active", "draining", "released"};

        if (p->state == state)
                return;
        KT_DBG(FAC, "%s [%d]: %s -> %s", p->topic, p->partition, names[p->state], names[state]);
        switch (state) {
        case KT_PART_ACTIVE:
                break; /* only ever the state it is made in */
        case KT_PART_DRAINING:
                set_paused(kc, p, 1); /* fetch nothing more; what is buffered goes on */
                break;
        case KT_PART_RELEASED:
                set_paused(kc, p, 1);
                if (kc->hooks.release)
                        kc->hooks.release(kc->hooks.opaque, p, lost);
                break;
        }
        p->state = state;
}

/**
 * Follow librdkafka's group join state from its `cgrp` debug lines ("... changed join state
 * steady -> wait-join ..."): no other API tells it. While a JoinGroup or SyncGroup is in
 * flight (init, wait-join, wait-metadata, wait-sync) a commit would wait at the broker behind
 * it and then be refused with the old generation, which librdkafka takes as the assignment
 * lost; commit_send() waits for a safe state instead (librdkafka's own auto-commit waits the
 * same way). The lines arrive through the consumer queue, served in kt_consumer_poll(), so
 * they are at most one loop pass late.
 */
static void join_state_follow(kt_consumer_t *kc, const char *buf) {
        static const char *const unsafe[] = {"init", "wait-join", "wait-metadata", "wait-sync"};
        const char *to = strstr(buf, " -> ");
        size_t len;

        if (!to)
                return;
        to += 4;
        len = strcspn(to, " ");
        kc->join_safe = 1;
        kc->join_steady = len == 6 && !strncmp(to, "steady", len);
        for (size_t i = 0; i < sizeof(unsafe) / sizeof(unsafe[0]); i++)
                if (strlen(unsafe[i]) == len && !strncmp(to, unsafe[i], len))
                        kc->join_safe = 0;
}

static void log_cb(const rd_kafka_t *rk, int level, const char *fac, const char *buf) {
        kt_consumer_t *kc = rd_kafka_opaque(rk);
        char f[64];

        if (!strcmp(fac, "CGRPJOINSTATE") && kc) {
                join_state_follow(kc, buf);
                if (!kt_log_enabled(KT_LOG_DEBUG))
                        return;
        } else if (level >= KT_LOG_DEBUG && !kt_log_enabled(KT_LOG_DEBUG))
                return; /* the cgrp debug lines we asked for */
        else if (!strcmp(fac, "FAIL") && !kt_log_enabled(KT_LOG_DEBUG))
                return; /* a broker connection failed: error_cb logs it once, with its code */
        snprintf(f, sizeof(f), "KAFKA-%s", fac);
        kt_log(level, f, "%s", buf);
}

static void error_cb(rd_kafka_t *rk, int err, const char *reason, void *opaque) {
        kt_consumer_t *kc = opaque;
        char errstr[512];

        if (err == RD_KAFKA_RESP_ERR__FATAL) {
                rd_kafka_fatal_error(rk, errstr, sizeof(errstr));
                KT_ERR(FAC, "fatal error: %s", errstr);
                kc->fatal = 1;
                return;
        }
        kc->stats.kafka_errors++;
        {
                kt_consumer_stats_t *st = &kc->stats;
                int i;
                for (i = 0; i < st->error_codes && st->errors[i].code != err; i++)
                        ;
                if (i == st->error_codes &&
                    st->error_codes < (int)(sizeof(st->errors) / sizeof(st->errors[0]))) {
                        st->errors[i].code = err;
                        st->error_codes++;
                }
                if (i < st->error_codes) {
                        st->errors[i].count++;
                        st->errors_updated = 1;
                }
        }
        if (err == RD_KAFKA_RESP_ERR__ALL_BROKERS_DOWN)
                kc->brokers_down = 1; /* not ready until a broker answers again */
        /* Transient (all brokers down, ...): librdkafka keeps retrying; we keep running. With
         * a short reconnect back-off it reports one every few ms: one line per code per
         * KT_LOG_REPEAT_MS, the counter above keeps every one. */
        kt_log_repeated(&kc->error_log, KT_LOG_WARNING, FAC, err,
                        rd_kafka_err2name((rd_kafka_resp_err_t)err), reason);
}

static kt_partition_t *part_find(kt_consumer_t *kc, const char *topic, int32_t partition) {
        for (size_t i = 0; i < kc->conf->topic_cnt; i++)
                if (!strcmp(kc->conf->topics[i], topic))
                        return partition < kc->by_id_size[i] ? kc->by_id[i][partition] : NULL;
        return NULL;
}

static kt_partition_t *part_add(kt_consumer_t *kc, const char *topic, int32_t partition) {
        kt_partition_t *p;
        size_t ti;

        for (ti = 0; ti < kc->conf->topic_cnt; ti++)
                if (!strcmp(kc->conf->topics[ti], topic))
                        break;
        if (ti == kc->conf->topic_cnt || partition < 0) {
                KT_WARN(FAC, "assigned %s [%d], which is not a configured topic", topic, partition);
                return NULL;
        }
        if (partition >= kc->by_id_size[ti]) {
                int32_t n = partition + 1;
                kt_partition_t **a = realloc(kc->by_id[ti], (size_t)n * sizeof(*a));
                if (!a)
                        return NULL;
                memset(a + kc->by_id_size[ti], 0, (size_t)(n - kc->by_id_size[ti]) * sizeof(*a));
                kc->by_id[ti] = a;
                kc->by_id_size[ti] = n;
        }
        if (kc->by_id[ti][partition])
                return kc->by_id[ti][partition];
        if (!(p = calloc(1, sizeof(*p))))
                return NULL;
        p->topic = kc->conf->topics[ti];
        p->topic_idx = ti;
        p->partition = partition;
        if (!(p->rkt = rd_kafka_topic_new(kc->rk, topic, NULL))) {
                free(p);
                return NULL;
        }
        p->state = KT_PART_ACTIVE;
        p->done_floor = -1;
        p->stored = -1;
        p->committed = -1;
        p->lag = -1;
        p->went_back_to = -1;
        p->next_offset = -1;
        p->lane_cnt = kc->conf->ordering == KT_ORDER_PARTITION ? 1
                      : kc->conf->ordering == KT_ORDER_KEY     ? KT_KEY_LANES + 1
                                                               : 0;
        if (p->lane_cnt && !(p->lanes = calloc((size_t)p->lane_cnt, sizeof(*p->lanes)))) {
                rd_kafka_topic_destroy(p->rkt);
                free(p);
                return NULL;
        }
        kt_tracker_init(&p->q);
        p->next = kc->parts;
        kc->parts = p;
        kc->part_cnt++;
        kc->by_id[ti][partition] = p;
        return p;
}

static void record_free(kt_record_t *rec) {
        if (rec->headers)
                rd_kafka_headers_destroy(rec->headers);
        free(rec->last_error);
        free(rec->reply);
        free(rec->reply_type);
        free(rec);
}

static void part_remove(kt_consumer_t *kc, kt_partition_t *p) {
        kt_partition_t **pp;
        kt_record_t *rec;
        size_t dropped = 0;

        for (pp = &kc->parts; *pp; pp = &(*pp)->next)
                if (*pp == p) {
                        *pp = p->next;
                        break;
                }
        read_list_remove(kc, p);
        kc->part_cnt--;
        kc->stats.lag_updated = 1; /* its lag series goes: statistics stop naming it */
        if (p->paused)
                kc->stats.paused--;
        kc->by_id[p->topic_idx][p->partition] = NULL;
        while ((rec = kt_tracker_pop(&p->q))) {
                dropped++;
                kc->buffered--;
                record_free(rec);
        }
        if (dropped)
                KT_INFO(FAC,
                        "%s [%d]: released with %zu records not done here: they are not "
                        "committed, so the partition's next owner delivers them again",
                        p->topic, p->partition, dropped);
        if (p->rkq) {
                /* librdkafka forwards it again when it next starts fetching the partition. */
                rd_kafka_queue_io_event_enable(p->rkq, -1, NULL, 0);
                rd_kafka_queue_destroy(p->rkq);
        }
        if (p->rkt)
                rd_kafka_topic_destroy(p->rkt);
        kt_consumer_offsetmap_destroy(p->done_map);
        free(p->lanes);
        free(p);
}

static void done_maps_load(kt_consumer_t *kc, const rd_kafka_topic_partition_list_t *tps);

static int carry_save(kt_consumer_t *kc, const kt_partition_t *p);

/** What a kt_consumer_close() running now waits for: read by the close watchdog's thread. */
static _Atomic(const char *) close_stage;

const char *kt_consumer_close_stage(void) {
        return atomic_load(&close_stage);
}

/** @returns non-zero if the group uses the cooperative protocol. librdkafka answers NULL once
 *  the group is shutting down (in consumer_close()'s revoke): the last answer then holds. */
static int cooperative(kt_consumer_t *kc) {
        const char *proto;

        /* Inside rd_kafka_consumer_close() the call waits for the group, which is busy
         * closing: it can block for ever (seen in test_lifecycle). The answer at the last
         * assignment holds. */
        if (kc->closing)
                return kc->cooperative;
        proto = rd_kafka_rebalance_protocol(kc->rk);

        if (proto)
                kc->cooperative = !strcmp(proto, "COOPERATIVE");
        return kc->cooperative;
}

/**
 * @returns non-zero if a rebalance callback is to call librdkafka's (incremental_)(un)assign.
 *
 * Always, except while closing. Once rd_kafka_consumer_close_queue() has been called
 * (librdkafka 2.0.2, rdkafka_cgrp.c), the group is terminating and the first assign or
 * unassign any callback makes is taken as a full unassign (rd_kafka_cgrp_handle_assign_op);
 * with it the group can finish terminating, and rd_kafka_cgrp_terminated() then purges its ops
 * queue, forwarded to the main one, so a call still queued there is destroyed without a reply
 * and its caller waits for ever. Two rebalance events are served during a close when one was
 * already queued as it began (e.g. the empty incremental assign that follows a re-join): the
 * unsubscribe adds the revoke of everything. The second one's call is the one that hung
 * (test_lifecycle, about 1 run in 7): librdkafka no longer waits for it, so it is not made.
 *
 * As that one call unassigns everything, everything still held is released with it (\p lost
 * as the event it answers says), not when the second event comes: whether that event reaches
 * us at all is a race. The unsubscribe's revoke is queued on the close queue behind the
 * event we answer, and the group terminates (unassign, LeaveGroup answered) at once after our
 * call; under load neither that revoke nor librdkafka's log lines queued with it were ever
 * served, about 1 run in 10 (test_lifecycle case 4: the close began in join state
 * wait-assign-call, the empty assign that follows a cooperative revoke still queued; the
 * purge in rd_kafka_cgrp_terminated() above). The partition still held was then never
 * revoked through the callback, and consumer_close()'s fallback for a fatal error released it
 * as lost, though the group had it back.
 */
static int assign_call_due(kt_consumer_t *kc, int lost) {
        if (!kc->close_started)
                return 1;
        if (kc->close_answered) {
                KT_DBG(FAC, "closing: the group was already told to unassign; not calling again");
                return 0;
        }
        kc->close_answered = 1;
        while (kc->parts) {
                kt_partition_t *p = kc->parts;
                part_state_set(kc, p, KT_PART_RELEASED, lost);
                carry_save(kc, p); /* what our commit did not cover */
                part_remove(kc, p);
        }
        return 1;
}

static void on_assign(kt_consumer_t *kc, rd_kafka_topic_partition_list_t *tps) {
        rd_kafka_error_t *error = NULL;
        rd_kafka_resp_err_t err = RD_KAFKA_RESP_ERR_NO_ERROR;

        kc->joined = 1;
        kc->was_member = 1;
        kc->brokers_down = 0; /* an assignment came from the coordinator */
        kc->stats.assigns++;
        for (int i = 0; i < tps->cnt; i++) {
                if (!part_add(kc, tps->elems[i].topic, tps->elems[i].partition)) {
                        /* Its records would have nowhere to go: stop rather than stall it. */
                        KT_ERR(FAC, "cannot track %s [%d]: stopping", tps->elems[i].topic,
                               tps->elems[i].partition);
                        kc->fatal = 1;
                }
                KT_INFO(FAC, "assigned %s [%d]", tps->elems[i].topic, tps->elems[i].partition);
        }
        if (tps->cnt)
                done_maps_load(kc, tps); /* before any record of them is fetched */
        if (kc->carry_cnt)
                kt_consumer_commit_start(kc); /* the group is stable again: commit what was kept */
        if (!assign_call_due(kc, 0))
                ; /* closing: answered already (see assign_call_due) */
        else if (cooperative(kc))
                error = rd_kafka_incremental_assign(kc->rk, tps);
        else
                err = rd_kafka_assign(kc->rk, tps);
        if (error) {
                KT_ERR(FAC, "incremental assign failed: %s", rd_kafka_error_string(error));
                rd_kafka_error_destroy(error);
        } else if (err)
                KT_ERR(FAC, "assign failed: %s", rd_kafka_err2str(err));
        /* Each partition's own queue, read only while its buffer has room (see DESIGN). Set
         * up after the assign: starting the fetch forwards its queue to the consumer's. */
        for (int i = 0; i < tps->cnt; i++) {
                kt_partition_t *p = part_find(kc, tps->elems[i].topic, tps->elems[i].partition);
                if (!p || p->rkq)
                        continue;
                if ((p->rkq = rd_kafka_queue_get_partition(kc->rk, p->topic, p->partition))) {
                        wake_t w = {(int32_t)p->topic_idx, p->partition};
                        rd_kafka_queue_forward(p->rkq, NULL);
                        rd_kafka_queue_io_event_enable(p->rkq, kc->wake[1], &w, sizeof(w));
                        read_list_add(kc, p); /* it may hold records already */
                }
        }
        if (kc->hold)
                kt_consumer_hold(kc, 1); /* the runtime is down: take nothing new */
        else {
                /* librdkafka keeps a partition's pause flag across unassign and assign: one we
                 * paused before it was revoked would come back paused and never fetch. */
                rd_kafka_resp_err_t rerr = rd_kafka_resume_partitions(kc->rk, tps);
                if (rerr)
                        KT_WARN(FAC, "resume of assigned partitions failed: %s",
                                rd_kafka_err2str(rerr));
        }
}

/** Release (if not yet) and forget the partitions of \p tps, and hand them back. */
static void handback(kt_consumer_t *kc, rd_kafka_topic_partition_list_t *tps, int lost) {
        rd_kafka_error_t *error = NULL;
        rd_kafka_resp_err_t err = RD_KAFKA_RESP_ERR_NO_ERROR;

        for (int i = 0; i < tps->cnt; i++) {
                kt_partition_t *p = part_find(kc, tps->elems[i].topic, tps->elems[i].partition);
                if (!p)
                        continue;
                part_state_set(kc, p, KT_PART_RELEASED, lost);
                carry_save(kc, p); /* what our commit did not cover */
                part_remove(kc, p);
        }
        if (kc->closing)
                atomic_store(&close_stage,
                             cooperative(kc) ? "rd_kafka_incremental_unassign() in the final revoke"
                                             : "rd_kafka_assign(NULL) in the final revoke");
        if (!assign_call_due(kc, lost))
                ; /* closing: answered already (see assign_call_due) */
        else if (cooperative(kc))
                error = rd_kafka_incremental_unassign(kc->rk, tps);
        else
                err = rd_kafka_assign(kc->rk, NULL);
        if (kc->closing)
                atomic_store(&close_stage, "serving the close queue (final revoke, LeaveGroup)");
        if (error) {
                KT_ERR(FAC, "incremental unassign failed: %s", rd_kafka_error_string(error));
                rd_kafka_error_destroy(error);
        } else if (err)
                KT_ERR(FAC, "unassign failed: %s", rd_kafka_err2str(err));
}

/** Add to \p dst the partitions of \p src it does not hold. */
static void list_merge(rd_kafka_topic_partition_list_t *dst,
                       const rd_kafka_topic_partition_list_t *src) {
        for (int i = 0; i < src->cnt; i++)
                if (!rd_kafka_topic_partition_list_find(dst, src->elems[i].topic,
                                                        src->elems[i].partition))
                        rd_kafka_topic_partition_list_add(dst, src->elems[i].topic,
                                                          src->elems[i].partition);
}

/*
 * A clean revoke must let the partitions' buffered records finish first, which may take as
 * long as the function does. Waiting inside the rebalance callback would stop polling for
 * that long and get the member evicted (max.poll.interval.ms), so the revoke is only started
 * here: the partitions become DRAINING (paused, their records go on) and the loop keeps
 * polling and calling kt_consumer_revoke_step(), which releases, commits and hands them back
 * (librdkafka holds the rebalance until we unassign). A second revoke while one pends joins
 * it: one set, one deadline, nothing freed while the loop still refers to it. Lost partitions
 * and the final revoke of consumer_close() are handed back at once, without a commit (lost:
 * they belong to someone else; closing: the loop committed before closing), together with a
 * pending revoke's partitions.
 */
static void on_revoke(kt_consumer_t *kc, rd_kafka_topic_partition_list_t *tps) {
        int lost = rd_kafka_assignment_lost(kc->rk);

        KT_INFO(FAC, "%s %d partitions", lost ? "lost" : "revoking", tps->cnt);
        if (lost) {
                kc->joined = 0;
                kc->stats.losts++;
        } else
                kc->stats.revokes++;
        if (lost || kc->closing) {
                if (kc->pending) {
                        list_merge(kc->pending, tps);
                        handback(kc, kc->pending, lost);
                        rd_kafka_topic_partition_list_destroy(kc->pending);
                        kc->pending = NULL;
                } else
                        handback(kc, tps, lost);
                return;
        }
        for (int i = 0; i < tps->cnt; i++) {
                kt_partition_t *p = part_find(kc, tps->elems[i].topic, tps->elems[i].partition);
                if (p && p->state == KT_PART_ACTIVE)
                        part_state_set(kc, p, KT_PART_DRAINING, 0);
        }
        if (kc->pending) {
                list_merge(kc->pending, tps);
                return;
        }
        kc->pending = rd_kafka_topic_partition_list_copy(tps);
        kc->pending_deadline = kt_now_ms() + kc->conf->drain_timeout_ms;
        memset(&kc->pending_commit, 0, sizeof(kc->pending_commit));
}

/** @returns the records of \p p not done yet (0: drained). */
static size_t part_undone(const kt_partition_t *p) {
        size_t n = 0;

        for (const kt_record_t *rec = p->q.head; rec; rec = rec->next)
                n += rec->state != KT_REC_DONE; /* done ones wait behind an unfinished head */
        return n;
}

size_t kt_consumer_draining(const kt_consumer_t *kc) {
        size_t n = 0;

        for (const kt_partition_t *p = kc->parts; p; p = p->next)
                if (p->state == KT_PART_DRAINING)
                        n += part_undone(p);
        return n;
}

size_t kt_consumer_undone(const kt_consumer_t *kc) {
        size_t n = 0;

        for (const kt_partition_t *p = kc->parts; p; p = p->next)
                if (p->state != KT_PART_RELEASED)
                        n += part_undone(p);
        return n;
}

void kt_consumer_release_all(kt_consumer_t *kc) {
        for (kt_partition_t *p = kc->parts; p; p = p->next)
                part_state_set(kc, p, KT_PART_RELEASED, 0);
}

size_t kt_consumer_producing(const kt_consumer_t *kc) {
        size_t n = 0;

        for (const kt_partition_t *p = kc->parts; p; p = p->next)
                if (p->state != KT_PART_RELEASED)
                        n += (size_t)p->producing;
        return n;
}

int64_t kt_consumer_revoke_step(kt_consumer_t *kc, int runtime_down) {
        int64_t now = kt_now_ms(), wake_at = INT64_MAX;
        rd_kafka_resp_err_t err = RD_KAFKA_RESP_ERR_NO_ERROR;
        kt_commit_status_t st;
        size_t left = 0, producing = 0;

        if (!kc->pending)
                return INT64_MAX;
        if (!kc->pending_commit.seq) {
                for (int i = 0; i < kc->pending->cnt; i++) {
                        kt_partition_t *p = part_find(kc, kc->pending->elems[i].topic,
                                                      kc->pending->elems[i].partition);
                        if (p && p->state == KT_PART_DRAINING) {
                                left += part_undone(p);
                                producing += (size_t)p->producing;
                        }
                }
                /* With the runtime down only records PRODUCING can still get done; the loop
                 * calls again when the runtime is back (its probe wakes it). */
                if (left && now < kc->pending_deadline && (!runtime_down || producing))
                        return kc->pending_deadline; /* completions wake the loop before */
                if (left && now < kc->pending_deadline)
                        KT_WARN(FAC,
                                "revoke: %zu records of revoked partitions not done and the "
                                "runtime is down: handed back now, not committed; their next "
                                "owner delivers them",
                                left);
                else if (left)
                        KT_WARN(FAC,
                                "drain timeout (%d ms): %zu records of revoked partitions not "
                                "done; they are not committed and their next owner delivers "
                                "them again",
                                kc->conf->drain_timeout_ms, left);
                for (int i = 0; i < kc->pending->cnt; i++) {
                        kt_partition_t *p = part_find(kc, kc->pending->elems[i].topic,
                                                      kc->pending->elems[i].partition);
                        if (p)
                                part_state_set(kc, p, KT_PART_RELEASED, 0);
                }
                kt_consumer_commit_wait_start(kc, &kc->pending_commit, kc->pending_deadline);
        }
        st = kt_consumer_commit_wait_step(kc, &kc->pending_commit, &wake_at, &err);
        if (st == KT_COMMIT_PENDING)
                return wake_at;
        if (st != KT_COMMIT_DONE)
                KT_WARN(FAC,
                        "commit of revoked partitions not completed (%s): records finished "
                        "since the last commit are delivered again by their next owner",
                        err ? rd_kafka_err2str(err) : "no answer in time");
        else
                KT_INFO(FAC, "committed, handing back %d partitions", kc->pending->cnt);
        handback(kc, kc->pending, 0);
        rd_kafka_topic_partition_list_destroy(kc->pending);
        kc->pending = NULL;
        return INT64_MAX;
}

/* ---------------------------------------------------------------- commits */

/** The commit metadata of \p p: its completed-offset map (see consumer_offsetmap.c).
 *  @returns a malloc'd NUL-terminated blob (librdkafka frees it with the list), NULL if none. */
static char *part_metadata(kt_consumer_t *kc, const kt_partition_t *p, size_t *lenp);

/** Room for the completed-offset map in a commit: under the broker's default
 *  offset.metadata.max.bytes (4096). What does not fit is left out (done again, never lost). */
#define KT_COMMIT_METADATA_BYTES 4000
/** Offsets handed to the encoder at most (far more than KT_COMMIT_METADATA_BYTES can hold). */
#define KT_COMMIT_METADATA_OFFSETS 65536

/** @returns the offset to commit for \p p: the one after the last popped record, or else its
 *  oldest buffered record (everything before it was never ours to deliver), -1 if none. */
static int64_t part_commit_offset(const kt_partition_t *p) {
        int64_t off = p->stored >= 0 ? p->stored : p->q.head ? p->q.head->offset : -1;

        /* Below the floor every record is done (ours before the partition was lost): records
         * below it are popped on arrival, so a head is never below it. */
        return p->done_floor > off ? p->done_floor : off;
}

/** @returns non-zero if a record of \p p is done (above its unfinished head). */
static int part_has_done(const kt_partition_t *p) {
        for (const kt_record_t *rec = p->q.head; rec; rec = rec->next)
                if (rec->state == KT_REC_DONE)
                        return 1;
        return 0;
}

static char *part_metadata(kt_consumer_t *kc, const kt_partition_t *p, size_t *lenp) {
        int64_t commit = part_commit_offset(p);
        char buf[KT_COMMIT_METADATA_BYTES];
        int64_t *done, covered, off;
        size_t n = 0, need = 0, len = 0;
        char *md = NULL;

        *lenp = 0;
        if (kc->metadata_off || commit < 0)
                return NULL;
        /* Size the scratch to what this partition can list (most have nothing above the
         * watermark: no allocation at all), and keep it for the next partition and commit. */
        for (const kt_record_t *rec = p->q.head; rec; rec = rec->next)
                need += rec->state == KT_REC_DONE && rec->offset > commit;
        need += kt_consumer_offsetmap_cnt(p->done_map);
        if (!need)
                return NULL;
        if (need > KT_COMMIT_METADATA_OFFSETS)
                need = KT_COMMIT_METADATA_OFFSETS;
        if (need > kc->md_offsets_size) {
                if (!(done = realloc(kc->md_offsets, need * sizeof(*done))))
                        return NULL; /* no map this time: done again, never lost */
                kc->md_offsets = done;
                kc->md_offsets_size = need;
        }
        done = kc->md_offsets;
        /* Finished above the watermark: ours, then what a previous owner finished that we
         * have not read yet (the rest of its map is ours now, in the tracker). */
        for (const kt_record_t *rec = p->q.head; rec && n < need; rec = rec->next)
                if (rec->state == KT_REC_DONE && rec->offset > commit)
                        done[n++] = rec->offset;
        off = p->next_offset > commit ? p->next_offset : commit + 1;
        if (n)
                off = done[n - 1] + 1 > off ? done[n - 1] + 1 : off;
        while (p->done_map && n < need && (off = kt_consumer_offsetmap_next(p->done_map, off)) >= 0)
                done[n++] = off++;
        if (n &&
            kt_consumer_offsetmap_encode(commit, done, n, buf, sizeof(buf), &len, &covered) ==
                KT_OK &&
            len) {
                if (covered < done[n - 1])
                        KT_DBG(FAC,
                               "%s [%d]: the offset map holds finished offsets up to %lld only",
                               p->topic, p->partition, (long long)covered);
                if ((md = malloc(len + 1))) {
                        memcpy(md, buf, len + 1);
                        *lenp = len;
                }
        }
        return md;
}

/** How long a new owner waits for the committed offsets' metadata. */
#define KT_COMMITTED_TIMEOUT_MS 5000

/**
 * Read the completed-offset maps the previous owners of \p tps left in their commits, so the
 * records they finished above the committed offset are not delivered again. A blob that does
 * not parse is ignored (logged), never trusted; no map means every record is delivered.
 */
static void done_maps_load(kt_consumer_t *kc, const rd_kafka_topic_partition_list_t *tps) {
        rd_kafka_topic_partition_list_t *l = rd_kafka_topic_partition_list_copy(tps);
        rd_kafka_resp_err_t err = rd_kafka_committed(kc->rk, l, KT_COMMITTED_TIMEOUT_MS);

        if (err) {
                KT_WARN(FAC,
                        "cannot read the committed offsets' metadata (%s): records a previous "
                        "owner finished above its committed offset may be delivered again",
                        rd_kafka_err2str(err));
                goto out;
        }
        for (int i = 0; i < l->cnt; i++) {
                rd_kafka_topic_partition_t *tp = &l->elems[i];
                kt_partition_t *p = part_find(kc, tp->topic, tp->partition);
                kt_offsetmap_t *m = NULL;
                char why[256];

                carry_t *c = p ? carry_find(kc, tp->topic, tp->partition) : NULL;

                if (c && !tp->err && tp->offset > c->offset) {
                        carry_drop(kc, c); /* committed further since: ours is behind */
                        c = NULL;
                }
                if (c && !p->done_map) {
                        /* Ours before it was lost, not committed yet: done up to there. */
                        p->done_floor = c->offset;
                        if (c->md &&
                            kt_consumer_offsetmap_decode(c->md, c->md_len, c->offset, &p->done_map,
                                                         why, sizeof(why)) != KT_OK)
                                p->done_map = NULL;
                        KT_INFO(FAC,
                                "%s [%d]: back to us: what we finished before (below %lld, "
                                "and its offset map) is not delivered again",
                                p->topic, p->partition, (long long)c->offset);
                        continue;
                }
                if (!p || p->done_map || tp->err || !tp->metadata_size || tp->offset < 0)
                        continue;
                if (kt_consumer_offsetmap_decode(tp->metadata, tp->metadata_size, tp->offset, &m,
                                                 why, sizeof(why)) != KT_OK) {
                        KT_WARN(FAC,
                                "%s [%d]: commit metadata at offset %lld ignored (not a "
                                "completed-offset map ktrigger can trust: %s)",
                                p->topic, p->partition, (long long)tp->offset, why);
                        continue;
                }
                if (!m)
                        continue;
                p->done_map = m;
                KT_INFO(FAC,
                        "%s [%d]: %zu records above offset %lld were finished by the previous "
                        "owner: they are not delivered again",
                        p->topic, p->partition, kt_consumer_offsetmap_cnt(m),
                        (long long)tp->offset);
        }
out:
        rd_kafka_topic_partition_list_destroy(l);
}

static void commit_done_cb(rd_kafka_t *rk, rd_kafka_resp_err_t err,
                           rd_kafka_topic_partition_list_t *offsets, void *opaque);

/** \p p is handed back: keep what it finished unless our last commit covered it.
 *  @returns non-zero if something was kept (our commit did not cover it). */
static int carry_save(kt_consumer_t *kc, const kt_partition_t *p) {
        int64_t offset = part_commit_offset(p);
        carry_t *c;
        size_t len = 0;
        char *md;

        if (offset < 0 || (p->stored < 0 && !part_has_done(p)) ||
            (p->committed == offset && !p->dirty))
                return 0; /* nothing of ours, or our last commit covered it */
        if (!(c = carry_find(kc, p->topic, p->partition))) {
                if (kc->carry_cnt == kc->carry_size) {
                        size_t n = kc->carry_size ? kc->carry_size * 2 : 16;
                        carry_t *a = n <= KT_CARRY_MAX ? realloc(kc->carry, n * sizeof(*a)) : NULL;
                        if (!a) {
                                KT_WARN(FAC,
                                        "%s [%d]: cannot keep its uncommitted progress (offset "
                                        "%lld): its next owner delivers it again",
                                        p->topic, p->partition, (long long)offset);
                                return 0;
                        }
                        kc->carry = a;
                        kc->carry_size = n;
                }
                c = &kc->carry[kc->carry_cnt];
                memset(c, 0, sizeof(*c));
                if (!(c->topic = strdup(p->topic)))
                        return 0;
                c->partition = p->partition;
                kc->carry_cnt++;
        } else if (c->offset > offset)
                return 1; /* what we kept is further */
        md = part_metadata(kc, p, &len);
        free(c->md);
        c->md = md;
        c->md_len = len;
        c->offset = offset;
        c->in_commit = 0;
        KT_INFO(FAC,
                "%s [%d]: handed back before its progress was committed: offset %lld kept, "
                "committed once the group is stable again",
                p->topic, p->partition, (long long)offset);
        return 1;
}

/** Add \p offset and a copy of \p md to \p offsets. */
static void commit_add(rd_kafka_topic_partition_list_t *offsets, const char *topic,
                       int32_t partition, int64_t offset, char *md, size_t len) {
        rd_kafka_topic_partition_t *tp =
            rd_kafka_topic_partition_list_add(offsets, topic, partition);

        tp->offset = offset;
        if (md) {
                tp->metadata = md; /* freed with the list */
                tp->metadata_size = len;
        }
}

static char *blob_dup(const char *md, size_t len) {
        char *copy = md ? malloc(len + 1) : NULL;

        if (copy)
                memcpy(copy, md, len + 1);
        return copy;
}

/** Start one asynchronous commit of every partition that has something done, and of the
 *  progress kept from partitions handed back uncommitted (carry_save). \p periodic
 *  (commit_tick): only when every partition is ACTIVE, and without the progress kept for
 *  partitions another member owns (that is tried once, by the commit on_assign starts). */
static void commit_send(kt_consumer_t *kc, int periodic) {
        rd_kafka_topic_partition_list_t *offsets = rd_kafka_topic_partition_list_new(
            kc->part_cnt + (int)kc->carry_cnt > 0 ? kc->part_cnt + (int)kc->carry_cnt : 1);
        rd_kafka_resp_err_t err;

        kc->commit_seq++;
        kc->commit_again = 0;
        kc->commit_periodic = periodic;
        kc->done_at_start = kc->done_cnt;
        for (size_t i = 0; i < kc->carry_cnt; i++)
                kc->carry[i].in_commit = 0; /* set again below if this commit carries it */
        for (kt_partition_t *p = kc->parts; p; p = p->next) {
                int64_t commit = part_commit_offset(p);
                carry_t *c = carry_find(kc, p->topic, p->partition);
                size_t len = 0;
                char *md;

                if (periodic && !c && !p->dirty && p->committed == commit)
                        continue; /* our last commit covered it and nothing changed since */
                p->dirty = 0;
                if (c && c->offset >= commit) {
                        /* It came back to us and has not got past what we kept. */
                        c->in_commit = kc->commit_seq;
                        commit_add(offsets, c->topic, c->partition, c->offset,
                                   blob_dup(c->md, c->md_len), c->md_len);
                        continue;
                }
                if (commit < 0 || (p->stored < 0 && !part_has_done(p)))
                        continue;
                md = part_metadata(kc, p, &len); /* before len is read */
                commit_add(offsets, p->topic, p->partition, commit, md, len);
                if (c)
                        c->in_commit = kc->commit_seq; /* ours is further: it covers it */
        }
        for (size_t i = 0; !periodic && i < kc->carry_cnt; i++) {
                carry_t *c = &kc->carry[i];
                if (part_find(kc, c->topic, c->partition))
                        continue; /* above */
                c->in_commit = kc->commit_seq;
                commit_add(offsets, c->topic, c->partition, c->offset, blob_dup(c->md, c->md_len),
                           c->md_len);
        }
        if (!offsets->cnt) {
                /* Nothing to commit is a commit that succeeded. */
                rd_kafka_topic_partition_list_destroy(offsets);
                kc->commit_ok_seq = kc->commit_done_seq = kc->commit_seq;
                kc->done_committed = kc->done_at_start;
                return;
        }
        /* Asynchronous: the answer is served by kt_consumer_poll() (the consumer queue). */
        err = rd_kafka_commit_queue(kc->rk, offsets, kc->rkq, commit_done_cb, kc);
        rd_kafka_topic_partition_list_destroy(offsets);
        if (err) {
                kc->commit_done_seq = kc->commit_seq;
                kc->commit_err = err;
                kc->assigns_at_fail = kc->stats.assigns;
                kc->stats.commit_failures++;
                KT_WARN(FAC, "cannot start a commit: %s", rd_kafka_err2str(err));
                return;
        }
        kc->commit_inflight = 1;
}

/** @returns non-zero if a periodic commit may be sent now (see DESIGN: Commits). */
static int periodic_ok(const kt_consumer_t *kc) {
        if (!kc->commit_interval_ms || kc->closing || kc->pending || !kc->join_steady ||
            !kc->joined || kc->commit_inflight || kc->commit_again)
                return 0;
        for (const kt_partition_t *p = kc->parts; p; p = p->next)
                if (p->state != KT_PART_ACTIVE)
                        return 0;
        return 1;
}

/** The periodic commit: every commit_interval_ms, of what finished since the last one. Not
 *  sent while periodic_ok() says no (tried again at the next interval); nothing new done,
 *  nothing sent. */
static void commit_tick(kt_consumer_t *kc) {
        int64_t now;

        if (!kc->commit_interval_ms || (now = kt_now_ms()) < kc->commit_due_ms)
                return;
        kc->commit_due_ms = now + kc->commit_interval_ms;
        if (kc->done_cnt == kc->done_committed || !periodic_ok(kc))
                return;
        commit_send(kc, 1);
}

int64_t kt_consumer_commit_due(const kt_consumer_t *kc) {
        return kc->commit_interval_ms ? kc->commit_due_ms : INT64_MAX;
}

int kt_consumer_commit_retry_ready(const kt_consumer_t *kc) {
        switch (kc->commit_err) {
        case RD_KAFKA_RESP_ERR_ILLEGAL_GENERATION:
        case RD_KAFKA_RESP_ERR_UNKNOWN_MEMBER_ID:
        case RD_KAFKA_RESP_ERR_REBALANCE_IN_PROGRESS:
        case RD_KAFKA_RESP_ERR__ASSIGNMENT_LOST:
                /* Sent again now it would wait behind the JoinGroup and fail the same way. */
                return kc->stats.assigns > kc->assigns_at_fail;
        default:
                return 1;
        }
}

uint64_t kt_consumer_commit_start(kt_consumer_t *kc) {
        if (kc->commit_inflight || !kc->join_safe) {
                /* Sent once the one in flight answered / the group join state allows. */
                kc->commit_again = 1;
                return kc->commit_seq + 1;
        }
        commit_send(kc, 0);
        return kc->commit_seq;
}

void kt_consumer_commit_wait_start(kt_consumer_t *kc, kt_commit_wait_t *cw, int64_t deadline) {
        int64_t now = kt_now_ms();

        cw->seq = kt_consumer_commit_start(kc);
        cw->deadline =
            deadline > now + KT_COMMIT_MIN_WAIT_MS ? deadline : now + KT_COMMIT_MIN_WAIT_MS;
        cw->retry_at = now + KT_COMMIT_RETRY_MS;
}

kt_commit_status_t kt_consumer_commit_wait_step(kt_consumer_t *kc, kt_commit_wait_t *cw,
                                                int64_t *wake_atp, rd_kafka_resp_err_t *errp) {
        rd_kafka_resp_err_t err = RD_KAFKA_RESP_ERR_NO_ERROR;
        kt_commit_status_t st = kt_consumer_commit_status(kc, cw->seq, &err);
        int64_t now = kt_now_ms();

        *errp = RD_KAFKA_RESP_ERR_NO_ERROR;
        if (st == KT_COMMIT_DONE)
                return st;
        if (now >= cw->deadline) {
                *errp = st == KT_COMMIT_FAILED ? err : RD_KAFKA_RESP_ERR_NO_ERROR;
                return KT_COMMIT_FAILED;
        }
        if (st == KT_COMMIT_PENDING) {
                *wake_atp = cw->deadline; /* the answer wakes the loop before */
                return st;
        }
        /* Refused, typically while the group rebalances (a member died, another joined):
         * librdkafka re-joins as we poll; sent again once that can help, and not before
         * KT_COMMIT_RETRY_MS (look again then, do not spin). */
        if (now >= cw->retry_at && kt_consumer_commit_retry_ready(kc)) {
                KT_INFO(FAC, "commit refused (%s): trying again", rd_kafka_err2str(err));
                cw->seq = kt_consumer_commit_start(kc);
        }
        if (cw->retry_at <= now)
                cw->retry_at = now + KT_COMMIT_RETRY_MS;
        *wake_atp = cw->retry_at;
        return KT_COMMIT_PENDING;
}

kt_commit_status_t kt_consumer_commit_status(const kt_consumer_t *kc, uint64_t seq,
                                             rd_kafka_resp_err_t *errp) {
        if (kc->commit_ok_seq >= seq)
                return KT_COMMIT_DONE;
        if (kc->commit_done_seq >= seq) {
                if (errp)
                        *errp = kc->commit_err;
                return KT_COMMIT_FAILED;
        }
        return KT_COMMIT_PENDING;
}

uint64_t kt_consumer_uncommitted_done(const kt_consumer_t *kc) {
        return kc->done_cnt - kc->done_committed;
}

static void rebalance_cb(rd_kafka_t *rk, rd_kafka_resp_err_t err,
                         rd_kafka_topic_partition_list_t *tps, void *opaque) {
        kt_consumer_t *kc = opaque;

        (void)rk;
        if (err == RD_KAFKA_RESP_ERR__ASSIGN_PARTITIONS)
                on_assign(kc, tps);
        else if (err == RD_KAFKA_RESP_ERR__REVOKE_PARTITIONS)
                on_revoke(kc, tps);
        else {
                KT_ERR(FAC, "rebalance error: %s", rd_kafka_err2str(err));
                if (assign_call_due(kc, rd_kafka_assignment_lost(kc->rk)))
                        rd_kafka_assign(kc->rk, NULL);
        }
}

/** The answer to commit_send()'s commit. */
static void commit_done_cb(rd_kafka_t *rk, rd_kafka_resp_err_t err,
                           rd_kafka_topic_partition_list_t *offsets, void *opaque) {
        kt_consumer_t *kc = opaque;

        (void)rk;
        for (int i = 0; !err && offsets && i < offsets->cnt; i++)
                if (offsets->elems[i].err)
                        err = offsets->elems[i].err;
        if (err == RD_KAFKA_RESP_ERR__NO_OFFSET)
                err = RD_KAFKA_RESP_ERR_NO_ERROR; /* nothing new to commit */
        kc->commit_inflight = 0;
        kc->commit_done_seq = kc->commit_seq;
        kc->commit_err = err;
        if (err == RD_KAFKA_RESP_ERR_OFFSET_METADATA_TOO_LARGE && !kc->metadata_off) {
                kc->metadata_off = 1;
                KT_ERR(FAC,
                       "the broker refuses commit metadata of up to %d bytes (its "
                       "offset.metadata.max.bytes is lower): committing without the "
                       "completed-offset map from now on (records finished above a record not "
                       "done at a drain's end will be delivered again)",
                       KT_COMMIT_METADATA_BYTES);
        }
        if (err && kc->commit_periodic) {
                /* Sent again at the next interval. A refusal because the generation moved
                 * on under it is the residual window of every commit between rebalances. */
                kc->stats.commit_failures++;
                kc->assigns_at_fail = kc->stats.assigns;
                if (!kc->commit_fail_streak++)
                        KT_INFO(FAC,
                                "periodic commit failed (%s): sent again every %lld ms until "
                                "one goes through",
                                rd_kafka_err2str(err), (long long)kc->commit_interval_ms);
                else
                        KT_DBG(FAC, "periodic commit failed again: %s", rd_kafka_err2str(err));
        } else if (err) {
                kc->stats.commit_failures++;
                kc->assigns_at_fail = kc->stats.assigns;
                KT_WARN(FAC, "offset commit failed: %s", rd_kafka_err2str(err));
        } else {
                if (kc->commit_fail_streak > 1)
                        KT_INFO(FAC, "committed again after %d failed periodic commits",
                                kc->commit_fail_streak);
                kc->commit_fail_streak = 0;
                kc->stats.commits++;
                kc->brokers_down = 0;
                kc->commit_ok_seq = kc->commit_seq;
                for (size_t i = kc->carry_cnt; i-- > 0;)
                        if (kc->carry[i].in_commit && kc->carry[i].in_commit <= kc->commit_seq) {
                                KT_INFO(FAC,
                                        "%s [%d]: the progress kept (offset %lld) is committed",
                                        kc->carry[i].topic, kc->carry[i].partition,
                                        (long long)kc->carry[i].offset);
                                carry_drop(kc, &kc->carry[i]);
                        }
                kc->done_committed = kc->done_at_start;
                for (int i = 0; offsets && i < offsets->cnt; i++) {
                        kt_partition_t *p =
                            part_find(kc, offsets->elems[i].topic, offsets->elems[i].partition);
                        if (p)
                                p->committed = offsets->elems[i].offset;
                }
        }
        /* A carry for a partition another member owns now is tried once: later, its owner
         * may have committed further, and ours would move the group's offset back. */
        for (size_t i = kc->carry_cnt; i-- > 0;)
                if (kc->carry[i].in_commit == kc->commit_seq &&
                    !part_find(kc, kc->carry[i].topic, kc->carry[i].partition)) {
                        if (err)
                                KT_WARN(FAC,
                                        "%s [%d]: the progress kept (offset %lld) could not be "
                                        "committed (%s): its owner delivers it again",
                                        kc->carry[i].topic, kc->carry[i].partition,
                                        (long long)kc->carry[i].offset, rd_kafka_err2str(err));
                        carry_drop(kc, &kc->carry[i]);
                }
        if (kc->commit_again && kc->join_safe && !kc->closing)
                commit_send(kc, 0);
}

/** librdkafka's statistics JSON: take each assigned partition's consumer_lag. */
static int stats_cb(rd_kafka_t *rk, char *json, size_t json_len, void *opaque) {
        kt_consumer_t *kc = opaque;
        cJSON *root = cJSON_ParseWithLength(json, json_len), *topics, *t;

        (void)rk;
        if (!root)
                return 0;
        {
                /* Ready needs a reachable cluster: at least one broker connection UP. */
                cJSON *brokers = cJSON_GetObjectItemCaseSensitive(root, "brokers"), *b;
                int up = 0;
                cJSON_ArrayForEach(b, brokers) {
                        cJSON *st = cJSON_GetObjectItemCaseSensitive(b, "state");
                        if (cJSON_IsString(st) && !strcmp(st->valuestring, "UP"))
                                up = 1;
                }
                const char *again = kt_rebootstrap_check(kc->rebootstrap, brokers, kt_now_ms());
                if (again)
                        rd_kafka_brokers_add(kc->rk, again);
                kc->stats.rebootstraps = kt_rebootstrap_count(kc->rebootstrap);
                if (cJSON_IsObject(brokers)) {
                        if (!up && !kc->brokers_down)
                                KT_WARN(FAC, "no broker reachable: not ready");
                        else if (up && kc->brokers_down)
                                KT_INFO(FAC, "a broker is reachable again");
                        kc->brokers_down = !up;
                }
        }
        topics = cJSON_GetObjectItemCaseSensitive(root, "topics");
        cJSON_ArrayForEach(t, topics) {
                cJSON *parts = cJSON_GetObjectItemCaseSensitive(t, "partitions"), *pj;
                cJSON_ArrayForEach(pj, parts) {
                        cJSON *pid = cJSON_GetObjectItemCaseSensitive(pj, "partition");
                        cJSON *lag = cJSON_GetObjectItemCaseSensitive(pj, "consumer_lag");
                        kt_partition_t *p;
                        if (!cJSON_IsNumber(pid) || !cJSON_IsNumber(lag) || pid->valueint < 0)
                                continue;
                        p = part_find(kc, t->string, (int32_t)pid->valueint);
                        if (p) {
                                p->lag = (int64_t)lag->valuedouble;
                                kc->stats.lag_updated = 1;
                        }
                }
        }
        cJSON_Delete(root);
        return 0; /* librdkafka frees json */
}

static int conf_set(rd_kafka_conf_t *rkconf, const char *name, const char *value, char *errstr,
                    size_t errstr_size) {
        char err[256];

        if (rd_kafka_conf_set(rkconf, name, value, err, sizeof(err)) == RD_KAFKA_CONF_OK)
                return 0;
        snprintf(errstr, errstr_size, "%s: %s", name, err);
        return -1;
}

/** Add librdkafka's `cgrp` debug context to what the user set (see join_state_follow()). */
static int debug_cgrp(rd_kafka_conf_t *rkconf, char *errstr, size_t errstr_size) {
        char cur[512], want[600];
        size_t len = sizeof(cur);

        if (rd_kafka_conf_get(rkconf, "debug", cur, &len) != RD_KAFKA_CONF_OK)
                cur[0] = '\0';
        if (strstr(cur, "cgrp") || strstr(cur, "all"))
                return 0;
        snprintf(want, sizeof(want), "%s%scgrp", cur, *cur ? "," : "");
        return conf_set(rkconf, "debug", want, errstr, errstr_size);
}

/** @returns the integer property \p name times \p unit (SIZE_MAX if it cannot be read). */
static size_t conf_size(rd_kafka_conf_t *rkconf, const char *name, size_t unit) {
        char buf[32];
        size_t len = sizeof(buf);
        char *end;
        unsigned long long v;

        if (rd_kafka_conf_get(rkconf, name, buf, &len) != RD_KAFKA_CONF_OK)
                return SIZE_MAX;
        v = strtoull(buf, &end, 10);
        if (*end || v > SIZE_MAX / unit)
                return SIZE_MAX;
        return (size_t)v * unit;
}

void kt_consumer_conf_set(kt_consumer_t *kc, const kt_config_t *conf) {
        kc->conf = conf;
        for (kt_partition_t *p = kc->parts; p; p = p->next)
                p->topic = conf->topics[p->topic_idx];
}

kt_consumer_t *kt_consumer_new(const kt_config_t *conf, const kt_consumer_hooks_t *hooks,
                               char *errstr, size_t errstr_size) {
        kt_consumer_t *kc;
        rd_kafka_conf_t *rkconf;
        rd_kafka_topic_partition_list_t *topics = NULL;
        rd_kafka_resp_err_t err;
        char rkerr[512];
        /* Defaults chosen for at-least-once with bounded memory; every one can be overridden
         * from kafka.properties except the ones config/ refuses. */
        static const char *const defaults[][2] = {
            {"partition.assignment.strategy", "cooperative-sticky"},
            /* Our periodic commit (commit_tick), with the completed-offset map, every second;
             * librdkafka's own auto-commit is off (set below, after the user's properties). */
            {"auto.commit.interval.ms", "1000"},
            /* Prefetch, per partition: each partition has its own queue (see DESIGN). With
             * the per-partition buffers (dispatch.partition_buffer_*) this is the memory
             * ktrigger decides; with lag a whole producer batch per partition (~300 bytes of
             * librdkafka op per record) comes on top (bench/README.md). A partition
             * that goes over them is fetched again when we have read it empty (see DESIGN:
             * waking the fetcher). */
            {"queued.max.messages.kbytes", "512"},
            {"queued.min.messages", "1000"},
            /* Fetch responses are shared by their records: one record still buffered keeps
             * its whole response allocated. Smaller responses (at most 64 KiB a partition,
             * 1 MiB in all) bound that; a bigger record, or a bigger producer batch, still
             * comes through whole. With small producer batches (Java's 16 KiB) 64 KiB holds
             * ~3 MiB less on 8 partitions than 256 KiB did (26.0 -> 22.8), at the same rate
             * (bench/README.md: Memory with lag). */
            {"fetch.message.max.bytes", "65536"},
            {"fetch.max.bytes", "1048576"},
            {"client.id", "ktrigger"},
            {"statistics.interval.ms", "5000"}, /* consumer lag for /metrics */
        };

        if (!(kc = calloc(1, sizeof(*kc)))) {
                snprintf(errstr, errstr_size, "out of memory");
                return NULL;
        }
        kc->conf = conf;
        if (hooks)
                kc->hooks = *hooks;
        kc->wake[0] = kc->wake[1] = -1;
        kc->join_safe = -1;
        kc->stats.lag_updated = 1; /* a re-join's new consumer owns nothing yet: no lag series */
        kc->by_id = calloc(conf->topic_cnt, sizeof(*kc->by_id));
        kc->by_id_size = calloc(conf->topic_cnt, sizeof(*kc->by_id_size));
        kc->rebootstrap = kt_rebootstrap_new("consumer", conf->brokers);
        if (!kc->by_id || !kc->by_id_size || !kc->rebootstrap) {
                snprintf(errstr, errstr_size, "out of memory");
                goto fail;
        }
        if (pipe(kc->wake) == -1 || fcntl(kc->wake[0], F_SETFL, O_NONBLOCK) == -1 ||
            fcntl(kc->wake[1], F_SETFL, O_NONBLOCK) == -1) {
                snprintf(errstr, errstr_size, "pipe: %s", strerror(errno));
                goto fail;
        }

        rkconf = rd_kafka_conf_new();
        for (size_t i = 0; i < sizeof(defaults) / sizeof(defaults[0]); i++)
                if (conf_set(rkconf, defaults[i][0], defaults[i][1], errstr, errstr_size))
                        goto fail_conf;
        for (size_t i = 0; i < conf->prop_cnt; i++)
                if (conf_set(rkconf, conf->props[i].name, conf->props[i].value, errstr,
                             errstr_size))
                        goto fail_conf;
        if (conf_set(rkconf, "bootstrap.servers", conf->brokers, errstr, errstr_size) ||
            conf_set(rkconf, "group.id", conf->group_id, errstr, errstr_size) ||
            conf_set(rkconf, "auto.offset.reset",
                     conf->start_from == KT_START_EARLIEST ? "earliest" : "latest", errstr,
                     errstr_size) ||
            conf_set(rkconf, "enable.auto.offset.store", "false", errstr, errstr_size) ||
            conf_set(rkconf, "enable.auto.commit", "false", errstr, errstr_size) ||
            conf_set(rkconf, "enable.partition.eof", "false", errstr, errstr_size) ||
            conf_set(rkconf, "log.queue", "true", errstr, errstr_size) ||
            debug_cgrp(rkconf, errstr, errstr_size) ||
            (conf->instance_id &&
             conf_set(rkconf, "group.instance.id", conf->instance_id, errstr, errstr_size)))
                goto fail_conf;
        rd_kafka_conf_set_opaque(rkconf, kc);
        rd_kafka_conf_set_log_cb(rkconf, log_cb);
        rd_kafka_conf_set_error_cb(rkconf, error_cb);
        rd_kafka_conf_set_rebalance_cb(rkconf, rebalance_cb);
        rd_kafka_conf_set_stats_cb(rkconf, stats_cb);

        kc->prefetch_msgs = conf_size(rkconf, "queued.min.messages", 1);
        {
                size_t ms = conf_size(rkconf, "auto.commit.interval.ms", 1);
                kc->commit_interval_ms = ms == SIZE_MAX ? 1000 : (int64_t)ms; /* 0: none */
                kc->commit_due_ms = kt_now_ms() + kc->commit_interval_ms;
        }
        kc->prefetch_bytes = conf_size(rkconf, "queued.max.messages.kbytes", 1024);
        kc->rk = rd_kafka_new(RD_KAFKA_CONSUMER, rkconf, rkerr, sizeof(rkerr));
        if (!kc->rk) {
                snprintf(errstr, errstr_size, "%s", rkerr);
                goto fail_conf;
        }
        rkconf = NULL;                        /* now owned by rk */
        rd_kafka_set_log_queue(kc->rk, NULL); /* main queue, forwarded below */
        rd_kafka_poll_set_consumer(kc->rk);
        kc->rkq = rd_kafka_queue_get_consumer(kc->rk);
        {
                wake_t w = {-1, -1}; /* the same frame size as the partitions' (see DESIGN) */
                rd_kafka_queue_io_event_enable(kc->rkq, kc->wake[1], &w, sizeof(w));
        }

        topics = rd_kafka_topic_partition_list_new((int)conf->topic_cnt);
        for (size_t i = 0; i < conf->topic_cnt; i++)
                rd_kafka_topic_partition_list_add(topics, conf->topics[i], RD_KAFKA_PARTITION_UA);
        err = rd_kafka_subscribe(kc->rk, topics);
        rd_kafka_topic_partition_list_destroy(topics);
        if (err) {
                snprintf(errstr, errstr_size, "subscribe: %s", rd_kafka_err2str(err));
                goto fail;
        }
        KT_INFO(FAC, "joining group \"%s\" for %zu topic(s) on %s", conf->group_id, conf->topic_cnt,
                *conf->brokers ? conf->brokers : "the brokers ZooKeeper will give");
        return kc;

fail_conf:
        if (rkconf)
                rd_kafka_conf_destroy(rkconf);
fail:
        kt_consumer_destroy(kc);
        return NULL;
}

/** The handle rd_kafka_destroy() runs on in destroyer(), and whether it returned. */
struct destroying {
        rd_kafka_t *rk;
        int flags;
        _Atomic int done;
};

static void *destroyer(void *arg) {
        struct destroying *d = arg;

        rd_kafka_destroy_flags(d->rk, d->flags);
        atomic_store(&d->done, 1);
        return NULL;
}

/**
 * rd_kafka_destroy() waits for the group handler to terminate, which waits for the commit and
 * LeaveGroup requests still out to be answered or to time out: up to session.timeout.ms when
 * the coordinator does not answer (seen: 35 s after a 10 s close). Nothing of ours runs in it
 * (the partitions are gone, no callback is served), so it runs on a thread of its own while
 * this one keeps beating; we wait for it, so nothing of the handle outlives us.
 */
static void handle_destroy(kt_consumer_t *kc, void (*beat)(void *opaque), void *opaque) {
        struct destroying d = {kc->rk,
                               kc->close_timed_out ? RD_KAFKA_DESTROY_F_NO_CONSUMER_CLOSE : 0, 0};
        pthread_t thr;

        kc->rk = NULL;
        atomic_store(&close_stage, "rd_kafka_destroy()");
        if (!beat || pthread_create(&thr, NULL, destroyer, &d)) {
                destroyer(&d);
        } else {
                struct timespec ts = {0, KT_CONSUMER_CLOSE_POLL_MS * 1000000L};
                while (!atomic_load(&d.done)) {
                        beat(opaque);
                        nanosleep(&ts, NULL);
                }
                pthread_join(thr, NULL);
        }
        if (kc->was_member)
                KT_INFO(FAC, "left the group");
        else
                KT_INFO(FAC, "consumer closed (it never joined the group)");
}

int kt_consumer_close(kt_consumer_t *kc, void (*beat)(void *opaque), void *opaque) {
        rd_kafka_queue_t *q;
        rd_kafka_error_t *error;
        int64_t deadline;

        if (!kc || !kc->rk || kc->closing)
                return 0;
        kc->closing = 1; /* the loop committed before: revokes now hand back at once */
        atomic_store(&close_stage, "serving the close queue (final revoke, LeaveGroup)");
        if (kc->pending) {
                handback(kc, kc->pending, 0);
                rd_kafka_topic_partition_list_destroy(kc->pending);
                kc->pending = NULL;
        }
        if (kc->rkq) {
                /* librdkafka wants the consumer queue handle gone before close. */
                rd_kafka_queue_io_event_enable(kc->rkq, -1, NULL, 0);
                rd_kafka_queue_destroy(kc->rkq);
                kc->rkq = NULL;
        }
        /* Not rd_kafka_consumer_close(): it blocks (up to session.timeout.ms with the
         * coordinator gone) with no way to tell anyone we are alive. The asynchronous close
         * sends the final revoke (release, unassign) and the LeaveGroup through q, which we
         * serve here in short waits, beating between them, for at most
         * KT_CONSUMER_CLOSE_MS. */
        if (!(q = rd_kafka_queue_new(kc->rk))) {
                kc->close_timed_out = 1;
                goto out;
        }
        kc->close_started = 1; /* from here on, one (un)assign call (see assign_call_due) */
        if ((error = rd_kafka_consumer_close_queue(kc->rk, q))) {
                KT_WARN(FAC, "consumer close: %s", rd_kafka_error_string(error));
                rd_kafka_error_destroy(error);
                kc->close_timed_out = 1;
                goto out;
        }
        deadline = kt_now_ms() + KT_CONSUMER_CLOSE_MS;
        while (!rd_kafka_consumer_closed(kc->rk)) {
                rd_kafka_message_t *rkm;

                if (beat)
                        beat(opaque);
                if (kt_now_ms() >= deadline) {
                        KT_WARN(FAC,
                                "leaving the group took more than %d ms: closing without "
                                "waiting for the group coordinator (the group notices when "
                                "this member's session times out)",
                                KT_CONSUMER_CLOSE_MS);
                        kc->close_timed_out = 1;
                        break;
                }
                /* The consumer queue is forwarded to q now: this serves q, with the
                 * rebalance and log callbacks as usual. */
                if ((rkm = rd_kafka_consumer_poll(kc->rk, KT_CONSUMER_CLOSE_POLL_MS)))
                        rd_kafka_message_destroy(rkm); /* a late record: its next owner gets it */
        }
        /* Closed may be flagged before the last events (the final revoke) are served. */
        for (int i = 0; i < 1000 && rd_kafka_queue_length(q) > 0; i++) {
                rd_kafka_message_t *rkm = rd_kafka_consumer_poll(kc->rk, 0);
                if (rkm)
                        rd_kafka_message_destroy(rkm);
        }
out:
        if (q)
                rd_kafka_queue_destroy(q);
        /* After a fatal error the close revokes without the rebalance callback (and a close
         * that timed out may not have got to it): release what is left through the hook (as
         * lost) so nothing still points at it. A close that got its one (un)assign call in has
         * released everything with it (assign_call_due). */
        for (kt_partition_t *p = kc->parts; p; p = p->next)
                part_state_set(kc, p, KT_PART_RELEASED, 1);
        while (kc->parts)
                part_remove(kc, kc->parts);
        handle_destroy(kc, beat, opaque);
        atomic_store(&close_stage, NULL);
        return kc->close_timed_out ? -1 : 0;
}

void kt_consumer_destroy(kt_consumer_t *kc) {
        if (!kc)
                return;
        kt_consumer_close(kc, NULL, NULL);
        free(kc->md_offsets);
        if (kc->carry_cnt)
                KT_WARN(FAC,
                        "the progress of %zu partitions handed back could not be committed: "
                        "their next owners deliver again what was finished there",
                        kc->carry_cnt);
        while (kc->carry_cnt)
                carry_drop(kc, &kc->carry[0]);
        free(kc->carry);
        for (size_t i = 0; kc->by_id && i < kc->conf->topic_cnt; i++)
                free(kc->by_id[i]);
        free(kc->by_id);
        free(kc->by_id_size);
        kt_rebootstrap_destroy(kc->rebootstrap);
        if (kc->wake[0] != -1)
                close(kc->wake[0]);
        if (kc->wake[1] != -1)
                close(kc->wake[1]);
        free(kc);
}

int kt_consumer_wakeup_fd(const kt_consumer_t *kc) {
        return kc->wake[0];
}

static void buffer_record(kt_consumer_t *kc, rd_kafka_message_t *rkm) {
        kt_partition_t *p = part_find(kc, rd_kafka_topic_name(rkm->rkt), rkm->partition);
        size_t key_len = rkm->key ? rkm->key_len : 0, len = rkm->payload ? rkm->len : 0;
        rd_kafka_timestamp_type_t tstype;
        kt_record_t *rec;
        char *data;

        if (!p || p->state != KT_PART_ACTIVE) {
                /* A late record of a partition we no longer own: the owner will get it. */
                rd_kafka_message_destroy(rkm);
                return;
        }
        if (!(rec = malloc(sizeof(*rec) + key_len + len))) {
                /* Cannot buffer it, so nothing after it may ever be committed: stop taking
                 * this partition and stop the daemon; the record is fetched again later. */
                KT_ERR(FAC, "out of memory buffering %s [%d] @%lld: stopping", p->topic,
                       p->partition, (long long)rkm->offset);
                part_state_set(kc, p, KT_PART_DRAINING, 0); /* nothing after it is read */
                kc->fatal = 1;
                rd_kafka_message_destroy(rkm);
                return;
        }
        if (p->q.tail && rkm->offset <= p->q.tail->offset) {
                /* Already buffered (it came through the consumer queue before the partition's
                 * own queue was set up): never twice, never out of order. Below everything
                 * buffered it is not that but the log going back (an offset reset, an unclean
                 * leader election): say so, once per jump. */
                if (rkm->offset < p->q.head->offset &&
                    (p->went_back_to < 0 || rkm->offset < p->went_back_to)) {
                        p->went_back_to = rkm->offset;
                        KT_WARN(FAC,
                                "%s [%d]: the log went back to offset %lld while %lld..%lld are "
                                "buffered (offset reset or unclean leader election?): records "
                                "up to %lld are skipped until the buffer is done",
                                p->topic, p->partition, (long long)rkm->offset,
                                (long long)p->q.head->offset, (long long)p->q.tail->offset,
                                (long long)p->q.tail->offset);
                }
                free(rec);
                rd_kafka_message_destroy(rkm);
                return;
        }
        memset(rec, 0, sizeof(*rec)); /* not the data: it is copied over */
        data = (char *)(rec + 1);
        if (rkm->key)
                rec->key = memcpy(data, rkm->key, key_len);
        rec->key_len = key_len;
        if (rkm->payload)
                rec->value = memcpy(data + key_len, rkm->payload, len);
        rec->len = len;
        rec->timestamp_ms = rd_kafka_message_timestamp(rkm, &tstype);
        rec->timestamp_type = (int)tstype;
        {
                rd_kafka_resp_err_t herr = rd_kafka_message_detach_headers(rkm, &rec->headers);
                if (herr) {
                        rec->headers = NULL;
                        /* Not none, unreadable: the loop counts and logs the loss. */
                        if (herr != RD_KAFKA_RESP_ERR__NOENT)
                                rec->headers_err = (int)herr;
                }
        }
        rec->part = p;
        rec->offset = rkm->offset;
        rd_kafka_message_destroy(rkm);
        /* rec->state is KT_REC_QUEUED (0, zeroed above): every record is born so. */
        rec->heap_idx = SIZE_MAX;
        kt_tracker_push(&p->q, rec);
        kc->buffered++;
        p->bytes += len + key_len;
        p->next_offset = rec->offset + 1;
        p->burst_cnt++;
        p->burst_bytes += len + key_len;

        if (!p->full && (p->q.cnt >= (size_t)kc->conf->partition_buffer_records ||
                         p->bytes >= (size_t)kc->conf->partition_buffer_bytes)) {
                p->full = 1;
                KT_DBG(FAC, "%s [%d]: buffer full (%zu records, %zu bytes)", p->topic, p->partition,
                       p->q.cnt, p->bytes);
        }
        if (rec->offset < p->done_floor ||
            (p->done_map && kt_consumer_offsetmap_done(p->done_map, rec->offset))) {
                /* A previous owner finished it (its commit's offset map): done, not called. */
                kc->stats.already_done++;
                KT_DBG(FAC, "%s [%d] @%lld: finished by the previous owner", p->topic, p->partition,
                       (long long)rec->offset);
                kt_consumer_record_done(kc, rec); /* may free rec */
                return;
        }
        if (kc->hooks.record)
                kc->hooks.record(kc->hooks.opaque, rec);
}

static void message_serve(kt_consumer_t *kc, rd_kafka_message_t *rkm) {
        if (!rkm->err)
                kc->brokers_down = 0; /* a record came from a broker */
        if (rkm->err) {
                if (rkm->rkt)
                        KT_WARN(FAC, "%s [%d]: %s", rd_kafka_topic_name(rkm->rkt), rkm->partition,
                                rd_kafka_message_errstr(rkm));
                else
                        KT_WARN(FAC, "%s", rd_kafka_message_errstr(rkm));
                rd_kafka_message_destroy(rkm);
                return;
        }
        buffer_record(kc, rkm);
}

/** \p p's queue was just read empty: wake its fetcher if it may be waiting (see DESIGN). */
static void fetch_wakeup(kt_consumer_t *kc, kt_partition_t *p) {
        int over = p->burst_cnt >= kc->prefetch_msgs || p->burst_bytes >= kc->prefetch_bytes;
        rd_kafka_resp_err_t err;

        /* Whatever librdkafka's queue held at any moment was read between two empty reads:
         * if this burst stayed under the bounds, so did the queue. */
        p->burst_cnt = p->burst_bytes = 0;
        if (!over || p->next_offset < 0 || p->paused || p->state != KT_PART_ACTIVE)
                return;
        err = rd_kafka_seek(p->rkt, p->partition, p->next_offset, 0 /* async */);
        if (err)
                KT_DBG(FAC, "%s [%d]: waking the fetcher at %lld failed: %s", p->topic,
                       p->partition, (long long)p->next_offset, rd_kafka_err2str(err));
        else
                kc->stats.fetch_wakeups++;
}

/** Drain the wake-up pipe: each frame names a queue that went from empty to non-empty. */
static void wake_read(kt_consumer_t *kc) {
        wake_t w[64];
        size_t total = 0;
        ssize_t got;

        while ((got = read(kc->wake[0], w, sizeof(w))) > 0) {
                total += (size_t)got;
                if ((size_t)got % sizeof(w[0]))
                        total = KT_WAKE_PIPE_MIN; /* cannot happen (whole frames): read all */
                for (size_t i = 0; i < (size_t)got / sizeof(w[0]); i++) {
                        kt_partition_t *p;
                        if (w[i].topic_idx < 0 || (size_t)w[i].topic_idx >= kc->conf->topic_cnt ||
                            w[i].partition < 0 || w[i].partition >= kc->by_id_size[w[i].topic_idx])
                                continue; /* the consumer queue: always polled */
                        if ((p = kc->by_id[w[i].topic_idx][w[i].partition]))
                                read_list_add(kc, p); /* NULL: gone since, nothing to read */
                }
        }
        if (total >= KT_WAKE_PIPE_MIN) /* the pipe may have been full: a frame lost */
                for (kt_partition_t *p = kc->parts; p; p = p->next)
                        read_list_add(kc, p);
}

int kt_consumer_poll(kt_consumer_t *kc, int max) {
        rd_kafka_message_t *batch[64];
        kt_partition_t *p;
        int n, more = 0;

        /* Drain the wake-up pipe before polling: librdkafka writes it again only when a queue
         * goes from empty to non-empty. */
        wake_read(kc);
        /* Group events, errors, logs, statistics (and records of partitions whose own queue
         * could not be set up). */
        for (n = 0; n < max; n++) {
                rd_kafka_message_t *rkm = rd_kafka_consumer_poll(kc->rk, 0);
                if (!rkm)
                        break;
                message_serve(kc, rkm);
        }
        if (n >= max)
                more = 1;
        if (kc->commit_again && !kc->commit_inflight && kc->join_safe && !kc->closing)
                commit_send(kc, 0); /* deferred while the group was joining */
        commit_tick(kc);
        /* Records, from the partitions that may hold some: named by a wake-up, cut short by
         * the batch size, or full and drained since (no new wake-up tells of those). The list
         * is taken whole; what is read here and may hold more goes on the next one. */
        kc->reading = kc->to_read;
        kc->to_read = NULL;
        while ((p = kc->reading)) {
                size_t room, limit = (size_t)kc->conf->partition_buffer_records;
                ssize_t got;

                kc->reading = p->read_next;
                p->more = 0;
                if (p->q.cnt >= limit) /* the bound was lowered live: full, as buffer_record says */
                        p->full = 1;
                /* Full: read again once drained (kt_consumer_record_done puts it back). */
                if (!p->rkq || p->full || p->state != KT_PART_ACTIVE)
                        continue;
                room = limit - p->q.cnt;
                if (room > sizeof(batch) / sizeof(batch[0]))
                        room = sizeof(batch) / sizeof(batch[0]);
                got = rd_kafka_consume_batch_queue(p->rkq, 0, batch, room);
                kc->stats.partition_reads++;
                for (ssize_t i = 0; i < got; i++)
                        message_serve(kc, batch[i]);
                /* A full batch means there may be more; an empty queue will wake us. */
                if (got > 0 && (size_t)got == room) {
                        read_list_add(kc, p);
                        if (!p->full)
                                more = 1;
                }
                if (got >= 0 && (size_t)got < room)
                        fetch_wakeup(kc, p);
                n += got > 0 ? (int)got : 0;
        }
        return more;
}

kt_partition_t *kt_consumer_partitions(kt_consumer_t *kc) {
        return kc->parts;
}

void kt_consumer_blocked(kt_consumer_t *kc, int64_t now_ms, int *cntp, int64_t *longest_msp) {
        int64_t longest = 0;
        int cnt = 0;

        for (const kt_partition_t *p = kc->parts; p; p = p->next) {
                const kt_record_t *head = p->q.head;
                if (!head || !head->failing_since_ms || p->state == KT_PART_RELEASED)
                        continue;
                cnt++;
                if (now_ms - head->failing_since_ms > longest)
                        longest = now_ms - head->failing_since_ms;
        }
        *cntp = cnt;
        *longest_msp = longest;
}

void kt_consumer_lag_write(kt_consumer_t *kc, FILE *f) {
        for (const kt_partition_t *p = kc->parts; p; p = p->next)
                if (p->lag >= 0)
                        fprintf(f, "ktrigger_consumer_lag{topic=\"%s\",partition=\"%d\"} %lld\n",
                                p->topic, p->partition, (long long)p->lag);
}

void kt_consumer_record_done(kt_consumer_t *kc, kt_record_t *rec) {
        kt_partition_t *p = rec->part;
        kt_record_t *done;
        int popped = 0;

        kt_consumer_record_state_set(rec, KT_REC_DONE);
        kc->done_cnt++;
        p->dirty = 1;
        while ((done = kt_tracker_pop_done(&p->q))) {
                p->bytes -= done->len + done->key_len; /* a done record holds no reply */
                record_free(done);
                kc->buffered--;
                popped++;
        }
        if (!popped)
                return;
        if (p->done_map && p->q.commit_offset > kt_consumer_offsetmap_last(p->done_map)) {
                kt_consumer_offsetmap_destroy(p->done_map); /* all of it is behind us */
                p->done_map = NULL;
        }
        p->stored = p->q.commit_offset; /* the next commit (ours) takes it */

        /* Read again at half, so a partition does not flap between full and not. */
        if (p->full && p->q.cnt <= (size_t)kc->conf->partition_buffer_records / 2 &&
            p->bytes <= (size_t)kc->conf->partition_buffer_bytes / 2) {
                p->full = 0;
                read_list_add(kc, p); /* its queue may hold records: no wake-up will tell */
                kc->more = 1;
                KT_DBG(FAC, "%s [%d]: buffer drained (%zu), reading again", p->topic, p->partition,
                       p->q.cnt);
        }
}

void kt_consumer_hold(kt_consumer_t *kc, int hold) {
        kc->hold = hold;
        for (kt_partition_t *p = kc->parts; p; p = p->next)
                set_paused(kc, p, hold || p->state != KT_PART_ACTIVE);
}

int kt_consumer_more(kt_consumer_t *kc) {
        int more = kc->more;
        kc->more = 0;
        return more;
}

kt_consumer_stats_t *kt_consumer_stats(kt_consumer_t *kc) {
        return &kc->stats;
}

int kt_consumer_fatal(const kt_consumer_t *kc) {
        return kc->fatal;
}

int kt_consumer_joined(const kt_consumer_t *kc) {
        return kc->joined && !kc->brokers_down;
}

int kt_consumer_assigned_cnt(const kt_consumer_t *kc) {
        return kc->part_cnt;
}

size_t kt_consumer_buffered(const kt_consumer_t *kc) {
        return kc->buffered;
}

int kt_consumer_brokers_add(kt_consumer_t *kc, const char *brokers) {
        kt_rebootstrap_remember(kc->rebootstrap, brokers);
        return rd_kafka_brokers_add(kc->rk, brokers);
}
