/*
 * DESIGN: the event loop. One thread owns the consumer, the dispatcher, the scheduler, the
 * dead-letter producer, every record and every offset; nothing here is locked because nothing
 * here is shared.
 *
 * One iteration (calls first: with one partition in `partition` ordering the time from a
 * response to its successor's request is what bounds throughput):
 *   1. drive libcurl: a finished call resolves its record (done -> the consumer stores the
 *      offset its partition is finished up to), or schedules a retry, or gives up on it by
 *      dispatch.on_failure (skip / dead-letter; block never gives up);
 *   2. start calls: retries that are due, then records whose lane is free (see
 *      dispatch_sched.c), while call slots (dispatch.max_in_flight) are free, and send them;
 *   3. serve Kafka (records into partition buffers and into the scheduler, rebalance
 *      callbacks, logs), bounded; serve the dead-letter producer's delivery reports; the
 *      records read here are started on the next pass, which does not sleep;
 *   4. sleep in epoll (kt_dispatch_wait) on curl's sockets, the Kafka and producer wake-up
 *      pipes and the signalfd, no longer than the next retry, the next runtime probe or 1 s (the
 *      health heartbeat). If the Kafka budget ran out, do not sleep: the wake-up pipe fires only on
 *      empty -> non-empty.
 *
 * The runtime being down (connection refused) is not a record failure: the record goes back
 * to the front without its attempt counting, every partition is held paused, /readyz turns
 * not-ready, and the health path is probed with back-off until it answers 2xx.
 *
 * Drains (a drain means done, in every ordering). Revocation: the partitions become DRAINING
 * (consumer_group.c): nothing more is fetched for them, but their buffered records keep being
 * started and retried here like any other, and the loop goes on polling Kafka (so a slow
 * function never exceeds max.poll.interval.ms) until none of theirs is left that is not done
 * or dispatch.drain_timeout_ms passed; kt_consumer_revoke_step() then releases them (on_release
 * cancels what still runs: not done, never committed), commits and hands them back. Shutdown
 * and re-join drain every partition the same way, as loop states (kt_loop_state_t below).
 *
 * Reload (SIGHUP): the file, environment and --set flags are read again into a new
 * configuration; if it is invalid every error is logged and the running one stays. Otherwise
 * kt_config_diff() says how the changes apply (strongest class wins):
 *   - live: log level and format, dispatch limits, retries, on_failure, runtime URL and timeout:
 *     every module is pointed at the new configuration between two iterations, the dispatcher
 *     grows its slots if max_in_flight grew;
 *   - re-join: kafka.*, the handler, dispatch.ordering, or a producer needed/no longer needed:
 *     the loop goes to REJOIN_DRAIN (fetching held, the buffer finished, as above), commits,
 *     the consumer leaves the group, and a new consumer (and scheduler, and producer) is made
 *     from the new configuration. Nothing is lost; nothing finished is delivered twice (what
 *     finished above an unfinished record at a drain timeout is in the commit's offset map);
 *   - restart: metrics.listen is logged as needing a restart.
 * The old configuration is freed once nothing points into it.
 *
 * ZooKeeper discovery (kafka.zookeeper, consumer_zk.c) adds one more pipe to sleep on and its
 * retry timer to next_due_ms; zk_poll() hands each broker found to the consumer and the
 * producer (rd_kafka_brokers_add).
 */
#define _GNU_SOURCE
#include "core.h"

#include "../config/config.h"
#include "../consumer/consumer.h"
#include "../dispatch/dispatch.h"
#include "../metrics/metrics.h"

#include <errno.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/signalfd.h>
#include <unistd.h>

#define FAC "LOOP"

/** Kafka events served per iteration before curl gets its turn. */
#define KT_LOOP_KAFKA_BUDGET 1000
/** Longest sleep: bounds how stale the health heartbeat can get. */
#define KT_LOOP_MAX_WAIT_MS 1000
/** Runtime health probes back off from the first to the second. */
#define KT_PROBE_MIN_MS 100
#define KT_PROBE_MAX_MS 5000
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
 * least KT_LOOP_COMMIT_MIN_MS after the drain). A commit that never completes is a WARN
 * saying how many finished records may come again; a shutdown still exits 0.
 */
typedef enum kt_loop_state {
        KT_LOOP_RUNNING,
        KT_LOOP_REJOIN_DRAIN,
        KT_LOOP_REJOIN_COMMIT,
        KT_LOOP_SHUTDOWN_DRAIN,
        KT_LOOP_SHUTDOWN_COMMIT,
        KT_LOOP_STOPPED
} kt_loop_state_t;

/** A drained shutdown or re-join waits at least this long for its commit to complete. */
#define KT_LOOP_COMMIT_MIN_MS 2000
/** A refused final commit is tried again after this long. */
#define KT_LOOP_COMMIT_RETRY_MS 250

typedef struct kt_loop {
        kt_loop_state_t state;
        kt_config_t *conf;
        kt_config_t **confp; /**< the caller's pointer: updated on reload */
        kt_consumer_hooks_t hooks;
        size_t *topic_map; /**< conf->topics index -> metrics topic index */
        int reload_asked;
        kt_config_t *rejoin_conf;  /**< REJOIN_*: the configuration to join with */
        int64_t drain_deadline_ms; /**< *_DRAIN and *_COMMIT: when to give up waiting */
        uint64_t final_commit;     /**< *_COMMIT: the commit waited for */
        int64_t commit_retry_at_ms;
        int64_t nomem_until_ms; /**< start no call before (an allocation failed) */
        kt_consumer_t *kc;
        kt_dispatch_t *kd;
        kt_metrics_t *km;
        kt_sched_t *ks;
        kt_produce_t *kp; /**< NULL unless on_failure = dead-letter or a reply_topic is set */
        kt_zk_t *zk;      /**< NULL unless kafka.zookeeper is set */
        int sigfd;
        int64_t next_due_ms; /**< earliest timer (retry or probe), INT64_MAX if none */
        int runtime_down;
        int probing;
        int64_t probe_at_ms;
        int probe_backoff_ms;
} kt_loop_t;

/** A reply or dead letter in flight. The record may be dropped (revoked) before Kafka answers;
 *  then rec is NULLed and the report is ignored. */
typedef struct ticket {
        kt_record_t *rec;
        char *reply; /**< the reply librdkafka borrows (owned here until the report), or NULL */
} ticket_t;

static void wake_at(kt_loop_t *kl, int64_t at_ms) {
        if (at_ms < kl->next_due_ms)
                kl->next_due_ms = at_ms;
}

static void retry_later(kt_loop_t *kl, kt_record_t *rec, int64_t delay_ms) {
        if (kt_sched_retry_at(kl->ks, rec, kt_now_ms() + delay_ms)) {
                /* No memory for the timer: keep the record at the front rather than lose
                 * track, and start nothing for a while (else dispatch_ready would spin on it). */
                kt_sched_requeue(kl->ks, rec);
                kl->nomem_until_ms = kt_now_ms() + KT_NOMEM_PAUSE_MS;
                wake_at(kl, kl->nomem_until_ms);
                return;
        }
        wake_at(kl, rec->retry_at_ms);
}

static void record_error_set(kt_record_t *rec, long status, const char *error) {
        if (!rec->failing_since_ms)
                rec->failing_since_ms = kt_now_ms(); /* its partition is blocked from now */
        rec->last_status = status;
        free(rec->last_error);
        rec->last_error = error && *error ? strdup(error) : NULL;
}

/* ---------------------------------------------------------------- runtime health */

static void runtime_down_enter(kt_loop_t *kl) {
        if (kl->runtime_down)
                return;
        kl->runtime_down = 1;
        kl->probe_backoff_ms = KT_PROBE_MIN_MS;
        kl->probe_at_ms = kt_now_ms() + kl->probe_backoff_ms;
        wake_at(kl, kl->probe_at_ms);
        kt_metrics_runtime_up_set(kl->km, 0);
        kt_consumer_hold(kl->kc, 1);
        KT_WARN(FAC,
                "runtime at %s does not accept connections: consumption paused until %s "
                "answers",
                kl->conf->runtime_url, kl->conf->runtime_health_url);
}

/** kt_dispatch_probe_cb */
static void on_probe(int up, void *cbarg) {
        kt_loop_t *kl = cbarg;

        kl->probing = 0;
        if (!kl->kc) {
                /* Waiting at start: wait_for_runtime() looks at runtime_down. */
                kl->runtime_down = !up;
                return;
        }
        if (!up) {
                kl->probe_backoff_ms *= 2;
                if (kl->probe_backoff_ms > KT_PROBE_MAX_MS)
                        kl->probe_backoff_ms = KT_PROBE_MAX_MS;
                kl->probe_at_ms = kt_now_ms() + kl->probe_backoff_ms;
                wake_at(kl, kl->probe_at_ms);
                return;
        }
        kl->runtime_down = 0;
        kt_metrics_runtime_up_set(kl->km, 1);
        /* A drain (re-join, shutdown) keeps fetching off. */
        kt_consumer_hold(kl->kc, kl->state != KT_LOOP_RUNNING);
        KT_INFO(FAC, "runtime answers again: consumption resumed");
}

/* ---------------------------------------------------------------- replies, dead letters
 *
 * Kafka refusing a reply or dead letter (kt_produce_err_permanent() says whether for good):
 *   transient           -> produced again after a back-off that grows with the record's
 *                          produce attempts (like calls), one WARN per attempt;
 *   reply, permanent    -> dispatch.on_failure: dead-letter (the record, with a
 *                          ktrigger-reply-error header), skip (done, counted, one ERROR), or
 *                          block (produced again with back-off, one ERROR per attempt);
 *   dead letter, perm.  -> blocks its partition with back-off and one ERROR per attempt:
 *                          nothing is committed that is not done.
 */

/** Forget the reply of \p rec (written, or not wanted any more): its bytes are no longer held. */
static void reply_release(kt_record_t *rec) {
        kt_partition_t *p = rec->part;

        free(rec->reply);
        rec->reply = NULL;
        p->bytes -= rec->reply_len;
        p->reply_bytes -= rec->reply_len;
        rec->reply_len = 0;
}

static void produce_failed(kt_loop_t *kl, kt_record_t *rec, rd_kafka_resp_err_t err);

/** Produce the record's reply (rec->replying) or dead letter; done when Kafka acks it. */
static void produce(kt_loop_t *kl, kt_record_t *rec) {
        ticket_t *t = malloc(sizeof(*t));
        rd_kafka_resp_err_t err = RD_KAFKA_RESP_ERR_NO_ERROR;

        rec->state = KT_REC_PRODUCING;
        if (!t) {
                retry_later(kl, rec, kt_dispatch_backoff_ms(kl->conf, 1));
                return;
        }
        if (rec->replying ? kt_produce_reply(kl->kp, rec, t, &err)
                          : kt_produce_dead_letter(kl->kp, rec, t, &err)) {
                free(t);
                produce_failed(kl, rec, err);
                return;
        }
        t->rec = rec;
        /* librdkafka borrows the reply until the report: the ticket owns it meanwhile, so it
         * outlives the record if that is dropped (revoked) first. */
        t->reply = rec->replying ? rec->reply : NULL;
        if (rec->replying)
                rec->reply = NULL;
        rec->produce = t;
        rec->part->producing++;
}

/** Kafka refused \p rec's reply for good and on_failure is not block. */
static void reply_refused(kt_loop_t *kl, kt_record_t *rec, rd_kafka_resp_err_t err) {
        kt_partition_t *p = rec->part;
        char why[512];

        reply_release(rec);
        snprintf(why, sizeof(why), "reply to %s refused by Kafka: %s", kl->conf->reply_topic,
                 rd_kafka_err2str(err));
        if (kl->conf->on_failure == KT_FAIL_SKIP) {
                kt_metrics_skip_inc(kl->km);
                KT_ERR(FAC, "%s [%d] @%lld: %s: skipped (dispatch.on_failure = skip)", p->topic,
                       p->partition, (long long)rec->offset, why);
                kt_consumer_record_done(kl->kc, rec); /* may free rec */
                return;
        }
        KT_ERR(FAC, "%s [%d] @%lld: %s: writing the record to dead-letter topic %s", p->topic,
               p->partition, (long long)rec->offset, why, kl->conf->dead_letter_topic);
        record_error_set(rec, rec->last_status, why);
        rec->reply_refused = (int)err;
        rec->replying = 0;
        rec->produce_attempts = 0;
        produce(kl, rec);
}

/** Kafka refused \p rec's reply or dead letter (at once, or in its delivery report). */
static void produce_failed(kt_loop_t *kl, kt_record_t *rec, rd_kafka_resp_err_t err) {
        kt_partition_t *p = rec->part;
        int permanent = kt_produce_err_permanent(err);
        const char *topic = rec->replying ? kl->conf->reply_topic : kl->conf->dead_letter_topic;
        int64_t backoff;

        kt_metrics_produce_failure_inc(kl->km, !rec->replying, permanent);
        if (permanent && rec->replying && kl->conf->on_failure != KT_FAIL_BLOCK) {
                reply_refused(kl, rec, err);
                return;
        }
        rec->produce_attempts++;
        backoff = kt_dispatch_backoff_ms(kl->conf, rec->produce_attempts);
        if (permanent)
                KT_ERR(FAC,
                       "%s [%d] @%lld: %s to %s refused by Kafka for good (%s): the partition "
                       "is blocked at this record until it is written; attempt %d, next in "
                       "%lld ms",
                       p->topic, p->partition, (long long)rec->offset,
                       rec->replying ? "reply" : "dead letter", topic, rd_kafka_err2str(err),
                       rec->produce_attempts, (long long)backoff);
        else
                KT_WARN(FAC,
                        "%s [%d] @%lld: %s to %s not written (%s): attempt %d, next in %lld ms",
                        p->topic, p->partition, (long long)rec->offset,
                        rec->replying ? "reply" : "dead letter", topic, rd_kafka_err2str(err),
                        rec->produce_attempts, (long long)backoff);
        retry_later(kl, rec, backoff);
}

/** kt_produce_done_cb */
static void on_produced(void *opaque, rd_kafka_resp_err_t err, void *cbarg) {
        kt_loop_t *kl = cbarg;
        ticket_t *t = opaque;
        kt_record_t *rec = t->rec;
        char *reply = t->reply;

        free(t);
        if (!rec) {
                free(reply);
                return; /* its partition was revoked meanwhile: not committed, redelivered */
        }
        rec->produce = NULL;
        rec->part->producing--;
        if (rec->replying)
                rec->reply = reply; /* back from librdkafka: to produce again, or free */
        if (err) {
                produce_failed(kl, rec, err);
                return;
        }
        if (rec->replying) {
                reply_release(rec); /* its record may wait for earlier ones: free it now */
                kt_metrics_reply_inc(kl->km);
                kt_consumer_record_done(kl->kc, rec); /* may free rec */
                return;
        }
        kt_metrics_dead_letter_inc(kl->km);
        KT_WARN(FAC, "%s [%d] @%lld: written to dead-letter topic %s after %d attempts%s",
                rec->part->topic, rec->part->partition, (long long)rec->offset,
                kl->conf->dead_letter_topic, rec->attempts,
                rec->reply_refused ? " (its reply was refused)" : "");
        kt_consumer_record_done(kl->kc, rec); /* may free rec */
}

/* ---------------------------------------------------------------- calls */

static void record_start(kt_loop_t *kl, kt_record_t *rec) {
        kt_partition_t *p = rec->part;
        kt_dispatch_req_t req;
        kt_err_t err;
        int dropped = 0;

        req.topic = p->topic;
        req.partition = p->partition;
        req.offset = rec->offset;
        req.timestamp_ms = rec->timestamp_ms;
        req.timestamp_type = rec->timestamp_type;
        req.key = rec->key;
        req.key_len = rec->key_len;
        req.value = rec->value;
        req.len = rec->len;
        req.headers = rec->headers;
        req.format = kl->conf->event_format;

        err = kt_dispatch_request_submit(kl->kd, &req, rec, &rec->call, &dropped);
        if (dropped && rec->attempts == 0) {
                kt_metrics_headers_dropped_add(kl->km, dropped);
                KT_WARN(FAC,
                        "%s [%d] @%lld: %d record header(s) not forwarded (not an HTTP "
                        "token, or too big)",
                        p->topic, p->partition, (long long)rec->offset, dropped);
        }
        if (err) {
                rec->state = KT_REC_RETRY_WAIT;
                retry_later(kl, rec, kt_dispatch_backoff_ms(kl->conf, 1));
                KT_WARN(FAC, "%s [%d] @%lld: cannot start call: %s", p->topic, p->partition,
                        (long long)rec->offset, kt_err2str(err));
                return;
        }
        rec->attempts++;
        rec->state = KT_REC_IN_FLIGHT;
        p->in_flight++;
}

/** Start what may start now; recompute when the loop must wake up next. */
static void dispatch_ready(kt_loop_t *kl) {
        int64_t now = kt_now_ms();
        kt_record_t *rec;

        kl->next_due_ms = kt_sched_due(kl->ks, now);
        if (kl->runtime_down) {
                if (!kl->probing && now >= kl->probe_at_ms) {
                        if (kt_dispatch_probe_start(kl->kd) == 0)
                                kl->probing = 1;
                        else
                                kl->probe_at_ms = now + kl->probe_backoff_ms;
                        wake_at(kl, kl->probe_at_ms);
                } else if (!kl->probing)
                        wake_at(kl, kl->probe_at_ms);
                return;
        }
        if (kl->state == KT_LOOP_REJOIN_COMMIT || kl->state == KT_LOOP_SHUTDOWN_COMMIT ||
            kl->state == KT_LOOP_STOPPED)
                return; /* everything was released */
        if (now < kl->nomem_until_ms) {
                wake_at(kl, kl->nomem_until_ms);
                return;
        }
        /* A slot frees only through a completion, which wakes the loop. */
        while (kt_dispatch_slots_free(kl->kd) && (rec = kt_sched_next(kl->ks))) {
                /* Draining partitions go on too: a drain means done. (A released one's records
                 * left the scheduler when it was released.) */
                if (rec->state == KT_REC_PRODUCING)
                        produce(kl, rec); /* an earlier write failed */
                else
                        record_start(kl, rec);
        }
}

/** The record failed for good: apply dispatch.on_failure. */
static void give_up(kt_loop_t *kl, kt_record_t *rec, const char *why) {
        kt_partition_t *p = rec->part;

        kt_sched_resolved(kl->ks, rec); /* the records behind it may go */
        if (kl->conf->on_failure == KT_FAIL_SKIP) {
                kt_metrics_skip_inc(kl->km);
                KT_WARN(FAC, "%s [%d] @%lld: skipped after %d attempts (%s)", p->topic,
                        p->partition, (long long)rec->offset, rec->attempts, why);
                rec->state = KT_REC_DONE;
                kt_consumer_record_done(kl->kc, rec);
                return;
        }
        rec->replying = 0;
        produce(kl, rec);
}

static kt_call_outcome_t call_outcome(const kt_dispatch_result_t *res) {
        if (res->runtime_down)
                return KT_CALL_CONNECT_ERROR;
        if (res->timed_out)
                return KT_CALL_TIMEOUT;
        if (!res->status)
                return KT_CALL_TRANSPORT_ERROR;
        if (res->status >= 200 && res->status <= 299)
                return KT_CALL_SUCCESS;
        if (res->status >= 400 && res->status <= 499)
                return KT_CALL_HTTP_4XX;
        if (res->status >= 500 && res->status <= 599)
                return KT_CALL_HTTP_5XX;
        return KT_CALL_HTTP_OTHER;
}

/** kt_dispatch_done_cb */
static void on_call_done(void *opaque, const kt_dispatch_result_t *res, void *cbarg) {
        kt_loop_t *kl = cbarg;
        kt_record_t *rec = opaque;
        kt_partition_t *p = rec->part;
        int64_t backoff;
        char why[256];

        p->in_flight--;
        rec->call = NULL;
        kt_metrics_outcome_inc(kl->km, call_outcome(res));
        if (res->runtime_down) {
                /* Nothing listens: not this record's fault, and not an attempt. */
                rec->attempts--;
                rec->state = KT_REC_QUEUED;
                kt_sched_requeue(kl->ks, rec); /* its partition is not released: it was running */
                runtime_down_enter(kl);
                return;
        }
        kt_metrics_call_observe(kl->km, kl->topic_map[p->topic_idx], res->seconds,
                                res->outcome != KT_OUTCOME_SUCCESS);
        if (res->sends > 1) {
                /* curl re-sent it after a reused connection died: the runtime got each one. */
                rec->attempts += res->sends - 1;
                kt_metrics_call_resends_add(kl->km, kl->topic_map[p->topic_idx], res->sends - 1);
        }

        if (res->outcome == KT_OUTCOME_SUCCESS && !res->body_too_big) {
                KT_DBG(FAC, "%s [%d] @%lld: %ld in %.3f s", p->topic, p->partition,
                       (long long)rec->offset, res->status, res->seconds);
                kt_sched_resolved(kl->ks, rec);
                if (res->body) {
                        /* The answer goes to the reply topic before the record is done. */
                        rec->reply = res->body;
                        rec->reply_len = res->body_len;
                        rec->last_status = res->status; /* for a dead letter if refused */
                        /* Held until Kafka acks it; the reply bound (kt_sched_next) keeps it
                         * under dispatch.partition_buffer_bytes. */
                        p->bytes += res->body_len;
                        p->reply_bytes += res->body_len;
                        kt_sched_reply_observe(p, res->body_len);
                        rec->reply_type = res->content_type ? strdup(res->content_type) : NULL;
                        rec->replying = 1;
                        produce(kl, rec);
                        return;
                }
                if (kl->conf->reply_topic)
                        kt_sched_reply_observe(p, 0);
                free(res->body);
                rec->state = KT_REC_DONE;
                kt_consumer_record_done(kl->kc, rec); /* may free rec */
                return;
        }
        free(res->body);
        if (res->outcome == KT_OUTCOME_SUCCESS) {
                /* Succeeded, but the answer is over 1 MiB: no reply can be produced. Calling
                 * the function again would not help, so this is never retried. */
                KT_ERR(FAC, "%s [%d] @%lld: answer over 1 MiB: not produced to %s", p->topic,
                       p->partition, (long long)rec->offset, kl->conf->reply_topic);
                record_error_set(rec, res->status, "response body over 1 MiB: no reply possible");
                if (kl->conf->on_failure != KT_FAIL_BLOCK) {
                        give_up(kl, rec, "response body over 1 MiB");
                        return;
                }
                /* block: the function ran; keep going without the reply, loudly. */
                rec->state = KT_REC_DONE;
                kt_sched_resolved(kl->ks, rec);
                kt_consumer_record_done(kl->kc, rec);
                return;
        }

        record_error_set(rec, res->status, res->error);
        if (res->status)
                snprintf(why, sizeof(why), "runtime answered %ld", res->status);
        else
                snprintf(why, sizeof(why), "%s", res->error);
        if (kl->conf->on_failure != KT_FAIL_BLOCK &&
            (res->outcome == KT_OUTCOME_PERMANENT ||
             rec->attempts >= kl->conf->retry_max_attempts)) {
                give_up(kl, rec, why);
                return;
        }

        backoff = kt_dispatch_backoff_ms(kl->conf, rec->attempts);
        if (res->retry_after_ms >= 0)
                backoff = res->retry_after_ms < kl->conf->retry_max_backoff_ms
                              ? res->retry_after_ms
                              : kl->conf->retry_max_backoff_ms;
        rec->state = KT_REC_RETRY_WAIT;
        retry_later(kl, rec, backoff);
        kt_metrics_retry_inc(kl->km);
        KT_WARN(FAC, "%s [%d] @%lld: attempt %d: %s; retrying in %lld ms", p->topic, p->partition,
                (long long)rec->offset, rec->attempts, why, (long long)backoff);
}

/* ---------------------------------------------------------------- drain, revoke, shutdown */

/** kt_consumer_hooks_t.release: cancel \p p's calls, orphan its replies and dead letters in
 *  flight (their reports are ignored) and forget its records in the scheduler. Its records
 *  that are not done stay so: never committed, delivered again by the next owner. */
static void on_release(void *opaque, kt_partition_t *p, int lost) {
        kt_loop_t *kl = opaque;

        (void)lost;
        for (kt_record_t *rec = p->q.head; rec; rec = rec->next) {
                if (rec->state == KT_REC_IN_FLIGHT) {
                        kt_dispatch_request_cancel(kl->kd, rec->call);
                        rec->call = NULL;
                        rec->state = KT_REC_QUEUED;
                        p->in_flight--;
                }
                if (rec->produce) {
                        ((ticket_t *)rec->produce)->rec = NULL;
                        rec->produce = NULL;
                        p->producing--;
                }
        }
        kt_sched_partition_drop(kl->ks, p);
}

static void produce_poll(kt_loop_t *kl) {
        if (kl->kp)
                kt_produce_poll(kl->kp);
}

static const char *loop_state_name(kt_loop_state_t st) {
        static const char *const names[] = {"running",        "rejoin-drain",    "rejoin-commit",
                                            "shutdown-drain", "shutdown-commit", "stopped"};
        return names[st];
}

/** The one transition function of the loop's life (see kt_loop_state_t). */
static void loop_state_set(kt_loop_t *kl, kt_loop_state_t st) {
        if (kl->state == st)
                return;
        KT_DBG(FAC, "loop: %s -> %s", loop_state_name(kl->state), loop_state_name(st));
        switch (st) {
        case KT_LOOP_RUNNING:
                kl->final_commit = 0;
                kt_consumer_hold(kl->kc, kl->runtime_down);
                break;
        case KT_LOOP_REJOIN_DRAIN:
        case KT_LOOP_SHUTDOWN_DRAIN:
                if (kl->state == KT_LOOP_RUNNING)
                        kl->drain_deadline_ms = kt_now_ms() + kl->conf->drain_timeout_ms;
                kt_consumer_hold(kl->kc, 1);
                break;
        case KT_LOOP_REJOIN_COMMIT:
        case KT_LOOP_SHUTDOWN_COMMIT:
                if (kl->state == KT_LOOP_REJOIN_DRAIN || kl->state == KT_LOOP_SHUTDOWN_DRAIN) {
                        int64_t min = kt_now_ms() + KT_LOOP_COMMIT_MIN_MS;
                        kt_consumer_release_all(kl->kc);
                        kl->final_commit = kt_consumer_commit_start(kl->kc);
                        kl->commit_retry_at_ms = kt_now_ms() + KT_LOOP_COMMIT_RETRY_MS;
                        if (kl->drain_deadline_ms < min)
                                kl->drain_deadline_ms = min;
                }
                break;
        case KT_LOOP_STOPPED:
                break;
        }
        kl->state = st;
}

/** SIGTERM/SIGINT: drain what is buffered, commit, leave (a re-join waiting is dropped). */
static void shutdown_begin(kt_loop_t *kl) {
        switch (kl->state) {
        case KT_LOOP_RUNNING:
        case KT_LOOP_REJOIN_DRAIN:
                KT_INFO(FAC, "finishing %zu buffered records (at most %d ms), then committing",
                        kt_consumer_undone(kl->kc), kl->conf->drain_timeout_ms);
                loop_state_set(kl, KT_LOOP_SHUTDOWN_DRAIN);
                break;
        case KT_LOOP_REJOIN_COMMIT:
                loop_state_set(kl, KT_LOOP_SHUTDOWN_COMMIT);
                break;
        default:
                break; /* already shutting down */
        }
        kt_config_destroy(kl->rejoin_conf);
        kl->rejoin_conf = NULL;
}

/** *_DRAIN: @returns non-zero once the drain is over (then the state moved to *_COMMIT). */
static int drain_step(kt_loop_t *kl) {
        size_t left = kt_consumer_undone(kl->kc);
        int64_t now = kt_now_ms();
        int rejoin = kl->state == KT_LOOP_REJOIN_DRAIN;

        if (left && !kl->runtime_down && now < kl->drain_deadline_ms) {
                wake_at(kl, kl->drain_deadline_ms);
                return 0;
        }
        if (left)
                KT_WARN(FAC,
                        "%s: %zu records not done (%s): they are not committed and are delivered "
                        "again%s",
                        rejoin ? "reload" : "shutdown", left,
                        kl->runtime_down ? "the runtime is down" : "drain timeout",
                        rejoin ? " after the re-join" : " by the next owner");
        loop_state_set(kl, rejoin ? KT_LOOP_REJOIN_COMMIT : KT_LOOP_SHUTDOWN_COMMIT);
        return 1;
}

/** *_COMMIT: @returns non-zero once the final commit completed or will not. */
static int commit_step(kt_loop_t *kl) {
        rd_kafka_resp_err_t err = RD_KAFKA_RESP_ERR_NO_ERROR;
        kt_commit_status_t st = kt_consumer_commit_status(kl->kc, kl->final_commit, &err);
        int64_t now = kt_now_ms();

        if (st == KT_COMMIT_DONE)
                return 1;
        if (now < kl->drain_deadline_ms) {
                if (st == KT_COMMIT_PENDING) {
                        wake_at(kl, kl->drain_deadline_ms); /* the answer wakes us before */
                        return 0;
                }
                /* Refused, typically while the group rebalances (a member died, another
                 * joined): librdkafka re-joins as we poll; try again. */
                if (now >= kl->commit_retry_at_ms && kt_consumer_commit_retry_ready(kl->kc)) {
                        KT_INFO(FAC, "commit refused (%s): trying again", rd_kafka_err2str(err));
                        kl->final_commit = kt_consumer_commit_start(kl->kc);
                        kl->commit_retry_at_ms = now + KT_LOOP_COMMIT_RETRY_MS;
                }
                wake_at(kl, kl->commit_retry_at_ms);
                return 0;
        }
        KT_WARN(FAC,
                "the final commit did not complete in time (%s): up to %llu finished records "
                "will be delivered again",
                st == KT_COMMIT_FAILED ? rd_kafka_err2str(err) : "no answer",
                (unsigned long long)kt_consumer_uncommitted_done(kl->kc));
        return 1;
}

/** kt_consumer_hooks_t.record */
static void on_record(void *opaque, kt_record_t *rec) {
        kt_loop_t *kl = opaque;
        kt_sched_record_add(kl->ks, rec);
}

/** Hand the consumer's counters and, when it changed, the partitions' lag to the metrics. */
static void metrics_update(kt_loop_t *kl) {
        kt_consumer_stats_t *st = kt_consumer_stats(kl->kc);
        char *buf = NULL;
        size_t len = 0;
        FILE *f;

        kt_metrics_consumer_set(kl->km, st->assigns, st->revokes, st->losts, st->commits,
                                st->commit_failures, st->kafka_errors, st->fetch_wakeups);
        kt_metrics_paused_set(kl->km, st->paused);
        {
                int64_t now = kt_now_ms(), longest = 0;
                int blocked = 0;
                for (kt_partition_t *p = kt_consumer_partitions(kl->kc); p; p = p->next) {
                        const kt_record_t *head = p->q.head;
                        if (!head || !head->failing_since_ms || p->state == KT_PART_RELEASED)
                                continue;
                        blocked++;
                        if (now - head->failing_since_ms > longest)
                                longest = now - head->failing_since_ms;
                }
                kt_metrics_delivery_set(kl->km, st->already_done, blocked,
                                        (double)longest / 1000.0);
        }
        if (st->errors_updated && (f = open_memstream(&buf, &len))) {
                st->errors_updated = 0;
                for (int i = 0; i < st->error_codes; i++)
                        fprintf(f, "ktrigger_kafka_errors_total{code=\"%s\"} %llu\n",
                                rd_kafka_err2name((rd_kafka_resp_err_t)st->errors[i].code),
                                (unsigned long long)st->errors[i].count);
                if (!fclose(f))
                        kt_metrics_errors_set(kl->km, buf);
                free(buf);
                buf = NULL;
                len = 0;
        }
        if (!st->lag_updated || !(f = open_memstream(&buf, &len)))
                return;
        st->lag_updated = 0;
        for (kt_partition_t *p = kt_consumer_partitions(kl->kc); p; p = p->next)
                if (p->lag >= 0)
                        fprintf(f, "ktrigger_consumer_lag{topic=\"%s\",partition=\"%d\"} %lld\n",
                                p->topic, p->partition, (long long)p->lag);
        if (!fclose(f))
                kt_metrics_lag_set(kl->km, buf);
        free(buf);
}

/** @returns 1 if a stop signal arrived. */
static int signals_read(kt_loop_t *kl) {
        struct signalfd_siginfo si;
        int stop = 0;

        while (read(kl->sigfd, &si, sizeof(si)) == (ssize_t)sizeof(si)) {
                if (si.ssi_signo == SIGHUP) {
                        kl->reload_asked = 1;
                        continue;
                }
                KT_INFO(FAC, "%s: shutting down", strsignal((int)si.ssi_signo));
                stop = 1;
        }
        return stop;
}

/* ---------------------------------------------------------------- reload */

/** Map the configuration's topics to their metrics. @returns 0, -1 out of memory. */
static int topic_map_build(kt_loop_t *kl) {
        size_t *map = calloc(kl->conf->topic_cnt + 1, sizeof(*map));

        if (!map)
                return -1;
        for (size_t i = 0; i < kl->conf->topic_cnt; i++)
                if ((map[i] = kt_metrics_topic_index(kl->km, kl->conf->topics[i])) == (size_t)-1)
                        KT_WARN(FAC, "topic %s: no room for its call metrics (restart to count it)",
                                kl->conf->topics[i]);
        free(kl->topic_map);
        kl->topic_map = map;
        return 0;
}

static int needs_producer(const kt_config_t *conf) {
        return conf->on_failure == KT_FAIL_DEAD_LETTER || conf->reply_topic != NULL;
}

static void log_lines(int level, const char *prefix, const char *text) {
        for (const char *l = text; l && *l;) {
                const char *nl = strchr(l, '\n');
                int len = nl ? (int)(nl - l) : (int)strlen(l);
                kt_log(level, "CONFIG", "%s%.*s", prefix, len, l);
                l = nl ? nl + 1 : l + len;
        }
}

static void on_zk_broker(void *opaque, const char *hostport);

/** Make the producer if \p c needs one. @returns 0, or -1 with the reason in \p errstr. */
static int producer_build(kt_loop_t *kl, const kt_config_t *c, char *errstr, size_t errstr_size) {
        if (needs_producer(c) &&
            !(kl->kp = kt_produce_new(c, on_produced, kl, errstr, errstr_size)))
                return -1;
        return 0;
}

/** Make the consumer of \p c and its ZooKeeper discovery. @returns 0, or -1 with nothing
 *  made and the reason in \p errstr. */
static int consumer_build(kt_loop_t *kl, const kt_config_t *c, char *errstr, size_t errstr_size) {
        if (!(kl->kc = kt_consumer_new(c, &kl->hooks, errstr, errstr_size)))
                return -1;
        if (c->zookeeper &&
            !(kl->zk = kt_consumer_zk_new(c, on_zk_broker, kl, errstr, errstr_size))) {
                kt_consumer_destroy(kl->kc);
                kl->kc = NULL;
                return -1;
        }
        return 0;
}

/** Both, for a re-join. @returns 0, or -1 with nothing made. */
static int kafka_build(kt_loop_t *kl, const kt_config_t *c, char *errstr, size_t errstr_size) {
        if (producer_build(kl, c, errstr, errstr_size))
                return -1;
        if (consumer_build(kl, c, errstr, errstr_size)) {
                kt_produce_destroy(kl->kp);
                kl->kp = NULL;
                return -1;
        }
        return 0;
}

/** Point every module at \p nc, free the old configuration. A new scheduler when
 *  \p new_sched (nothing is scheduled: between consumers). */
static void conf_switch(kt_loop_t *kl, kt_config_t *nc, int new_sched) {
        kt_config_t *old = kl->conf;
        kt_sched_t *ks;

        if (kt_dispatch_conf_set(kl->kd, nc))
                KT_WARN(FAC, "reload: out of memory adding call slots: fewer than %d in flight",
                        nc->max_in_flight);
        if (new_sched && (ks = kt_sched_new(nc))) {
                kt_sched_destroy(kl->ks);
                kl->ks = ks;
        } else
                kt_sched_conf_set(kl->ks, nc);
        if (kl->kp)
                kt_produce_conf_set(kl->kp, nc);
        if (kl->kc)
                kt_consumer_conf_set(kl->kc, nc);
        if (kl->zk)
                kt_consumer_zk_conf_set(kl->zk, nc);
        kl->conf = nc;
        *kl->confp = nc;
        if (topic_map_build(kl))
                KT_WARN(FAC, "reload: out of memory: call metrics by topic are off");
        kt_log_level_set(nc->log_level);
        kt_log_json_set(nc->log_json);
        kt_config_destroy(old);
}

/** REJOIN_COMMIT is over (drained, committed or given up): leave, join again with
 *  kl->rejoin_conf. If its consumer cannot be made, join again with the running
 *  configuration. @returns 0, -1 if no consumer could be made at all (the loop stops). */
static int rejoin(kt_loop_t *kl) {
        kt_config_t *nc = kl->rejoin_conf;
        char errstr[512], errstr2[512];

        kl->rejoin_conf = NULL;
        kt_consumer_zk_destroy(kl->zk); /* first: its broker callback uses the clients */
        kl->zk = NULL;
        kt_consumer_destroy(kl->kc); /* leaves the group; its partitions were drained */
        kl->kc = NULL;
        kt_produce_destroy(kl->kp);
        kl->kp = NULL;
        kt_dispatch_wait_reset(kl->kd); /* their wake-up fds are closed; numbers get reused */
        kl->next_due_ms = INT64_MAX;
        if (kafka_build(kl, nc, errstr, sizeof(errstr))) {
                KT_ERR(FAC, "reload: %s: joining again with the running configuration (config %s)",
                       errstr, kl->conf->hash);
                kt_metrics_reload(kl->km, KT_METRICS_RELOAD_INVALID, NULL);
                kt_config_destroy(nc);
                if (kafka_build(kl, kl->conf, errstr2, sizeof(errstr2))) {
                        KT_ERR(FAC, "consumer: %s", errstr2);
                        return -1;
                }
        } else {
                kt_metrics_reload(kl->km, KT_METRICS_RELOAD_APPLIED, nc->hash);
                conf_switch(kl, nc, 1);
        }
        kt_metrics_zookeeper_enable(kl->km, kl->zk != NULL);
        loop_state_set(kl, KT_LOOP_RUNNING); /* holds the new consumer if the runtime is down */
        return 0;
}

/** Before the group was joined (waiting for the runtime): everything applies at once. */
static void apply_before_join(kt_loop_t *kl, kt_config_t *nc) {
        kt_produce_t *kp = kl->kp;
        char errstr[512];

        kl->kp = NULL;
        if (producer_build(kl, nc, errstr, sizeof(errstr))) {
                KT_ERR(FAC, "reload: %s: still running on the previous configuration (config %s)",
                       errstr, kl->conf->hash);
                kl->kp = kp;
                kt_metrics_reload(kl->km, KT_METRICS_RELOAD_INVALID, NULL);
                kt_config_destroy(nc);
                return;
        }
        kt_produce_destroy(kp);
        kt_dispatch_wait_reset(kl->kd);
        kt_metrics_reload(kl->km, KT_METRICS_RELOAD_APPLIED, nc->hash);
        conf_switch(kl, nc, 1);
}

/** A re-join still draining is no longer wanted: fetch again. */
static void rejoin_cancel(kt_loop_t *kl) {
        KT_INFO(FAC, "reload: the waiting re-join is cancelled");
        kt_config_destroy(kl->rejoin_conf);
        kl->rejoin_conf = NULL;
        loop_state_set(kl, KT_LOOP_RUNNING);
}

/** SIGHUP: read the configuration again and apply what changed (a re-join: once the buffers
 *  are done, see the loop). */
static void reload(kt_loop_t *kl) {
        char errstr[8192], changed[1024];
        kt_config_t *nc;
        int cls;

        kl->reload_asked = 0;
        if (kl->state == KT_LOOP_SHUTDOWN_DRAIN || kl->state == KT_LOOP_SHUTDOWN_COMMIT) {
                KT_INFO(FAC, "reload: ignored while shutting down");
                return;
        }
        nc = kt_config_load_with(kl->conf->path, kl->conf->sets, kl->conf->set_cnt, errstr,
                                 sizeof(errstr));
        if (!nc) {
                log_lines(KT_LOG_ERR, "reload: ", errstr);
                KT_ERR(FAC,
                       "reload: invalid configuration: still running on the previous one "
                       "(config %s)",
                       kl->conf->hash);
                kt_metrics_reload(kl->km, KT_METRICS_RELOAD_INVALID, NULL);
                return;
        }
        log_lines(KT_LOG_WARNING, "", nc->warnings);
        cls = kt_config_diff(kl->conf, nc, changed, sizeof(changed));
        if (needs_producer(kl->conf) != needs_producer(nc))
                cls = KT_RELOAD_REJOIN;
        if (kl->state == KT_LOOP_REJOIN_COMMIT)
                cls = KT_RELOAD_REJOIN; /* released already: the re-join happens, with nc */
        if (kl->state == KT_LOOP_REJOIN_DRAIN && cls < KT_RELOAD_REJOIN)
                rejoin_cancel(kl); /* changed back while a re-join waited */
        if (cls < 0) {
                KT_INFO(FAC, "reload: no setting changed (config %s)", nc->hash);
                kt_config_destroy(nc);
                kt_metrics_reload(kl->km, KT_METRICS_RELOAD_UNCHANGED, kl->conf->hash);
                return;
        }
        if (strcmp(kl->conf->metrics_listen, nc->metrics_listen)) {
                KT_WARN(FAC,
                        "reload: metrics.listen changed to %s: it applies at the next "
                        "start; still serving on %s",
                        nc->metrics_listen, kl->conf->metrics_listen);
                /* The running value stays what the running configuration says. */
                free(nc->metrics_listen);
                nc->metrics_listen = strdup(kl->conf->metrics_listen);
        }
        if (!kl->kc) {
                KT_INFO(FAC, "reload: %s changed: applied before joining (config %s -> %s)",
                        changed, kl->conf->hash, nc->hash);
                apply_before_join(kl, nc);
                return;
        }
        if (cls == KT_RELOAD_REJOIN) {
                KT_INFO(FAC,
                        "reload: %s changed: finishing %zu buffered records (at most %d ms), "
                        "then committing and re-joining the group (config %s -> %s)",
                        changed, kt_consumer_undone(kl->kc), kl->conf->drain_timeout_ms,
                        kl->conf->hash, nc->hash);
                kt_config_destroy(kl->rejoin_conf); /* a newer reload replaces a waiting one */
                kl->rejoin_conf = nc;
                if (kl->state == KT_LOOP_RUNNING)
                        loop_state_set(kl, KT_LOOP_REJOIN_DRAIN);
                return;
        }
        KT_INFO(FAC, "reload: %s changed: applied (config %s -> %s)", changed, kl->conf->hash,
                nc->hash);
        kt_metrics_reload(kl->km, KT_METRICS_RELOAD_APPLIED, nc->hash);
        conf_switch(kl, nc, 0);
}

/**
 * Before joining the group: wait until the runtime answers its health path, so a replica
 * never takes partitions it cannot serve. Probes with back-off, logs while it waits.
 * @returns 0 once the runtime is up, 1 if a stop signal came first.
 */
static int wait_for_runtime(kt_loop_t *kl) {
        int backoff = KT_PROBE_MIN_MS, logged = 0;

        kt_metrics_runtime_up_set(kl->km, 0);
        for (;;) {
                struct curl_waitfd fds[1] = {{kl->sigfd, CURL_WAIT_POLLIN, 0}};
                int64_t next = kt_now_ms() + backoff;

                kl->runtime_down = 1;
                kl->probing = kt_dispatch_probe_start(kl->kd) == 0;
                while (kl->probing) {
                        kt_metrics_heartbeat(kl->km);
                        if (signals_read(kl))
                                return 1;
                        if (kl->reload_asked)
                                reload(kl); /* e.g. runtime.port was wrong */
                        kt_dispatch_wait(kl->kd, fds, 1, 200);
                        kt_dispatch_perform(kl->kd);
                }
                if (!kl->runtime_down)
                        break;
                if (!logged++)
                        KT_INFO(FAC, "waiting for the runtime at %s before joining the group",
                                kl->conf->runtime_health_url);
                while (kt_now_ms() < next) {
                        kt_metrics_heartbeat(kl->km);
                        if (signals_read(kl))
                                return 1;
                        if (kl->reload_asked) {
                                reload(kl);
                                break; /* probe the (maybe new) health URL now */
                        }
                        kt_dispatch_wait(kl->kd, fds, 1, (int)(next - kt_now_ms()));
                }
                backoff = backoff * 2 > KT_PROBE_MAX_MS ? KT_PROBE_MAX_MS : backoff * 2;
        }
        kt_metrics_runtime_up_set(kl->km, 1);
        KT_INFO(FAC, "runtime at %s answers", kl->conf->runtime_health_url);
        return 0;
}

/* ---------------------------------------------------------------- ZooKeeper discovery */

/** kt_zk_broker_cb: a broker found in ZooKeeper becomes a bootstrap broker of both clients. */
static void on_zk_broker(void *opaque, const char *hostport) {
        kt_loop_t *kl = opaque;

        kt_consumer_brokers_add(kl->kc, hostport);
        if (kl->kp)
                kt_produce_brokers_add(kl->kp, hostport);
}

/** Serve what ZooKeeper's threads handed over; after dispatch_ready (it resets the timer). */
static void zk_poll(kt_loop_t *kl) {
        const kt_zk_stats_t *st;

        if (!kl->zk)
                return;
        wake_at(kl, kt_consumer_zk_poll(kl->zk));
        st = kt_consumer_zk_stats(kl->zk);
        kt_metrics_zookeeper_set(kl->km, st->connected, st->brokers, st->bad_registrations,
                                 st->discovered);
}

/* ---------------------------------------------------------------- the loop */

int kt_loop_run(kt_config_t **confp, kt_metrics_t *km) {
        kt_loop_t kl = {0};
        kt_config_t *conf = *confp; /* only until the loop runs: then kl.conf */
        char errstr[512];
        sigset_t mask;
        int status = 1;

        kl.conf = conf;
        kl.confp = confp;
        kl.hooks = (kt_consumer_hooks_t){on_release, on_record, &kl};
        kl.km = km;
        kl.sigfd = -1;
        kl.next_due_ms = INT64_MAX;

        sigemptyset(&mask);
        sigaddset(&mask, SIGTERM);
        sigaddset(&mask, SIGINT);
        sigaddset(&mask, SIGHUP);
        if ((kl.sigfd = signalfd(-1, &mask, SFD_NONBLOCK | SFD_CLOEXEC)) == -1) {
                KT_ERR(FAC, "signalfd: %s", strerror(errno));
                goto out;
        }
        if (!(kl.ks = kt_sched_new(conf)) || topic_map_build(&kl)) {
                KT_ERR(FAC, "out of memory");
                goto out;
        }
        if (!(kl.kd = kt_dispatch_new(conf, on_call_done, on_probe, &kl, errstr, sizeof(errstr)))) {
                KT_ERR(FAC, "dispatcher: %s", errstr);
                goto out;
        }
        if (producer_build(&kl, conf, errstr, sizeof(errstr))) {
                KT_ERR(FAC, "producer: %s", errstr);
                goto out;
        }
        if (conf->runtime_wait_at_start && wait_for_runtime(&kl)) {
                status = 0; /* asked to stop before we started: nothing to drain */
                goto out;
        }
        conf = kl.conf; /* a reload while waiting may have replaced it */
        if (consumer_build(&kl, conf, errstr, sizeof(errstr))) {
                KT_ERR(FAC, "consumer: %s", errstr);
                goto out;
        }
        KT_INFO(FAC, "forwarding to %s (ordering %s, at most %d in flight)", conf->runtime_url,
                conf->ordering == KT_ORDER_PARTITION ? "partition"
                : conf->ordering == KT_ORDER_KEY     ? "key"
                                                     : "none",
                conf->max_in_flight);
        conf = NULL; /* from here on kl.conf: a reload replaces it */

        while (kl.state != KT_LOOP_STOPPED && !kt_consumer_fatal(kl.kc) &&
               !(kl.kp && kt_produce_fatal(kl.kp))) {
                struct curl_waitfd fds[4] = {
                    {kt_consumer_wakeup_fd(kl.kc), CURL_WAIT_POLLIN, 0},
                    {kl.sigfd, CURL_WAIT_POLLIN, 0},
                    {kl.kp ? kt_produce_wakeup_fd(kl.kp) : -1, CURL_WAIT_POLLIN, 0},
                    {kl.zk ? kt_consumer_zk_wakeup_fd(kl.zk) : -1, CURL_WAIT_POLLIN, 0},
                };
                int more;
                int64_t wait_ms;

                kt_metrics_heartbeat(km);
                if (signals_read(&kl))
                        shutdown_begin(&kl);
                if (kl.reload_asked)
                        reload(&kl);
                /* Calls first, so a finished call's successor (one call at a time per
                 * partition in `partition` ordering) is sent before anything else is done.
                 * Completions before the dispatch pass: they free slots and schedule retries
                 * that it then sees. Records read from Kafka below go out on the next pass,
                 * which does not sleep while records are ready. */
                kt_dispatch_perform(kl.kd);
                dispatch_ready(&kl);
                kt_dispatch_perform(kl.kd); /* start the calls just submitted */
                more = kt_consumer_poll(kl.kc, KT_LOOP_KAFKA_BUDGET);
                produce_poll(&kl);
                wake_at(&kl, kt_consumer_revoke_step(kl.kc));
                zk_poll(&kl);
                switch (kl.state) {
                case KT_LOOP_REJOIN_DRAIN:
                case KT_LOOP_SHUTDOWN_DRAIN:
                        if (!drain_step(&kl))
                                break;
                        continue; /* commit_step next, without sleeping */
                case KT_LOOP_REJOIN_COMMIT:
                        if (!commit_step(&kl))
                                break;
                        if (rejoin(&kl)) {
                                status = 1;
                                goto out;
                        }
                        continue;
                case KT_LOOP_SHUTDOWN_COMMIT:
                        if (commit_step(&kl))
                                loop_state_set(&kl, KT_LOOP_STOPPED);
                        break;
                default:
                        break;
                }
                kt_metrics_gauges_set(km, kt_dispatch_in_flight(kl.kd),
                                      kt_consumer_assigned_cnt(kl.kc), kt_consumer_buffered(kl.kc));
                kt_metrics_group_joined_set(km, kt_consumer_joined(kl.kc));
                metrics_update(&kl);

                if (more || kt_consumer_more(kl.kc) ||
                    (kt_sched_has_ready(kl.ks) && kt_dispatch_slots_free(kl.kd) &&
                     !kl.runtime_down && kt_now_ms() >= kl.nomem_until_ms))
                        wait_ms = 0;
                else {
                        int64_t now = kt_now_ms();
                        wait_ms = kl.next_due_ms == INT64_MAX ? KT_LOOP_MAX_WAIT_MS
                                                              : kl.next_due_ms - now;
                        if (wait_ms < 0)
                                wait_ms = 0;
                        if (wait_ms > KT_LOOP_MAX_WAIT_MS)
                                wait_ms = KT_LOOP_MAX_WAIT_MS;
                }
                /* poll(2) skips the -1 entries (no producer, no ZooKeeper). */
                kt_dispatch_wait(kl.kd, fds, 4, (int)wait_ms);
        }

        if (kl.state != KT_LOOP_STOPPED) {
                KT_ERR(FAC, "stopping after a fatal Kafka error");
                goto out;
        }
        status = 0; /* a clean shutdown, whether or not its last commit completed */

out:
        /* Closing the consumer releases what is left (cancelling it: not done, not
         * committed) and leaves the group; it commits nothing more. */
        kl.state = KT_LOOP_STOPPED;
        kt_consumer_zk_destroy(kl.zk); /* first: its broker callback uses the clients */
        kt_consumer_destroy(kl.kc);
        kt_produce_destroy(kl.kp);
        kt_dispatch_destroy(kl.kd);
        kt_sched_destroy(kl.ks);
        free(kl.topic_map);
        kt_config_destroy(kl.rejoin_conf);
        if (kl.sigfd != -1)
                close(kl.sigfd);
        if (status == 0)
                KT_INFO(FAC, "stopped cleanly");
        return status;
}
