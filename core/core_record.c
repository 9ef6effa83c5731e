/*
 * A record's life, as the loop drives it (see the loop's DESIGN block in core_loop.c and
 * kt_record_state_t in consumer.h): started when its lane is free and a call slot is,
 * finished (done -> the consumer stores the offset its partition is finished up to), retried
 * with back-off, given up by dispatch.on_failure (skip / dead-letter; block never gives up),
 * its reply or dead letter produced and acknowledged, or released with its partition.
 *
 * DESIGN: the record states. kt_consumer_record_state_set() (consumer/consumer_record.c) is
 * the one writer of rec->state; it keeps p->in_flight (records IN_FLIGHT) and p->producing
 * (records PRODUCING) from each transition, and holds the table, which is this:
 *
 *   QUEUED     -> IN_FLIGHT  started (its call, or a batch's)
 *              -> RETRY_WAIT could not start (no memory): tried again after a back-off
 *              -> DONE       finished by the partition's previous owner (its offset map)
 *   IN_FLIGHT  -> DONE       2xx without a reply; skipped (on_failure, or block and unbuildable);
 *                            under block, a 2xx whose answer is over 1 MiB
 *              -> PRODUCING  2xx with a reply; given up to the dead-letter topic
 *              -> RETRY_WAIT failed, retried after its back-off
 *              -> QUEUED     runtime down (not an attempt); behind its lane's failed record
 *                            in a batch; its partition released (call cancelled)
 *   RETRY_WAIT -> IN_FLIGHT  started again
 *              -> RETRY_WAIT could not start again
 *   PRODUCING  -> PRODUCING  refused: written again after a back-off, or its dead letter
 *                            instead of a refused reply
 *              -> DONE       acked; its reply refused for good and skipped
 *              -> QUEUED     its partition released (the ack, if any, is ignored)
 *   DONE       -> (none)     popped and freed by the consumer
 *
 * A record is born QUEUED (buffered by the consumer) and made DONE only through
 * kt_consumer_record_done(); this file makes every other move, back to QUEUED included. Released
 * records (the partition's release hook) go back to QUEUED from IN_FLIGHT and PRODUCING, so a
 * released partition counts none. Bytes that are not a function of the state have one adding and
 * one removing site each: a reply (reply_hold() / reply_release()), a batch's body (batch_start() /
 * batch_end()).
 *
 * DESIGN: batches (dispatch.batch.max_records > 1) are a way of starting and finishing the
 * same records, not a second life: each record of a batch is IN_FLIGHT (rec->call is the
 * batch's call, rec->batch the batch) and comes out of it through the same steps as from its
 * own call (done, retry wait, given up by on_failure).
 * - What goes in: the scheduler still hands out only startable records (lane heads). A batch
 *   starts with one and takes the QUEUED records behind it in its lane, in order (a lane's
 *   records are consecutive in the batch); in `key` and `none` ordering it then takes more
 *   startable records of the same partition from the ready queue (records of other
 *   partitions are put back in front, in order; at most KT_BATCH_SCAN_MAX are looked at). So
 *   with `partition` ordering a batch is consecutive records of one partition. One partition
 *   per batch: revoking it cancels the call, and no other partition's records are in it.
 * - Size: up to max_records records and max_bytes of encoded body; a record that does not
 *   fit waits for the next batch, and the first record always goes in (one bigger than
 *   max_bytes is sent alone). dispatch.max_in_flight counts requests (a batch takes one slot).
 *   The encoded body counts in its partition's p->bytes while the call runs, so reading
 *   pauses by dispatch.partition_buffer_bytes with the batch counted.
 * - When: at once if full (records or bytes), if max_wait_ms is 0, if its first record is a
 *   retry, or if the loop or its partition is draining; else it waits until its oldest
 *   record was buffered max_wait_ms ago: its lane heads are held (the scheduler's held list, out of
 * the ready queue so the loop sleeps) and put back in front at the next dispatch pass.
 * - A retry goes alone with its lane's records behind it (no other lane's records).
 * - The answer (dispatch_batch.c): per entry SUCCESS, RETRY or DROP. Entries are settled in
 *   the order sent. SUCCESS: done (its lane's next record is not started while it is still in
 *   this batch). RETRY: a retriable failure of that record; DROP: a permanent one (4xx-like:
 *   on_failure applies, block retries it). When an entry is left waiting to retry, its lane's
 *   later entries in the batch go back to QUEUED behind it, whatever their status, and that
 *   send is not counted as an attempt of theirs: they reach the function again after it, as
 *   AWS Lambda re-sends a stream batch from its first failed record. Nothing is committed
 *   that is not done, so the commit rule is untouched.
 * - A non-2xx, a transport failure, or a 2xx whose answer cannot be read fails every entry
 *   as that call would have failed a single record (an unreadable answer: retriable); the
 *   lane rule above applies. A runtime that is down: every record back, not an attempt.
 * - Metrics: ktrigger_calls_total{outcome} counts entries by the answer each got (RETRY as
 *   http_5xx, DROP as http_4xx, a whole-batch failure as that call's class, an unreadable 2xx
 *   answer as http_other), also those sent again; function_calls_total and the
 *   duration histogram count records; ktrigger_batch_records counts requests.
 */
#define _GNU_SOURCE
#include "core_int.h"

#include "../consumer/consumer_lifecycle.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define FAC "LOOP"

/** Records of other partitions looked at (and put back) while filling one batch. */
#define KT_BATCH_SCAN_MAX 64

/** A batch call in flight: its records in the order sent, one partition's. */
typedef struct batch {
        kt_partition_t *part;
        size_t bytes; /**< its encoded body, counted in part->bytes while it is in flight */
        size_t cnt;
        kt_batch_status_t *st; /**< per entry, after recs[] in the same allocation */
        kt_record_t *recs[];
} batch_t;

static void retry_later(kt_loop_t *kl, kt_record_t *rec, int64_t delay_ms) {
        if (kt_sched_retry_at(kl->ks, rec, kt_now_ms() + delay_ms)) {
                /* No memory for the timer: keep the record at the front rather than lose
                 * track, and start nothing for a while (else dispatch_ready would spin on it). */
                kt_sched_requeue(kl->ks, rec);
                kl->nomem_until_ms = kt_now_ms() + KT_NOMEM_PAUSE_MS;
                kt_loop_wake_at(kl, kl->nomem_until_ms);
                return;
        }
        kt_loop_wake_at(kl, rec->retry_at_ms);
}

static void record_error_set(kt_record_t *rec, long status, const char *error) {
        if (!rec->failing_since_ms)
                rec->failing_since_ms = kt_now_ms(); /* its partition is blocked from now */
        rec->last_status = status;
        free(rec->last_error);
        rec->last_error = error && *error ? strdup(error) : NULL;
}

/** Hold the function's answer \p body as \p rec's reply until Kafka acks it: its bytes count
 *  in the partition's buffer (the one place they are added; reply_release() removes them). */
static void reply_hold(kt_record_t *rec, char *body, size_t len) {
        kt_partition_t *p = rec->part;

        rec->reply = body;
        rec->reply_len = len;
        /* The reply bound (kt_sched_next) keeps it under dispatch.partition_buffer_bytes. */
        p->bytes += len;
        p->reply_bytes += len;
}

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

/** What the producer needs of \p rec for its reply (rec->replying) or dead letter. */
static void produce_msg(const kt_record_t *rec, kt_produce_msg_t *m) {
        *m = (kt_produce_msg_t){
            .topic = rec->part->topic,
            .partition = rec->part->partition,
            .offset = rec->offset,
            .timestamp_ms = rec->timestamp_ms,
            .key = rec->key,
            .key_len = rec->key_len,
            .value = rec->replying ? rec->reply : rec->value,
            .len = rec->replying ? rec->reply_len : rec->len,
            .headers = rec->headers,
            .content_type = rec->reply_type,
            .attempts = rec->attempts,
            .last_status = rec->last_status,
            .last_error = rec->last_error,
            .reply_refused = rec->reply_refused,
        };
}

/** Produce the record's reply (rec->replying) or dead letter; done when Kafka acks it. */
static void produce(kt_loop_t *kl, kt_record_t *rec) {
        ticket_t *t = malloc(sizeof(*t));
        rd_kafka_resp_err_t err = RD_KAFKA_RESP_ERR_NO_ERROR;
        kt_produce_msg_t m;

        kt_consumer_record_state_set(rec, KT_REC_PRODUCING);
        if (!t) {
                retry_later(kl, rec, kt_dispatch_backoff_ms(kl->conf, 1));
                return;
        }
        produce_msg(rec, &m);
        if (rec->replying ? kt_produce_reply(kl->kp, &m, t, &err)
                          : kt_produce_dead_letter(kl->kp, &m, t, &err)) {
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
        /* Written again later: the record now holds its partition's commit back, as a failed
         * call does (ktrigger_partitions_blocked; a reply's call succeeded, so it may be the
         * record's first failure). */
        if (!rec->failing_since_ms)
                rec->failing_since_ms = kt_now_ms();
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
void kt_loop_produced(void *opaque, rd_kafka_resp_err_t err, void *cbarg) {
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

static void req_fill(const kt_loop_t *kl, const kt_record_t *rec, kt_dispatch_req_t *req) {
        const kt_partition_t *p = rec->part;

        req->topic = p->topic;
        req->partition = p->partition;
        req->offset = rec->offset;
        req->timestamp_ms = rec->timestamp_ms;
        req->timestamp_type = rec->timestamp_type;
        req->key = rec->key;
        req->key_len = rec->key_len;
        req->value = rec->value;
        req->len = rec->len;
        req->headers = rec->headers;
        req->format = kl->conf->event_format;
        req->json_ct_exact = kl->conf->json_content_type_exact;
        req->value_kind = NULL; /* the batch encoder decides JSON its own way */
}

static void record_start(kt_loop_t *kl, kt_record_t *rec) {
        kt_partition_t *p = rec->part;
        kt_dispatch_req_t req;
        kt_err_t err;
        kt_dispatch_notes_t notes = {0, 0};

        req_fill(kl, rec, &req);
        req.value_kind = &rec->value_kind; /* detected once per record, not per attempt */

        err = kt_dispatch_request_submit(kl->kd, &req, rec, &rec->call, &notes);
        /* Once per record: attempts is 0 again after a runtime-down requeue (not an attempt)
         * and after a submit that failed, so it cannot tell a first build. A build that
         * failed (NOMEM) may not have looked at every header: counted when one succeeds. */
        if (err || rec->notes_reported) {
                notes.dropped = 0;
                notes.trace_invalid = 0;
        } else {
                rec->notes_reported = 1;
                if (rec->headers_err) {
                        notes.dropped++; /* how many librdkafka could not tell */
                        KT_WARN(FAC,
                                "%s [%d] @%lld: record headers unreadable (%s): none forwarded",
                                p->topic, p->partition, (long long)rec->offset,
                                rd_kafka_err2str((rd_kafka_resp_err_t)rec->headers_err));
                }
        }
        if (notes.dropped) {
                kt_metrics_headers_dropped_add(kl->km, notes.dropped);
                KT_WARN(FAC,
                        "%s [%d] @%lld: %d record header(s) not forwarded (not an HTTP "
                        "token, too big, or over the request's header cap)",
                        p->topic, p->partition, (long long)rec->offset, notes.dropped);
        }
        if (notes.trace_invalid) {
                kt_metrics_trace_invalid_inc(kl->km);
                KT_WARN(FAC,
                        "%s [%d] @%lld: traceparent/tracestate header not valid W3C trace "
                        "context: not propagated",
                        p->topic, p->partition, (long long)rec->offset);
        }
        if (err) {
                kt_consumer_record_state_set(rec, KT_REC_RETRY_WAIT);
                retry_later(kl, rec, kt_dispatch_backoff_ms(kl->conf, 1));
                KT_WARN(FAC, "%s [%d] @%lld: cannot start call: %s", p->topic, p->partition,
                        (long long)rec->offset, kt_err2str(err));
                return;
        }
        rec->attempts++;
        kt_consumer_record_state_set(rec, KT_REC_IN_FLIGHT);
}

/* ---------------------------------------------------------------- batches (see DESIGN) */

static int is_lane_head(const kt_record_t *rec) {
        return !rec->lane || rec->lane->head == rec;
}

/** Records of other partitions popped while filling a batch: put back in front, in order. */
static void skipped_return(kt_loop_t *kl, kt_record_t *lifo) {
        for (kt_record_t *rec = lifo, *next; rec; rec = next) {
                next = rec->ready_next;
                kt_sched_requeue(kl->ks, rec);
        }
}

/** Start a batch with the startable record \p first (see the DESIGN block). */
static void batch_start(kt_loop_t *kl, kt_record_t *first, int64_t now) {
        const kt_config_t *c = kl->conf;
        kt_partition_t *p = first->part;
        kt_dispatch_batch_t *b = &kl->batch_body;
        kt_dispatch_notes_t notes = {0, 0};
        kt_record_t *skipped = NULL, *head = first;
        size_t max = (size_t)c->batch_max_records, n = 0;
        int full = 0, scanned = 0, retry = first->attempts > 0;
        int64_t oldest = first->added_ms;
        batch_t *bt = NULL;
        void *call = NULL;
        char *body;
        size_t len;
        kt_err_t err;

        if (kl->batch_cand_cap < max) {
                kt_record_t **cand = realloc(kl->batch_cand, max * sizeof(*cand));
                if (!cand)
                        goto nomem;
                kl->batch_cand = cand;
                kl->batch_cand_cap = max;
        }
        kt_dispatch_batch_reset(b);
        while (head) {
                /* The head, then the records behind it in its lane. */
                for (kt_record_t *rec = head; rec && n < max;
                     rec = rec->lane ? rec->lane_next : NULL) {
                        kt_dispatch_req_t req;
                        if (rec != head && rec->state != KT_REC_QUEUED)
                                break;
                        req_fill(kl, rec, &req);
                        err = kt_dispatch_batch_add(b, &req, (size_t)c->batch_max_bytes, &notes);
                        if (err == KT_ERR_NOMEM && !n)
                                goto nomem;
                        if (err) {
                                full = 1;
                                if (rec == head) { /* waits for the next batch, in front */
                                        head->ready_next = skipped;
                                        skipped = head;
                                }
                                break;
                        }
                        kl->batch_cand[n++] = rec;
                        if (rec->added_ms < oldest)
                                oldest = rec->added_ms;
                }
                if (n >= max)
                        full = 1;
                head = NULL;
                if (full || retry || c->ordering == KT_ORDER_PARTITION)
                        break;
                /* More startable records of the same partition (other lanes). */
                while (scanned < KT_BATCH_SCAN_MAX && (head = kt_sched_next(kl->ks))) {
                        scanned++;
                        if (head->part == p && head->state == KT_REC_QUEUED && !head->attempts)
                                break;
                        head->ready_next = skipped;
                        skipped = head;
                        head = NULL;
                }
        }
        if (!full && !retry && c->batch_max_wait_ms > 0 && kl->state == KT_LOOP_RUNNING &&
            p->state == KT_PART_ACTIVE && now < oldest + c->batch_max_wait_ms) {
                /* Not full yet and not old enough: its lane heads wait (out of the ready
                 * queue, so the loop sleeps), the records behind them stay in their lanes. */
                for (size_t i = 0; i < n; i++)
                        if (is_lane_head(kl->batch_cand[i]))
                                kt_sched_hold(kl->ks, kl->batch_cand[i]);
                kt_loop_wake_at(kl, oldest + c->batch_max_wait_ms);
                skipped_return(kl, skipped);
                return;
        }
        if (kt_dispatch_batch_finish(b) ||
            !(bt = malloc(sizeof(*bt) + n * (sizeof(bt->recs[0]) + sizeof(bt->st[0])))))
                goto nomem;
        bt->part = p;
        bt->bytes = b->len;
        bt->cnt = n;
        memcpy(bt->recs, kl->batch_cand, n * sizeof(bt->recs[0]));
        bt->st = (kt_batch_status_t *)(void *)(bt->recs + n);
        body = b->buf; /* handed over to the call */
        len = b->len;
        b->buf = NULL;
        b->len = b->cap = b->cnt = 0;
        if (kt_dispatch_batch_submit(kl->kd, body, len, bt, &call)) {
                free(bt);
                goto nomem;
        }
        for (size_t i = 0; i < n; i++) {
                kt_record_t *rec = bt->recs[i];
                rec->attempts++;
                kt_consumer_record_state_set(rec, KT_REC_IN_FLIGHT);
                rec->call = call;
                rec->batch = bt;
        }
        /* The encoded body is memory too: it counts in the partition's buffer bound (reading
         * waits while it is over) until the call ends (batch_end()). */
        p->bytes += bt->bytes;
        kt_metrics_batch_observe(kl->km, n);
        if (notes.dropped) {
                kt_metrics_headers_dropped_add(kl->km, notes.dropped);
                KT_WARN(FAC,
                        "%s [%d] @%lld..: %d record header(s) not carried in the batch (name "
                        "too long, value too big, repeated, or past the header cap)",
                        p->topic, p->partition, (long long)first->offset, notes.dropped);
        }
        KT_DBG(FAC, "%s [%d]: batch of %zu records (%zu bytes) from @%lld", p->topic, p->partition,
               n, len, (long long)first->offset);
        skipped_return(kl, skipped);
        return;

nomem:
        /* Keep the records where they were (the skipped ones behind), start nothing for a
         * while. */
        skipped_return(kl, skipped);
        for (size_t i = n; i-- > 0;)
                if (is_lane_head(kl->batch_cand[i]))
                        kt_sched_requeue(kl->ks, kl->batch_cand[i]);
        if (!n)
                kt_sched_requeue(kl->ks, first);
        kl->nomem_until_ms = kt_now_ms() + KT_NOMEM_PAUSE_MS;
        kt_loop_wake_at(kl, kl->nomem_until_ms);
        KT_WARN(FAC, "%s [%d] @%lld: out of memory building a batch: trying again shortly",
                p->topic, p->partition, (long long)first->offset);
}

/** Start what may start now; recompute when the loop must wake up next. */
void kt_loop_dispatch_ready(kt_loop_t *kl) {
        int64_t now = kt_now_ms();
        kt_record_t *rec;

        kl->next_due_ms = kt_sched_due(kl->ks, now);
        /* A refused reply or dead letter is written again whatever the runtime does: it needs
         * only Kafka, and a drain with the runtime down waits for it. */
        while ((rec = kt_sched_next_write(kl->ks)))
                produce(kl, rec);
        if (kl->runtime_down) {
                if (!kl->probing && now >= kl->probe_at_ms) {
                        if (kt_dispatch_probe_start(kl->kd) == 0)
                                kl->probing = 1;
                        else
                                kl->probe_at_ms = now + kl->probe_backoff_ms;
                        kt_loop_wake_at(kl, kl->probe_at_ms);
                } else if (!kl->probing)
                        kt_loop_wake_at(kl, kl->probe_at_ms);
                return;
        }
        if (kl->state == KT_LOOP_REJOIN_COMMIT || kl->state == KT_LOOP_SHUTDOWN_COMMIT ||
            kl->state == KT_LOOP_STOPPED)
                return; /* everything was released */
        if (now < kl->nomem_until_ms) {
                kt_loop_wake_at(kl, kl->nomem_until_ms);
                return;
        }
        kt_sched_unhold(kl->ks);
        /* A slot frees only through a completion, which wakes the loop. */
        while (kt_dispatch_slots_free(kl->kd) && (rec = kt_sched_next(kl->ks))) {
                /* Draining partitions go on too: a drain means done. (A released one's records
                 * left the scheduler when it was released.) */
                if (rec->state == KT_REC_PRODUCING)
                        produce(kl, rec); /* an earlier write failed */
                else if (kl->conf->batch_max_records > 1)
                        batch_start(kl, rec, now);
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

/** \p rec failed (\p outcome, \p why): give it up by the policy or retry it after its
 *  back-off (\p retry_after_ms if the runtime said, capped). \p where goes in the log line.
 *  @returns 1 if it waits to retry (it stays its lane's head). */
static int retry_or_give_up(kt_loop_t *kl, kt_record_t *rec, kt_outcome_t outcome, const char *why,
                            int64_t retry_after_ms, const char *where) {
        kt_partition_t *p = rec->part;
        int64_t backoff;

        if (kl->conf->on_failure != KT_FAIL_BLOCK &&
            (outcome == KT_OUTCOME_PERMANENT || rec->attempts >= kl->conf->retry_max_attempts)) {
                give_up(kl, rec, why);
                return 0;
        }
        backoff = kt_dispatch_backoff_ms(kl->conf, rec->attempts);
        if (retry_after_ms >= 0)
                backoff = retry_after_ms < kl->conf->retry_max_backoff_ms
                              ? retry_after_ms
                              : kl->conf->retry_max_backoff_ms;
        kt_consumer_record_state_set(rec, KT_REC_RETRY_WAIT);
        retry_later(kl, rec, backoff);
        kt_metrics_retry_inc(kl->km);
        KT_WARN(FAC, "%s [%d] @%lld: attempt %d%s: %s; retrying in %lld ms", p->topic, p->partition,
                (long long)rec->offset, rec->attempts, where, why, (long long)backoff);
        return 1;
}

/** One entry of a batch failed (\p outcome): retry it or give it up, as for its own call.
 *  @returns 1 if it waits to retry (it stays its lane's head). */
static int entry_failed(kt_loop_t *kl, kt_record_t *rec, kt_outcome_t outcome, long status,
                        const char *why, int64_t retry_after_ms) {
        record_error_set(rec, status, why);
        return retry_or_give_up(kl, rec, outcome, why, retry_after_ms, " (in a batch)");
}

/** \p bt's call ended (answered, or cancelled with its partition): its records are no longer
 *  its, and its body no longer counts in the partition's bytes. Their states are the
 *  caller's. */
static void batch_end(batch_t *bt) {
        for (size_t i = 0; i < bt->cnt; i++) {
                bt->recs[i]->call = NULL;
                bt->recs[i]->batch = NULL;
        }
        bt->part->bytes -= bt->bytes;
}

/** A batch call finished: settle its entries in the order sent (see the DESIGN block). */
static void batch_done(kt_loop_t *kl, batch_t *bt, const kt_dispatch_result_t *res) {
        kt_partition_t *p = bt->part;
        size_t n = bt->cnt;
        kt_dispatch_req_t *reqs = NULL;
        kt_outcome_t outcome = res->outcome;
        kt_call_outcome_t counted = call_outcome(res);
        kt_lane_t *broken = NULL;
        int whole = 0; /* every entry failed as the call did */
        char why[512], perr[300];

        batch_end(bt);
        if (res->runtime_down) {
                /* Nothing listens: not these records' fault, not an attempt. */
                for (size_t i = n; i-- > 0;) {
                        kt_record_t *rec = bt->recs[i];
                        rec->attempts--;
                        kt_consumer_record_state_set(rec, KT_REC_QUEUED);
                        kt_metrics_outcome_inc(kl->km, KT_CALL_CONNECT_ERROR);
                        if (is_lane_head(rec))
                                kt_sched_requeue(kl->ks, rec);
                }
                free(res->body);
                free(bt);
                kt_loop_runtime_down_enter(kl);
                return;
        }
        if (res->unbuildable || outcome != KT_OUTCOME_SUCCESS) {
                whole = 1;
                if (res->unbuildable)
                        outcome = KT_OUTCOME_RETRIABLE; /* a batch can be made again smaller */
                if (res->status)
                        snprintf(why, sizeof(why), "runtime answered %ld to the batch",
                                 res->status);
                else
                        snprintf(why, sizeof(why), "batch call failed: %s", res->error);
        } else if (res->body_too_big) {
                whole = 1;
                outcome = KT_OUTCOME_RETRIABLE;
                counted = KT_CALL_HTTP_OTHER;
                snprintf(why, sizeof(why),
                         "batch answer over %d bytes: per-entry statuses "
                         "unreadable",
                         KT_MAX_RESPONSE_BYTES);
        } else if (!(reqs = malloc((n ? n : 1) * sizeof(*reqs)))) {
                whole = 1;
                outcome = KT_OUTCOME_RETRIABLE;
                counted = KT_CALL_HTTP_OTHER;
                snprintf(why, sizeof(why), "out of memory reading the batch answer");
        } else {
                for (size_t i = 0; i < n; i++)
                        req_fill(kl, bt->recs[i], &reqs[i]);
                if (kt_dispatch_batch_parse(res->body, res->body_len, reqs, n, bt->st, perr,
                                            sizeof(perr))) {
                        whole = 1;
                        outcome = KT_OUTCOME_RETRIABLE;
                        counted = KT_CALL_HTTP_OTHER;
                        snprintf(why, sizeof(why),
                                 "runtime answered %ld with unreadable per-entry statuses: %s",
                                 res->status, perr);
                        KT_WARN(FAC, "%s [%d] @%lld..: %s", p->topic, p->partition,
                                (long long)bt->recs[0]->offset, why);
                }
        }
        free(reqs);
        free(res->body);

        for (size_t i = 0; i < n; i++) {
                kt_record_t *rec = bt->recs[i];
                kt_batch_status_t st = whole ? KT_BATCH_RETRY : bt->st[i];
                int failed = whole || st != KT_BATCH_SUCCESS;

                /* Each entry leaves IN_FLIGHT below (done, retry wait, given up, or back to
                 * QUEUED behind its lane's failed record). */
                kt_metrics_call_observe(kl->km, kl->topic_map[p->topic_idx], res->seconds, failed);
                if (res->sends > 1) {
                        rec->attempts += res->sends - 1;
                        kt_metrics_call_resends_add(kl->km, kl->topic_map[p->topic_idx],
                                                    res->sends - 1);
                }
                /* Counted by the answer this entry got, also when it goes again below. */
                kt_metrics_outcome_inc(kl->km, whole                    ? counted
                                               : st == KT_BATCH_SUCCESS ? KT_CALL_SUCCESS
                                               : st == KT_BATCH_RETRY   ? KT_CALL_HTTP_5XX
                                                                        : KT_CALL_HTTP_4XX);
                if (rec->lane && rec->lane == broken) {
                        /* An earlier record of its lane waits to retry: this one goes again
                         * after it, and this send was not an attempt of its own. */
                        rec->attempts--;
                        kt_consumer_record_state_set(rec, KT_REC_QUEUED);
                        continue;
                }
                if (whole) {
                        if (entry_failed(kl, rec, outcome, res->status, why, res->retry_after_ms))
                                broken = rec->lane;
                        continue;
                }
                switch (st) {
                case KT_BATCH_SUCCESS:
                        kt_sched_resolved(kl->ks, rec);
                        kt_consumer_record_done(kl->kc, rec); /* may free rec */
                        break;
                case KT_BATCH_RETRY:
                        if (entry_failed(kl, rec, KT_OUTCOME_RETRIABLE, res->status,
                                         "the function answered RETRY for it", -1))
                                broken = rec->lane;
                        break;
                case KT_BATCH_DROP:
                        if (entry_failed(kl, rec, KT_OUTCOME_PERMANENT, res->status,
                                         "the function answered DROP for it", -1))
                                broken = rec->lane;
                        break;
                }
        }
        free(bt);
}

/** kt_dispatch_done_cb */
void kt_loop_call_done(void *opaque, const kt_dispatch_result_t *res, void *cbarg) {
        kt_loop_t *kl = cbarg;
        kt_record_t *rec = opaque;
        kt_partition_t *p;
        char why[256];

        if (res->batch) {
                batch_done(kl, opaque, res);
                return;
        }
        p = rec->part;
        rec->call = NULL; /* it leaves IN_FLIGHT on every path below */
        if (res->unbuildable) {
                /* libcurl refused to build the request: no call was made (not counted as
                 * one), and the same record can never be sent. Retrying would block its
                 * partition for ever, so on_failure applies at once; under block, which
                 * would retry it for ever, it is skipped. */
                rec->attempts--;
                kt_metrics_request_unbuildable_inc(kl->km);
                snprintf(why, sizeof(why), "request could not be built: %s", res->error);
                KT_ERR(FAC, "%s [%d] @%lld: %s (no call made)%s", p->topic, p->partition,
                       (long long)rec->offset, why,
                       kl->conf->on_failure == KT_FAIL_BLOCK
                           ? ": skipped, dispatch.on_failure = block cannot hold a record "
                             "that can never be sent"
                           : "");
                free(res->body);
                record_error_set(rec, 0, why);
                if (kl->conf->on_failure == KT_FAIL_BLOCK) {
                        kt_metrics_skip_inc(kl->km);
                        kt_sched_resolved(kl->ks, rec);
                        kt_consumer_record_done(kl->kc, rec); /* may free rec */
                        return;
                }
                give_up(kl, rec, why);
                return;
        }
        kt_metrics_outcome_inc(kl->km, call_outcome(res));
        if (res->runtime_down) {
                /* Nothing listens: not this record's fault, and not an attempt. */
                rec->attempts--;
                kt_consumer_record_state_set(rec, KT_REC_QUEUED);
                kt_sched_requeue(kl->ks, rec); /* its partition is not released: it was running */
                kt_loop_runtime_down_enter(kl);
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
                        reply_hold(rec, res->body, res->body_len);
                        rec->last_status = res->status; /* for a dead letter if refused */
                        kt_sched_reply_observe(p, res->body_len);
                        rec->reply_type = res->content_type ? strdup(res->content_type) : NULL;
                        rec->replying = 1;
                        produce(kl, rec);
                        return;
                }
                if (kl->conf->reply_topic)
                        kt_sched_reply_observe(p, 0);
                free(res->body);
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
                kt_sched_resolved(kl->ks, rec);
                kt_consumer_record_done(kl->kc, rec);
                return;
        }

        record_error_set(rec, res->status, res->error);
        if (res->status)
                snprintf(why, sizeof(why), "runtime answered %ld", res->status);
        else
                snprintf(why, sizeof(why), "%s", res->error);
        (void)retry_or_give_up(kl, rec, res->outcome, why, res->retry_after_ms, "");
}

/** kt_consumer_hooks_t.release: cancel \p p's calls, orphan its replies and dead letters in
 *  flight (their reports are ignored) and forget its records in the scheduler. Its records
 *  that are not done stay so: never committed, delivered again by the next owner. */
void kt_loop_partition_release(void *opaque, kt_partition_t *p, int lost) {
        kt_loop_t *kl = opaque;

        (void)lost;
        for (kt_record_t *rec = p->q.head; rec; rec = rec->next) {
                if (rec->state == KT_REC_IN_FLIGHT && rec->batch) {
                        batch_t *bt = rec->batch;
                        kt_dispatch_request_cancel(kl->kd, rec->call);
                        batch_end(bt);
                        for (size_t i = 0; i < bt->cnt; i++)
                                kt_consumer_record_state_set(bt->recs[i], KT_REC_QUEUED);
                        free(bt);
                }
                if (rec->state == KT_REC_IN_FLIGHT) {
                        kt_dispatch_request_cancel(kl->kd, rec->call);
                        rec->call = NULL;
                        kt_consumer_record_state_set(rec, KT_REC_QUEUED);
                }
                if (rec->produce) {
                        ((ticket_t *)rec->produce)->rec = NULL;
                        rec->produce = NULL;
                }
                /* Its reply or dead letter is not written here: not done, never committed. */
                if (rec->state == KT_REC_PRODUCING)
                        kt_consumer_record_state_set(rec, KT_REC_QUEUED);
        }
        kt_sched_partition_drop(kl->ks, p);
}

void kt_loop_produce_poll(kt_loop_t *kl) {
        if (kl->kp)
                kt_produce_poll(kl->kp);
}

/** kt_consumer_hooks_t.record */
void kt_loop_record_add(void *opaque, kt_record_t *rec) {
        kt_loop_t *kl = opaque;

        rec->added_ms = kt_now_ms();
        kt_sched_record_add(kl->ks, rec);
}

void kt_loop_batch_free(kt_loop_t *kl) {
        kt_dispatch_batch_free(&kl->batch_body);
        free(kl->batch_cand);
        kl->batch_cand = NULL;
        kl->batch_cand_cap = 0;
}
