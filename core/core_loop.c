/*
 * DESIGN: the event loop. One thread owns the consumer, the dispatcher, every record and
 * every offset; nothing here is locked because nothing here is shared.
 *
 * One iteration:
 *   1. serve Kafka (records into partition buffers, rebalance callbacks, logs), bounded;
 *   2. drive libcurl; a finished call either marks its record done (the consumer stores the
 *      offset the partition is finished up to and we start the partition's next record right
 *      away) or schedules a retry with back-off;
 *   3. start calls: in `partition` ordering, a partition's head record goes out when the
 *      partition has nothing in flight (a retry keeps its slot: the records behind it wait);
 *   4. sleep in curl_multi_poll() on curl's sockets plus Kafka's wake-up pipe and the
 *      signalfd, never longer than the next retry or 1 s (the health heartbeat). If the Kafka
 *      budget ran out, do not sleep at all: the wake-up pipe fires only on empty -> non-empty.
 *
 * Every non-2xx outcome is retried until it succeeds for now (never committed as done); the
 * retry limit and the dead-letter/skip policies plug in at on_call_done().
 *
 * Shutdown and revocation drain the same way (drain()): stop starting calls for the affected
 * partitions, let in-flight calls finish until dispatch.drain_timeout_ms, cancel the rest
 * (they are redelivered: never committed), then the consumer commits synchronously.
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

typedef struct kt_loop {
        const kt_config_t *conf;
        kt_consumer_t *kc;
        kt_dispatch_t *kd;
        kt_metrics_t *km;
        int sigfd;
        int stopping;
        int64_t next_due_ms; /**< earliest retry time of a waiting record, INT64_MAX if none */
} kt_loop_t;

/** A record will want to go again at \p at_ms: make sure the loop wakes up for it. */
static void wake_at(kt_loop_t *kl, int64_t at_ms) {
        if (at_ms < kl->next_due_ms)
                kl->next_due_ms = at_ms;
}

static void record_start(kt_loop_t *kl, kt_record_t *rec) {
        kt_partition_t *p = rec->part;
        rd_kafka_timestamp_type_t tstype;
        kt_dispatch_req_t req;
        kt_err_t err;

        req.topic = p->topic;
        req.partition = p->partition;
        req.offset = rec->offset;
        req.timestamp_ms = rd_kafka_message_timestamp(rec->rkm, &tstype);
        req.value = rec->rkm->payload;
        req.len = rec->rkm->len;

        err = kt_dispatch_request_submit(kl->kd, &req, rec, &rec->call);
        if (err == KT_ERR_FULL)
                return; /* stays as it is; picked up when a slot frees */
        if (err) {
                rec->state = KT_REC_RETRY_WAIT;
                rec->retry_at_ms = kt_now_ms() + kt_dispatch_backoff_ms(kl->conf, 1);
                wake_at(kl, rec->retry_at_ms);
                KT_WARN(FAC, "%s [%d] @%lld: cannot start call: %s", p->topic, p->partition,
                        (long long)rec->offset, kt_err2str(err));
                return;
        }
        rec->attempts++;
        rec->state = KT_REC_IN_FLIGHT;
        p->in_flight++;
}

/** Start the partition's next record if `partition` ordering allows it now. */
static void partition_kick(kt_loop_t *kl, kt_partition_t *p, int64_t now) {
        kt_record_t *head = p->q.head;

        if (!head || p->in_flight || p->revoking || kl->stopping)
                return;
        if (head->state == KT_REC_RETRY_WAIT && head->retry_at_ms > now) {
                wake_at(kl, head->retry_at_ms);
                return;
        }
        if (head->state == KT_REC_QUEUED || head->state == KT_REC_RETRY_WAIT)
                record_start(kl, head);
}

/** Start every record that may go now; recompute when the loop must wake for a retry. */
static void dispatch_ready(kt_loop_t *kl) {
        int64_t now = kt_now_ms();

        kl->next_due_ms = INT64_MAX;
        for (kt_partition_t *p = kt_consumer_partitions(kl->kc); p; p = p->next) {
                if (!kt_dispatch_slots_free(kl->kd)) {
                        /* A slot frees only through a completion, which wakes the loop. */
                        break;
                }
                partition_kick(kl, p, now);
        }
}

/** kt_dispatch_done_cb */
static void on_call_done(void *opaque, const kt_dispatch_result_t *res, void *cbarg) {
        kt_loop_t *kl = cbarg;
        kt_record_t *rec = opaque;
        kt_partition_t *p = rec->part;
        int64_t backoff;

        p->in_flight--;
        rec->call = NULL;
        kt_metrics_call_observe(kl->km, p->topic_idx, res->seconds,
                                res->outcome != KT_OUTCOME_SUCCESS);

        if (res->outcome == KT_OUTCOME_SUCCESS) {
                KT_DBG(FAC, "%s [%d] @%lld: %ld in %.3f s", p->topic, p->partition,
                       (long long)rec->offset, res->status, res->seconds);
                kt_consumer_record_done(kl->kc, rec); /* may free rec */
                partition_kick(kl, p, kt_now_ms());
                return;
        }

        backoff = kt_dispatch_backoff_ms(kl->conf, rec->attempts);
        rec->state = KT_REC_RETRY_WAIT;
        rec->retry_at_ms = kt_now_ms() + backoff;
        wake_at(kl, rec->retry_at_ms);
        kt_metrics_retry_inc(kl->km);
        if (res->status)
                KT_WARN(FAC, "%s [%d] @%lld: attempt %d: runtime answered %ld; retrying in %lld ms",
                        p->topic, p->partition, (long long)rec->offset, rec->attempts, res->status,
                        (long long)backoff);
        else
                KT_WARN(FAC, "%s [%d] @%lld: attempt %d: %s; retrying in %lld ms", p->topic,
                        p->partition, (long long)rec->offset, rec->attempts, res->error,
                        (long long)backoff);
}

static int parts_in_flight(kt_partition_t **parts, size_t cnt) {
        int n = 0;
        for (size_t i = 0; i < cnt; i++)
                n += parts[i]->in_flight;
        return n;
}

static void parts_cancel(kt_loop_t *kl, kt_partition_t **parts, size_t cnt) {
        for (size_t i = 0; i < cnt; i++)
                for (kt_record_t *rec = parts[i]->q.head; rec; rec = rec->next)
                        if (rec->state == KT_REC_IN_FLIGHT) {
                                kt_dispatch_request_cancel(kl->kd, rec->call);
                                rec->call = NULL;
                                rec->state = KT_REC_QUEUED;
                                parts[i]->in_flight--;
                        }
}

/**
 * Let the calls of \p parts finish (no new ones start), then cancel what is left at
 * dispatch.drain_timeout_ms. Completions of other partitions are handled normally.
 */
static void drain(kt_loop_t *kl, kt_partition_t **parts, size_t cnt) {
        int64_t deadline = kt_now_ms() + kl->conf->drain_timeout_ms;
        int left;

        while ((left = parts_in_flight(parts, cnt)) > 0) {
                int64_t now = kt_now_ms();
                if (now >= deadline) {
                        KT_WARN(FAC,
                                "drain timeout (%d ms): abandoning %d calls; their records "
                                "are not committed and will be delivered again",
                                kl->conf->drain_timeout_ms, left);
                        parts_cancel(kl, parts, cnt);
                        break;
                }
                kt_dispatch_wait(kl->kd, NULL, 0,
                                 (int)(deadline - now < 100 ? deadline - now : 100));
                kt_dispatch_perform(kl->kd);
                kt_metrics_heartbeat(kl->km);
        }
}

/** kt_consumer_hooks_t.revoke */
static void on_revoke(void *opaque, kt_partition_t **parts, size_t cnt, int lost) {
        kt_loop_t *kl = opaque;

        if (lost)
                parts_cancel(kl, parts, cnt);
        else
                drain(kl, parts, cnt);
}

/** @returns 1 if a stop signal arrived. */
static int signals_read(kt_loop_t *kl) {
        struct signalfd_siginfo si;
        int stop = 0;

        while (read(kl->sigfd, &si, sizeof(si)) == (ssize_t)sizeof(si)) {
                if (si.ssi_signo == SIGHUP) {
                        KT_INFO(FAC, "SIGHUP: configuration reload is not supported yet; "
                                     "restart to apply changes");
                        continue;
                }
                KT_INFO(FAC, "%s: shutting down", strsignal((int)si.ssi_signo));
                stop = 1;
        }
        return stop;
}

static int shutdown_all(kt_loop_t *kl) {
        size_t cnt = 0;
        kt_partition_t **parts;

        kl->stopping = 1;
        for (kt_partition_t *p = kt_consumer_partitions(kl->kc); p; p = p->next)
                cnt++;
        if (!(parts = calloc(cnt + 1, sizeof(*parts))))
                return -1;
        cnt = 0;
        for (kt_partition_t *p = kt_consumer_partitions(kl->kc); p; p = p->next)
                parts[cnt++] = p;
        KT_INFO(FAC, "draining %d calls (at most %d ms)", parts_in_flight(parts, cnt),
                kl->conf->drain_timeout_ms);
        drain(kl, parts, cnt);
        free(parts);
        return kt_consumer_commit(kl->kc) == KT_OK ? 0 : -1;
}

int kt_loop_run(const kt_config_t *conf, kt_metrics_t *km) {
        kt_loop_t kl = {0};
        kt_consumer_hooks_t hooks = {on_revoke, &kl};
        char errstr[512];
        sigset_t mask;
        int status = 1, stop = 0;

        kl.conf = conf;
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
        if (!(kl.kd = kt_dispatch_new(conf, on_call_done, &kl, errstr, sizeof(errstr)))) {
                KT_ERR(FAC, "dispatcher: %s", errstr);
                goto out;
        }
        if (!(kl.kc = kt_consumer_new(conf, &hooks, errstr, sizeof(errstr)))) {
                KT_ERR(FAC, "consumer: %s", errstr);
                goto out;
        }
        KT_INFO(FAC, "forwarding to %s", conf->runtime_url);

        while (!stop && !kt_consumer_fatal(kl.kc)) {
                struct curl_waitfd fds[2] = {
                    {kt_consumer_wakeup_fd(kl.kc), CURL_WAIT_POLLIN, 0},
                    {kl.sigfd, CURL_WAIT_POLLIN, 0},
                };
                int served;
                int64_t wait_ms;

                kt_metrics_heartbeat(km);
                if (signals_read(&kl)) {
                        stop = 1;
                        break;
                }
                served = kt_consumer_poll(kl.kc, KT_LOOP_KAFKA_BUDGET);
                /* Completions first: they free slots and schedule retries that the dispatch
                 * pass then sees; both lower next_due_ms, so the sleep below is never too
                 * long. */
                kt_dispatch_perform(kl.kd);
                dispatch_ready(&kl);
                kt_dispatch_perform(kl.kd); /* start the calls just submitted */
                kt_metrics_gauges_set(km, kt_dispatch_in_flight(kl.kd),
                                      kt_consumer_assigned_cnt(kl.kc), kt_consumer_buffered(kl.kc));

                if (served >= KT_LOOP_KAFKA_BUDGET)
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
                kt_dispatch_wait(kl.kd, fds, 2, (int)wait_ms);
        }

        if (kt_consumer_fatal(kl.kc)) {
                KT_ERR(FAC, "stopping after a fatal Kafka error");
                kl.stopping = 1;
                goto out;
        }
        status = shutdown_all(&kl) == 0 ? 0 : 1;

out:
        /* Closing the consumer revokes what is left (drained above: nothing in flight),
         * commits once more and leaves the group. */
        kt_consumer_destroy(kl.kc);
        kt_dispatch_destroy(kl.kd);
        if (kl.sigfd != -1)
                close(kl.sigfd);
        if (status == 0)
                KT_INFO(FAC, "stopped cleanly");
        return status;
}
