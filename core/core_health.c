/*
 * The runtime being down (connection refused) is not a record failure: the record goes back
 * to the front without its attempt counting, every partition is held paused, /readyz turns
 * not-ready, and the health path is probed with back-off until it answers 2xx. Before the
 * group is joined, kt_loop_runtime_wait() waits the same way.
 */
#define _GNU_SOURCE
#include "core_int.h"

#include <stdlib.h>

#define FAC "LOOP"

void kt_loop_runtime_down_enter(kt_loop_t *kl) {
        if (kl->runtime_down)
                return;
        kl->runtime_down = 1;
        kl->probe_backoff_ms = KT_PROBE_MIN_MS;
        kl->probe_at_ms = kt_now_ms() + kl->probe_backoff_ms;
        kt_loop_wake_at(kl, kl->probe_at_ms);
        kt_metrics_runtime_up_set(kl->km, 0);
        kt_consumer_hold(kl->kc, 1);
        KT_WARN(FAC,
                "runtime at %s does not accept connections: consumption paused until %s "
                "answers",
                kl->conf->runtime_url, kl->conf->runtime_health_url);
}

/** kt_dispatch_probe_cb */
void kt_loop_probe_done(int up, void *cbarg) {
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
                kt_loop_wake_at(kl, kl->probe_at_ms);
                return;
        }
        kl->runtime_down = 0;
        kt_metrics_runtime_up_set(kl->km, 1);
        /* A drain (re-join, shutdown) keeps fetching off. */
        kt_consumer_hold(kl->kc, kl->state != KT_LOOP_RUNNING);
        KT_INFO(FAC, "runtime answers again: consumption resumed");
}

/**
 * Before joining the group: wait until the runtime answers its health path, so a replica
 * never takes partitions it cannot serve. Probes with back-off, logs while it waits.
 * @returns 0 once the runtime is up, 1 if a stop signal came first.
 */
int kt_loop_runtime_wait(kt_loop_t *kl) {
        int backoff = KT_PROBE_MIN_MS, logged = 0;
        int64_t since = kt_now_ms(), warned = 0;

        kt_metrics_runtime_up_set(kl->km, 0);
        for (;;) {
                int64_t next = kt_now_ms() + backoff;

                kl->runtime_down = 1;
                kl->probing = kt_dispatch_probe_start(kl->kd) == 0;
                while (kl->probing) {
                        kt_metrics_heartbeat(kl->km);
                        if (kt_loop_signals_read(kl))
                                return 1;
                        if (kl->reload_asked)
                                kt_loop_reload(kl); /* e.g. runtime.port was wrong */
                        kt_loop_reload_poll(kl);
                        kt_loop_wait(kl, 200, 0);
                        kt_dispatch_perform(kl->kd);
                }
                if (!kl->runtime_down)
                        break;
                if (!logged++)
                        KT_INFO(FAC, "waiting for the runtime at %s before joining the group",
                                kl->conf->runtime_health_url);
                /* A runtime that never answers is worth a WARN, not only the INFO above. */
                if (kt_now_ms() - since >= KT_RUNTIME_WAIT_WARN_MS &&
                    (!warned || kt_now_ms() - warned >= KT_RUNTIME_WAIT_WARN_EVERY_MS)) {
                        warned = kt_now_ms();
                        KT_WARN(FAC,
                                "the runtime at %s has not answered for %lld s: not joining the "
                                "group until it does",
                                kl->conf->runtime_health_url, (long long)(warned - since) / 1000);
                }
                for (int64_t left; (left = next - kt_now_ms()) > 0;) {
                        kt_metrics_heartbeat(kl->km);
                        if (kt_loop_signals_read(kl))
                                return 1;
                        if (kl->reload_asked)
                                kt_loop_reload(kl);
                        if (kt_loop_reload_poll(kl))
                                break; /* probe the (maybe new) health URL now */
                        /* left read once: read again it could be negative (no limit). */
                        kt_loop_wait(kl, (int)(left < 200 ? left : 200), 0);
                }
                backoff = backoff * 2 > KT_PROBE_MAX_MS ? KT_PROBE_MAX_MS : backoff * 2;
        }
        kt_metrics_runtime_up_set(kl->km, 1);
        KT_INFO(FAC, "runtime at %s answers", kl->conf->runtime_health_url);
        return 0;
}
