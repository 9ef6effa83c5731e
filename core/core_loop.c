/*
 * DESIGN: the event loop. One thread owns the consumer, the dispatcher, the scheduler, the
 * dead-letter producer, every record and every offset; nothing here is locked because nothing
 * here is shared.
 *
 * Files: this one is the loop and the loop's life (kt_loop_state_t: running, drains,
 * commits, stop); core_record.c a record's life (calls, retries, replies, dead letters,
 * release with its partition); core_health.c the runtime being down; core_reload.c SIGHUP.
 * They share kt_loop_t through core_int.h. A partition's life is consumer_group.c's. The loop
 * sleeps on core_event.c, which knows nothing of what it wakes: the loop registers its own fds
 * there (kt_loop_wait), the dispatcher curl's sockets and timer.
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
 *   4. sleep on the event core (kt_loop_wait, core_event.c) on curl's sockets, the Kafka and
 *      producer wake-up
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
 * or dispatch.drain_timeout_ms passed; kt_consumer_revoke_step() then releases them
 * (kt_loop_partition_release cancels what still runs: not done, never committed), commits
 * and hands them back. Shutdown and re-join drain every partition the same way, as loop
 * states (kt_loop_state_t in core_int.h). Every drain also ends when the runtime is down and
 * no record of it is PRODUCING: what is left needs the runtime, and waiting for it would only
 * hold the group's rebalance (a revoke) or the shutdown; a reply or dead letter being written
 * needs only Kafka, so it is waited for.
 *
 * Reload (SIGHUP): the file, environment and --set flags are read again into a new
 * configuration, in a child process (config/config_reader.c) whose pipe is one more fd to
 * sleep on and which is killed at its deadline: nothing read can end or stall the loop. If
 * it is invalid (or the child died or timed out) every error is logged and the running one
 * stays. Otherwise
 * kt_config_diff() says how the changes apply (strongest class wins):
 *   - live: log level and format, dispatch limits, retries, on_failure, runtime URL and timeout:
 *     every module is pointed at the new configuration between two iterations, the dispatcher
 *     grows its slots if max_in_flight grew;
 *   - re-join: kafka.*, the handler, dispatch.ordering, or a producer needed/no longer needed:
 *     the loop goes to REJOIN_DRAIN (fetching held, the buffer finished, as above), commits,
 *     the consumer leaves the group, and a new consumer (and scheduler, and producer) is made
 *     from the new configuration. Nothing is lost; nothing finished is delivered twice (what
 *     finished above an unfinished record at a drain timeout is in the commit's offset map),
 *     except with librdkafka below 2.10 (make LIBRDKAFKA=system) when a periodic commit
 *     crosses the start of the re-join (it drops the assignment as lost: README, #4059);
 *   - restart: metrics.listen is logged as needing a restart.
 * The old configuration is freed once nothing points into it.
 *
 * ZooKeeper discovery (kafka.zookeeper, consumer_zk.c) adds one more pipe to sleep on and its
 * retry timer to next_due_ms; zk_poll() hands each broker found to the consumer and the
 * producer (rd_kafka_brokers_add).
 */
#define _GNU_SOURCE
#include "core_int.h"

#include <errno.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/signalfd.h>
#include <unistd.h>

#define FAC "LOOP"

void kt_loop_wake_at(kt_loop_t *kl, int64_t at_ms) {
        if (at_ms < kl->next_due_ms)
                kl->next_due_ms = at_ms;
}

void kt_loop_fds_forget(kt_loop_t *kl) {
        for (int i = 0; i < KT_LOOP_FD_CNT; i++) {
                if (kl->fds[i] >= 0)
                        kt_event_fd_del(kl->ke, kl->fds[i]);
                kl->fds[i] = -1;
        }
}

void kt_loop_wait(kt_loop_t *kl, int timeout_ms, int joined) {
        int want[KT_LOOP_FD_CNT] = {
            [KT_LOOP_FD_KAFKA] = joined && kl->kc ? kt_consumer_wakeup_fd(kl->kc) : -1,
            [KT_LOOP_FD_SIGNAL] = kl->sigfd,
            [KT_LOOP_FD_PRODUCE] = joined && kl->kp ? kt_produce_wakeup_fd(kl->kp) : -1,
            [KT_LOOP_FD_ZK] = joined && kl->zk ? kt_consumer_zk_wakeup_fd(kl->zk) : -1,
            [KT_LOOP_FD_RELOAD] = kl->reader ? kt_config_reader_fd(kl->reader) : -1,
        };

        /* They rarely change. All out before any in: a number may have moved between them. */
        for (int i = 0; i < KT_LOOP_FD_CNT; i++)
                if (kl->fds[i] != want[i] && kl->fds[i] >= 0) {
                        kt_event_fd_del(kl->ke, kl->fds[i]);
                        kl->fds[i] = -1;
                }
        /* No callback: the loop looks at each of them after every wait. KT_EVENT_BACKOFF: they
         * still wake a wait that failed. Refused by epoll (KT_ERR_SYS), one stays registered
         * and the event core tries it again at each wait, backing off. */
        for (int i = 0; i < KT_LOOP_FD_CNT; i++)
                if (kl->fds[i] != want[i] && want[i] >= 0 &&
                    kt_event_fd_set(kl->ke, want[i], KT_EVENT_READ | KT_EVENT_BACKOFF, NULL,
                                    NULL) != KT_ERR_NOMEM)
                        kl->fds[i] = want[i];
        /* A failed wait has logged (rate limited) and slept its back-off: going round is no
         * spin. A negative timeout (a deadline computed as passed) is 0, not the event core's
         * "no limit but the timers": the loop must never sleep without its own limit. */
        (void)kt_event_wait(kl->ke, timeout_ms < 0 ? 0 : timeout_ms);
}

/* ---------------------------------------------------------------- runtime health */

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

/* ---------------------------------------------------------------- calls */

/* ---------------------------------------------------------------- drain, revoke, shutdown */

static const char *loop_state_name(kt_loop_state_t st) {
        static const char *const names[] = {"running",        "rejoin-drain",    "rejoin-commit",
                                            "shutdown-drain", "shutdown-commit", "stopped"};
        return names[st];
}

/** The one transition function of the loop's life (see kt_loop_state_t). */
void kt_loop_state_set(kt_loop_t *kl, kt_loop_state_t st) {
        if (kl->state == st)
                return;
        KT_DBG(FAC, "loop: %s -> %s", loop_state_name(kl->state), loop_state_name(st));
        switch (st) {
        case KT_LOOP_RUNNING:
                memset(&kl->final_commit, 0, sizeof(kl->final_commit));
                kl->final_committed = 0;
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
                        kt_consumer_release_all(kl->kc);
                        kt_consumer_commit_wait_start(kl->kc, &kl->final_commit,
                                                      kl->drain_deadline_ms);
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
                kt_loop_state_set(kl, KT_LOOP_SHUTDOWN_DRAIN);
                break;
        case KT_LOOP_REJOIN_COMMIT:
                kt_loop_state_set(kl, KT_LOOP_SHUTDOWN_COMMIT);
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

        /* The runtime down: only records PRODUCING (a reply or dead letter out) can still be
         * done, by Kafka; the rest waits for nothing. */
        if (left && now < kl->drain_deadline_ms &&
            (!kl->runtime_down || kt_consumer_producing(kl->kc))) {
                kt_loop_wake_at(kl, kl->drain_deadline_ms);
                return 0;
        }
        if (left)
                KT_WARN(FAC,
                        "%s: %zu records not done (%s): they are not committed and are delivered "
                        "again%s",
                        rejoin ? "reload" : "shutdown", left,
                        now < kl->drain_deadline_ms ? "the runtime is down" : "drain timeout",
                        rejoin ? " after the re-join" : " by the next owner");
        kt_loop_state_set(kl, rejoin ? KT_LOOP_REJOIN_COMMIT : KT_LOOP_SHUTDOWN_COMMIT);
        return 1;
}

/** *_COMMIT: @returns non-zero once the final commit completed or will not. */
static int commit_step(kt_loop_t *kl) {
        rd_kafka_resp_err_t err;
        int64_t wake_at = INT64_MAX;
        kt_commit_status_t st =
            kt_consumer_commit_wait_step(kl->kc, &kl->final_commit, &wake_at, &err);

        if (st == KT_COMMIT_DONE) {
                kl->final_committed = 1;
                return 1;
        }
        if (st == KT_COMMIT_PENDING) {
                kt_loop_wake_at(kl, wake_at);
                return 0;
        }
        KT_WARN(FAC,
                "the final commit did not complete in time (%s): up to %llu finished records "
                "will be delivered again",
                err ? rd_kafka_err2str(err) : "no answer",
                (unsigned long long)kt_consumer_uncommitted_done(kl->kc));
        return 1;
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
        kt_metrics_rebootstraps_set(kl->km, st->rebootstraps, kt_produce_rebootstraps(kl->kp));
        if (kt_now_ms() >= kl->metrics_scan_at_ms) {
                /* A scan of every partition: not on every pass (see KT_LOOP_METRICS_SCAN_MS). */
                int64_t now = kt_now_ms(), longest;
                kl->metrics_scan_at_ms = now + KT_LOOP_METRICS_SCAN_MS;
                kt_consumer_blocked(kl->kc, now, &kl->metrics_blocked, &longest);
                kl->metrics_blocked_s = (double)longest / 1000.0;
        }
        kt_metrics_delivery_set(kl->km, st->already_done, kl->metrics_blocked,
                                kl->metrics_blocked_s);
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
        kt_consumer_lag_write(kl->kc, f);
        if (!fclose(f))
                kt_metrics_lag_set(kl->km, buf);
        free(buf);
}

/** @returns 1 if a stop signal arrived. */
int kt_loop_signals_read(kt_loop_t *kl) {
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

/** kt_consumer_close's beat: the loop is alive while it leaves the group. */
static void heartbeat(void *opaque) {
        kt_metrics_heartbeat(opaque);
}

void kt_loop_kafka_close(kt_loop_t *kl) {
        int64_t until = kt_now_ms() + KT_LOOP_FLUSH_MS;
        int rejoin = kl->state == KT_LOOP_REJOIN_COMMIT;
        /* Nothing is lost by exiting once the final commit went through (the group notices
         * the member by its session timeout); otherwise say that it did not. A re-join was
         * meant to go on: exit 1, for the supervisor to start us again. */
        kt_watchdog_t *kw =
            kt_watchdog_arm(rejoin ? "re-join" : "shutdown", KT_LOOP_CLOSE_WATCHDOG_MS,
                            !rejoin && kl->final_committed ? 0 : 1, kt_consumer_close_stage);

        /* First: it releases what is left (cancelling it: not done, not committed), which
         * forgets the replies and dead letters of those records; commits nothing. */
        kt_watchdog_stage_set(kw, "closing the consumer");
        kt_consumer_close(kl->kc, heartbeat, kl->km);
        kt_watchdog_stage_set(kw, "flushing the producer");
        while (kl->kp && kt_now_ms() < until && kt_produce_flush(kl->kp, KT_LOOP_FLUSH_STEP_MS))
                kt_metrics_heartbeat(kl->km);
        kt_metrics_heartbeat(kl->km);
        kt_watchdog_stage_set(kw, "destroying the consumer");
        kt_consumer_destroy(kl->kc);
        kl->kc = NULL;
        kt_watchdog_stage_set(kw, "destroying the producer");
        kt_produce_destroy(kl->kp);
        kl->kp = NULL;
        kt_watchdog_disarm(kw);
}

/* ---------------------------------------------------------------- reload */

/* ---------------------------------------------------------------- ZooKeeper discovery */

/** kt_zk_broker_cb: a broker found in ZooKeeper becomes a bootstrap broker of both clients. */
void kt_loop_zk_broker(void *opaque, const char *hostport) {
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
        kt_loop_wake_at(kl, kt_consumer_zk_poll(kl->zk));
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
        kl.hooks = (kt_consumer_hooks_t){kt_loop_partition_release, kt_loop_record_add, &kl};
        kl.km = km;
        kl.sigfd = -1;
        for (int i = 0; i < KT_LOOP_FD_CNT; i++)
                kl.fds[i] = -1;
        kl.next_due_ms = INT64_MAX;

        sigemptyset(&mask);
        sigaddset(&mask, SIGTERM);
        sigaddset(&mask, SIGINT);
        sigaddset(&mask, SIGHUP);
        if ((kl.sigfd = signalfd(-1, &mask, SFD_NONBLOCK | SFD_CLOEXEC)) == -1) {
                KT_ERR(FAC, "signalfd: %s", strerror(errno));
                goto out;
        }
        if (!(kl.ks = kt_sched_new(conf)) || kt_loop_topic_map_build(&kl)) {
                KT_ERR(FAC, "out of memory");
                goto out;
        }
        if (!(kl.ke = kt_event_new(errstr, sizeof(errstr)))) {
                KT_ERR(FAC, "event core: %s", errstr);
                goto out;
        }
        if (!(kl.kd = kt_dispatch_new(conf, kl.ke, kt_loop_call_done, kt_loop_probe_done, &kl,
                                      errstr, sizeof(errstr)))) {
                KT_ERR(FAC, "dispatcher: %s", errstr);
                goto out;
        }
        if (kt_loop_producer_build(&kl, conf, errstr, sizeof(errstr))) {
                KT_ERR(FAC, "producer: %s", errstr);
                goto out;
        }
        if (conf->runtime_wait_at_start && kt_loop_runtime_wait(&kl)) {
                status = 0; /* asked to stop before we started: nothing to drain */
                goto out;
        }
        conf = kl.conf; /* a reload while waiting may have replaced it */
        if (kt_loop_consumer_build(&kl, conf, errstr, sizeof(errstr))) {
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
                int more;
                int64_t wait_ms;

                kt_metrics_heartbeat(km);
                if (kt_loop_signals_read(&kl))
                        shutdown_begin(&kl);
                if (kl.reload_asked)
                        kt_loop_reload(&kl);
                /* Here, where nothing holds on to the running configuration: a reload read
                 * meanwhile is applied between two iterations. Its fd wakes the loop when the
                 * child is done; its deadline is met within KT_LOOP_MAX_WAIT_MS. */
                kt_loop_reload_poll(&kl);
                /* Calls first, so a finished call's successor (one call at a time per
                 * partition in `partition` ordering) is sent before anything else is done.
                 * Completions before the dispatch pass: they free slots and schedule retries
                 * that it then sees. Records read from Kafka below go out on the next pass,
                 * which does not sleep while records are ready. */
                kt_dispatch_perform(kl.kd);
                kt_loop_dispatch_ready(&kl);
                kt_dispatch_perform(kl.kd); /* start the calls just submitted */
                more = kt_consumer_poll(kl.kc, KT_LOOP_KAFKA_BUDGET);
                kt_loop_produce_poll(&kl);
                kt_loop_wake_at(&kl, kt_consumer_revoke_step(kl.kc, kl.runtime_down));
                kt_loop_wake_at(&kl, kt_consumer_commit_due(kl.kc));
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
                        if (kt_loop_rejoin(&kl)) {
                                status = 1;
                                goto out;
                        }
                        continue;
                case KT_LOOP_SHUTDOWN_COMMIT:
                        if (commit_step(&kl))
                                kt_loop_state_set(&kl, KT_LOOP_STOPPED);
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
                /* The fds as they are now: a reload may have started or ended above. */
                kt_loop_wait(&kl, (int)wait_ms, 1);
        }

        if (kl.state != KT_LOOP_STOPPED) {
                KT_ERR(FAC, "stopping after a fatal Kafka error");
                goto out;
        }
        status = 0; /* a clean shutdown, whether or not its last commit completed */

out:
        /* Closing the consumer releases what is left (cancelling it: not done, not
         * committed) and leaves the group; it commits nothing more. */
        kt_loop_state_set(&kl, KT_LOOP_STOPPED);
        kt_consumer_zk_destroy(kl.zk); /* first: its broker callback uses the clients */
        kt_loop_kafka_close(&kl);
        kt_dispatch_destroy(kl.kd);
        kt_event_destroy(kl.ke); /* after everything registered in it */
        kt_sched_destroy(kl.ks);
        kt_loop_batch_free(&kl);
        free(kl.topic_map);
        kt_config_destroy(kl.rejoin_conf);
        kt_config_reader_destroy(kl.reader);
        if (kl.sigfd != -1)
                close(kl.sigfd);
        if (status == 0)
                KT_INFO(FAC, "stopped cleanly");
        return status;
}
